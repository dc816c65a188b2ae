// Package api is the agent's local API on a unix socket: what it is doing, and the commands behind baton status, sync, rollback and retry.
package api

import (
	"context"
	"errors"
	"time"

	"github.com/baton-fleet/baton/events"
)

// State is the agent's state as `baton status --json` prints it. Commits are full
// ids; times are RFC 3339; a zero time is left out. Nothing in it may hold a secret:
// the Backend strips credentials from the errors it reports.
type State struct {
	Host    string `json:"host"`
	Group   string `json:"group,omitempty"`   // "" while the host matches no group
	Tracked string `json:"tracked,omitempty"` // the branch head last fetched
	Applied string `json:"applied,omitempty"` // the last good revision
	// Phase is what the agent is doing, in words ("idle at 1a2b3c4", "upgrading ...:
	// verifying 5/10 s, 2/3 checks passing"), as in `systemctl status baton`.
	Phase      string         `json:"phase"`
	Services   []ServiceState `json:"services"`
	Txn        *TxnState      `json:"txn,omitempty"`        // nil when idle
	LastResult *Result        `json:"lastResult,omitempty"` // nil before the first
	// LastRollback is how the last `baton rollback` ended (its Request is the id the
	// API answered with); nil before the first ends.
	LastRollback *Result        `json:"lastRollback,omitempty"`
	Rejected     *Rejected      `json:"rejected,omitempty"` // the last commit refused as bad input, while it is the tracked one
	Quarantined  []Quarantined  `json:"quarantined"`
	Lease        LeaseState     `json:"lease"`
	Fetch        FetchState     `json:"fetch"`
	Events       []events.Event `json:"events"` // the most recent, oldest first
	Version      string         `json:"version"`
	// Time is when the state was taken; the server sets it when the Backend leaves it
	// zero. WriteTable shows ages relative to it.
	Time time.Time `json:"time,omitzero"`
}

// ServiceState is one service of the host: the version that runs and its units.
type ServiceState struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// Target is the version being installed, while a transaction changes the service.
	Target string `json:"target,omitempty"`
	// Color is the active color of a bluegreen service (the one clients reach), and
	// TargetColor the one a transaction starts the new version in.
	Color       string      `json:"color,omitempty"`
	TargetColor string      `json:"targetColor,omitempty"`
	Units       []UnitState `json:"units"`
	// Colors are a bluegreen service's colors, the active one first.
	Colors []ColorState `json:"colors,omitempty"`
}

// The states of a ColorState.
const (
	ColorActive    = "active"    // the load balancer sends it clients
	ColorStarting  = "starting"  // a transaction started it: checked on its own port, no client yet
	ColorDraining  = "draining"  // after a switch: it serves the sessions it has, new clients go to the other
	ColorReverting = "reverting" // a failed release: switched back from, being stopped
	ColorStopped   = "stopped"   // its units do not run
	ColorIdle      = "idle"      // its units run, but no client is sent to it and no transaction started it
)

// ColorState is one color of a bluegreen service: the version it runs ("" when it
// does not run) and its state, one of the Color* constants.
type ColorState struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	State   string `json:"state"`
}

// UnitState is one systemd unit, as systemd reports it.
type UnitState struct {
	Name   string `json:"name"`
	Active string `json:"active"`         // ActiveState: active, inactive, failed, activating...
	Sub    string `json:"sub,omitempty"`  // SubState: running, listening, dead...
	Drift  bool   `json:"drift,omitzero"` // its files were changed outside baton
}

// TxnState is the open upgrade transaction.
type TxnState struct {
	ID       string    `json:"id"`
	From     string    `json:"from,omitempty"` // "" on a fresh host
	To       string    `json:"to"`
	State    string    `json:"state"` // a rollback.State: PREPARED ... FAILED
	Since    time.Time `json:"since,omitzero"`
	Started  time.Time `json:"started,omitzero"`
	Attempts int       `json:"attempts,omitzero"`
	Services []string  `json:"services,omitempty"`
	Reason   string    `json:"reason,omitempty"` // why it is rolling back
}

// The outcomes of a Result.
const (
	OutcomeUpgraded   = "upgraded"   // the transaction committed
	OutcomeReverted   = "reverted"   // it failed, and the last good revision is back
	OutcomeFailed     = "failed"     // it failed, and the revert did not verify either
	OutcomeAborted    = "aborted"    // it stopped before touching the host
	OutcomeRejected   = "rejected"   // the commit is bad input
	OutcomeUnchanged  = "unchanged"  // the commit changes nothing on this host
	OutcomeRolledBack = "rolledBack" // `baton rollback` put an earlier revision back
)

// Result is how the last transaction, or the last decision about a commit, ended.
type Result struct {
	Outcome string    `json:"outcome"`
	From    string    `json:"from,omitempty"`
	To      string    `json:"to,omitempty"`
	Time    time.Time `json:"time,omitzero"`
	Message string    `json:"message,omitempty"`
	Step    string    `json:"step,omitempty"`    // where it failed: stage, switch, verify...
	Check   string    `json:"check,omitempty"`   // the failing check
	Output  string    `json:"output,omitempty"`  // the failing check's output
	Request string    `json:"request,omitempty"` // the rollback request it ends, for `baton rollback`
}

// Rejected is a commit refused as bad input, with the reason (file:line: message).
type Rejected struct {
	Commit string    `json:"commit"`
	Reason string    `json:"reason"`
	Time   time.Time `json:"time,omitzero"`
}

// Quarantined is a commit that failed on this host or in its group: no host of the
// group starts it until a newer commit or `baton retry`.
type Quarantined struct {
	Commit string    `json:"commit"`
	Reason string    `json:"reason"`
	Time   time.Time `json:"time,omitzero"`
	Host   string    `json:"host,omitempty"` // where it failed, when known and not this host
}

// LeaseState is this host's hold on its group's lease.
type LeaseState struct {
	Backend string    `json:"backend"` // local, etcd, fleetlock
	Held    bool      `json:"held"`
	Waiting bool      `json:"waiting,omitzero"` // an upgrade waits for a slot
	Since   time.Time `json:"since,omitzero"`   // when it was acquired, or the wait began
}

// FetchState is the last poll of the fleet repository.
type FetchState struct {
	Time        time.Time `json:"time,omitzero"`        // the last poll
	LastSuccess time.Time `json:"lastSuccess,omitzero"` // the last poll that worked
	Error       string    `json:"error,omitempty"`      // why the last poll failed; "" when it worked
	// Shared is the fleet's shared head as this agent knows it (repo.sharedHead);
	// nil without one.
	Shared *SharedHead `json:"shared,omitempty"`
}

// SharedHead is the head the fleet's elected fetcher publishes, as one agent knows it.
type SharedHead struct {
	// Fetcher is the host that last published the head: the elected fetcher, or
	// the one before it until the new one has polled; "" before any was heard.
	Fetcher string    `json:"fetcher,omitempty"`
	Self    bool      `json:"self,omitzero"`  // this agent is the elected fetcher
	Head    string    `json:"head,omitempty"` // the commit published
	Heard   time.Time `json:"heard,omitzero"` // when this agent last saw it published, by its own clock
	Stale   bool      `json:"stale,omitzero"` // the fetcher was not heard for too long: this agent polls on its own
	// Failed is why the fetcher's last poll failed, as it published it (the git
	// server refused it, the branch was rewound, ...): the head is the last it
	// verified, and the other agents keep off the git server all the same.
	Failed string `json:"failed,omitempty"`
}

// Backend is what the server needs of the agent. Each call runs on the request's
// context; a call that cannot start returns one of the errors below, wrapped, so
// that the client gets the right status; any other error is a 500. Its messages go
// to the caller as they are: they must hold no secret.
type Backend interface {
	// State returns what the agent is doing now. It must not wait for a step to end.
	State(ctx context.Context) (State, error)
	// Sync makes the agent poll the repository now; it returns before the poll.
	Sync(ctx context.Context) error
	// Rollback reverts the host to an earlier revision it ran, under the lease: to
	// (a full id or a prefix), or when to is "" the newest earlier one that is not
	// quarantined. It returns once the agent has taken the request, with the
	// revisions it goes from and to; the State tells how it ends.
	Rollback(ctx context.Context, to string) (RollbackAnswer, error)
	// Retry lifts the quarantine of commit (a full id, or a prefix of at least 7
	// hex digits) on this host and its group, so that the agent tries it again.
	Retry(ctx context.Context, commit string) error
}

// Errors a Backend wraps, and the client returns wrapped, for callers to branch on.
var (
	ErrInvalid  = errors.New("invalid request")         // 400: the request cannot be done as asked
	ErrNotFound = errors.New("not found")               // 404: e.g. the commit is not quarantined
	ErrConflict = errors.New("conflict with the agent") // 409: e.g. a transaction is in progress
	ErrNotReady = errors.New("agent not ready")         // 503: e.g. still starting
)
