package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/baton-fleet/baton/core"
	"github.com/baton-fleet/baton/fleet"
	"github.com/baton-fleet/baton/lease"
	"github.com/baton-fleet/baton/rollback"
)

// Host is one simulated host and its agent. What survives a crash is its disk (the
// persisted transaction, the last good commit, the quarantine, the unit files) and
// its place in the load balancer; the agent's memory (its etcd session, the core's
// machine, the backoff) does not.
type Host struct {
	w    *World
	name string
	up   bool
	life int // counts the agent's starts: a callback of an earlier life is dropped

	// On disk.
	txn        *rollback.Txn // the persisted record, nil when no transaction is open
	lastGood   string
	quarantine map[string]bool
	units      string // the commit whose unit files are installed (what runs)
	drained    bool   // out of the load balancer (HAProxy keeps it across a crash)

	// In the agent's memory.
	m         *core.Machine
	live      *rollback.Txn // the transaction the machine works on
	backoff   core.Backoff
	silence   core.Silence
	session   int64         // the etcd lease of the slot, 0 when none
	token     int64         // the slot key's create revision, 0 when none
	heldUntil time.Duration // the hold is certain until then, by the last keep-alive
	switched  bool          // between its switch and its verdict, in this life

	// poison, until poisonUntil, crashes the agent each time it persists that state:
	// a step that kills it every time (an OOM, a hang the watchdog ends).
	poison      rollback.State
	poisonUntil time.Duration
	// touchedSince is when the open transaction first reached a state that may have
	// changed the host, -1 when it has not.
	touchedSince time.Duration
	// rate is how fast the host's clock runs against etcd's (1: the same; 0.8: it
	// counts 0.8 s while etcd counts 1 s): the hold it measures locally lasts longer.
	rate float64
}

// local is how long d, measured on the host's clock, lasts in real time.
func (h *Host) local(d time.Duration) time.Duration {
	return time.Duration(float64(d) / h.rate)
}

// after runs fn after d in this life of the agent only.
func (h *Host) after(d time.Duration, fn func()) {
	life := h.life
	h.w.clock.After(d, func() {
		if h.up && h.life == life {
			fn()
		}
	})
}

// start starts the agent: it resumes an open transaction, or polls.
func (h *Host) start() {
	h.life++
	h.up = true
	h.m, h.live, h.session, h.token, h.switched = nil, nil, 0, 0, false
	h.backoff, h.silence = core.Backoff{}, core.Silence{}
	if h.txn == nil {
		h.after(h.w.between(0, pollEvery), h.poll)
		return
	}
	t := clone(h.txn)
	t.Attempts++
	h.txn = clone(t)
	h.w.tracef(h.name, "resume %s in %s (attempt %d)", short(t.To), t.State, t.Attempts)
	h.live = t
	h.m = &core.Machine{Txn: t, Drains: true}
	h.exec(h.m.Resume())
}

// crash stops the host for down, then starts its agent again.
func (h *Host) crash(down time.Duration) {
	if !h.up {
		return
	}
	h.w.tracef(h.name, "fault: crash, down for %v (in %s)", down, h.state())
	h.up, h.switched = false, false
	h.life++
	h.w.clock.After(down, func() {
		h.w.tracef(h.name, "starts again")
		h.start()
	})
}

func (h *Host) state() rollback.State {
	if h.txn == nil {
		return "IDLE"
	}
	return h.txn.State
}

// keepAlive renews the session's lease every third of its TTL while the agent runs and
// has a session (takeSlot starts it).
func (h *Host) keepAlive() {
	h.after(ttl/3, func() {
		if h.session == 0 {
			return
		}
		sent := h.w.clock.Elapsed()
		_, err := h.w.etcd.KeepAlive(h.name, h.session)
		switch {
		case err == nil:
			h.heldUntil = sent + h.local(ttl-time.Second)
		case errors.Is(err, ErrLeaseNotFound):
			h.w.tracef(h.name, "session %d gone", h.session)
			h.session, h.token = 0, 0
			return
		}
		h.keepAlive()
	})
}

// poll looks at the branch's head and starts a transaction when it may.
func (h *Host) poll() {
	defer func() {
		if h.m == nil {
			h.after(pollEvery, h.poll)
		}
	}()
	head := h.w.head()
	now := Epoch.Add(h.w.clock.Elapsed())
	if h.txn != nil || head.id == h.lastGood || h.quarantine[head.id] || h.backoff.Waiting(head.id, now) != "" {
		return
	}
	if v, err := h.gate(head); err != nil || !v.OK {
		return
	}
	t := &rollback.Txn{ID: fmt.Sprintf("%s-%d", h.name, h.w.res.Steps), Host: h.name, Group: group, From: h.lastGood, To: head.id,
		Services: []string{service}, Target: rollback.LastGood{Revision: head.id, Services: map[string]rollback.ServiceRecord{
			service: {Version: head.rel.Version, Fingerprint: head.rel.Fingerprint}}}}
	h.w.tracef(h.name, "upgrade %s -> %s", short(t.From), short(t.To))
	h.live = t
	h.m = &core.Machine{Txn: t, Drains: true}
	h.exec(h.m.Begin())
}

// gate reads the fleet state and asks core.Gate whether the host may start c.
func (h *Host) gate(c commit) (fleet.Verdict, error) {
	res, err := h.w.etcd.Txn(h.name, nil, []Op{OpGet(prefix+"/", true)}, nil)
	if err != nil {
		return fleet.Verdict{}, err
	}
	kvs := make([]*mvccpb.KeyValue, 0, len(res.Results[0].KVs))
	var holding []string
	for _, kv := range res.Results[0].KVs {
		kvs = append(kvs, &mvccpb.KeyValue{Key: []byte(kv.Key), Value: kv.Value, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Lease: kv.Lease})
	}
	snap := fleet.ReadSnapshot(prefix, res.Revision, kvs)
	var keys []lease.SlotKey
	for _, kv := range kvs {
		if host, ok := strings.CutPrefix(string(kv.Key), slotsPrefix); ok {
			keys = append(keys, lease.SlotKey{Host: host, CreateRevision: kv.CreateRevision})
		}
	}
	for _, hd := range lease.Rank(keys, h.w.cfg.MaxParallel) {
		if hd.Holding {
			holding = append(holding, hd.Host)
		}
	}
	now := Epoch.Add(h.w.clock.Elapsed())
	return core.Gate(snap, h.w.group, core.Move{Commit: c.id, Host: h.name, Releases: []fleet.Release{c.rel}}, holding, &h.silence, now), nil
}

// exec persists s's state and performs its action, or ends the transaction.
func (h *Host) exec(s core.Step) {
	h.w.res.Steps++
	h.w.tracef(h.name, "%s", s)
	if s.Persist != "" {
		h.live.State = s.Persist
		h.live.History = append(h.live.History, rollback.Step{State: s.Persist})
		h.txn = clone(h.live)
		if s.Persist.Touched() && h.touchedSince < 0 {
			h.touchedSince = h.w.clock.Elapsed()
		}
		if s.Persist == h.poison && h.w.clock.Elapsed() < h.poisonUntil {
			h.crash(h.w.between(time.Second, 10*time.Second))
			return
		}
	}
	if s.Do.Ended() {
		h.end(s)
		return
	}
	h.perform(s.Do)
}

// finish hands the core the event of the action under way, after d.
func (h *Host) finish(d time.Duration, do core.Action, r core.Result, why string) {
	h.after(d, func() {
		h.exec(h.m.Next(core.Event{Did: do, Result: r, Reason: why}))
	})
}

func clone(t *rollback.Txn) *rollback.Txn {
	c := *t
	c.History = slices.Clone(t.History)
	return &c
}

// jsonOf is v as JSON: the records are plain structs, which always encode.
func jsonOf(v any) []byte {
	data, _ := json.Marshal(v)
	return data
}

// put writes v as JSON at key, fenced by the host's slot when fenced.
func (h *Host) put(key string, v any, fenced bool) error {
	data := jsonOf(v)
	var cmps []Cmp
	if fenced {
		if h.token == 0 {
			return fleet.ErrFenced
		}
		cmps = []Cmp{Compare(fleet.SlotKey(prefix, group, h.name), TargetCreate, Equal, h.token)}
	}
	res, err := h.w.etcd.Txn(h.name, cmps, []Op{OpPut(key, data, 0)}, nil)
	if err == nil && !res.Succeeded {
		err = fleet.ErrFenced
	}
	return err
}

// record writes the host's record in the fleet state.
func (h *Host) record(state, target string, fenced bool) error {
	return h.put(fleet.HostKey(prefix, h.name), fleet.Host{Host: h.name, Group: group, Commit: h.lastGood, Target: target, State: state,
		Time: Epoch.Add(h.w.clock.Elapsed())}, fenced)
}
