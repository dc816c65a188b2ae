// Package plan compares what a host should run with what it runs: services and unit
// files that are new, changed, removed or unchanged.
package plan

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	udiff "github.com/aymanbagabas/go-udiff"

	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/rollback"
	"github.com/baton-fleet/baton/spec"
)

// Change is what happens to a service or a unit.
type Change string

// The kinds of change, in the order a plan lists them.
const (
	New       Change = "new"
	Changed   Change = "changed"
	Removed   Change = "removed"
	Unchanged Change = "unchanged"
)

// Plan is the difference between a host's desired and installed state.
type Plan struct {
	Host              string          `json:"host"`
	Group             string          `json:"group"`
	Revision          string          `json:"revision"`
	InstalledRevision string          `json:"installedRevision"`
	Services          []ServiceChange `json:"services"`
	Units             []UnitChange    `json:"units"`
}

// ServiceChange is one service's move from one version to another.
type ServiceChange struct {
	Name        string `json:"name"`
	Change      Change `json:"change"`
	From        string `json:"from,omitempty"` // installed version
	To          string `json:"to,omitempty"`   // desired version
	FromRelease string `json:"fromRelease,omitempty"`
	ToRelease   string `json:"toRelease,omitempty"`
	// Color is, for a bluegreen service that changes, the color its new release
	// starts in (NextColor), beside the one that keeps serving.
	Color string `json:"color,omitempty"`
}

// UnitChange is one unit file's change, with a unified diff when it changed.
type UnitChange struct {
	Unit    string `json:"unit"`
	Service string `json:"service"`
	Change  Change `json:"change"`
	Diff    string `json:"diff,omitempty"`
}

// Compute compares want with have, reading the installed unit files from unitDir. A
// unit that have lists but that is missing from unitDir shows as changed, from empty.
func Compute(want *spec.HostSpec, have *rollback.LastGood, unitDir string) (*Plan, error) {
	p := &Plan{Host: want.Host, Group: want.Group.Name, Revision: want.Revision, InstalledRevision: have.Revision}
	desired := map[string]bool{}
	for _, s := range want.Services {
		desired[s.Name] = true
		old, installed := have.Services[s.Name]
		sc := ServiceChange{Name: s.Name, Change: Unchanged, To: s.Version, ToRelease: s.ReleaseID}
		if installed {
			sc.From, sc.FromRelease = old.Version, old.Release
			if old.Version != s.Version || old.Release != s.ReleaseID {
				sc.Change = Changed
			}
		} else {
			sc.Change = New
		}
		units := s.Units
		if c, ok := s.Color(old.Color); ok {
			units = c.Units // compared with what the active color runs
		} else if c := NextColor(s, old); c != nil {
			units = c.Units
		}
		for _, u := range units.Names() {
			uc := UnitChange{Unit: u, Service: s.Name, Change: New}
			if slices.Contains(old.Units, u) {
				cur, err := readUnit(unitDir, u)
				if err != nil {
					return nil, err
				}
				uc.Change = Unchanged
				if d := udiff.Unified("a/"+u, "b/"+u, cur, string(units[u])); d != "" {
					uc.Change, uc.Diff = Changed, d
				}
			}
			if uc.Change != Unchanged && sc.Change == Unchanged {
				sc.Change = Changed
			}
			p.Units = append(p.Units, uc)
		}
		for _, u := range old.Units {
			if !Keeps(s, u) {
				p.Units = append(p.Units, UnitChange{Unit: u, Service: s.Name, Change: Removed})
				sc.Change = Changed
			}
		}
		if c := NextColor(s, old); c != nil && sc.Change != Unchanged {
			sc.Color = c.Name
		}
		p.Services = append(p.Services, sc)
	}
	for _, name := range slices.Sorted(maps.Keys(have.Services)) {
		if desired[name] {
			continue
		}
		old := have.Services[name]
		p.Services = append(p.Services, ServiceChange{Name: name, Change: Removed, From: old.Version, FromRelease: old.Release})
		for _, u := range old.Units {
			p.Units = append(p.Units, UnitChange{Unit: u, Service: name, Change: Removed})
		}
	}
	return p, nil
}

// readUnit reads an installed unit file; a missing one reads as empty.
func readUnit(unitDir, name string) (string, error) {
	if err := spec.CheckUnitName(name); err != nil {
		return "", fmt.Errorf("read installed unit: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(unitDir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read installed unit: %w", err)
	}
	return string(b), nil
}

// Changed reports whether applying the plan would change anything on the host.
func (p *Plan) Changed() bool {
	return slices.ContainsFunc(p.Services, func(s ServiceChange) bool { return s.Change != Unchanged })
}

// Counts returns how many units each kind of change has.
func (p *Plan) Counts() map[Change]int {
	n := map[Change]int{}
	for _, u := range p.Units {
		n[u.Change]++
	}
	return n
}

// WriteText writes the plan for a person: the services, then each unit with a
// unified diff of those that change, then a count.
func (p *Plan) WriteText(w io.Writer) error {
	var b strings.Builder
	installed := commitid.Short(p.InstalledRevision)
	if installed == "" {
		installed = "nothing installed"
	}
	fmt.Fprintf(&b, "host %s (group %s): %s -> %s\n", p.Host, p.Group, installed, commitid.Short(p.Revision))
	if !p.Changed() {
		fmt.Fprintf(&b, "no changes\n")
	}
	b.WriteString("\nservices:\n")
	for _, s := range p.Services {
		versions := s.To
		switch s.Change {
		case Changed:
			versions = fmt.Sprintf("%s -> %s", s.From, s.To)
			if s.From == s.To {
				versions = fmt.Sprintf("%s (unit files)", s.To)
			}
		case Removed:
			versions = s.From
		}
		change := string(s.Change)
		if s.Color != "" {
			change += " (starts in " + s.Color + ")"
		}
		fmt.Fprintf(&b, "  %-20s %-24s %s\n", s.Name, versions, change)
	}
	b.WriteString("\nunits:\n")
	marks := map[Change]string{New: "+", Changed: "~", Removed: "-", Unchanged: "="}
	for _, u := range p.Units {
		fmt.Fprintf(&b, "  %s %s (%s) %s\n", marks[u.Change], u.Unit, u.Service, u.Change)
		if u.Diff != "" {
			for _, line := range strings.SplitAfter(strings.TrimSuffix(u.Diff, "\n"), "\n") {
				b.WriteString("      " + line)
			}
			b.WriteString("\n")
		}
	}
	n := p.Counts()
	fmt.Fprintf(&b, "\n%d new, %d changed, %d removed, %d unchanged\n", n[New], n[Changed], n[Removed], n[Unchanged])
	_, err := io.WriteString(w, b.String())
	return err
}

// NextColor is the color of a bluegreen service r that a transaction starts, given
// what the host runs (old): the idle one, beside the active one that keeps serving
// until the new one is proven; the first color on a first install. It is nil for a
// service deployed by restart.
func NextColor(r *spec.Rendered, old rollback.ServiceRecord) *spec.RenderedColor {
	if len(r.Colors) == 0 {
		return nil
	}
	if idle, ok := r.OtherColor(old.Color); ok {
		return idle
	}
	return &r.Colors[0]
}

// Keeps says whether r, as rendered now, still has the unit u: one of its unit files
// or, for a bluegreen service, one of either color's.
func Keeps(r *spec.Rendered, u string) bool {
	if _, ok := r.Units[u]; ok {
		return true
	}
	for _, c := range r.Colors {
		if _, ok := c.Units[u]; ok {
			return true
		}
	}
	return false
}
