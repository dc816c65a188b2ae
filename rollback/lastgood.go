// Package rollback keeps what a host runs and how it got there: the last good revision,
// the persisted upgrade transaction, quarantined commits, and the revert.
package rollback

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/baton-fleet/baton/internal/atomicfile"
	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/spec"
)

// LastGoodFile is the record of the last committed revision, in the state directory.
const LastGoodFile = "lastgood.json"

// LastGood is what the host runs: the revision it last committed and, for each service,
// the version, release and unit files that came with it. The units listed are the only
// ones baton owns on the host.
type LastGood struct {
	Revision string                   `json:"revision"`
	Host     string                   `json:"host"`
	Group    string                   `json:"group"`
	Time     time.Time                `json:"time"`
	Services map[string]ServiceRecord `json:"services"`
	// Files holds the content of every unit file baton installed, by unit name: a
	// revert writes these back exactly, with no need for the old revision's tree.
	Files map[string]string `json:"files,omitempty"`
	// History lists the revisions the host committed before this one, newest
	// first, at most HistoryLen: where `baton rollback` may go back to.
	History []string `json:"history,omitempty"`
}

// HistoryLen bounds LastGood.History.
const HistoryLen = 10

// NextHistory returns the history of the record that follows lg: lg's revision
// first, then lg's history, without repeats, at most HistoryLen.
func (lg *LastGood) NextHistory() []string {
	var h []string
	for _, rev := range append([]string{lg.Revision}, lg.History...) {
		if rev != "" && !slices.Contains(h, rev) && len(h) < HistoryLen {
			h = append(h, rev)
		}
	}
	return h
}

// ServiceRecord is one service as installed.
type ServiceRecord struct {
	Version string   `json:"version"`
	Release string   `json:"release"` // the release directory's name, <version>-<digest>
	Units   []string `json:"units"`
	Restart []string `json:"restart,omitempty"` // the units an upgrade or revert restarts
	// Fingerprint is the release as every host renders it (spec.Service.Fingerprint):
	// what the group halts on when it fails its checks.
	Fingerprint string `json:"fingerprint,omitempty"`
	// Requires is the service's requires: at this version, as the fleet records
	// carry it (fleet.Run) for the requirement checks of other hosts.
	Requires map[string]string `json:"requires,omitempty"`
	// Color is the active color of a bluegreen service: the one the load balancer
	// sends clients to. Units then lists both colors' units that baton installed, and
	// Restart the active color's.
	Color string `json:"color,omitempty"`
	// Colors are both colors of a bluegreen service, in service.yaml's order, so
	// status shows the idle one even before baton first installed its units.
	Colors []string `json:"colors,omitempty"`
}

// Owned returns every unit baton installed, sorted.
func (lg *LastGood) Owned() []string {
	var units []string
	for _, s := range lg.Services {
		units = append(units, s.Units...)
	}
	slices.Sort(units)
	return units
}

// ReadLastGood reads the record from stateDir. A host that never committed has none:
// it gets an empty record, not an error.
func ReadLastGood(stateDir string) (*LastGood, error) {
	var lg LastGood
	if _, err := readStateFile(stateDir, LastGoodFile, "last good", &lg); err != nil {
		return nil, err
	}
	if lg.Services == nil {
		lg.Services = map[string]ServiceRecord{}
	}
	if err := lg.validate(); err != nil {
		return nil, fmt.Errorf("read last good %s: %w", filepath.Join(stateDir, LastGoodFile), err)
	}
	return &lg, nil
}

// validate checks the unit names of a record read back from disk: they become paths.
func (lg *LastGood) validate() error {
	for name, s := range lg.Services {
		for _, u := range s.Units {
			if err := spec.CheckUnitName(u); err != nil {
				return fmt.Errorf("service %s: %w", name, err)
			}
		}
	}
	for u := range lg.Files {
		if err := spec.CheckUnitName(u); err != nil {
			return fmt.Errorf("files: %w", err)
		}
	}
	for _, rev := range lg.History {
		if !commitid.IsFull(rev) {
			return fmt.Errorf("history: %q is not a commit id", rev)
		}
	}
	return nil
}

// Service returns the service that owns unit, "" when baton does not own it.
func (lg *LastGood) Service(unit string) string {
	for name, s := range lg.Services {
		if slices.Contains(s.Units, unit) {
			return name
		}
	}
	return ""
}

// WriteLastGood replaces the record in stateDir atomically.
func WriteLastGood(stateDir string, lg *LastGood) error {
	data, err := json.MarshalIndent(lg, "", "  ")
	if err != nil {
		return fmt.Errorf("write last good: %w", err)
	}
	return atomicfile.Write(filepath.Join(stateDir, LastGoodFile), append(data, '\n'), 0o644)
}
