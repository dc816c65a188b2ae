package sim

import (
	"encoding/json"
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
	heldUntil time.Duration // the hold is certain until the host's clock (now) reads this
	switched  bool          // between its switch and its verdict, in this life
	// supersededBy is the newer commit that ended the transaction's lease wait,
	// "" when none did.
	supersededBy string

	// poison, until poisonUntil, crashes the agent each time it persists that state:
	// a step that kills it every time (an OOM, a hang the watchdog ends).
	poison      rollback.State
	poisonUntil time.Duration
	// pauseNext, when not 0, pauses the host for that long as its next etcd request
	// goes out (see call).
	pauseNext time.Duration
	// touchedSince is when the open transaction first reached a state that may have
	// changed the host, -1 when it has not.
	touchedSince time.Duration

	// The host's monotonic clock (see now): it read localAt when etcd's clock read
	// anchor, and runs at rate from there (1: as etcd's; 0.8: it counts 0.8 s while
	// etcd counts 1 s, so a hold measured on it lasts longer). While the host is
	// paused, anchor is ahead of etcd's clock and the host's stands still.
	localAt, anchor time.Duration
	rate            float64
}

// start starts the agent: it resumes an open transaction, or polls.
func (h *Host) start() {
	h.life++
	h.up = true
	h.m, h.live, h.session, h.token, h.switched, h.supersededBy = nil, nil, 0, 0, false, ""
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
	if !h.up || h.paused() {
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

// poll looks at the branch's head and starts a transaction when the gate lets it.
func (h *Host) poll() {
	head := h.w.head()
	now := Epoch.Add(h.w.clock.Elapsed())
	if h.txn != nil || head.id == h.lastGood || h.quarantine[head.id] || h.backoff.Waiting(head.id, now) != "" {
		h.after(pollEvery, h.poll)
		return
	}
	h.gate(head, func(v fleet.Verdict, err error) {
		if err != nil || !v.OK || h.txn != nil {
			h.after(pollEvery, h.poll)
			return
		}
		h.begin(head)
	})
}

// begin starts a transaction to c.
func (h *Host) begin(c commit) {
	t := &rollback.Txn{ID: fmt.Sprintf("%s-%d", h.name, h.w.res.Steps), Host: h.name, Group: group, From: h.lastGood, To: c.id,
		Services: []string{service}, Target: rollback.LastGood{Revision: c.id, Services: map[string]rollback.ServiceRecord{
			service: {Version: c.rel.Version, Fingerprint: c.rel.Fingerprint}}}}
	h.w.tracef(h.name, "upgrade %s -> %s", short(t.From), short(t.To))
	h.live = t
	h.m = &core.Machine{Txn: t, Drains: true}
	h.exec(h.m.Begin())
}

// gate reads the fleet state and asks core.Gate whether the host may start c.
func (h *Host) gate(c commit, done func(fleet.Verdict, error)) {
	var res TxnResult
	h.call("read the fleet state", h.callTimeout(), func() (err error) {
		res, err = h.w.etcd.Txn(h.name, nil, []Op{OpGet(prefix+"/", true)}, nil)
		return err
	}, func(err error) {
		if err != nil {
			done(fleet.Verdict{}, err)
			return
		}
		done(h.decide(res, c), nil)
	})
}

// decide is core.Gate on the fleet state read in res, and the line of the group's
// lease in it.
func (h *Host) decide(res TxnResult, c commit) fleet.Verdict {
	s := h.w.sightAt(res)
	now := Epoch.Add(h.w.clock.Elapsed())
	return core.Gate(s.snap, h.w.group, core.Move{Commit: c.id, Host: h.name, Releases: []fleet.Release{c.rel}}, s.holding, &h.silence, now)
}

// sight is the fleet state as read at one revision: the snapshot and the holders of
// the group's slots. Hosts that read the same revision share it, parsed once
// (fleet.ReadSnapshot is pure; parsing is most of a seed's work).
type sight struct {
	rev     int64
	snap    *fleet.Snapshot
	holding []string
}

// sightAt returns the sight of res, a read of the whole fleet state.
func (w *World) sightAt(res TxnResult) *sight {
	if w.sight != nil && w.sight.rev == res.Revision {
		return w.sight
	}
	kvs := make([]*mvccpb.KeyValue, 0, len(res.Results[0].KVs))
	for _, kv := range res.Results[0].KVs {
		kvs = append(kvs, &mvccpb.KeyValue{Key: []byte(kv.Key), Value: kv.Value, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Lease: kv.Lease})
	}
	s := &sight{rev: res.Revision, snap: fleet.ReadSnapshot(prefix, res.Revision, kvs)}
	var keys []lease.SlotKey
	for _, kv := range kvs {
		if host, ok := strings.CutPrefix(string(kv.Key), slotsPrefix); ok {
			keys = append(keys, lease.SlotKey{Host: host, CreateRevision: kv.CreateRevision})
		}
	}
	for _, hd := range lease.Rank(keys, w.cfg.MaxParallel) {
		if hd.Holding {
			s.holding = append(s.holding, hd.Host)
		}
	}
	w.sight = s
	return s
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

// put writes v as JSON at key, fenced by the host's slot when fenced, waiting for
// etcd's answer at most timeout.
func (h *Host) put(key string, v any, fenced bool, timeout time.Duration, done func(error)) {
	data := jsonOf(v)
	var cmps []Cmp
	if fenced {
		if h.token == 0 {
			done(fleet.ErrFenced)
			return
		}
		cmps = []Cmp{Compare(fleet.SlotKey(prefix, group, h.name), TargetCreate, Equal, h.token)}
	}
	var res TxnResult
	h.call("put "+key, timeout, func() (err error) {
		res, err = h.w.etcd.Txn(h.name, cmps, []Op{OpPut(key, data, 0)}, nil)
		return err
	}, func(err error) {
		if err == nil && !res.Succeeded {
			err = fleet.ErrFenced
		}
		done(err)
	})
}

// record writes the host's record in the fleet state, as a call under the lease
// (callTimeout); the record of an idle host is its own word, written unfenced and
// bounded by etcdCallTimeout alone.
func (h *Host) record(state, target string, fenced bool, done func(error)) {
	timeout := h.callTimeout()
	if state == "IDLE" {
		timeout = etcdCallTimeout
	}
	h.put(fleet.HostKey(prefix, h.name), fleet.Host{Host: h.name, Group: group, Commit: h.lastGood, Target: target, State: state,
		Time: Epoch.Add(h.w.clock.Elapsed())}, fenced, timeout, done)
}
