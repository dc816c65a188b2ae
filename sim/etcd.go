package sim

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"
)

// The errors a client of the simulated etcd gets. Callers branch on them with errors.Is.
var (
	// ErrTimeout: the request's outcome is unknown to the client. It was not applied
	// (a partitioned client, FailBeforeApply) or it was (FailAfterApply).
	ErrTimeout = errors.New("etcd: request timed out")
	// ErrLeaderChanged: the request came during an election (LeaderChange); not applied.
	ErrLeaderChanged = errors.New("etcd: leader changed")
	// ErrUnavailable: the whole cluster is down (Down); not applied.
	ErrUnavailable = errors.New("etcd: cluster unavailable")
	// ErrLeaseNotFound: the lease expired or was revoked; a Txn that puts a key bound
	// to it is not applied.
	ErrLeaseNotFound = errors.New("etcd: requested lease not found")
)

// Defaults of an Etcd's settings.
const (
	DefaultWatchDelay  = 2 * time.Millisecond
	DefaultWatchJitter = 3 * time.Millisecond
	DefaultElection    = time.Second
)

// KV is one key as etcd stores it. Version counts the puts since the key was created;
// Lease is 0 for a key bound to no lease.
type KV struct {
	Key                                  string
	Value                                []byte
	CreateRevision, ModRevision, Version int64
	Lease                                int64
}

// Target is what a Cmp compares of a key. A missing key has every revision, its
// version and its lease 0; a Value compare on a missing key is false, as in etcd.
type Target uint8

// The targets of a Cmp.
const (
	TargetCreate Target = iota
	TargetMod
	TargetVersion
	TargetValue
	TargetLease
)

// CmpOp is a Cmp's comparison, of the key's side against the Cmp's.
type CmpOp uint8

// The comparisons of a Cmp.
const (
	Equal CmpOp = iota
	NotEqual
	Less
	Greater
)

// Cmp is one condition of a Txn on one key: Number is compared with the key's
// revision, version or lease, Value with its value.
type Cmp struct {
	Key    string
	Target Target
	Op     CmpOp
	Number int64
	Value  []byte
}

// Compare returns the Cmp "key's target op n" for every target but TargetValue.
func Compare(key string, target Target, op CmpOp, n int64) Cmp {
	return Cmp{Key: key, Target: target, Op: op, Number: n}
}

// CompareValue returns the Cmp "key's value op v".
func CompareValue(key string, op CmpOp, v []byte) Cmp {
	return Cmp{Key: key, Target: TargetValue, Op: op, Value: v}
}

// OpKind is what an Op does.
type OpKind uint8

// The kinds of Op.
const (
	KindGet OpKind = iota
	KindPut
	KindDelete
)

// Op is one operation of a Txn. Reads see the writes of the Ops before them in the
// same Txn, as in etcd. Make one with OpGet, OpPut or OpDelete and set the Get fields.
type Op struct {
	Kind   OpKind
	Key    string
	Prefix bool   // Get and Delete: every key that starts with Key
	Value  []byte // Put
	Lease  int64  // Put: the lease the key is bound to, 0 for none

	SortByCreate      bool  // Get: order by create revision (then key), not by key
	Descend           bool  // Get: in descending order
	Limit             int64 // Get: at most this many keys, 0 for all
	MaxCreateRevision int64 // Get: only keys created at or before it, 0 for all
}

// OpGet reads key, or every key under it when prefix is true.
func OpGet(key string, prefix bool) Op { return Op{Kind: KindGet, Key: key, Prefix: prefix} }

// OpPut writes key=value bound to lease (0 for none).
func OpPut(key string, value []byte, lease int64) Op {
	return Op{Kind: KindPut, Key: key, Value: value, Lease: lease}
}

// OpDelete deletes key, or every key under it when prefix is true.
func OpDelete(key string, prefix bool) Op { return Op{Kind: KindDelete, Key: key, Prefix: prefix} }

// OpResult is what one Op of a Txn returns. KVs are copies.
type OpResult struct {
	KVs     []KV  // Get
	Count   int64 // Get: keys in the range, before MaxCreateRevision and Limit
	More    bool  // Get: Limit left some out
	Deleted int64 // Delete
}

// TxnResult is a Txn's response: the cluster's revision after it, which branch ran,
// and one OpResult per Op of that branch.
type TxnResult struct {
	Revision  int64
	Succeeded bool
	Results   []OpResult
}

// EventType says whether an Event put or deleted its key.
type EventType uint8

// The types of Event.
const (
	EventPut EventType = iota
	EventDelete
)

// Event is one change a watch reports. A delete's KV has only Key and ModRevision
// (the revision of the delete), as in etcd.
type Event struct {
	Type EventType
	KV   KV
}

// FailMode is a per-request fault (FailNext). Both give the client ErrTimeout: it
// cannot tell them apart, as with a real etcd.
type FailMode uint8

// The per-request faults.
const (
	FailBeforeApply FailMode = iota + 1 // not applied
	FailAfterApply                      // applied, the response lost
)

// Etcd is one simulated etcd cluster, driven by a Clock. Requests take effect at the
// instant they are made (the caller models their latency); leases expire and watches
// deliver through the Clock. Lease IDs are 1, 2, 3... in the order of Grant. It is not
// safe for concurrent use.
type Etcd struct {
	// Settings, set before the first request: a watch delivers each revision
	// WatchDelay plus up to WatchJitter (drawn from the rng) after it; an election
	// (LeaderChange) lasts Election.
	WatchDelay, WatchJitter, Election time.Duration
	// Expired, when set, is told of each lease that expires (not one revoked), for
	// traces.
	Expired func(id int64)

	clock *Clock
	rng   *rand.Rand

	rev      int64
	kvs      map[string]*KV
	keys     []string // of kvs, sorted
	events   []Event  // of the write transaction under way
	leases   map[int64]*etcdLease
	lastID   int64
	clients  map[string]*client
	watchers []*watcher

	down          bool
	noLeaderUntil time.Duration // on the clock, since Epoch
}

// etcdLease is one etcd lease and the keys bound to it.
type etcdLease struct {
	id     int64
	ttl    time.Duration
	expiry time.Duration // on the clock, since Epoch
	timer  *Timer        // the pending check of expiry, nil when none
	check  func()        // e.check(l), made once
	keys   map[string]struct{}
}

// client is what the cluster knows of one client's faults.
type client struct {
	partitioned bool
	faults      []FailMode // FailNext's, oldest first
}

// NewEtcd returns an empty cluster at revision 1 on clock, drawing watch delays from
// rng (nil: no jitter).
func NewEtcd(clock *Clock, rng *rand.Rand) *Etcd {
	return &Etcd{
		WatchDelay: DefaultWatchDelay, WatchJitter: DefaultWatchJitter, Election: DefaultElection,
		clock: clock, rng: rng, rev: 1,
		kvs: map[string]*KV{}, leases: map[int64]*etcdLease{}, clients: map[string]*client{},
	}
}

// Revision returns the cluster's revision.
func (e *Etcd) Revision() int64 { return e.rev }

func (e *Etcd) client(name string) *client {
	c := e.clients[name]
	if c == nil {
		c = &client{}
		e.clients[name] = c
	}
	return c
}

// admit decides the fate of a request of client: an error when it fails before it is
// applied, or lost true when it is applied but its answer is lost (ErrTimeout).
func (e *Etcd) admit(name string) (lost bool, err error) {
	c := e.client(name)
	switch {
	case c.partitioned:
		return false, ErrTimeout
	case e.down:
		return false, ErrUnavailable
	case e.clock.now < e.noLeaderUntil:
		return false, ErrLeaderChanged
	case len(c.faults) == 0:
		return false, nil
	}
	m := c.faults[0]
	c.faults = c.faults[1:]
	if m == FailBeforeApply {
		return false, ErrTimeout
	}
	return true, nil
}

// Txn runs then when every cmp holds, els otherwise, in one revision when it writes.
// A put bound to a lease that does not exist fails it with ErrLeaseNotFound.
func (e *Etcd) Txn(client string, cmps []Cmp, then, els []Op) (TxnResult, error) {
	lost, err := e.admit(client)
	if err != nil {
		return TxnResult{}, err
	}
	res, err := e.txn(cmps, then, els)
	if lost {
		return TxnResult{}, ErrTimeout
	}
	return res, err
}

func (e *Etcd) txn(cmps []Cmp, then, els []Op) (TxnResult, error) {
	ok := true
	for _, c := range cmps {
		if !e.compare(c) {
			ok = false
			break
		}
	}
	ops := then
	if !ok {
		ops = els
	}
	for _, op := range ops {
		if op.Kind == KindPut && op.Lease != 0 && e.live(op.Lease) == nil {
			return TxnResult{}, ErrLeaseNotFound
		}
	}
	res := TxnResult{Succeeded: ok, Results: make([]OpResult, len(ops))}
	for i, op := range ops {
		switch op.Kind {
		case KindGet:
			res.Results[i] = e.get(op)
		case KindPut:
			e.put(op.Key, op.Value, op.Lease)
		case KindDelete:
			res.Results[i].Deleted = e.delete(op.Key, op.Prefix)
		}
	}
	e.commit()
	res.Revision = e.rev
	return res, nil
}

// Get reads key.
func (e *Etcd) Get(client, key string) (kv KV, ok bool, err error) {
	r, err := e.Txn(client, nil, []Op{OpGet(key, false)}, nil)
	if err != nil || len(r.Results[0].KVs) == 0 {
		return KV{}, false, err
	}
	return r.Results[0].KVs[0], true, nil
}

// Put writes key=value bound to lease (0 for none) and returns the revision of the write.
func (e *Etcd) Put(client, key string, value []byte, lease int64) (int64, error) {
	r, err := e.Txn(client, nil, []Op{OpPut(key, value, lease)}, nil)
	return r.Revision, err
}

// Delete deletes key and returns how many keys it deleted (0 or 1).
func (e *Etcd) Delete(client, key string) (int64, error) {
	r, err := e.Txn(client, nil, []Op{OpDelete(key, false)}, nil)
	if err != nil {
		return 0, err
	}
	return r.Results[0].Deleted, nil
}

func (e *Etcd) compare(c Cmp) bool {
	kv := e.kvs[c.Key]
	if c.Target == TargetValue {
		return kv != nil && holds(c.Op, bytes.Compare(kv.Value, c.Value))
	}
	var n int64
	if kv != nil {
		switch c.Target {
		case TargetCreate:
			n = kv.CreateRevision
		case TargetMod:
			n = kv.ModRevision
		case TargetVersion:
			n = kv.Version
		case TargetLease:
			n = kv.Lease
		}
	}
	return holds(c.Op, cmp.Compare(n, c.Number))
}

func holds(op CmpOp, c int) bool {
	switch op {
	case Equal:
		return c == 0
	case NotEqual:
		return c != 0
	case Less:
		return c < 0
	case Greater:
		return c > 0
	}
	return false
}

// span returns the range of e.keys that key (or every key under it) covers.
func (e *Etcd) span(key string, prefix bool) (lo, hi int) {
	lo = sort.SearchStrings(e.keys, key)
	if !prefix {
		if lo < len(e.keys) && e.keys[lo] == key {
			return lo, lo + 1
		}
		return lo, lo
	}
	rest := e.keys[lo:]
	return lo, lo + sort.Search(len(rest), func(i int) bool { return !strings.HasPrefix(rest[i], key) })
}

func (e *Etcd) get(op Op) OpResult {
	lo, hi := e.span(op.Key, op.Prefix)
	r := OpResult{Count: int64(hi - lo)}
	if hi == lo {
		return r
	}
	kvs := make([]KV, 0, hi-lo)
	for _, k := range e.keys[lo:hi] {
		kv := e.kvs[k]
		if op.MaxCreateRevision == 0 || kv.CreateRevision <= op.MaxCreateRevision {
			kvs = append(kvs, *kv)
		}
	}
	if op.SortByCreate {
		slices.SortStableFunc(kvs, func(a, b KV) int { return cmp.Compare(a.CreateRevision, b.CreateRevision) })
	}
	if op.Descend {
		slices.Reverse(kvs)
	}
	if op.Limit > 0 && int64(len(kvs)) > op.Limit {
		kvs, r.More = kvs[:op.Limit], true
	}
	r.KVs = kvs
	copyValues(kvs)
	return r
}

// copyValues gives kvs copies of their values, in one allocation.
func copyValues(kvs []KV) {
	n := 0
	for _, kv := range kvs {
		n += len(kv.Value)
	}
	buf := make([]byte, 0, n)
	for i, kv := range kvs {
		if kv.Value == nil {
			continue
		}
		start := len(buf)
		buf = append(buf, kv.Value...)
		kvs[i].Value = buf[start:len(buf):len(buf)]
	}
}

// put writes key in the write transaction under way, at revision e.rev+1.
func (e *Etcd) put(key string, value []byte, leaseID int64) {
	rev := e.rev + 1
	kv := e.kvs[key]
	if kv == nil {
		kv = &KV{Key: key, CreateRevision: rev}
		e.kvs[key] = kv
		i, _ := slices.BinarySearch(e.keys, key)
		e.keys = slices.Insert(e.keys, i, key)
	}
	if kv.Lease != leaseID {
		e.unbind(kv)
		if l := e.leases[leaseID]; l != nil {
			l.keys[key] = struct{}{}
		}
	}
	// The stored value is never changed in place: a put replaces it.
	kv.Value, kv.ModRevision, kv.Lease = bytes.Clone(value), rev, leaseID
	kv.Version++
	e.events = append(e.events, Event{Type: EventPut, KV: *kv})
}

// delete deletes key (or every key under it) in the write transaction under way.
func (e *Etcd) delete(key string, prefix bool) int64 {
	lo, hi := e.span(key, prefix)
	for _, k := range e.keys[lo:hi] {
		kv := e.kvs[k]
		e.unbind(kv)
		delete(e.kvs, k)
		e.events = append(e.events, Event{Type: EventDelete, KV: KV{Key: k, ModRevision: e.rev + 1}})
	}
	e.keys = slices.Delete(e.keys, lo, hi)
	return int64(hi - lo)
}

func (e *Etcd) unbind(kv *KV) {
	if l := e.leases[kv.Lease]; l != nil {
		delete(l.keys, kv.Key)
	}
}

// commit ends the write transaction under way: one revision when it changed anything,
// and its events to the watches.
func (e *Etcd) commit() {
	if len(e.events) == 0 {
		return
	}
	e.rev++
	e.notify(e.rev, e.events)
	clear(e.events)
	e.events = e.events[:0]
}

// Dump returns the revision, every key sorted, and every lease by ID with its expiry
// (since Epoch), one a line, for traces.
func (e *Etcd) Dump() string {
	var b strings.Builder
	fmt.Fprintf(&b, "revision %d\n", e.rev)
	for _, k := range e.keys {
		kv := e.kvs[k]
		fmt.Fprintf(&b, "%s = %q create=%d mod=%d version=%d lease=%d\n",
			k, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease)
	}
	for _, id := range slices.Sorted(maps.Keys(e.leases)) {
		l := e.leases[id]
		fmt.Fprintf(&b, "lease %d ttl=%v expires=%v keys=%d\n", id, l.ttl, l.expiry, len(l.keys))
	}
	return b.String()
}

// Inspect returns copies of the keys under prefix, sorted, whatever the faults: the
// view of a checker of invariants, not of a client.
func (e *Etcd) Inspect(prefix string) []KV {
	return e.get(OpGet(prefix, true)).KVs
}

// Grant creates a lease of ttl and returns its ID. The lease expires ttl after the
// last Grant, KeepAlive, Up or LeaderChange that reached the cluster.
func (e *Etcd) Grant(client string, ttl time.Duration) (int64, error) {
	if ttl <= 0 {
		return 0, fmt.Errorf("grant lease: ttl %v is not positive", ttl)
	}
	lost, err := e.admit(client)
	if err != nil {
		return 0, err
	}
	e.lastID++
	l := &etcdLease{id: e.lastID, ttl: ttl, keys: map[string]struct{}{}}
	l.check = func() { e.check(l) }
	e.leases[l.id] = l
	e.setExpiry(l, e.clock.now+ttl)
	if lost {
		return 0, ErrTimeout
	}
	return l.id, nil
}

// KeepAlive extends lease id to expire its TTL from now and returns that TTL.
func (e *Etcd) KeepAlive(client string, id int64) (time.Duration, error) {
	lost, err := e.admit(client)
	if err != nil {
		return 0, err
	}
	l := e.live(id)
	if l != nil {
		e.setExpiry(l, e.clock.now+l.ttl)
	}
	switch {
	case lost:
		return 0, ErrTimeout
	case l == nil:
		return 0, ErrLeaseNotFound
	}
	return l.ttl, nil
}

// Revoke ends lease id now, deleting its keys in one revision.
func (e *Etcd) Revoke(client string, id int64) error {
	lost, err := e.admit(client)
	if err != nil {
		return err
	}
	l := e.live(id)
	if l != nil {
		e.end(l)
	}
	switch {
	case lost:
		return ErrTimeout
	case l == nil:
		return ErrLeaseNotFound
	}
	return nil
}

// live returns lease id, or nil when it is gone. A lease whose expiry is now, and
// whose check on the clock has not run yet, ends now: etcd answers a request on a
// lease past its expiry as it would once the lease is revoked.
func (e *Etcd) live(id int64) *etcdLease {
	l := e.leases[id]
	if l != nil && l.expiry <= e.clock.now && !e.down {
		e.expire(l)
		return nil
	}
	return l
}

// setExpiry moves l's expiry to at and has the clock check it then (not while the
// cluster is down: Up sets every expiry again).
func (e *Etcd) setExpiry(l *etcdLease, at time.Duration) {
	l.expiry = at
	if l.timer != nil && l.timer.at > at {
		e.clock.Cancel(l.timer)
		l.timer = nil
	}
	if l.timer != nil || e.down {
		return // a check before at finds it extended and checks again at at
	}
	l.timer = e.clock.After(at-e.clock.now, l.check)
}

// check ends l if its expiry passed; it runs on the clock.
func (e *Etcd) check(l *etcdLease) {
	l.timer = nil
	if e.leases[l.id] != l || e.down {
		return
	}
	if l.expiry > e.clock.now {
		e.setExpiry(l, l.expiry)
		return
	}
	e.expire(l)
}

// expire ends l, whose expiry passed.
func (e *Etcd) expire(l *etcdLease) {
	e.end(l)
	if e.Expired != nil {
		e.Expired(l.id)
	}
}

// end deletes l and its keys, in one revision.
func (e *Etcd) end(l *etcdLease) {
	delete(e.leases, l.id)
	e.clock.Cancel(l.timer)
	l.timer = nil
	for _, k := range slices.Sorted(maps.Keys(l.keys)) {
		e.delete(k, false)
	}
	e.commit()
}

// resetLeases sets every lease to expire ttl after at, as a new leader does.
func (e *Etcd) resetLeases(at time.Duration) {
	for _, id := range slices.Sorted(maps.Keys(e.leases)) {
		l := e.leases[id]
		e.setExpiry(l, at+l.ttl)
	}
}

// FailNext makes the next request of client that reaches the cluster fail with mode;
// several calls queue in order.
func (e *Etcd) FailNext(client string, mode FailMode) {
	c := e.client(client)
	c.faults = append(c.faults, mode)
}

// Partition cuts client off: its requests time out and its keep-alives do not arrive,
// so its leases expire; its watches hold their events until Heal.
func (e *Etcd) Partition(client string) { e.client(client).partitioned = true }

// Heal ends client's partition; its watches deliver what they held, in order.
func (e *Etcd) Heal(client string) {
	e.client(client).partitioned = false
	for _, w := range e.watchers {
		if w.client == e.clients[client] {
			e.flush(w)
		}
	}
}

// Down stops the whole cluster: every request fails with ErrUnavailable, no lease
// expires, watches hold their events.
func (e *Etcd) Down() { e.down = true }

// Up starts the cluster again: every lease expires its TTL from now, as after a leader
// change, and watches deliver what they held.
func (e *Etcd) Up() {
	if !e.down {
		return
	}
	e.down = false
	e.resetLeases(e.clock.now)
	for _, w := range e.watchers {
		e.flush(w)
	}
}

// LeaderChange starts an election of Election: requests until it ends fail with
// ErrLeaderChanged, and every lease then expires its TTL after the new leader is in.
func (e *Etcd) LeaderChange() {
	e.noLeaderUntil = e.clock.now + e.Election
	if !e.down {
		e.resetLeases(e.noLeaderUntil)
	}
}

// watcher is one Watch: the revisions it holds while its client cannot hear them, and
// when it last scheduled a delivery (so that deliveries keep the revisions' order).
type watcher struct {
	client    *client
	key       string
	prefix    bool
	fn        func(rev int64, events []Event)
	last      time.Duration // on the clock, since Epoch
	held      []batch
	cancelled bool
}

// batch is the events of one revision that one watch reports.
type batch struct {
	rev    int64
	events []Event
}

// Watch calls fn, through the clock, with the events of each revision after now that
// touches a key under prefix, in the order of the revisions, WatchDelay (plus jitter)
// after it. While the client is partitioned or the cluster is down, the events are
// held and delivered, in order, after Heal or Up: a watch loses nothing, as clientv3's
// resumes. The returned func cancels the watch; nothing is delivered after it.
func (e *Etcd) Watch(client, prefix string, fn func(rev int64, events []Event)) (cancel func()) {
	return e.watch(client, prefix, true, fn)
}

// WatchKey is Watch of the one key key.
func (e *Etcd) WatchKey(client, key string, fn func(rev int64, events []Event)) (cancel func()) {
	return e.watch(client, key, false, fn)
}

func (e *Etcd) watch(client, key string, prefix bool, fn func(int64, []Event)) func() {
	w := &watcher{client: e.client(client), key: key, prefix: prefix, fn: fn}
	e.watchers = append(e.watchers, w)
	return func() {
		if !w.cancelled {
			w.cancelled = true
			e.watchers = slices.DeleteFunc(e.watchers, func(x *watcher) bool { return x == w })
		}
	}
}

func (w *watcher) matches(key string) bool {
	if w.prefix {
		return strings.HasPrefix(key, w.key)
	}
	return key == w.key
}

// notify hands the events of revision rev to every watch they touch.
func (e *Etcd) notify(rev int64, events []Event) {
	for _, w := range e.watchers {
		n := 0
		for _, ev := range events {
			if w.matches(ev.KV.Key) {
				n++
			}
		}
		if n == 0 {
			continue
		}
		b := batch{rev: rev, events: make([]Event, 0, n)}
		for _, ev := range events {
			if w.matches(ev.KV.Key) {
				b.events = append(b.events, ev)
			}
		}
		if len(b.events) == 1 {
			b.events[0].KV.Value = bytes.Clone(b.events[0].KV.Value)
		} else {
			eventValues(b.events)
		}
		if e.down || w.client.partitioned {
			w.held = append(w.held, b)
		} else {
			e.send(w, b)
		}
	}
}

// eventValues gives events copies of their values, in one allocation.
func eventValues(events []Event) {
	n := 0
	for _, ev := range events {
		n += len(ev.KV.Value)
	}
	buf := make([]byte, 0, n)
	for i, ev := range events {
		if ev.KV.Value == nil {
			continue
		}
		start := len(buf)
		buf = append(buf, ev.KV.Value...)
		events[i].KV.Value = buf[start:len(buf):len(buf)]
	}
}

// send schedules the delivery of b to w, after every delivery already scheduled.
func (e *Etcd) send(w *watcher, b batch) {
	d := e.WatchDelay
	if e.rng != nil && e.WatchJitter > 0 {
		d += time.Duration(e.rng.Int64N(int64(e.WatchJitter) + 1))
	}
	w.last = max(w.last, e.clock.now+d)
	e.clock.After(w.last-e.clock.now, func() { e.deliver(w, b) })
}

// deliver calls w's fn with b, or holds b when w's client cannot hear it now.
func (e *Etcd) deliver(w *watcher, b batch) {
	switch {
	case w.cancelled:
	case e.down || w.client.partitioned:
		w.held = append(w.held, b)
	default:
		w.fn(b.rev, b.events)
	}
}

// flush sends what w holds, in the order of the revisions, if its client can hear it.
func (e *Etcd) flush(w *watcher) {
	if e.down || w.client.partitioned || len(w.held) == 0 {
		return
	}
	held := w.held
	w.held = nil
	slices.SortStableFunc(held, func(a, b batch) int { return cmp.Compare(a.rev, b.rev) })
	for _, b := range held {
		e.send(w, b)
	}
}
