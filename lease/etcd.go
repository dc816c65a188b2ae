package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Defaults and limits of the etcd lease.
const (
	DefaultEtcdPrefix = "/baton"
	DefaultEtcdTTL    = 15 * time.Second
	MinEtcdTTL        = 5 * time.Second
	// DefaultSlots is N when a group's maxParallel key is missing.
	DefaultSlots = 1
)

// EtcdOptions configure an Etcd lease. Zero values take the defaults.
type EtcdOptions struct {
	Prefix string        // key prefix, e.g. "/baton" (default)
	Host   string        // this host's name: its slot key; unique in the fleet
	TTL    time.Duration // etcd lease TTL, whole seconds, at least MinEtcdTTL (default 15s)
	Margin time.Duration // safety margin for the local deadline (default TTL/3)
	Logger *slog.Logger  // default: discard
	// Clock returns the time for the local deadline (default time.Now). Its readings
	// must carry Go's monotonic clock so that a wall-clock step cannot move a deadline.
	Clock func() time.Time
}

// Etcd is an N-slot lease per group on etcd: a counting semaphore whose slots are keys
// bound to an etcd lease that this process keeps alive (see docs/lease.md).
//
// Keys, under <prefix>/groups/<group>/:
//
//	slots/<host>   one per contender, bound to its etcd lease; the value is the host
//	maxParallel    N, in decimal; missing means 1, anything unreadable means 0
//
// A contender holds a slot when fewer than N slot keys have a smaller creation
// revision than its own, read at one revision together with N. Its key's creation
// revision is its fencing token. Waiters watch only the N keys just ahead of theirs
// and N, so a release wakes the next waiter at once and no one else.
//
// One Etcd holds at most one slot at a time. Acquire, Release, Check and Guarded may be
// called from different goroutines; Close stops the keep-alives.
type Etcd struct {
	cli *clientv3.Client
	o   EtcdOptions
	log *slog.Logger

	op sync.Mutex // serializes Acquire, Release and Close

	mu     sync.Mutex
	sess   *session // nil until the first Acquire, or after Close
	slot   *slot    // the slot key this host has in etcd, nil when none
	hint   map[string]int
	closed bool

	onWait func() // test hook: called when a waiter's watches are in place
}

// slot is this host's key in one group's line.
type slot struct {
	keys  groupKeys
	token int64            // the key's creation revision
	sess  *session         // the session its key is bound to
	held  bool             // Acquire returned with it
	lost  error            // set when Check found it gone for good
	since time.Time        // when it was acquired
	lease clientv3.LeaseID // sess.id, for compares
}

// NewEtcd makes the lease of host o.Host on the etcd reached by cli. It does no I/O; the
// first Acquire grants the etcd lease. The caller keeps cli and closes it after Close.
func NewEtcd(cli *clientv3.Client, o EtcdOptions) *Etcd {
	o.Prefix = cleanPrefix(o.Prefix)
	if o.TTL <= 0 {
		o.TTL = DefaultEtcdTTL
	}
	o.TTL = max(o.TTL, MinEtcdTTL).Round(time.Second)
	if o.Margin <= 0 || o.Margin >= o.TTL {
		o.Margin = o.TTL / 3
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	return &Etcd{cli: cli, o: o, log: o.Logger.With("lease", "etcd"), hint: map[string]int{}}
}

// Acquire blocks until this host holds a slot of group, or ctx ends. Holding it already
// is a no-op. A slot key of this host that is still in etcd (left by an earlier run of
// the agent, or by a hold that Check found lapsed while etcd kept it) is resumed with
// its creation revision, so a restarted agent keeps its place and its token. When ctx
// ends first, the host's key is withdrawn from the line.
func (e *Etcd) Acquire(ctx context.Context, group string) error {
	if err := checkName("group", group); err != nil {
		return fmt.Errorf("acquire etcd lease: %w", err)
	}
	if err := checkName("host", e.o.Host); err != nil {
		return fmt.Errorf("acquire etcd lease: %w", err)
	}
	e.op.Lock()
	defer e.op.Unlock()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return errors.New("acquire etcd lease: closed")
	}
	if s := e.slot; s != nil {
		if s.keys.group != group {
			e.mu.Unlock()
			return fmt.Errorf("acquire etcd lease for group %s: this host is in the line of group %s; release it first", group, s.keys.group)
		}
		if s.held && s.lost == nil && s.sess.valid() == nil {
			e.mu.Unlock()
			return nil
		}
	}
	e.mu.Unlock()
	start := e.o.Clock()
	if err := e.acquire(ctx, keysFor(e.o.Prefix, group, e.o.Host)); err != nil {
		return fmt.Errorf("acquire etcd lease for group %s: %w", group, err)
	}
	e.mu.Lock()
	s := e.slot
	s.held, s.since = true, e.o.Clock()
	e.mu.Unlock()
	e.log.Info("lease slot acquired", "group", group, "token", s.token, "waited", s.since.Sub(start).Round(time.Millisecond))
	return nil
}

// retryWarnEvery is how often a waiter that keeps retrying (etcd down) says so at WARN.
const retryWarnEvery = 30 * time.Second

// acquire is Acquire's loop over its steps: enqueue (get a session, put or resume the
// slot key), wait in line until the key is among the first N, and take the slot once
// the session is certain. A key or session lost while waiting is enqueued again;
// transient errors are retried until ctx ends, and then the key is withdrawn.
func (e *Etcd) acquire(ctx context.Context, k groupKeys) error {
	r := &retrier{log: e.log, group: k.group}
	for {
		if err := ctx.Err(); err != nil {
			return e.withdraw(err)
		}
		sess, err := e.session(ctx)
		if err != nil {
			if err := r.wait(ctx, "grant", err); err != nil {
				return e.withdraw(err)
			}
			continue
		}
		v, err := e.enqueue(ctx, k, sess)
		if err != nil {
			if err := r.wait(ctx, "enqueue", err); err != nil {
				e.dropUnrecorded(k, sess)
				return e.withdraw(err)
			}
			continue
		}
		r.reset()
		taken, err := e.waitInLine(ctx, k, sess, v, r)
		if err != nil {
			return e.withdraw(err)
		}
		if taken {
			return nil
		}
	}
}

// waitInLine waits until the key that v shows is among the first N and takes the slot,
// reading again after every wake-up. It returns true once the slot is taken, false
// when the key or its session is gone and the key has to be enqueued again, and ctx's
// error when ctx ends.
func (e *Etcd) waitInLine(ctx context.Context, k groupKeys, sess *session, v view, r *retrier) (bool, error) {
	for {
		if _, _, err := sess.state(); err != nil {
			return false, nil // the lease is gone, and the key with it: start over
		}
		s := e.current()
		if err := v.ours(s.token, s.lease); err != nil {
			e.log.Info("lease slot key lost while waiting; queueing again", "group", k.group, "reason", err)
			return false, nil
		}
		if v.holds() {
			taken, err := take(ctx, sess)
			if taken || err != nil {
				return taken, err
			}
		} else {
			fresh, err := e.wait(ctx, k, s, v)
			if err != nil {
				return false, err
			}
			if fresh != nil {
				v = *fresh
				continue
			}
		}
		var err error
		if v, err = e.reread(ctx, k, s.token, r); err != nil {
			return false, err
		}
	}
}

// take takes the slot of a key first in line: it returns true when the session is
// certain. When the session may have lapsed it waits for the next keep-alive (or the
// end of the lease) and returns false, for the caller to read again.
func take(ctx context.Context, sess *session) (bool, error) {
	if sess.valid() == nil {
		return true, nil
	}
	renewed, gone := sess.wakeups()
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-renewed:
	case <-gone:
	}
	return false, nil
}

// reread reads the host's place in line again, retrying until it succeeds or ctx ends.
func (e *Etcd) reread(ctx context.Context, k groupKeys, token int64, r *retrier) (view, error) {
	for {
		v, err := e.read(ctx, k, token)
		if err == nil {
			r.reset()
			return v, nil
		}
		if err := r.wait(ctx, "read", err); err != nil {
			return view{}, err
		}
	}
}

// retrier paces the retries of one Acquire: a backoff doubling from 50ms to 2s, with
// jitter, reset by every success; one retry a while (retryWarnEvery) is logged at WARN,
// the rest at DEBUG.
type retrier struct {
	log     *slog.Logger
	group   string
	backoff time.Duration
	warned  time.Time // the last retry logged at WARN
}

// wait logs that the step what failed with err and waits out the backoff. It returns
// ctx's error when ctx ends first.
func (r *retrier) wait(ctx context.Context, what string, err error) error {
	r.backoff = min(max(2*r.backoff, 50*time.Millisecond), 2*time.Second)
	wait := r.backoff/2 + rand.N(r.backoff/2+1)
	level := slog.LevelDebug
	if now := time.Now(); now.Sub(r.warned) >= retryWarnEvery {
		level, r.warned = slog.LevelWarn, now
	}
	r.log.Log(ctx, level, "etcd lease: retry", "group", r.group, "op", what, "err", err, "in", wait)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(wait):
		return nil
	}
}

// reset starts the backoff over, after a success.
func (r *retrier) reset() { r.backoff = 0 }

// current returns this host's slot record; only acquire's steps call it, while it exists.
func (e *Etcd) current() *slot {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.slot
}

// session returns a live session, granting a new one when there is none or it ended.
func (e *Etcd) session(ctx context.Context) (*session, error) {
	e.mu.Lock()
	sess := e.sess
	e.mu.Unlock()
	if sess != nil {
		if _, _, err := sess.state(); err == nil {
			return sess, nil
		}
	}
	rctx, cancel := context.WithTimeout(ctx, e.o.TTL)
	defer cancel()
	sess, err := grantSession(rctx, e.cli, e.o.TTL, e.o.Margin, e.o.Clock, e.log)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	old := e.sess
	e.sess = sess
	e.mu.Unlock()
	if old != nil {
		old.stop()
	}
	return sess, nil
}

func (e *Etcd) limit(group string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return max(e.hint[group], DefaultSlots)
}

func (e *Etcd) setLimit(group string, n int) {
	e.mu.Lock()
	e.hint[group] = n
	e.mu.Unlock()
}

// read reads the host's place in line at one revision.
func (e *Etcd) read(ctx context.Context, k groupKeys, token int64) (view, error) {
	rctx, cancel := context.WithTimeout(ctx, e.o.TTL)
	defer cancel()
	limit := e.limit(k.group)
	for {
		resp, err := e.cli.Txn(rctx).Then(readOps(k, token, limit)...).Commit()
		if err != nil {
			return view{}, err
		}
		v := parseView(resp.Header.Revision, resp.Responses, token)
		if v.n > limit {
			limit = v.n // read again with enough keys ahead to decide
			continue
		}
		e.setLimit(k.group, v.n)
		return v, nil
	}
}

// enqueue puts the host's slot key bound to sess, or resumes the one already there,
// and reads its place in line.
func (e *Etcd) enqueue(ctx context.Context, k groupKeys, sess *session) (view, error) {
	rctx, cancel := context.WithTimeout(ctx, e.o.TTL)
	defer cancel()
	limit := e.limit(k.group)
	// A key put in this transaction is the newest: the keys ahead are the next limit.
	resp, err := e.cli.Txn(rctx).
		If(clientv3.Compare(clientv3.CreateRevision(k.slot), "=", 0)).
		Then(append([]clientv3.Op{clientv3.OpPut(k.slot, e.o.Host, clientv3.WithLease(sess.id))}, readOps(k, 0, limit+1)...)...).
		Else(clientv3.OpGet(k.slot)).
		Commit()
	if err != nil {
		return view{}, err
	}
	var token int64
	if resp.Succeeded {
		token = resp.Header.Revision
		e.setSlot(k, token, sess)
		v := parseView(resp.Header.Revision, resp.Responses[1:], token)
		e.log.Debug("lease slot key put", "group", k.group, "token", token)
		if v.n > limit {
			return e.read(ctx, k, token)
		}
		e.setLimit(k.group, v.n)
		return v, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return view{}, errors.New("slot key vanished between compare and read") // not reachable in one txn
	}
	kv := kvs[0]
	token = kv.CreateRevision
	if clientv3.LeaseID(kv.Lease) != sess.id {
		// Left by an earlier run of this host (or bound to a session this process lost):
		// bind it to ours; a put keeps the creation revision, so the place and token stay.
		r, err := e.cli.Txn(rctx).
			If(clientv3.Compare(clientv3.CreateRevision(k.slot), "=", token),
				clientv3.Compare(clientv3.LeaseValue(k.slot), "=", kv.Lease)).
			Then(clientv3.OpPut(k.slot, e.o.Host, clientv3.WithLease(sess.id))).
			Commit()
		if err != nil {
			return view{}, err
		}
		if !r.Succeeded {
			return view{}, errors.New("slot key changed while resuming it")
		}
		e.log.Info("lease slot key resumed", "group", k.group, "token", token, "previous_lease", fmt.Sprintf("%x", kv.Lease))
		if old := clientv3.LeaseID(kv.Lease); old != clientv3.NoLease && old != sess.id {
			// The earlier run's lease has no key left; revoking it tells a run that is
			// somehow still alive that its session is over.
			if _, err := e.cli.Revoke(rctx, old); err != nil {
				e.log.Debug("revoke the previous etcd lease", "err", err)
			}
		}
	}
	e.setSlot(k, token, sess)
	return e.read(ctx, k, token)
}

func (e *Etcd) setSlot(k groupKeys, token int64, sess *session) {
	e.mu.Lock()
	e.slot = &slot{keys: k, token: token, sess: sess, lease: sess.id}
	e.mu.Unlock()
}

// wait returns once something that can change the host's place in line may have
// happened after v: one of the N keys just ahead deleted, N changed, the host's own key
// changed, the session ended, or a watch failed. The caller then reads again, unless
// wait returns the view it read itself. It returns ctx's error when ctx ends.
//
// Why the N nearest keys ahead are enough: the keys ahead only ever leave (new keys come
// behind), so the host's count ahead can fall from N to N-1 only when, at that moment,
// exactly N keys are ahead; if none of the N nearest at the last read had left, those N
// would still be ahead. So some watched key leaves first, and the host reads again.
//
// The watches start at the server's current revision, not at v's: etcd serves a watch
// that starts in the past from its history only every 100ms, which would delay the
// handoff. So once they are in place (at revision W), a line that moved since v is
// read again: unchanged, the watches cover everything after it.
func (e *Etcd) wait(ctx context.Context, k groupKeys, s *slot, v view) (*view, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wake := make(chan struct{}, 1)
	created := make(chan int64, v.n+2)
	watch := func(key string, opts ...clientv3.OpOption) {
		ch := e.cli.Watch(wctx, key, append(opts, clientv3.WithCreatedNotify())...)
		wg.Go(func() { relay(ch, created, wake) })
	}
	watch(k.slot)
	watch(k.max)
	ahead := v.ahead[:min(v.n, len(v.ahead))]
	var names []string
	for _, kv := range ahead {
		watch(string(kv.Key), clientv3.WithFilterPut())
		names = append(names, strings.TrimPrefix(string(kv.Key), k.slots))
	}
	if v.nErr != nil {
		e.log.Warn("lease: no slot granted", "group", k.group, "err", v.nErr)
	}
	e.log.Debug("waiting for a lease slot", "group", k.group, "token", s.token, "slots", v.n, "waiting_on", names)
	_, gone := s.sess.wakeups()
	var w int64
	for range 2 + len(ahead) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-wake:
			return nil, nil
		case <-gone:
			return nil, nil
		case r := <-created:
			w = max(w, r)
		}
	}
	if w > v.rev {
		now, err := e.read(ctx, k, s.token)
		if err != nil {
			return nil, nil
		}
		if !sameLine(v, now) {
			return &now, nil
		}
	}
	if e.onWait != nil {
		e.onWait()
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-wake:
	case <-gone:
	}
	return nil, nil
}

// relay passes on what one watch of wait says, never blocking: the revision it was
// created at to created, and a change of its key, or its end (cancelled, or failed),
// to wake.
func relay(ch clientv3.WatchChan, created chan<- int64, wake chan<- struct{}) {
	for resp := range ch {
		if resp.Created && resp.Err() == nil {
			select {
			case created <- resp.Header.Revision:
			default:
			}
			continue
		}
		if resp.IsProgressNotify() {
			continue
		}
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	// Closed: by cancel, or because the watch failed.
	select {
	case wake <- struct{}{}:
	default:
	}
}

// withdraw takes the host's key out of the line after Acquire gave up with cause, so
// that it does not take a slot no one uses. The key stays recorded when that fails: a
// later Acquire resumes it and Release deletes it; at worst it expires with the session.
func (e *Etcd) withdraw(cause error) error {
	e.mu.Lock()
	s := e.slot
	e.mu.Unlock()
	if s == nil {
		return cause
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.deleteSlot(ctx, s); err != nil {
		e.log.Warn("withdraw the lease slot key", "group", s.keys.group, "err", err)
		return cause
	}
	return cause
}

// dropUnrecorded deletes the slot key of k when it is bound to sess though this
// host recorded no slot: a put that etcd applied and whose answer never came, the
// wait having ended as it was on the wire (the agent stopping, or a newer commit
// superseding the wait). The session outlives the wait, so such a key would keep
// its place in the group's line, a slot once it came first, until the agent
// stopped. A key bound to another session is not this wait's, and stays.
func (e *Etcd) dropUnrecorded(k groupKeys, sess *session) {
	e.mu.Lock()
	recorded := e.slot != nil
	e.mu.Unlock()
	if recorded {
		return // withdraw deletes it
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := e.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(k.slot), "=", int64(sess.id))).
		Then(clientv3.OpDelete(k.slot)).
		Commit()
	if err != nil {
		e.log.Warn("withdraw a lease slot key whose put was not answered", "group", k.group, "err", err)
	}
}

// deleteSlot deletes the slot key if it is still s, and forgets s.
func (e *Etcd) deleteSlot(ctx context.Context, s *slot) error {
	_, err := e.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(s.keys.slot), "=", s.token),
			clientv3.Compare(clientv3.LeaseValue(s.keys.slot), "=", int64(s.lease))).
		Then(clientv3.OpDelete(s.keys.slot)).
		Commit()
	if err != nil {
		return err
	}
	e.mu.Lock()
	if e.slot == s {
		e.slot = nil
	}
	e.mu.Unlock()
	return nil
}

// Check returns nil when this host still certainly holds its slot, and is to be called
// before every disruptive step. It fails with an error wrapping ErrNotHeld and the
// reason when the session ended, the local deadline passed, the slot key is gone,
// recreated or bound to another lease (all final: Acquire again to get a slot back), or
// when N was lowered below the host's place in line (not final: the host keeps its key,
// finishes the step it is in, and starts no new one until N is raised or the keys ahead
// leave). Any other error (etcd unreachable while the deadline still holds) means the
// hold is not certain either: do not start the step.
func (e *Etcd) Check(ctx context.Context) error {
	e.mu.Lock()
	s := e.slot
	e.mu.Unlock()
	if s == nil || !s.held {
		return fmt.Errorf("check etcd lease: %w: no slot acquired", ErrNotHeld)
	}
	if err := e.lost(s); err != nil {
		return err
	}
	if err := s.sess.valid(); err != nil {
		return e.lose(s, err)
	}
	rctx, cancel := context.WithTimeout(ctx, s.sess.remaining())
	v, err := e.read(rctx, s.keys, s.token)
	cancel()
	if verr := s.sess.valid(); verr != nil {
		return e.lose(s, verr)
	}
	if err != nil {
		return fmt.Errorf("check etcd lease: %w", err)
	}
	if err := v.ours(s.token, s.lease); err != nil {
		return e.lose(s, err)
	}
	if !v.holds() {
		reason := fmt.Sprintf("maxParallel of group %s is now %d, and at least that many slot keys are ahead of this host's", s.keys.group, v.n)
		if v.nErr != nil {
			reason = v.nErr.Error()
		}
		return fmt.Errorf("check etcd lease: %w: %s", ErrNotHeld, reason)
	}
	return nil
}

func (e *Etcd) lost(s *slot) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return s.lost
}

// lose records that s is lost for good because of reason, and returns the error.
func (e *Etcd) lose(s *slot, reason error) error {
	err := fmt.Errorf("check etcd lease: %w: %w", ErrNotHeld, reason)
	e.mu.Lock()
	if s.lost == nil {
		s.lost = err
		e.log.Warn("lease slot lost", "group", s.keys.group, "token", s.token, "reason", reason)
	}
	err = s.lost
	e.mu.Unlock()
	return err
}

// Token is the fencing token of the slot held: its key's creation revision. It is 0
// when no slot is held, or when the hold lapsed (session lost, local deadline passed,
// key gone).
func (e *Etcd) Token() int64 {
	e.mu.Lock()
	s := e.slot
	e.mu.Unlock()
	if s == nil || !s.held || e.lost(s) != nil || s.sess.valid() != nil {
		return 0
	}
	return s.token
}

// Fence returns the slot key and fencing token of the slot this host acquired, whether
// or not its hold has lapsed since: ok is false only when no slot was acquired (or it
// was released). A write fenced with them is decided by etcd at the write's revision,
// so a lapsed hold fences too: etcd refuses the write once the key is gone or another
// host's. Unlike Token, it never turns a fenced write into an unfenced one.
func (e *Etcd) Fence() (key string, token int64, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s := e.slot; s != nil && s.held {
		return s.keys.slot, s.token, true
	}
	return "", 0, false
}

// HeldUntil is the local deadline of the slot held: until then the hold is certain,
// after it Check fails. It is the zero time when no slot is held. Calls made under the
// lease take it as their deadline, so that none outlasts the hold.
func (e *Etcd) HeldUntil() time.Time {
	e.mu.Lock()
	s := e.slot
	e.mu.Unlock()
	if s == nil || !s.held || e.lost(s) != nil {
		return time.Time{}
	}
	deadline, _, err := s.sess.state()
	if err != nil {
		return time.Time{}
	}
	return deadline
}

// Guarded runs ops in one etcd transaction that succeeds only while the slot key is
// still this host's: same creation revision (the token) and same lease. Every
// fleet-state write by a holder goes through it. It fails with an error wrapping
// ErrNotHeld when no slot was acquired or the compare fails. etcd decides the compare
// at the write's revision, so it fences even when the local deadline has passed.
func (e *Etcd) Guarded(ctx context.Context, ops ...clientv3.Op) error {
	e.mu.Lock()
	s := e.slot
	e.mu.Unlock()
	if s == nil || !s.held {
		return fmt.Errorf("guarded etcd write: %w: no slot acquired", ErrNotHeld)
	}
	resp, err := e.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(s.keys.slot), "=", s.token),
			clientv3.Compare(clientv3.LeaseValue(s.keys.slot), "=", int64(s.lease))).
		Then(ops...).
		Commit()
	if err != nil {
		return fmt.Errorf("guarded etcd write: %w", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("guarded etcd write: %w: slot key %s is no longer this host's (token %d)", ErrNotHeld, s.keys.slot, s.token)
	}
	return nil
}

// Release gives the slot back by deleting the host's key (if it is still the one it
// put). Releasing when nothing is held is a no-op. The session stays for the next
// Acquire.
func (e *Etcd) Release(ctx context.Context) error {
	e.op.Lock()
	defer e.op.Unlock()
	e.mu.Lock()
	s := e.slot
	e.mu.Unlock()
	if s == nil {
		return nil
	}
	if err := e.deleteSlot(ctx, s); err != nil {
		e.abandon(s)
		return fmt.Errorf("release etcd lease: %w; the slot frees itself within the TTL (%v)", err, e.o.TTL)
	}
	if s.held {
		e.log.Info("lease slot released", "group", s.keys.group, "token", s.token, "held", e.o.Clock().Sub(s.since).Round(time.Millisecond))
	}
	return nil
}

// abandon forgets s, whose key could not be deleted, and stops keeping its session
// alive: the key then expires with the session within the TTL, whatever etcd answers
// now, instead of being held for as long as this process lives. The next Acquire
// grants a new session.
func (e *Etcd) abandon(s *slot) {
	e.mu.Lock()
	if e.slot == s {
		e.slot = nil
	}
	stop := e.sess == s.sess
	if stop {
		e.sess = nil
	}
	e.mu.Unlock()
	if stop {
		s.sess.stop()
	}
	e.log.Warn("lease slot key not deleted: left to expire with its session", "group", s.keys.group, "token", s.token, "ttl", e.o.TTL)
}

// Close stops the keep-alives. A slot still held is left to expire with its session
// after the TTL, so that an agent restarted within the TTL resumes it; without a slot
// the session is revoked at once. The Etcd is unusable afterwards; the client stays open.
func (e *Etcd) Close() error {
	e.op.Lock()
	defer e.op.Unlock()
	e.mu.Lock()
	sess, s := e.sess, e.slot
	e.sess, e.closed = nil, true
	e.mu.Unlock()
	if sess == nil {
		return nil
	}
	if s != nil {
		sess.stop()
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return sess.revoke(ctx)
}

// SetSlots writes N, the group's maxParallel, to etcd. The agent calls it before
// Acquire with the value of the commit it applies; lowering it makes holders beyond the
// new N fail Check, raising it wakes waiters. It writes only when the value changes.
func (e *Etcd) SetSlots(ctx context.Context, group string, n int) error {
	if err := checkName("group", group); err != nil {
		return fmt.Errorf("set lease slots: %w", err)
	}
	if n < 0 {
		return fmt.Errorf("set lease slots of group %s: %d is negative", group, n)
	}
	k := keysFor(e.o.Prefix, group, e.o.Host)
	val := strconv.Itoa(n)
	_, err := e.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(k.max), "=", val)).
		Else(clientv3.OpPut(k.max, val)).
		Commit()
	if err != nil {
		return fmt.Errorf("set lease slots of group %s: %w", group, err)
	}
	return nil
}

// Holders reads a group's slot keys in creation order and its N, at one revision.
func Holders(ctx context.Context, cli *clientv3.Client, prefix, group string) ([]Holder, int, error) {
	if err := checkName("group", group); err != nil {
		return nil, 0, fmt.Errorf("read lease holders: %w", err)
	}
	k := keysFor(prefix, group, "")
	resp, err := cli.Txn(ctx).Then(lineOps(k)...).Commit()
	if err != nil {
		return nil, 0, fmt.Errorf("read lease holders of group %s: %w", group, err)
	}
	hs, n := parseLine(k, resp.Responses)
	return hs, n, nil
}

// Line reads the slot keys of group in line order and its N, as Holders does.
func (e *Etcd) Line(ctx context.Context, group string) ([]Holder, int, error) {
	return Holders(ctx, e.cli, e.o.Prefix, group)
}

// ReleaseHost deletes host's slot key in group: the operator's last resort (`baton
// lease release --host H`) when a holder is known dead and its lease has not expired,
// or when a key outlives its purpose. It returns an error wrapping ErrNotHeld when host
// has no key. A live holder whose key is deleted fails its next Check.
func ReleaseHost(ctx context.Context, cli *clientv3.Client, prefix, group, host string) error {
	if err := checkName("group", group); err != nil {
		return fmt.Errorf("release lease slot: %w", err)
	}
	if err := checkName("host", host); err != nil {
		return fmt.Errorf("release lease slot: %w", err)
	}
	k := keysFor(prefix, group, host)
	resp, err := cli.Delete(ctx, k.slot)
	if err != nil {
		return fmt.Errorf("release lease slot of %s in group %s: %w", host, group, err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("release lease slot of %s in group %s: %w: no slot key", host, group, ErrNotHeld)
	}
	return nil
}
