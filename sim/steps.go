package sim

import (
	"time"

	"github.com/baton-fleet/baton/core"
	"github.com/baton-fleet/baton/fleet"
	"github.com/baton-fleet/baton/rollback"
)

// perform does the action do with simulated I/O, and hands the core its event when it
// ends.
func (h *Host) perform(do core.Action) {
	w, t := h.w, h.live
	ok := func(d time.Duration) { h.finish(d, do, core.OK, "") }
	switch do {
	case core.Stage:
		if w.rng.IntN(50) == 0 {
			h.finish(w.between(time.Second, 3*time.Second), do, core.HostTrouble, "disk full")
			return
		}
		ok(w.between(time.Second, 3*time.Second))
	case core.Acquire:
		h.acquire(time.Duration(1<<62), do)
	case core.AcquireSoon:
		h.acquire(30*time.Second, do)
	case core.CheckHold:
		h.checkHold(func(err error) { h.finishErr(0, do, err) })
	case core.LookAgain:
		h.lookAgain()
	case core.Drain:
		h.drained = true
		if w.rng.IntN(4) == 0 {
			ok(w.between(5*time.Second, 30*time.Second)) // a slow drain: sessions finish
			return
		}
		ok(w.between(100*time.Millisecond, 2*time.Second))
	case core.ConfirmHold:
		h.confirmHold()
	case core.Switch:
		h.switchUnits()
		ok(time.Second)
	case core.Load:
		ok(0)
	case core.Verify:
		h.verify()
	case core.Undrain:
		h.drained = false
		ok(0)
	case core.Commit:
		h.lastGood, h.switched = t.To, false
		ok(0)
	case core.Revert:
		h.units, h.switched = h.lastGood, false
		ok(2 * time.Second)
	case core.Quarantine:
		if w.commitOf(t.To).good {
			w.violate("%s quarantined the good release %s (%s: %s)", h.name, w.commitOf(t.To).rel.Version, t.Step, t.Reason)
		}
		h.quarantine[t.To] = true
		ok(0)
	case core.Halt:
		h.halt(true)
	case core.HaltEarly:
		h.halt(false)
	default:
		panic("sim: no simulation of " + string(do))
	}
}

// finishErr ends the action with OK or, on err, Failed.
func (h *Host) finishErr(d time.Duration, do core.Action, err error) {
	if err != nil {
		h.finish(d, do, core.Failed, err.Error())
		return
	}
	h.finish(d, do, core.OK, "")
}

// acquire takes a slot of the group's lease (lease.Etcd's way: a key bound to the
// session, first in line by its create revision), waiting at most bound.
func (h *Host) acquire(bound time.Duration, do core.Action) {
	deadline := h.now() + bound
	var try func()
	try = func() {
		h.takeSlot(func(held bool, err error) {
			switch {
			case held:
				h.finish(0, do, core.OK, "")
			case do == core.Acquire && h.superseded():
				// The agent's watch ends the wait for the newer commit, whatever the
				// lease's calls meet meanwhile.
				h.w.res.Superseded++
				h.supersededBy = h.w.head().id
				h.finish(0, do, core.Superseded, "superseded by "+short(h.supersededBy))
			case err != nil && do == core.Acquire:
				h.finish(0, do, core.Failed, err.Error())
			case h.now() >= deadline:
				h.finish(0, do, core.Failed, "no slot within the bound")
			default:
				h.after(time.Second, try)
			}
		})
	}
	try()
}

// superseded says whether a newer commit than the transaction's came while the host
// waited for the lease, one it would go to (the agent's supersedes: not quarantined
// here; every simulated commit loads and changes the release).
func (h *Host) superseded() bool {
	head := h.w.head()
	return head.id != h.live.To && head.id != h.lastGood && !h.quarantine[head.id]
}

// confirmHold is the agent's check right before the switch: the hold (Check), then
// the SWITCHING record, fenced by the slot so that etcd refuses it once the slot is
// not this host's.
func (h *Host) confirmHold() {
	h.checkHold(func(err error) {
		if err != nil {
			h.finishErr(0, core.ConfirmHold, err)
			return
		}
		h.record(string(rollback.Switching), h.live.To, true, func(err error) { h.finishErr(0, core.ConfirmHold, err) })
	})
}

// lookAgain is the agent's look under the lease: the gate, then the LEASED record.
func (h *Host) lookAgain() {
	h.gate(h.w.commitOf(h.live.To), func(v fleet.Verdict, err error) {
		switch {
		case err != nil:
			h.finish(0, core.LookAgain, core.Failed, "read the fleet state: "+err.Error())
		case !v.OK:
			h.finish(0, core.LookAgain, core.Failed, v.Why)
		default:
			h.record(string(rollback.Leased), h.live.To, true, func(error) { h.finish(0, core.LookAgain, core.OK, "") })
		}
	})
}

// switchUnits installs the target's units and restarts: the host runs the release.
func (h *Host) switchUnits() {
	w, c := h.w, h.w.commitOf(h.live.To)
	h.units, h.switched = c.id, true
	w.checkSwitch(h, c)
}

// verify runs the release's checks: a good one passes for minHealthy (some start
// slowly), a bad one fails within healthyDeadline.
func (h *Host) verify() {
	w, c := h.w, h.w.commitOf(h.live.To)
	if c.good {
		h.finish(minHealthy+w.between(0, 5*time.Second), core.Verify, core.OK, "")
		return
	}
	h.after(w.between(2*time.Second, healthyDeadline), func() {
		if _, seen := w.verdicts[c.rel.Version]; !seen {
			w.verdicts[c.rel.Version] = &verdict{host: h.name, at: w.clock.Elapsed(), chance: -1}
		}
		h.exec(h.m.Next(core.Event{Did: core.Verify, Result: core.Failed, Reason: "check health failed 3 times in a row"}))
	})
}

// halt writes the group's halt on the commit and its release, unfenced. After a
// failure the core asks again, a second later (again), or goes on (the early try).
func (h *Host) halt(again bool) {
	t, c := h.live, h.w.commitOf(h.live.To)
	if c.good {
		h.w.violate("%s halts the group on the good release %s (%s: %s)", h.name, c.rel.Version, t.Step, t.Reason)
	}
	f := fleet.Failure{Commit: t.To, Host: h.name, Reason: t.Reason}
	rf := f
	rf.Release = c.rel.Service + " " + c.rel.Version
	ops := []Op{OpPut(fleet.FailedKey(prefix, group, t.To), jsonOf(f), 0), OpPut(fleet.BadKey(prefix, group, c.rel), jsonOf(rf), 0)}
	h.call("halt the group", etcdCallTimeout, func() error {
		_, err := h.w.etcd.Txn(h.name, nil, ops, nil)
		return err
	}, func(err error) {
		do, pause := core.HaltEarly, time.Duration(0)
		if again {
			do, pause = core.Halt, time.Second
		}
		if err != nil {
			h.finish(pause, do, core.Failed, err.Error())
			return
		}
		h.finish(0, do, core.OK, "")
	})
}

// end closes the transaction as the agent does: the record written (IDLE, so that no
// host takes it for stranded), the slot released (or its session abandoned), the
// backoff counted, the transaction closed. Leave keeps the record for the next start.
func (h *Host) end(s core.Step) {
	t := h.live
	if s.Do == core.Leave {
		h.crash(time.Second) // the agent stops; systemd starts it again
		return
	}
	o := s.Outcome
	h.w.tracef(h.name, "ends %s: %s %s", short(t.To), o.Kind, o.Reason)
	h.record("IDLE", "", false, func(error) {
		h.release(func() {
			if o.Retry != core.NoRetry {
				h.backoff.Add(t.To, Epoch.Add(h.w.clock.Elapsed()), o.Reason)
			}
			next := pollEvery
			if h.supersededBy != "" {
				next = 0 // the agent's loop starts the newer commit at once
			}
			h.txn, h.live, h.m, h.switched, h.touchedSince, h.supersededBy = nil, nil, nil, false, -1, ""
			h.after(next, h.poll)
		})
	})
}
