package core

// Kind is how a transaction, or a look at a commit, ended.
type Kind string

// The kinds of ending. A transaction ends Committed, Reverted, RevertFailed or
// Aborted; a commit that never starts one is Rejected (bad input), Blocked (something
// on the host or in the fleet holds it) or Unchanged (nothing to do here).
const (
	Committed    Kind = "committed"     // the target is the last good revision
	Reverted     Kind = "reverted"      // the release failed; the last good revision runs (it never stopped, or it is back)
	RevertFailed Kind = "revert-failed" // the release failed, and the last good revision did not come back either
	Aborted      Kind = "aborted"       // stopped before touching the host, or interrupted and reverted: not the release's fault
	Rejected     Kind = "rejected"      // the commit is bad input
	Blocked      Kind = "blocked"       // the commit waits: a unit file in the way, a freeze, the fleet's gate
	Unchanged    Kind = "unchanged"     // the commit changes nothing on this host
)

// Retry says whether, and why, an aborted commit is tried again after a backoff.
type Retry int

const (
	NoRetry          Retry = iota // tried again at the next poll
	RetryTrouble                  // this host's own trouble: tried again after a backoff
	RetryInterrupted              // reverted after an interruption: tried again after a backoff
)

// Outcome is what happened: a value, reported once to status, the API, events, the
// fleet record and metrics (agent.report), and never read back from its prose.
type Outcome struct {
	Kind   Kind
	Step   string // the step that failed: stage, switch, verify, recover, ...
	Reason string // why, in words for the operator
	Output string // the failing check's output
	Check  string // the failing check's name
	Retry  Retry
	// Halts says that the group halts on the release: it failed after it ran here.
	Halts bool
	// After says why a committed transaction was finished without its last steps (the
	// loop guard).
	After string
}
