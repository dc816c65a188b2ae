package core

import (
	"fmt"

	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/rollback"
)

// then chains: the step s, and after its event, what next decides.
func (m *Machine) then(s Step, next func(Event) Step) Step {
	m.after = next
	return s
}

// undrainThen rejoins the load balancers (a failure is the agent's to log), then
// goes on with next.
func (m *Machine) undrainThen(next func() Step) Step {
	if !m.Drains {
		return next()
	}
	return m.then(Step{Do: Undrain}, func(Event) Step { return next() })
}

// abort ends a transaction that did not touch the host, or that an interruption made
// revert: the commit is not quarantined, and the next poll may try it again.
func (m *Machine) abort(why string) Step {
	return m.done(&Outcome{Kind: Aborted, Reason: why})
}

// trouble ends a transaction that this host, not the release, could not carry out:
// nothing was switched, the commit is not quarantined and the group not halted; the
// host tries it again after a backoff.
func (m *Machine) trouble(step, why string) Step {
	return m.done(&Outcome{Kind: Aborted, Step: step, Reason: fmt.Sprintf("could not %s: %s", step, why), Retry: RetryTrouble})
}

// done ends the transaction with o.
func (m *Machine) done(o *Outcome) Step {
	m.after = nil
	return Step{Do: Done, Outcome: o}
}

// leave stops with the record open: the agent is stopping, or could not persist a
// state after touching the host; the next start resumes from the record.
func (m *Machine) leave() Step {
	m.after = nil
	return Step{Do: Leave}
}

// revert puts the last good revision back after the release failed at step: its
// checks, or a switch systemd refused. The hold is checked first, for the log only:
// the host is out of its load balancer and only goes back to what it ran, so the
// revert goes on without a certain hold.
func (m *Machine) revert(step, reason, output string) Step {
	t := m.Txn
	t.Step, t.Reason, t.Output = step, reason, output
	revert := func(Event) Step {
		return m.then(Step{Do: Revert}, m.reverted(func() Step { return m.fail(t.Step, t.Reason, t.Output) }))
	}
	drain := func(ev Event) Step {
		if step == string(Analyze) && m.Drains {
			// The host served the release: it leaves its load balancers again first.
			return m.then(Step{Do: Drain}, revert)
		}
		return revert(ev)
	}
	rollingBack := func(Event) Step {
		return m.then(Step{Do: CheckHold, Persist: rollback.RollingBack}, drain)
	}
	if !Switched(t) {
		return rollingBack(Event{})
	}
	// The verdict is known: it goes to the fleet first, in one try, before anything
	// else is written, so that a host that dies while it reverts (or each time it
	// records that it does) does not take it along: the fleet simulation found a bad
	// release started on a second host both ways. The halt is asked for again, until
	// written, once the host is back.
	return m.then(Step{Do: HaltEarly}, rollingBack)
}

// reverted handles a revert's result: back and healthy, the host rejoins its load
// balancers and next goes on; a revert that failed leaves the host out of them, needing
// an operator, and fails the transaction.
func (m *Machine) reverted(next func() Step) func(Event) Step {
	return func(ev Event) Step {
		t := m.Txn
		if ev.Result != OK {
			t.RevertFailed = true
			t.Reason = fmt.Sprintf("%s; the revert failed too: %s", t.Reason, ev.Reason)
			return m.fail(t.Step, t.Reason, t.Output)
		}
		t.Reverted = true
		return m.undrainThen(next)
	}
}

// fail ends a transaction whose release failed: the commit is quarantined on this host
// and, when the release ran here (Switched), its group halts on it. A halt that cannot
// be written is asked for again (the slot held meanwhile); a stop before it is
// written leaves the transaction FAILED, and the next start halts again.
func (m *Machine) fail(step, reason, output string) Step {
	return m.failThen(step, reason, output, nil)
}

// failThen is fail, with last (when set) run between the halt and the ending.
func (m *Machine) failThen(step, reason, output string, last func(end Step) Step) Step {
	t := m.Txn
	t.Step, t.Reason, t.Output = step, reason, output
	o := &Outcome{Kind: Reverted, Step: step, Reason: reason, Output: output, Check: t.Check, Halts: Switched(t)}
	if t.RevertFailed {
		o.Kind = RevertFailed
	}
	finish := func() Step {
		if last != nil {
			return last(Step{Do: Done, Outcome: o})
		}
		return m.done(o)
	}
	return m.then(Step{Do: Quarantine}, func(Event) Step {
		if !o.Halts {
			return finish().persist(rollback.Failed)
		}
		var halted func(Event) Step
		halted = func(ev Event) Step {
			switch ev.Result {
			case OK:
				return finish()
			case Stopped:
				return m.leave()
			}
			// Not written: asked again, the slot held meanwhile, so that no other
			// host starts the release before its halt is in the fleet state.
			return m.then(Step{Do: Halt}, halted)
		}
		return m.then(Step{Do: Halt, Persist: rollback.Failed}, halted)
	})
}

// persist sets the state s persists before its action.
func (s Step) persist(state rollback.State) Step {
	s.Persist = state
	return s
}

// GiveUp ends a transaction that was interrupted and is not resumed: interrupted in a
// step that cannot be resumed (SWITCHING, a second time in VERIFYING) or once too
// often (the loop guard). What it does depends on what the transaction knows of the
// release:
//
//   - its checks passed (COMMITTED): the commit is recorded as the last good
//     revision, without the steps that kept stopping the agent;
//   - it failed its checks (a revert was under way, or it had FAILED): that verdict
//     stands, the commit is quarantined and halted, then the host is reverted one
//     last time, with FAILED persisted so that a revert that keeps stopping the agent
//     is not resumed again;
//   - otherwise nothing is known against the release: the host goes back to the last
//     good revision if it may have been touched, the transaction ends ABORTED, and the
//     host tries the commit again after a backoff.
func (m *Machine) GiveUp(why string) Step {
	t := m.Txn
	switch {
	case t.State == rollback.Committed:
		return m.then(Step{Do: Commit}, func(Event) Step {
			return m.done(&Outcome{Kind: Committed, After: why})
		})
	case t.State == rollback.Failed || (t.State == rollback.RollingBack && t.Step != StepInterrupted):
		reason := fmt.Sprintf("%s; reverting after: %s", why, t.Reason)
		return m.failed("recover", reason, t.Output)
	case t.State.Touched():
		return m.then(Step{Do: AcquireSoon}, func(Event) Step { return m.revertInterrupted(why) })
	}
	return m.done(&Outcome{Kind: Aborted, Reason: why, Retry: RetryInterrupted})
}

// failed finishes a failure found after the switch whose revert may not have
// happened (the loop guard persists FAILED before its last revert, or the host was
// still reverting): it is quarantined and halted, then the host is reverted once more
// unless its revert verified or failed already. A revert that keeps stopping the agent
// is given up after twice the loop guard's starts: the host then needs an operator.
func (m *Machine) failed(step, reason, output string) Step {
	t := m.Txn
	switch {
	case !t.State.Touched() || !Switched(t) || t.Reverted || t.RevertFailed:
		return m.fail(step, reason, output)
	case t.Attempts > 2*MaxAttempts:
		t.RevertFailed = true
		return m.fail(step, reason+fmt.Sprintf("; the revert stopped the agent %d times: the host needs an operator", t.Attempts-1), output)
	}
	return m.failThen(step, reason, output, m.revertLast)
}

// revertLast is one last revert before end, for a release that failed its checks and
// whose revert kept being interrupted: the transaction is FAILED by then, so a revert
// that stops the agent again is not resumed.
func (m *Machine) revertLast(end Step) Step {
	return m.then(Step{Do: AcquireSoon}, func(Event) Step {
		return m.then(Step{Do: Revert}, func(ev Event) Step {
			if ev.Result != OK {
				return end
			}
			m.Txn.Reverted = true
			return m.undrainThen(func() Step { return end })
		})
	})
}

// revertInterrupted reverts a host that an interruption left touched. Resumable: the
// state is persisted as an interrupted revert, so a crash during it reverts again at
// the next start, except at the loop guard, where it is not persisted again so that a
// crash at the same place does not stop every revert.
func (m *Machine) revertInterrupted(why string) Step {
	t := m.Txn
	revert := Step{Do: Revert}
	if t.Attempts <= MaxAttempts {
		t.Step, t.Reason = StepInterrupted, why
		revert.Persist = rollback.RollingBack
	}
	return m.then(revert, func(ev Event) Step {
		if ev.Result != OK {
			// The last good revision does not come back either: the host needs an
			// operator, and no other host should take the commit meanwhile.
			t.RevertFailed = true
			return m.fail("recover", fmt.Sprintf("%s; the revert failed too: %s", why, ev.Reason), "")
		}
		return m.undrainThen(func() Step {
			return m.done(&Outcome{Kind: Aborted, Reason: why + "; reverted to " + commitid.ShortOrNone(t.From), Retry: RetryInterrupted})
		})
	})
}

// Resume is the first step for a transaction that a crash left open, after the agent
// counted this start in Txn.Attempts:
//
//   - before SWITCHING nothing on the host changed: it aborts (undrained first), and
//     the next poll starts it afresh;
//   - in SWITCHING the host is half-switched and nothing was verified: it is reverted
//     and aborted (GiveUp);
//   - in VERIFYING it is verified once more under the lease, and committed or
//     reverted; interrupted there a second time, it is reverted and aborted;
//   - in ROLLING_BACK the revert goes on; COMMITTED and FAILED are finished.
//
// An interruption never counts as the release failing its checks.
func (m *Machine) Resume() Step {
	t := m.Txn
	if t.Attempts > MaxAttempts {
		return m.track(m.GiveUp(fmt.Sprintf("the agent stopped %d times during this transaction (last in %s)", t.Attempts-1, t.State)))
	}
	return m.track(m.resume())
}

func (m *Machine) resume() Step {
	t := m.Txn
	switch t.State {
	case rollback.Prepared, rollback.Staged, rollback.Leased, rollback.Aborted:
		return m.abort(fmt.Sprintf("the agent stopped in %s, before touching the host", t.State))
	case rollback.Draining:
		return m.undrainThen(func() Step { return m.abort(fmt.Sprintf("the agent stopped in %s, before touching the host", t.State)) })
	case rollback.Switching:
		return m.GiveUp("the agent stopped while switching units")
	case rollback.RollingBack:
		if t.Step == StepInterrupted {
			return m.GiveUp(t.Reason)
		}
		return m.then(Step{Do: AcquireSoon}, func(Event) Step { return m.revert("recover", t.Reason, t.Output) })
	case rollback.Verifying:
		return m.verifyAgain()
	case rollback.Analyzing:
		return m.analyzeAgain()
	case rollback.Committed:
		return m.then(Step{Do: Commit}, func(Event) Step { return m.done(&Outcome{Kind: Committed}) })
	case rollback.Failed:
		return m.failed(t.Step, t.Reason, t.Output)
	}
	return m.GiveUp(fmt.Sprintf("the transaction is in unknown state %q", t.State))
}

// analyzeAgain resumes ANALYZING: the checks had passed, so the analysis window runs
// again, under the lease, with the commit loaded again; interrupted there a second
// time, the host is reverted and the commit tried again later.
func (m *Machine) analyzeAgain() Step {
	if m.Txn.Attempts > 2 {
		return m.GiveUp("the agent stopped twice while analysing")
	}
	return m.then(Step{Do: AcquireSoon}, func(ev Event) Step {
		if ev.Result != OK {
			return m.GiveUp("the agent stopped while analysing, and the lease to analyse again could not be had: " + ev.Reason)
		}
		return m.then(Step{Do: Load}, func(ev Event) Step {
			if ev.Result != OK {
				return m.GiveUp("the agent stopped while analysing, and the commit could not be loaded again: " + ev.Reason)
			}
			return Step{Do: Analyze, Persist: rollback.Analyzing}
		})
	})
}

// verifyAgain resumes VERIFYING: under the lease (waiting for it only a bound), with
// the commit loaded again, the checks run once more.
func (m *Machine) verifyAgain() Step {
	if m.Txn.Attempts > 2 {
		return m.GiveUp("the agent stopped twice while verifying")
	}
	return m.then(Step{Do: AcquireSoon}, func(ev Event) Step {
		if ev.Result != OK {
			return m.GiveUp("the agent stopped while verifying, and the lease to verify again could not be had: " + ev.Reason)
		}
		return m.then(Step{Do: Load}, func(ev Event) Step {
			if ev.Result != OK {
				return m.GiveUp("the agent stopped while verifying, and the commit could not be loaded again: " + ev.Reason)
			}
			return Step{Do: Verify, Persist: rollback.Verifying}
		})
	})
}
