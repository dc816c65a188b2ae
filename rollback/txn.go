package rollback

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/baton-fleet/baton/internal/atomicfile"
)

// State is a step of the upgrade transaction. Each is persisted before its step runs,
// so that after a crash the agent knows what may have happened on the host.
type State string

// The states, in order. An upgrade ends COMMITTED, or ROLLING_BACK then FAILED; an
// upgrade stopped before it touched the host ends ABORTED.
const (
	Prepared    State = "PREPARED"     // the plan is recorded; nothing downloaded
	Staged      State = "STAGED"       // artifacts downloaded, verified, unpacked
	Leased      State = "LEASED"       // the group's lease is held
	Draining    State = "DRAINING"     // the host is being taken out of its load balancer
	Switching   State = "SWITCHING"    // unit files swapped, daemon-reload, restarts
	Verifying   State = "VERIFYING"    // checks and soak
	Analyzing   State = "ANALYZING"    // back in service: the release's metrics analysed against Prometheus
	Committed   State = "COMMITTED"    // the new revision is the last good one
	RollingBack State = "ROLLING_BACK" // putting the last good revision back
	Failed      State = "FAILED"       // reverted; the commit is quarantined
	Aborted     State = "ABORTED"      // stopped before the host was touched
)

// Touched reports whether a crash in state s may have left the host changed: from
// SWITCHING on, unit files and running processes may be new.
func (s State) Touched() bool {
	switch s {
	case Switching, Verifying, Analyzing, Committed, RollingBack, Failed:
		return true
	}
	return false
}

// TxnFile is the current transaction, in the state directory; absent when idle.
const TxnFile = "txn.json"

// Txn is one upgrade of one host from one revision to another.
type Txn struct {
	ID       string    `json:"id"`
	Host     string    `json:"host"`
	Group    string    `json:"group"`
	From     string    `json:"from"` // the last good revision ("" on a fresh host)
	To       string    `json:"to"`   // the revision being applied
	State    State     `json:"state"`
	Attempts int       `json:"attempts"` // how many agent runs have worked on it: the loop guard
	Started  time.Time `json:"started"`
	Updated  time.Time `json:"updated"`
	Reason   string    `json:"reason,omitempty"` // why it is rolling back, failed or aborted
	Step     string    `json:"step,omitempty"`   // the step a failure happened in
	Output   string    `json:"output,omitempty"` // the failing check's output, for the report
	Check    string    `json:"check,omitempty"`  // the failing check's name
	// RevertFailed says that the last good revision did not come back either: the
	// host needs an operator.
	RevertFailed bool `json:"revertFailed,omitempty"`
	// Rollback marks an operator's `baton rollback`: To is a revision the host ran
	// before; no fleet gate holds it, and it ends rolledBack. Request is the id the
	// API gave the operator's request, echoed in its result.
	Rollback bool   `json:"rollback,omitempty"`
	Request  string `json:"request,omitempty"`

	// The target: what lastgood.json becomes when it commits.
	Target LastGood `json:"target"`
	// Services names the services the upgrade changes (new or changed, not removed).
	Services []string `json:"services"`
	// Restart lists the .service units the upgrade restarts, Start the units it starts
	// (new sockets and timers), Remove the units it removes.
	Restart []string `json:"restart"`
	Start   []string `json:"start"`
	Remove  []string `json:"remove"`
	// History is when each state began, in order.
	History []Step `json:"history"`
	// Created lists the unit files that did not exist before this upgrade: with the
	// last good record, they are all baton may write or remove on this host.
	Created []string `json:"created,omitempty"`
	// CutOver says that the load balancer sends the bluegreen services' traffic to the
	// new color (the old one draining): a revert switches it back.
	CutOver bool `json:"cutOver,omitempty"`
}

// Step is a state the transaction entered, and when.
type Step struct {
	State State     `json:"state"`
	At    time.Time `json:"at"`
}

// Durations returns how long the transaction spent in each state it left, in order,
// as "STATE=duration" pairs; the last state counts until now.
func (t *Txn) Durations(now time.Time) []string {
	var out []string
	for i, s := range t.History {
		end := now
		if i+1 < len(t.History) {
			end = t.History[i+1].At
		}
		out = append(out, fmt.Sprintf("%s=%v", s.State, end.Sub(s.At).Round(time.Millisecond)))
	}
	return out
}

// Store keeps the transaction, the last good record and the quarantine in a state
// directory. It is not safe for concurrent use by several processes: the agent holds
// the state directory alone.
type Store struct {
	Dir string
	Now func() time.Time // nil: time.Now

	qmu sync.Mutex // the quarantine's read-modify-write: the loop and the API both change it
}

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Load returns the open transaction, or nil when there is none.
func (s *Store) Load() (*Txn, error) {
	var t Txn
	if ok, err := readStateFile(s.Dir, TxnFile, "transaction", &t); !ok {
		return nil, err
	}
	if err := t.Target.validate(); err != nil {
		return nil, fmt.Errorf("read transaction %s: %w", filepath.Join(s.Dir, TxnFile), err)
	}
	return &t, nil
}

// Save persists t with its state set to state. The upgrade calls it before each step.
func (s *Store) Save(t *Txn, state State) error {
	if t.State != state || len(t.History) == 0 {
		t.History = append(t.History, Step{State: state, At: s.now()})
	}
	t.State = state
	t.Updated = s.now()
	if t.Started.IsZero() {
		t.Started = t.Updated
	}
	data, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return fmt.Errorf("save transaction: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(s.Dir, TxnFile), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("save transaction: %w", err)
	}
	return nil
}

// End removes the finished transaction; the agent is idle again.
func (s *Store) End() error {
	err := os.Remove(filepath.Join(s.Dir, TxnFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("end transaction: %w", err)
	}
	return atomicfile.SyncDir(s.Dir)
}

// LastGood reads the last good record; see ReadLastGood.
func (s *Store) LastGood() (*LastGood, error) { return ReadLastGood(s.Dir) }

// SetLastGood replaces the last good record; see WriteLastGood.
func (s *Store) SetLastGood(lg *LastGood) error { return WriteLastGood(s.Dir, lg) }
