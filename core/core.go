// Package core decides a host upgrade. It does no I/O: the agent (and the fleet
// simulation, with simulated I/O) performs each step it returns and tells it how the
// step ended; the core answers with the next step.
//
// A transaction moves through the states of rollback.State, each persisted before its
// step runs (Step.Persist). Begin starts a new one; Resume picks up one that a crash
// left open; Next takes the event of the step just performed. A transaction ends with
// a step whose action is an ending (Ended): its Outcome says what happened, and the
// agent reports it once (see agent.report).
//
//	Begin:   PREPARED stage -> STAGED acquire -> LEASED check-hold -> look-again
//	         -> [migrate] -> [DRAINING check-hold -> drain] -> confirm-hold
//	         -> SWITCHING switch -> VERIFYING verify
//	         -> [bluegreen: cutover -> VERIFYING verify] -> [undrain]
//	         -> [ANALYZING analyze] -> [bluegreen: retire] -> COMMITTED commit -> done
//	the release fails after its switch: halt-early -> ROLLING_BACK check-hold
//	         -> revert -> [undrain] -> quarantine -> FAILED halt -> done
//	before the switch: abort (nothing touched, maybe retried after a backoff; a
//	         newer commit that came during the lease wait supersedes the transaction),
//	         or quarantine without a halt (the release is wrong the same way on every host)
//
// docs/transaction.md tells the same in full, with what happens after a crash in each
// state (Resume).
package core

import (
	"fmt"
	"slices"

	"github.com/baton-fleet/baton/rollback"
)

// Action is what the agent does next.
type Action string

// The actions. Each reports back an Event with the same Action.
const (
	Stage       Action = "stage"        // download, verify and unpack the changed releases
	Acquire     Action = "acquire"      // wait for a slot of the group's lease
	AcquireSoon Action = "acquire-soon" // recovery: wait at most a bound for a slot; without it, go on
	CheckHold   Action = "check-hold"   // is the slot certainly still held
	LookAgain   Action = "look-again"   // under the lease: the fleet's gate, a canary spot, unit files in the way
	Drain       Action = "drain"        // leave the load balancers
	ConfirmHold Action = "confirm-hold" // right before the switch: the hold, and the fenced SWITCHING record
	Switch      Action = "switch"       // write unit files, daemon-reload, restart
	Load        Action = "load"         // recovery: load the target commit again to verify it
	Migrate     Action = "migrate"      // run the release's pending expand migrations, once for the fleet
	Verify      Action = "verify"       // the checks, for minHealthy before healthyDeadline
	Cutover     Action = "cutover"      // bluegreen: the balancer to the new color (ready), the old one draining
	Analyze     Action = "analyze"      // back in service: the analysis window against Prometheus
	Retire      Action = "retire"       // bluegreen: wait out the old color's sessions, then stop it
	Undrain     Action = "undrain"      // rejoin the load balancers (a failure is logged, not fatal)
	Commit      Action = "commit"       // record the last good revision, then bake
	Revert      Action = "revert"       // put the last good revision back, and check it
	Quarantine  Action = "quarantine"   // mark the commit failed on this host
	Halt        Action = "halt"         // halt the group on the commit and its releases; retried until written
	HaltEarly   Action = "halt-early"   // one quick try at the halt, before the revert
	Done        Action = "done"         // ending: release the slot, prune, close the record, report
	Leave       Action = "leave"        // ending: the agent is stopping; the record stays open for the next start
)

// Ended reports whether a is an ending: the transaction's last step.
func (a Action) Ended() bool { return a == Done || a == Leave }

// Result is how a step ended.
type Result int

const (
	OK          Result = iota
	Stopped            // the agent is stopping (SIGTERM): an interruption, never a failure
	BadRelease         // the release is wrong the same way on every host (an artifact's sha256)
	HostTrouble        // this host cannot, now: a full disk, a drain refused, a unit file in the way
	Failed             // the step failed: a check, systemd, the lease, the gate
	Unpersisted        // the state the step needed could not be persisted
	// Superseded: a newer commit changes what this host runs, and came while the
	// host waited for the lease: nothing was touched, and the newer one is what the
	// fleet wants now.
	Superseded
)

var resultNames = [...]string{"ok", "stopped", "bad-release", "host-trouble", "failed", "unpersisted", "superseded"}

func (r Result) String() string {
	if int(r) < len(resultNames) {
		return resultNames[r]
	}
	return fmt.Sprintf("result(%d)", int(r))
}

// Event is how the step the core asked for ended.
type Event struct {
	Did    Action
	Result Result
	Reason string // why it did not end OK, in words for the operator
	Output string // a failing check's output
}

// Step is what the agent does next: persist State (when set) before it does Do.
type Step struct {
	Do      Action
	Persist rollback.State
	// Outcome is set on an ending (Done): what happened, for the report.
	Outcome *Outcome
}

func (s Step) String() string {
	if s.Persist != "" {
		return fmt.Sprintf("%s %s", s.Persist, s.Do)
	}
	return string(s.Do)
}

// MaxAttempts is how many starts may resume one transaction before the loop guard
// stops resuming it (see Resume).
const MaxAttempts = 3

// StepInterrupted is the rollback.Txn.Step of a transaction reverted because it was
// interrupted (a crash, SIGTERM, the watchdog), not because it failed.
const StepInterrupted = "interrupted"

// Machine is one transaction being decided. The agent builds it over the record it
// persists (Txn) and the facts the core cannot read from it.
type Machine struct {
	Txn *rollback.Txn
	// Drains says that the changed services have load balancers to leave (those
	// deployed by restart: a bluegreen service switches colors instead).
	Drains bool
	// BlueGreen says that a changed service runs two colors: the new one is checked
	// before the balancer sends it a client (Cutover), the old one stopped once the
	// new one held (Retire).
	BlueGreen bool
	// Migrates says that the release has expand migrations to run before its switch.
	Migrates bool
	// Analyzes says that the release's metrics are analysed once it serves.
	Analyzes bool

	// after is what follows the step under way, when the same action leads on to
	// different places (an undrain after a verify, or before an abort).
	after func(Event) Step
	// last is the step handed out last.
	last Step
}

// Switched reports whether the transaction reached SWITCHING: only a release that ran
// on the host can have failed its checks there, and only such a failure halts the
// group.
func Switched(t *rollback.Txn) bool {
	return slices.ContainsFunc(t.History, func(s rollback.Step) bool { return s.State == rollback.Switching })
}

// Begin is the first step of a new transaction.
func (m *Machine) Begin() Step {
	m.Txn.Attempts = 1
	return m.track(Step{Do: Stage, Persist: rollback.Prepared})
}

// Next is the step after ev.
func (m *Machine) Next(ev Event) Step {
	if ev.Result == Unpersisted && m.after == nil {
		return m.track(m.unpersisted(ev))
	}
	if m.after != nil {
		// Within a revert or a failure a state that could not be written changes
		// nothing: the record keeps the state before it, from which the next start
		// reverts or fails again.
		then := m.after
		m.after = nil
		return m.track(then(ev))
	}
	switch ev.Did {
	case Stage, Acquire, CheckHold, LookAgain, Drain, Migrate, ConfirmHold:
		return m.track(m.beforeSwitch(ev))
	case Switch, Verify, Cutover, Analyze, Retire, Commit:
		return m.track(m.afterSwitch(ev))
	}
	panic(fmt.Sprintf("core: no step follows %s outside a chain", ev.Did))
}

// track remembers the step handed out, whose persisted state an Unpersisted event
// refers to.
func (m *Machine) track(s Step) Step {
	m.last = s
	return s
}

// unpersisted decides what a state of the forward path that could not be written
// means: before the switch nothing happened, so the transaction aborts (undraining
// first once drained); at VERIFYING the host is reverted; a commit that cannot record
// its state is left to the next start, which finds VERIFYING.
func (m *Machine) unpersisted(ev Event) Step {
	why := "persist the transaction: " + ev.Reason
	switch m.last.Persist {
	case rollback.Prepared, rollback.Staged, rollback.Leased, rollback.Draining:
		return m.abort(why)
	case rollback.Switching:
		return m.undrainThen(func() Step { return m.abort(why) })
	case rollback.Verifying:
		return m.revert("switch", why, "")
	}
	return m.leave()
}

// beforeSwitch decides the steps up to the switch: nothing on the host has changed,
// so any trouble aborts (or, for a release found wrong, quarantines without a halt).
func (m *Machine) beforeSwitch(ev Event) Step {
	if ev.Result == Stopped {
		if ev.Did == ConfirmHold {
			return m.undrainThen(func() Step { return m.abort("the agent is stopping") })
		}
		return m.abort("the agent is stopping")
	}
	switch {
	case ev.Result == Superseded:
		// Nothing touched, nothing wrong: the newer commit is tried at once.
		return m.abort(ev.Reason)
	case ev.Did == Stage && ev.Result == BadRelease:
		// Wrong the same way on every host, and nothing switched: quarantined here,
		// the group not halted (each host finds it for itself).
		return m.fail("stage", ev.Reason, "")
	case ev.Did == Migrate && ev.Result == Failed:
		// The ledger holds a migration's verdict for the whole fleet: a failed,
		// interrupted or changed one halts every host's rollout of the service
		// until an operator resolves it. Nothing is quarantined, and no backoff
		// delays the host once it is resolved: the agent's gate reads the ledger
		// before the lease, and holds the host there meanwhile.
		return m.done(&Outcome{Kind: Aborted, Step: "migrate", Reason: ev.Reason})
	case ev.Result == HostTrouble:
		return m.trouble(troubleStep[ev.Did], ev.Reason)
	case ev.Did == ConfirmHold && ev.Result != OK:
		return m.undrainThen(func() Step { return m.abort(ev.Reason) })
	case ev.Did == CheckHold && ev.Result != OK:
		before := "switching"
		if m.last.Persist == rollback.Draining {
			before = "draining"
		}
		return m.abort(fmt.Sprintf("lease lost before %s: %s", before, ev.Reason))
	case ev.Result != OK:
		return m.abort(failedBefore(ev))
	}
	switch ev.Did {
	case Stage:
		return Step{Do: Acquire, Persist: rollback.Staged}
	case Acquire:
		return Step{Do: CheckHold, Persist: rollback.Leased}
	case CheckHold:
		if m.last.Persist == rollback.Draining {
			return Step{Do: Drain}
		}
		return Step{Do: LookAgain}
	case LookAgain:
		if m.Migrates {
			return Step{Do: Migrate}
		}
		return m.drain()
	case Migrate:
		return m.drain()
	case Drain:
		return Step{Do: ConfirmHold}
	}
	return Step{Do: Switch, Persist: rollback.Switching} // ConfirmHold
}

// drain takes the host out of its load balancers, when it has any, after the expand
// migrations: an expand migration leaves what the old version reads, so the host
// serves while it runs, or while it waits for another host's run (the migration lock
// is the fleet's); a long migration takes no capacity from the group.
func (m *Machine) drain() Step {
	if m.Drains {
		return Step{Do: CheckHold, Persist: rollback.Draining}
	}
	return Step{Do: ConfirmHold}
}

// troubleStep names, in "could not <step>", the step of the host's own trouble.
var troubleStep = map[Action]string{Stage: "stage", Acquire: "take the lease", LookAgain: "switch", Drain: "drain", Migrate: "migrate"}

// failedBefore says why a step before the switch ended the transaction.
func failedBefore(ev Event) string {
	if ev.Did == Acquire {
		return "lease: " + ev.Reason
	}
	return ev.Reason
}

// afterSwitch decides from the switch to the commit: verify; for bluegreen, cut over
// to the new color and verify again through the balancer; rejoin the load balancers;
// analyse the release's metrics while it serves; retire the old color; commit.
func (m *Machine) afterSwitch(ev Event) Step {
	t := m.Txn
	switch {
	case ev.Did == Switch && ev.Result == Stopped:
		// Stopped mid-switch: an interruption, not a release systemd refused.
		return m.GiveUp("the agent was stopped while switching units")
	case (ev.Did == Verify || ev.Did == Analyze) && ev.Result == Stopped:
		return m.leave() // the next start verifies (or analyses) again
	case ev.Did == Analyze && ev.Result == HostTrouble:
		// Inconclusive (no data to the end, noData: wait): not the release's fault, and not a
		// pass either. The host goes back, as after an interruption, and tries again.
		return m.inconclusive(ev.Reason)
	case ev.Did == Retire && ev.Result != OK:
		// The new color held; the old one's sessions were cut at the bound, or it
		// did not stop: the verdict on the release stands.
		return m.serving()
	case ev.Result != OK && ev.Did != Commit:
		return m.revert(string(ev.Did), ev.Reason, ev.Output)
	case ev.Did == Switch:
		return Step{Do: Verify, Persist: rollback.Verifying}
	case ev.Did == Verify && m.BlueGreen && !t.CutOver:
		return Step{Do: Cutover}
	case ev.Did == Cutover:
		t.CutOver = true // persisted with the soak's state
		return Step{Do: Verify, Persist: rollback.Verifying}
	case ev.Did == Verify:
		return m.undrainThen(m.analyze)
	case ev.Did == Analyze:
		return m.serving()
	case ev.Did == Retire:
		return Step{Do: Commit, Persist: rollback.Committed}
	case ev.Result != OK: // Commit: the record could not be written; the next start finishes it
		return m.leave()
	}
	return m.done(&Outcome{Kind: Committed})
}

// inconclusive reverts a host whose analysis could not judge the release: drained
// again when it has load balancers, reverted (a switch back for bluegreen), and the
// commit tried again after a backoff; nothing quarantined or halted.
func (m *Machine) inconclusive(why string) Step {
	if m.Drains {
		return m.then(Step{Do: Drain}, func(Event) Step { return m.revertInterrupted(why) })
	}
	return m.revertInterrupted(why)
}

// analyze analyses the release's metrics while it serves, when it has an analysis.
func (m *Machine) analyze() Step {
	if m.Analyzes {
		return Step{Do: Analyze, Persist: rollback.Analyzing}
	}
	return m.serving()
}

// serving goes on once the release passed everything: the old color retired, when
// there is one, then the commit.
func (m *Machine) serving() Step {
	if m.BlueGreen && m.last.Do != Retire {
		return Step{Do: Retire}
	}
	return Step{Do: Commit, Persist: rollback.Committed}
}
