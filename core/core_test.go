package core

import (
	"fmt"
	"strings"
	"testing"

	"github.com/baton-fleet/baton/rollback"
)

// play runs m from first, answering each step with the next result scripted for its
// action (OK when none is left), and returns the steps as "STATE action" and the
// ending's outcome.
func play(t *testing.T, m *Machine, first Step, script map[Action][]Result) ([]string, *Outcome) {
	t.Helper()
	var steps []string
	s := first
	for i := 0; ; i++ {
		if i > 50 {
			t.Fatalf("no ending after 50 steps: %v", steps)
		}
		steps = append(steps, s.String())
		if s.Persist != "" {
			m.Txn.State = s.Persist
			m.Txn.History = append(m.Txn.History, rollback.Step{State: s.Persist})
		}
		if s.Do.Ended() {
			return steps, s.Outcome
		}
		r := OK
		if q := script[s.Do]; len(q) > 0 {
			r, script[s.Do] = q[0], q[1:]
		}
		s = m.Next(Event{Did: s.Do, Result: r, Reason: fmt.Sprintf("%s %s", s.Do, r)})
	}
}

// check compares the steps a machine took and its outcome with what a test wants: the
// kind, retry and halt, and the reason when the test names one.
func check(t *testing.T, steps []string, want string, got *Outcome, o Outcome) {
	t.Helper()
	if s := strings.Join(steps, ", "); s != want {
		t.Fatalf("steps\n got %s\nwant %s", s, want)
	}
	if got == nil || got.Kind != o.Kind || got.Retry != o.Retry || got.Halts != o.Halts || (o.Reason != "" && got.Reason != o.Reason) {
		t.Fatalf("outcome %+v, want kind %s retry %d halts %v reason %q", got, o.Kind, o.Retry, o.Halts, o.Reason)
	}
}

func TestForward(t *testing.T) {
	happy := "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, confirm-hold, SWITCHING switch, VERIFYING verify, COMMITTED commit, done"
	tests := []struct {
		name   string
		drains bool
		script map[Action][]Result
		want   string
		kind   Kind
		reason string
		retry  Retry
		halts  bool
	}{
		{name: "happy", want: happy, kind: Committed},
		{name: "happy with a drain", drains: true, kind: Committed,
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, DRAINING check-hold, drain, confirm-hold, SWITCHING switch, VERIFYING verify, undrain, COMMITTED commit, done"},
		{name: "stopped while staging", script: map[Action][]Result{Stage: {Stopped}},
			want: "PREPARED stage, done", kind: Aborted, reason: "the agent is stopping"},
		{name: "bad artifact", script: map[Action][]Result{Stage: {BadRelease}},
			want: "PREPARED stage, quarantine, FAILED done", kind: Reverted, reason: "stage bad-release"},
		{name: "full disk", script: map[Action][]Result{Stage: {HostTrouble}},
			want: "PREPARED stage, done", kind: Aborted, reason: "could not stage: stage host-trouble", retry: RetryTrouble},
		{name: "PREPARED not written", script: map[Action][]Result{Stage: {Unpersisted}},
			want: "PREPARED stage, done", kind: Aborted, reason: "persist the transaction: stage unpersisted"},
		{name: "lease error", script: map[Action][]Result{Acquire: {Failed}},
			want: "PREPARED stage, STAGED acquire, done", kind: Aborted, reason: "lease: acquire failed"},
		{name: "a newer commit while waiting for the lease", script: map[Action][]Result{Acquire: {Superseded}},
			want: "PREPARED stage, STAGED acquire, done", kind: Aborted, reason: "acquire superseded"},
		{name: "FleetLock refuses the group", script: map[Action][]Result{Acquire: {HostTrouble}},
			want: "PREPARED stage, STAGED acquire, done", kind: Aborted, reason: "could not take the lease: acquire host-trouble", retry: RetryTrouble},
		{name: "hold lost after acquire", script: map[Action][]Result{CheckHold: {Failed}},
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, done", kind: Aborted, reason: "lease lost before switching: check-hold failed"},
		{name: "gate closed under the lease", script: map[Action][]Result{LookAgain: {Failed}},
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, done", kind: Aborted, reason: "look-again failed"},
		{name: "unit file in the way", script: map[Action][]Result{LookAgain: {HostTrouble}},
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, done", kind: Aborted, reason: "could not switch: look-again host-trouble", retry: RetryTrouble},
		{name: "hold lost before draining", drains: true, script: map[Action][]Result{CheckHold: {OK, Failed}},
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, DRAINING check-hold, done", kind: Aborted, reason: "lease lost before draining: check-hold failed"},
		{name: "drain refused", drains: true, script: map[Action][]Result{Drain: {HostTrouble}},
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, DRAINING check-hold, drain, done", kind: Aborted, reason: "could not drain: drain host-trouble", retry: RetryTrouble},
		{name: "hold gone after the drain", drains: true, script: map[Action][]Result{ConfirmHold: {Failed}},
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, DRAINING check-hold, drain, confirm-hold, undrain, done", kind: Aborted, reason: "confirm-hold failed"},
		{name: "SWITCHING not written", drains: true, script: map[Action][]Result{Switch: {Unpersisted}},
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, DRAINING check-hold, drain, confirm-hold, SWITCHING switch, undrain, done", kind: Aborted, reason: "persist the transaction: switch unpersisted"},
		{name: "systemd refuses", script: map[Action][]Result{Switch: {Failed}},
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, confirm-hold, SWITCHING switch, halt-early, ROLLING_BACK check-hold, revert, quarantine, FAILED halt, done", kind: Reverted, reason: "switch failed", halts: true},
		{name: "stopped mid-switch", script: map[Action][]Result{Switch: {Stopped}},
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, confirm-hold, SWITCHING switch, acquire-soon, ROLLING_BACK revert, done", kind: Aborted, reason: "the agent was stopped while switching units; reverted to none", retry: RetryInterrupted},
		{name: "a check fails", drains: true, script: map[Action][]Result{Verify: {Failed}},
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, DRAINING check-hold, drain, confirm-hold, SWITCHING switch, VERIFYING verify, halt-early, ROLLING_BACK check-hold, revert, undrain, quarantine, FAILED halt, done", kind: Reverted, reason: "verify failed", halts: true},
		{name: "the revert fails too", drains: true, script: map[Action][]Result{Verify: {Failed}, Revert: {Failed}},
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, DRAINING check-hold, drain, confirm-hold, SWITCHING switch, VERIFYING verify, halt-early, ROLLING_BACK check-hold, revert, quarantine, FAILED halt, done", kind: RevertFailed, reason: "verify failed; the revert failed too: revert failed", halts: true},
		{name: "halt not written before stopping", script: map[Action][]Result{Verify: {Failed}, Halt: {Stopped}},
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, confirm-hold, SWITCHING switch, VERIFYING verify, halt-early, ROLLING_BACK check-hold, revert, quarantine, FAILED halt, leave"},
		{name: "stopped while verifying", script: map[Action][]Result{Verify: {Stopped}},
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, confirm-hold, SWITCHING switch, VERIFYING verify, leave"},
		{name: "VERIFYING not written", script: map[Action][]Result{Verify: {Unpersisted}},
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, confirm-hold, SWITCHING switch, VERIFYING verify, halt-early, ROLLING_BACK check-hold, revert, quarantine, FAILED halt, done", kind: Reverted, reason: "persist the transaction: verify unpersisted", halts: true},
		{name: "COMMITTED not written", script: map[Action][]Result{Commit: {Unpersisted}},
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, confirm-hold, SWITCHING switch, VERIFYING verify, COMMITTED commit, leave"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &Machine{Txn: &rollback.Txn{}, Drains: tt.drains}
			steps, o := play(t, m, m.Begin(), tt.script)
			if tt.kind == "" {
				if s := strings.Join(steps, ", "); s != tt.want || o != nil {
					t.Fatalf("steps %s, outcome %+v; want %s and no outcome (the record stays open)", s, o, tt.want)
				}
				return
			}
			check(t, steps, tt.want, o, Outcome{Kind: tt.kind, Retry: tt.retry, Halts: tt.halts, Reason: tt.reason})
		})
	}
}

func TestResume(t *testing.T) {
	tests := []struct {
		name     string
		state    rollback.State
		step     string // the record's Step
		attempts int    // after this start is counted
		reverted bool   // the record says the revert verified
		script   map[Action][]Result
		want     string
		kind     Kind
		reason   string
		retry    Retry
		halts    bool
	}{
		{name: "PREPARED", state: rollback.Prepared, attempts: 2, want: "done", kind: Aborted, reason: "the agent stopped in PREPARED, before touching the host"},
		{name: "LEASED", state: rollback.Leased, attempts: 2, want: "done", kind: Aborted},
		{name: "DRAINING", state: rollback.Draining, attempts: 2, want: "undrain, done", kind: Aborted, reason: "the agent stopped in DRAINING, before touching the host"},
		{name: "SWITCHING", state: rollback.Switching, attempts: 2, want: "acquire-soon, ROLLING_BACK revert, undrain, done", kind: Aborted,
			reason: "the agent stopped while switching units; reverted to abc1234", retry: RetryInterrupted},
		{name: "SWITCHING, no lease within the bound", state: rollback.Switching, attempts: 2, script: map[Action][]Result{AcquireSoon: {Failed}},
			want: "acquire-soon, ROLLING_BACK revert, undrain, done", kind: Aborted, retry: RetryInterrupted},
		{name: "SWITCHING, the revert fails", state: rollback.Switching, attempts: 2, script: map[Action][]Result{Revert: {Failed}},
			want: "acquire-soon, ROLLING_BACK revert, quarantine, FAILED halt, done", kind: RevertFailed, halts: true,
			reason: "the agent stopped while switching units; the revert failed too: revert failed"},
		{name: "VERIFYING, healthy", state: rollback.Verifying, attempts: 2, want: "acquire-soon, load, VERIFYING verify, undrain, COMMITTED commit, done", kind: Committed},
		{name: "VERIFYING, a check fails", state: rollback.Verifying, attempts: 2, script: map[Action][]Result{Verify: {Failed}},
			want: "acquire-soon, load, VERIFYING verify, halt-early, ROLLING_BACK check-hold, revert, undrain, quarantine, FAILED halt, done", kind: Reverted, halts: true},
		{name: "VERIFYING, no lease", state: rollback.Verifying, attempts: 2, script: map[Action][]Result{AcquireSoon: {Failed}},
			want: "acquire-soon, acquire-soon, ROLLING_BACK revert, undrain, done", kind: Aborted, retry: RetryInterrupted,
			reason: "the agent stopped while verifying, and the lease to verify again could not be had: acquire-soon failed; reverted to abc1234"},
		{name: "VERIFYING, commit gone", state: rollback.Verifying, attempts: 2, script: map[Action][]Result{Load: {Failed}},
			want: "acquire-soon, load, acquire-soon, ROLLING_BACK revert, undrain, done", kind: Aborted, retry: RetryInterrupted},
		{name: "VERIFYING a second time", state: rollback.Verifying, attempts: 3, want: "acquire-soon, ROLLING_BACK revert, undrain, done", kind: Aborted,
			reason: "the agent stopped twice while verifying; reverted to abc1234", retry: RetryInterrupted},
		{name: "ROLLING_BACK after a failed check", state: rollback.RollingBack, step: "verify", attempts: 2,
			want: "acquire-soon, halt-early, ROLLING_BACK check-hold, revert, undrain, quarantine, FAILED halt, done", kind: Reverted, halts: true, reason: "check failed"},
		{name: "ROLLING_BACK after an interruption", state: rollback.RollingBack, step: StepInterrupted, attempts: 2,
			want: "acquire-soon, ROLLING_BACK revert, undrain, done", kind: Aborted, retry: RetryInterrupted, reason: "check failed; reverted to abc1234"},
		{name: "COMMITTED", state: rollback.Committed, attempts: 2, want: "commit, done", kind: Committed},
		{name: "FAILED after the revert", state: rollback.Failed, step: "verify", attempts: 2, reverted: true, want: "quarantine, FAILED halt, done", kind: Reverted, halts: true, reason: "check failed"},
		{name: "FAILED before the revert", state: rollback.Failed, step: "verify", attempts: 2,
			want: "quarantine, FAILED halt, acquire-soon, revert, undrain, done", kind: Reverted, halts: true, reason: "check failed"},
		{name: "FAILED, and the revert keeps stopping the agent", state: rollback.Failed, step: "verify", attempts: 2*MaxAttempts + 1,
			want: "quarantine, FAILED halt, done", kind: RevertFailed, halts: true},
		{name: "ABORTED", state: rollback.Aborted, attempts: 2, want: "done", kind: Aborted},
		// The loop guard, after MaxAttempts starts.
		{name: "guard: SWITCHING", state: rollback.Switching, attempts: MaxAttempts + 1, want: "acquire-soon, revert, undrain, done", kind: Aborted,
			reason: "the agent stopped 3 times during this transaction (last in SWITCHING); reverted to abc1234", retry: RetryInterrupted},
		{name: "guard: COMMITTED", state: rollback.Committed, attempts: MaxAttempts + 1, want: "commit, done", kind: Committed},
		{name: "guard: ROLLING_BACK after a failed check", state: rollback.RollingBack, step: "verify", attempts: MaxAttempts + 1,
			want: "quarantine, FAILED halt, acquire-soon, revert, undrain, done", kind: Reverted, halts: true,
			reason: "the agent stopped 3 times during this transaction (last in ROLLING_BACK); reverting after: check failed"},
		{name: "guard: FAILED", state: rollback.Failed, step: "verify", attempts: MaxAttempts + 1, reverted: true, want: "quarantine, FAILED halt, done", kind: Reverted, halts: true},
		{name: "guard: STAGED", state: rollback.Staged, attempts: MaxAttempts + 1, want: "done", kind: Aborted, retry: RetryInterrupted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			txn := &rollback.Txn{From: "abc1234abc1234", State: tt.state, Step: tt.step, Reason: "check failed", Attempts: tt.attempts, Reverted: tt.reverted,
				History: []rollback.Step{{State: rollback.Prepared}, {State: tt.state}}}
			if tt.state.Touched() {
				txn.History = []rollback.Step{{State: rollback.Switching}, {State: tt.state}}
			}
			m := &Machine{Txn: txn, Drains: true}
			steps, o := play(t, m, m.Resume(), tt.script)
			check(t, steps, tt.want, o, Outcome{Kind: tt.kind, Retry: tt.retry, Halts: tt.halts, Reason: tt.reason})
		})
	}
}

// An interruption is never a failure: whatever state a transaction of a good release
// is interrupted in, and however often, it never ends quarantined or halting its group.
func TestInterruptionIsNotAFailure(t *testing.T) {
	states := []rollback.State{rollback.Prepared, rollback.Staged, rollback.Leased, rollback.Draining, rollback.Switching, rollback.Verifying, rollback.Committed}
	for _, st := range states {
		for attempts := 2; attempts <= MaxAttempts+2; attempts++ {
			txn := &rollback.Txn{State: st, Attempts: attempts, History: []rollback.Step{{State: st}}}
			m := &Machine{Txn: txn, Drains: true}
			steps, o := play(t, m, m.Resume(), nil)
			if o == nil || o.Kind == Reverted || o.Kind == RevertFailed || o.Halts || strings.Contains(strings.Join(steps, ","), "quarantine") {
				t.Errorf("%s, attempt %d: %v -> %+v", st, attempts, steps, o)
			}
		}
	}
}

func TestBlueGreenAnalysisAndMigrations(t *testing.T) {
	tests := []struct {
		name                      string
		blueGreen, analyzes, migr bool
		drains                    bool
		script                    map[Action][]Result
		want                      string
		kind                      Kind
		retry                     Retry
		halts                     bool
	}{
		{name: "bluegreen", blueGreen: true, kind: Committed,
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, confirm-hold, SWITCHING switch, VERIFYING verify, cutover, VERIFYING verify, retire, COMMITTED commit, done"},
		{name: "bluegreen: the new color fails before any client reaches it", blueGreen: true, script: map[Action][]Result{Verify: {Failed}}, kind: Reverted, halts: true,
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, confirm-hold, SWITCHING switch, VERIFYING verify, halt-early, ROLLING_BACK check-hold, revert, quarantine, FAILED halt, done"},
		{name: "bluegreen: the new color does not come up in the balancer", blueGreen: true, script: map[Action][]Result{Cutover: {Failed}}, kind: Reverted, halts: true,
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, confirm-hold, SWITCHING switch, VERIFYING verify, cutover, halt-early, ROLLING_BACK check-hold, revert, quarantine, FAILED halt, done"},
		{name: "bluegreen: the soak fails, switched back", blueGreen: true, script: map[Action][]Result{Verify: {OK, Failed}}, kind: Reverted, halts: true,
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, confirm-hold, SWITCHING switch, VERIFYING verify, cutover, VERIFYING verify, halt-early, ROLLING_BACK check-hold, revert, quarantine, FAILED halt, done"},
		{name: "bluegreen: the old color's sessions cut at the bound", blueGreen: true, script: map[Action][]Result{Retire: {Failed}}, kind: Committed,
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, confirm-hold, SWITCHING switch, VERIFYING verify, cutover, VERIFYING verify, retire, COMMITTED commit, done"},
		{name: "analysis", analyzes: true, drains: true, kind: Committed,
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, DRAINING check-hold, drain, confirm-hold, SWITCHING switch, VERIFYING verify, undrain, ANALYZING analyze, COMMITTED commit, done"},
		{name: "analysis fails: drained again, reverted", analyzes: true, drains: true, script: map[Action][]Result{Analyze: {Failed}}, kind: Reverted, halts: true,
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, DRAINING check-hold, drain, confirm-hold, SWITCHING switch, VERIFYING verify, undrain, ANALYZING analyze, halt-early, ROLLING_BACK check-hold, drain, revert, undrain, quarantine, FAILED halt, done"},
		{name: "bluegreen with analysis: a failure switches back", blueGreen: true, analyzes: true, script: map[Action][]Result{Analyze: {Failed}}, kind: Reverted, halts: true,
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, confirm-hold, SWITCHING switch, VERIFYING verify, cutover, VERIFYING verify, ANALYZING analyze, halt-early, ROLLING_BACK check-hold, revert, quarantine, FAILED halt, done"},
		{name: "expand migrations: run before the drain", migr: true, drains: true, kind: Committed,
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, migrate, DRAINING check-hold, drain, confirm-hold, SWITCHING switch, VERIFYING verify, undrain, COMMITTED commit, done"},
		{name: "expand migrations without a load balancer", migr: true, kind: Committed,
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, migrate, confirm-hold, SWITCHING switch, VERIFYING verify, COMMITTED commit, done"},
		{name: "a migration failed, was interrupted or changed: the gate holds the host, no backoff", migr: true, drains: true, script: map[Action][]Result{Migrate: {Failed}}, kind: Aborted, retry: NoRetry,
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, migrate, done"},
		{name: "the ledger out of reach: tried again after a backoff", migr: true, drains: true, script: map[Action][]Result{Migrate: {HostTrouble}}, kind: Aborted, retry: RetryTrouble,
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, migrate, done"},
		{name: "stopped while migrating: never drained", migr: true, drains: true, script: map[Action][]Result{Migrate: {Stopped}}, kind: Aborted, retry: NoRetry,
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, migrate, done"},
		{name: "the hold lost after the migrations: not drained", migr: true, drains: true, script: map[Action][]Result{CheckHold: {OK, Failed}}, kind: Aborted, retry: NoRetry,
			want: "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, migrate, DRAINING check-hold, done"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &Machine{Txn: &rollback.Txn{}, Drains: tt.drains, BlueGreen: tt.blueGreen, Analyzes: tt.analyzes, Migrates: tt.migr}
			steps, o := play(t, m, m.Begin(), tt.script)
			check(t, steps, tt.want, o, Outcome{Kind: tt.kind, Retry: tt.retry, Halts: tt.halts})
		})
	}
}

// A crash resumes ANALYZING, and a bluegreen transaction interrupted after its cutover
// reverts (switches back) without quarantining.
func TestResumeAnalysisAndCutover(t *testing.T) {
	txn := &rollback.Txn{State: rollback.Analyzing, Attempts: 2, History: []rollback.Step{{State: rollback.Switching}, {State: rollback.Analyzing}}}
	m := &Machine{Txn: txn, Analyzes: true}
	steps, o := play(t, m, m.Resume(), nil)
	if got := strings.Join(steps, ", "); got != "acquire-soon, load, ANALYZING analyze, COMMITTED commit, done" || o.Kind != Committed {
		t.Fatalf("resumed ANALYZING: %s -> %+v", got, o)
	}
	txn = &rollback.Txn{State: rollback.Verifying, Attempts: 2, CutOver: true, History: []rollback.Step{{State: rollback.Switching}, {State: rollback.Verifying}}}
	m = &Machine{Txn: txn, BlueGreen: true}
	steps, o = play(t, m, m.Resume(), nil)
	if got := strings.Join(steps, ", "); got != "acquire-soon, load, VERIFYING verify, retire, COMMITTED commit, done" || o.Kind != Committed {
		t.Fatalf("resumed the soak: %s -> %+v", got, o)
	}
}

// An analysis that cannot judge the release (Prometheus down, no traffic) blames no
// one: the host leaves its balancers, goes back, and tries the commit again later.
func TestInconclusiveAnalysis(t *testing.T) {
	m := &Machine{Txn: &rollback.Txn{From: "abc1234abc1234"}, Drains: true, Analyzes: true}
	steps, o := play(t, m, m.Begin(), map[Action][]Result{Analyze: {HostTrouble}})
	want := "PREPARED stage, STAGED acquire, LEASED check-hold, look-again, DRAINING check-hold, drain, confirm-hold, SWITCHING switch, VERIFYING verify, undrain, ANALYZING analyze, drain, ROLLING_BACK revert, undrain, done"
	if got := strings.Join(steps, ", "); got != want {
		t.Fatalf("steps\n got %s\nwant %s", got, want)
	}
	if o.Kind != Aborted || o.Retry != RetryInterrupted || o.Halts || o.Reason != "analyze host-trouble; reverted to abc1234" {
		t.Fatalf("outcome %+v, want aborted, retried later, not halted", o)
	}
}
