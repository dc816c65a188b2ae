package sim

import (
	"errors"
	"strings"
	"time"

	"github.com/baton-fleet/baton/core"
	"github.com/baton-fleet/baton/fleet"
	"github.com/baton-fleet/baton/lease"
	"github.com/baton-fleet/baton/rollback"
)

// slotsPrefix is where the group's slot keys are, one per host in line.
var slotsPrefix = prefix + "/groups/" + group + "/slots/"

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
		h.finishErr(0, do, h.checkHold())
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
		err := h.checkHold()
		if err == nil {
			err = h.record(string(rollback.Switching), t.To, true)
		}
		h.finishErr(0, do, err)
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
	deadline := h.w.clock.Elapsed() + bound
	var try func()
	try = func() {
		held, err := h.takeSlot()
		switch {
		case held:
			h.finish(0, do, core.OK, "")
		case err != nil && do == core.Acquire:
			h.finish(0, do, core.Failed, err.Error())
		case h.w.clock.Elapsed() >= deadline:
			h.finish(0, do, core.Failed, "no slot within the bound")
		default:
			h.after(time.Second, try)
		}
	}
	try()
}

// takeSlot puts the host's slot key (once) and says whether it is among the first N.
func (h *Host) takeSlot() (bool, error) {
	e, key := h.w.etcd, fleet.SlotKey(prefix, group, h.name)
	if h.session == 0 {
		id, err := e.Grant(h.name, ttl)
		if err != nil {
			return false, err
		}
		h.session, h.heldUntil = id, h.w.clock.Elapsed()+h.local(ttl-time.Second)
		h.keepAlive()
	}
	if h.token == 0 {
		res, err := e.Txn(h.name, []Cmp{Compare(key, TargetCreate, Equal, 0)}, []Op{OpPut(key, []byte(h.name), h.session)}, []Op{OpGet(key, false)})
		if err != nil {
			return false, err
		}
		if res.Succeeded {
			h.token = res.Revision
		} else if kvs := res.Results[0].KVs; len(kvs) > 0 && kvs[0].Lease == h.session {
			h.token = kvs[0].CreateRevision
		} else {
			return false, errors.New("the slot key is bound to another session")
		}
	}
	res, err := e.Txn(h.name, nil, []Op{OpGet(slotsPrefix, true)}, nil)
	if err != nil {
		return false, err
	}
	var keys []lease.SlotKey
	for _, kv := range res.Results[0].KVs {
		keys = append(keys, lease.SlotKey{Host: strings.TrimPrefix(kv.Key, slotsPrefix), CreateRevision: kv.CreateRevision})
	}
	for _, hd := range lease.Rank(keys, h.w.cfg.MaxParallel) { // as the etcd lease ranks its line
		if hd.Host == h.name {
			return hd.CreateRevision == h.token && hd.Holding, nil
		}
	}
	h.token = 0 // gone: the session expired
	return false, errors.New("slot key gone")
}

// checkHold is lease.Etcd.Check: the hold is certain by the local clock, and the slot
// key is still this session's.
func (h *Host) checkHold() error {
	if h.token == 0 || h.session == 0 {
		return errors.New("no slot held")
	}
	if h.w.clock.Elapsed() >= h.heldUntil {
		return errors.New("the hold is not certain: no keep-alive answered within the TTL")
	}
	kv, ok, err := h.w.etcd.Get(h.name, fleet.SlotKey(prefix, group, h.name))
	switch {
	case err != nil:
		return err
	case !ok || kv.CreateRevision != h.token || kv.Lease != h.session:
		return errors.New("slot key gone")
	}
	return nil
}

// lookAgain is the agent's look under the lease: the gate, then the LEASED record.
func (h *Host) lookAgain() {
	v, err := h.gate(h.w.commitOf(h.live.To))
	switch {
	case err != nil:
		h.finish(0, core.LookAgain, core.Failed, "read the fleet state: "+err.Error())
	case !v.OK:
		h.finish(0, core.LookAgain, core.Failed, v.Why)
	default:
		_ = h.record(string(rollback.Leased), h.live.To, true)
		h.finish(0, core.LookAgain, core.OK, "")
	}
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
	_, err := h.w.etcd.Txn(h.name, nil, []Op{
		OpPut(fleet.FailedKey(prefix, group, t.To), jsonOf(f), 0),
		OpPut(fleet.BadKey(prefix, group, c.rel), jsonOf(rf), 0),
	}, nil)
	do, pause := core.HaltEarly, time.Duration(0)
	if again {
		do, pause = core.Halt, time.Second
	}
	if err != nil {
		h.finish(pause, do, core.Failed, err.Error())
		return
	}
	h.finish(0, do, core.OK, "")
}

// end closes the transaction: the slot released (or the session abandoned), the
// record written, the backoff counted. Leave keeps the record for the next start.
func (h *Host) end(s core.Step) {
	t := h.live
	if s.Do == core.Leave {
		h.crash(time.Second) // the agent stops; systemd starts it again
		return
	}
	o := s.Outcome
	h.w.tracef(h.name, "ends %s: %s %s", short(t.To), o.Kind, o.Reason)
	if h.token != 0 {
		if _, err := h.w.etcd.Delete(h.name, fleet.SlotKey(prefix, group, h.name)); err != nil {
			// lease.Etcd abandons the session: the slot expires within the TTL.
			h.session = 0
		}
		h.token = 0
	}
	if o.Retry != core.NoRetry {
		h.backoff.Add(t.To, Epoch.Add(h.w.clock.Elapsed()), o.Reason)
	}
	_ = h.record("IDLE", "", false)
	h.txn, h.live, h.m, h.switched, h.touchedSince = nil, nil, nil, false, -1
	h.after(pollEvery, h.poll)
}
