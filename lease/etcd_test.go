package lease

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testetcd"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestEtcdAcquireCheckReleaseAreIdempotent(t *testing.T) {
	c := testetcd.Start(t)
	cli := c.Client(t)
	e := newEtcd(t, cli, "web-01")
	ctx := ctxT(t, 30*time.Second)

	if err := e.Check(ctx); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("Check before Acquire = %v, want ErrNotHeld", err)
	}
	if err := e.Release(ctx); err != nil {
		t.Fatalf("Release before Acquire: %v", err)
	}
	if err := e.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	tok := e.Token()
	if err := e.Acquire(ctx, "web"); err != nil {
		t.Fatalf("second Acquire: %v", err)
	}
	if got := e.Token(); got != tok || tok == 0 {
		t.Fatalf("token after second Acquire = %d, want %d (non-zero)", got, tok)
	}
	if err := e.Check(ctx); err != nil {
		t.Fatalf("Check while held: %v", err)
	}
	hs, n, err := Holders(ctx, cli, "/baton", "web")
	if err != nil {
		t.Fatal(err)
	}
	want := []Holder{{Host: "web-01", CreateRevision: tok, Holding: true}}
	if !slices.Equal(hs, want) || n != DefaultSlots {
		t.Fatalf("Holders = %v, %d; want %v, %d", hs, n, want, DefaultSlots)
	}
	if err := e.Acquire(ctx, "db"); err == nil {
		t.Fatal("Acquire of a second group while holding one succeeded")
	}
	if err := e.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Release(ctx); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	if err := e.Check(ctx); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("Check after Release = %v, want ErrNotHeld", err)
	}
	if got := e.Token(); got != 0 {
		t.Fatalf("Token after Release = %d, want 0", got)
	}
	if line, _, _ := holders(t, cli, "web"); len(line) != 0 {
		t.Fatalf("slot keys after Release: %v", line)
	}
}

func TestEtcdOneSlotExcludesAndHandsOver(t *testing.T) {
	c := testetcd.Start(t)
	cli := c.Client(t)
	a, b := newEtcd(t, cli, "a"), newEtcd(t, cli, "b")
	ctx := ctxT(t, 30*time.Second)
	if err := a.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err := b.Acquire(short, "web")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire of a held slot = %v, want it to wait until the deadline", err)
	}
	if line, _, _ := holders(t, cli, "web"); !slices.Equal(line, []string{"a"}) {
		t.Fatalf("after a withdrawn Acquire the line is %v, want [a]", line)
	}
	got := acquireAsync(ctx, b, "web")
	select {
	case err := <-got:
		t.Fatalf("b acquired while a holds: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	released := time.Now()
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(released); d > time.Second {
		t.Fatalf("handoff took %v; a waiter is woken by its watch", d)
	}
	if b.Token() <= a.token() {
		t.Fatalf("b's token %d is not above a's %d", b.Token(), a.token())
	}
}

// token is the token of the slot key, held or not, for tests.
func (e *Etcd) token() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.slot == nil {
		return 0
	}
	return e.slot.token
}

func TestEtcdGuardedFencesAndReleaseHost(t *testing.T) {
	c := testetcd.Start(t)
	cli := c.Client(t)
	e := newEtcd(t, cli, "web-01")
	ctx := ctxT(t, 30*time.Second)
	if err := e.Guarded(ctx, clientv3.OpPut("/baton/state/x", "1")); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("Guarded before Acquire = %v, want ErrNotHeld", err)
	}
	if err := e.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := e.Guarded(ctx, clientv3.OpPut("/baton/state/x", "1")); err != nil {
		t.Fatalf("Guarded while held: %v", err)
	}
	if err := ReleaseHost(ctx, cli, "/baton", "web", "web-02"); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("ReleaseHost of a host without a key = %v, want ErrNotHeld", err)
	}
	if err := ReleaseHost(ctx, cli, "/baton/", "web", "web-01"); err != nil {
		t.Fatal(err)
	}
	if err := e.Guarded(ctx, clientv3.OpPut("/baton/state/x", "2")); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("Guarded after the key was deleted = %v, want ErrNotHeld", err)
	}
	err := e.Check(ctx)
	if !errors.Is(err, ErrNotHeld) || !strings.Contains(err.Error(), "slot key gone") {
		t.Fatalf("Check after the key was deleted = %v, want ErrNotHeld: slot key gone", err)
	}
	if e.Token() != 0 {
		t.Fatalf("Token after the key was deleted = %d, want 0", e.Token())
	}
	resp, err := cli.Get(ctx, "/baton/state/x")
	if err != nil {
		t.Fatal(err)
	}
	if v := string(resp.Kvs[0].Value); v != "1" {
		t.Fatalf("state/x = %q, want 1: the fenced write went through", v)
	}
	// Acquire anew puts a new key: a new, larger token.
	old := e.token()
	if err := e.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if e.Token() <= old {
		t.Fatalf("token after re-Acquire = %d, want above %d", e.Token(), old)
	}
}

func TestEtcdLoweringNStopsTheLaterHolderAndRaisingItWakesAWaiter(t *testing.T) {
	c := testetcd.Start(t)
	cli := c.Client(t)
	a, b, w := newEtcd(t, cli, "a"), newEtcd(t, cli, "b"), newEtcd(t, cli, "w")
	ctx := ctxT(t, 30*time.Second)
	if err := a.SetSlots(ctx, "web", 2); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*Etcd{a, b} {
		if err := e.Acquire(ctx, "web"); err != nil {
			t.Fatal(err)
		}
	}
	waiter := acquireAsync(ctx, w, "web")
	if err := a.SetSlots(ctx, "web", 1); err != nil {
		t.Fatal(err)
	}
	if err := a.Check(ctx); err != nil {
		t.Fatalf("first holder's Check after N 2->1: %v", err)
	}
	err := b.Check(ctx)
	if !errors.Is(err, ErrNotHeld) || !strings.Contains(err.Error(), "maxParallel") {
		t.Fatalf("later holder's Check after N 2->1 = %v, want ErrNotHeld about maxParallel", err)
	}
	if _, holding, n := holders(t, cli, "web"); !slices.Equal(holding, []string{"a"}) || n != 1 {
		t.Fatalf("holding %v with N=%d, want [a] with 1", holding, n)
	}
	select {
	case err := <-waiter:
		t.Fatalf("waiter acquired with N lowered: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	raised := time.Now()
	if err := a.SetSlots(ctx, "web", 3); err != nil {
		t.Fatal(err)
	}
	if err := <-waiter; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(raised); d > time.Second {
		t.Fatalf("waiter woke %v after N was raised", d)
	}
	if err := b.Check(ctx); err != nil {
		t.Fatalf("later holder's Check after N raised to 3: %v", err)
	}
}

func TestEtcdUnreadableNGrantsNothing(t *testing.T) {
	c := testetcd.Start(t)
	cli := c.Client(t)
	a, b := newEtcd(t, cli, "a"), newEtcd(t, cli, "b")
	ctx := ctxT(t, 30*time.Second)
	if err := a.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/baton/groups/web/maxParallel", "lots"); err != nil {
		t.Fatal(err)
	}
	if err := a.Check(ctx); !errors.Is(err, ErrNotHeld) || !strings.Contains(err.Error(), "not a count") {
		t.Fatalf("Check with maxParallel %q = %v, want ErrNotHeld: not a count", "lots", err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := b.Acquire(short, "web"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire with maxParallel %q = %v, want to wait", "lots", err)
	}
	if err := a.SetSlots(ctx, "web", -1); err == nil {
		t.Fatal("SetSlots(-1) succeeded")
	}
}

func TestEtcdRestartedAgentResumesItsSlot(t *testing.T) {
	t.Parallel() // mostly waits for a TTL or a timeout
	c := testetcd.Start(t)
	cli := c.Client(t)
	ctx := ctxT(t, 30*time.Second)
	first := newEtcd(t, cli, "web-01")
	if err := first.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	tok := first.Token()
	// A graceful stop mid-upgrade: keep-alives stop, the key stays until the TTL.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	w := newEtcd(t, cli, "web-02")
	waiter := acquireAsync(ctx, w, "web")

	second := newEtcd(t, cli, "web-01")
	if err := second.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if got := second.Token(); got != tok {
		t.Fatalf("restarted agent's token = %d, want its old %d", got, tok)
	}
	if err := second.Check(ctx); err != nil {
		t.Fatal(err)
	}
	// The first run's lease was revoked: its fenced writes fail now.
	if err := first.Guarded(ctx, clientv3.OpPut("/baton/x", "old")); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("Guarded by the earlier run = %v, want ErrNotHeld", err)
	}
	// Beyond the first run's TTL the slot is still held: the key lives on the new lease.
	time.Sleep(testTTL + time.Second)
	if err := second.Check(ctx); err != nil {
		t.Fatalf("Check a TTL after the resume: %v", err)
	}
	select {
	case err := <-waiter:
		t.Fatalf("waiter acquired while the resumed slot is held: %v", err)
	default:
	}
	if err := second.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-waiter; err != nil {
		t.Fatal(err)
	}
}

func TestEtcdNames(t *testing.T) {
	c := testetcd.Start(t)
	cli := c.Client(t)
	ctx := ctxT(t, 10*time.Second)
	for _, tc := range []struct{ host, group string }{
		{"", "web"}, {"a/b", "web"}, {"web-01", ""}, {"web-01", "w/b"}, {"web-01", ".."}, {"web 01", "web"},
	} {
		e := newEtcd(t, cli, tc.host)
		if err := e.Acquire(ctx, tc.group); err == nil {
			t.Errorf("Acquire host %q group %q succeeded", tc.host, tc.group)
		}
	}
	if _, _, err := Holders(ctx, cli, "/baton", "a/b"); err == nil {
		t.Error("Holders of group a/b succeeded")
	}
}

// TestEtcdCancelledEnqueueLeavesNoKey: a put of the slot key that etcd applied but
// whose answer never came (the wait ended as the request was on the wire, a newer
// commit superseding it) leaves no key in the group's line. The agent's session
// outlives the wait: a key left bound to it would keep its place, and a slot of the
// group once it came first, until the agent stopped.
func TestEtcdCancelledEnqueueLeavesNoKey(t *testing.T) {
	t.Parallel()
	c := testetcd.Start(t)
	cli := c.Client(t)
	ctx, cancel := context.WithCancel(t.Context())
	lost := &answerLost{KV: cli.KV, cancel: cancel}
	cli.KV = lost
	e := newEtcd(t, cli, "web-01")
	lost.armed.Store(true)
	if err := e.Acquire(ctx, "web"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire with the put's answer lost = %v, want context.Canceled", err)
	}
	if !lost.applied.Load() {
		t.Fatal("no transaction was applied with its answer lost: the test proves nothing")
	}
	if line, _, _ := holders(t, cli, "web"); len(line) != 0 {
		t.Fatalf("the line of web after the cancelled wait: %v, want it empty", line)
	}
	if err := e.Acquire(ctxT(t, 10*time.Second), "web"); err != nil {
		t.Fatalf("Acquire after the cancelled wait: %v", err)
	}
}

// answerLost is a KV whose next transaction, once armed, is applied by etcd and
// its answer lost: the caller's context is cancelled and Commit fails as a
// cancelled request does.
type answerLost struct {
	clientv3.KV
	armed, applied atomic.Bool
	cancel         context.CancelFunc
}

func (k *answerLost) Txn(ctx context.Context) clientv3.Txn {
	return &lostTxn{Txn: k.KV.Txn(ctx), kv: k}
}

type lostTxn struct {
	clientv3.Txn
	kv *answerLost
}

func (t *lostTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { t.Txn = t.Txn.If(cs...); return t }
func (t *lostTxn) Then(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Then(ops...); return t }
func (t *lostTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(ops...); return t }

func (t *lostTxn) Commit() (*clientv3.TxnResponse, error) {
	resp, err := t.Txn.Commit()
	if err == nil && t.kv.armed.CompareAndSwap(true, false) {
		t.kv.applied.Store(true)
		t.kv.cancel()
		return nil, context.Canceled
	}
	return resp, err
}
