// Package events describes what happens during a rollout, keeps the recent ones, and posts them to webhooks.
package events

import (
	"maps"
	"sync"
	"time"
)

// The event types. Receivers branch on them; do not rename.
const (
	UpgradeStarted   = "upgrade.started"   // a transaction began on this host
	UpgradeSucceeded = "upgrade.succeeded" // the transaction committed
	UpgradeFailed    = "upgrade.failed"    // checks (or a step) failed; the host is being reverted
	RevertDone       = "revert.done"       // the last good revision is back; Fields["result"] says whether it verified
	RolloutHalted    = "rollout.halted"    // the commit is quarantined: no other host of the group starts it
	DriftFound       = "drift.found"       // a managed unit file was edited, or a drop-in added, outside baton
	CommitRejected   = "commit.rejected"   // the commit is bad input; the host keeps its last good revision
	ColorSwitched    = "color.switched"    // bluegreen: the load balancer sends new clients to the new color; Fields: from, to
	ColorRetired     = "color.retired"     // bluegreen: the old color drained and stopped; Fields: color, took, sessionsCut
	AnalysisFinished = "analysis.finished" // the analysis after the switch ended; Fields["outcome"] is passed, failed or inconclusive
	GateHeld         = "gate.held"         // the group's gate began to hold new upgrades; Message names the series
	GateOpened       = "gate.opened"       // the group's gate let new upgrades go again
	MigrationDone    = "migration.done"    // a data migration this host ran completed
	MigrationFailed  = "migration.failed"  // a data migration (or its backup) this host ran failed; its service's rollout halts
)

// Types lists every event type, in the order above.
var Types = []string{UpgradeStarted, UpgradeSucceeded, UpgradeFailed, RevertDone, RolloutHalted, DriftFound, CommitRejected,
	ColorSwitched, ColorRetired, AnalysisFinished, GateHeld, GateOpened, MigrationDone, MigrationFailed}

// Event is one thing that happened on a host. Its JSON form is what webhooks receive
// and what the local API lists. Fields carries extra detail (from, to, step, check,
// result, duration...); it must not hold secrets.
type Event struct {
	Time    time.Time         `json:"time"`
	Type    string            `json:"type"`
	Host    string            `json:"host"`
	Group   string            `json:"group,omitempty"`
	Commit  string            `json:"commit,omitempty"`
	Service string            `json:"service,omitempty"`
	Message string            `json:"message,omitempty"`
	Fields  map[string]string `json:"fields,omitempty"`
}

// clone returns e with its own copy of Fields, so that the caller may reuse its map.
func (e Event) clone() Event {
	if e.Fields != nil {
		e.Fields = maps.Clone(e.Fields)
	}
	return e
}

// Ring keeps the last events, for the local API. It is safe for concurrent use.
type Ring struct {
	mu   sync.Mutex
	buf  []Event
	next int // where the next event goes
	full bool
}

// NewRing returns a ring that keeps the last n events (at least one).
func NewRing(n int) *Ring {
	return &Ring{buf: make([]Event, max(n, 1))}
}

// Add records e, forgetting the oldest event when the ring is full.
func (r *Ring) Add(e Event) {
	e = e.clone()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf[r.next] = e
	r.next = (r.next + 1) % len(r.buf)
	if r.next == 0 {
		r.full = true
	}
}

// Last returns up to n of the most recent events, oldest first; n <= 0 returns all
// that the ring holds. The events are copies: changing them does not change the ring.
func (r *Ring) Last(n int) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	size := r.next
	if r.full {
		size = len(r.buf)
	}
	if n <= 0 || n > size {
		n = size
	}
	out := make([]Event, 0, n)
	for i := n; i > 0; i-- {
		j := (r.next - i + len(r.buf)) % len(r.buf)
		out = append(out, r.buf[j].clone())
	}
	return out
}
