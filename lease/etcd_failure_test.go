package lease

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testetcd"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A holder whose process is killed stops keeping its lease alive and revokes nothing:
// an agent restarted with the same host name within the TTL resumes its slot with the
// same token; when none is, the slot frees after the TTL and the next waiter proceeds.
func TestEtcdKilledHolderResumesOrFreesAfterTTL(t *testing.T) {
	t.Parallel() // mostly waits for a TTL or a timeout
	c := testetcd.Start(t)
	cli := c.Client(t)
	ctx := ctxT(t, 60*time.Second)

	first := startContender(t, c, "web-01", "web")
	first.kill()
	restarted := startContender(t, c, "web-01", "web")
	if restarted.token != first.token {
		t.Fatalf("restarted contender's token = %d, want the killed one's %d", restarted.token, first.token)
	}

	w := newEtcd(t, cli, "web-02")
	waiter := acquireAsync(ctx, w, "web")
	time.Sleep(300 * time.Millisecond)
	restarted.kill()
	killed := time.Now()
	select {
	case err := <-waiter:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testTTL + 5*time.Second):
		t.Fatalf("the slot of a killed holder was not freed %v after its death", testTTL+5*time.Second)
	}
	// The lease was renewed at most TTL/3 (plus a keep-alive's time) before the kill.
	waited := time.Since(killed)
	if waited < testTTL/2 {
		t.Fatalf("the waiter acquired %v after the holder's death, before its lease could expire", waited)
	}
	t.Logf("slot freed %v after the holder was killed (TTL %v)", waited.Round(time.Millisecond), testTTL)
	if _, holding, _ := holders(t, cli, "web"); !slices.Equal(holding, []string{"web-02"}) {
		t.Fatalf("holding %v, want [web-02]", holding)
	}
}

// A holder cut off from etcd (a blackholed proxy between them) fails Check on its
// local deadline, before its lease can expire and before anyone else gets the slot; once
// reconnected it does not believe it holds it and has to acquire anew.
func TestEtcdPartitionedHolderStopsBeforeItsLeaseExpires(t *testing.T) {
	t.Parallel() // mostly waits for a TTL or a timeout
	c := testetcd.Start(t)
	h, p := proxied(t, c, "h")
	cli := c.Client(t)
	w := newEtcd(t, cli, "w")
	ctx := ctxT(t, 60*time.Second)

	if err := h.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	hTok := h.Token()
	waiterDone := make(chan time.Time, 1)
	waiter := make(chan error, 1)
	go func() {
		err := w.Acquire(ctx, "web")
		waiterDone <- time.Now()
		waiter <- err
	}()
	time.Sleep(200 * time.Millisecond)

	p.Block()
	blocked := time.Now()
	var failed time.Time
	var checkErr error
	for failed.IsZero() {
		if time.Since(blocked) > 2*testTTL {
			t.Fatalf("Check still not failing %v after the partition", time.Since(blocked))
		}
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		checkErr = h.Check(cctx)
		cancel()
		if errors.Is(checkErr, ErrNotHeld) {
			failed = time.Now()
		}
		select {
		case <-waiterDone:
			t.Fatalf("the waiter acquired while the cut-off holder's Check still passed (%v)", checkErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if !strings.Contains(checkErr.Error(), "local deadline passed") {
		t.Fatalf("Check of the cut-off holder = %v, want the local deadline", checkErr)
	}
	if d := failed.Sub(blocked); d >= testTTL {
		t.Fatalf("Check failed %v after the partition; the lease may expire after %v", d, testTTL)
	}
	if h.Token() != 0 {
		t.Fatalf("Token of the cut-off holder = %d, want 0", h.Token())
	}
	var acquired time.Time
	select {
	case acquired = <-waiterDone:
		if err := <-waiter; err != nil {
			t.Fatal(err)
		}
	case <-time.After(testTTL + 5*time.Second):
		t.Fatal("the waiter did not get the slot of the cut-off holder")
	}
	t.Logf("partition at 0; holder's Check failed at %v; waiter acquired at %v (TTL %v)",
		failed.Sub(blocked).Round(time.Millisecond), acquired.Sub(blocked).Round(time.Millisecond), testTTL)

	p.Unblock()
	// Reconnected, the holder learns its lease is gone; it still refuses.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, _, serr := h.current().sess.state()
		if serr != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the reconnected holder never learned that its lease expired")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := h.Check(ctx); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("Check after reconnecting = %v, want ErrNotHeld", err)
	}
	if err := h.Guarded(ctx, clientv3.OpPut("/baton/x", "stale")); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("Guarded after reconnecting = %v, want ErrNotHeld", err)
	}
	if h.Token() != 0 {
		t.Fatalf("Token after reconnecting = %d, want 0", h.Token())
	}
	// Acquire anew: it queues behind the waiter with a new token.
	again := acquireAsync(ctx, h, "web")
	select {
	case err := <-again:
		t.Fatalf("the old holder re-acquired while the waiter holds: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := w.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-again; err != nil {
		t.Fatal(err)
	}
	if h.Token() <= w.token() && h.Token() <= hTok {
		t.Fatalf("new token %d is not above the old ones (%d, %d)", h.Token(), hTok, w.token())
	}
}

// A release that cannot reach etcd does not leave the slot held for as long as the
// agent lives (it keeps its session alive while idle): the session is abandoned, so the
// key expires within the TTL even after etcd is reachable again, and the next waiter
// proceeds. Before, the healed agent kept the key alive forever.
func TestEtcdFailedReleaseFreesTheSlotWithinTheTTL(t *testing.T) {
	t.Parallel() // mostly waits for a TTL
	c := testetcd.Start(t)
	h, p := proxied(t, c, "h")
	w := newEtcd(t, c.Client(t), "w")
	ctx := ctxT(t, 60*time.Second)

	if err := h.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	waiter := acquireAsync(ctx, w, "web")
	p.Block()
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	err := h.Release(rctx)
	cancel()
	if err == nil {
		t.Fatal("Release through a blocked proxy succeeded")
	}
	if _, _, ok := h.Fence(); ok {
		t.Fatal("Fence after a failed release still names a slot")
	}
	p.Unblock()
	healed := time.Now()
	select {
	case err := <-waiter:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testTTL + 5*time.Second):
		t.Fatalf("the slot of a holder whose release failed is still held %v after etcd came back", time.Since(healed).Round(time.Millisecond))
	}
	t.Logf("the slot freed %v after etcd came back (TTL %v)", time.Since(healed).Round(time.Millisecond), testTTL)
	// The abandoned holder can acquire again, behind the waiter.
	again := acquireAsync(ctx, h, "web")
	if err := w.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-again; err != nil {
		t.Fatal(err)
	}
}

// A holder whose hold lapsed keeps its fence: Token says 0, but Fence still names the
// slot it acquired, and a write guarded by it is refused by etcd once another host has
// the slot. (The agent used to fence with Token, and a zero token wrote unfenced.)
func TestEtcdFenceOutlivesTheLocalHold(t *testing.T) {
	t.Parallel() // waits for a TTL
	c := testetcd.Start(t)
	h, p := proxied(t, c, "h")
	cli := c.Client(t)
	w := newEtcd(t, cli, "w")
	ctx := ctxT(t, 60*time.Second)

	if err := h.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	key, tok, ok := h.Fence()
	if !ok || tok != h.Token() || key != "/baton/groups/web/slots/h" {
		t.Fatalf("Fence = %q %d %v, want the slot key and token %d", key, tok, ok, h.Token())
	}
	if until := h.HeldUntil(); time.Until(until) <= 0 || time.Until(until) > testTTL {
		t.Fatalf("HeldUntil is %v from now, want within the TTL %v", time.Until(until), testTTL)
	}
	waiter := acquireAsync(ctx, w, "web")
	p.Block()
	select {
	case err := <-waiter:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testTTL + 5*time.Second):
		t.Fatal("the waiter did not get the slot of the cut-off holder")
	}
	if h.Token() != 0 || !h.HeldUntil().IsZero() && time.Until(h.HeldUntil()) > 0 {
		t.Fatalf("the cut-off holder still believes it holds: Token %d, HeldUntil in %v", h.Token(), time.Until(h.HeldUntil()))
	}
	p.Unblock()
	key2, tok2, ok := h.Fence()
	if !ok || key2 != key || tok2 != tok {
		t.Fatalf("Fence after the hold lapsed = %q %d %v, want %q %d", key2, tok2, ok, key, tok)
	}
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key2), "=", tok2)).
		Then(clientv3.OpPut("/baton/fenced", "stale")).Commit()
	if err != nil {
		t.Fatal(err)
	}
	if resp.Succeeded {
		t.Fatal("a write fenced by the lapsed holder's token went through")
	}
}

// proxied is the lease of host on c, reaching etcd through a proxy the test can block
// (a silent partition: packets go nowhere, nothing is refused).
func proxied(t *testing.T, c *testetcd.Cluster, host string) (*Etcd, *testetcd.Proxy) {
	t.Helper()
	p := testetcd.NewProxy(t, c.Members()[0].ClientURL)
	cfg := c.ClientConfig()
	cfg.Endpoints = []string{p.URL()}
	cfg.DialKeepAliveTime, cfg.DialKeepAliveTimeout = time.Second, time.Second
	return newEtcd(t, c.ClientWith(t, cfg), host), p
}
