package lease

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testetcd"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// inStepPrefix is where the contenders of the safety tests mark their "disruptive
// step": a key written through Guarded before it and deleted after it.
const inStepPrefix = "/baton/test/in-step/"

// stepChecker watches the in-step keys in revision order and records the most seen at
// once: the safety invariant is that it never exceeds N.
type stepChecker struct {
	mu      sync.Mutex
	in      map[string]bool
	most    int
	entered int
	bad     []string // the revisions where more than n were in a step
	rev     int64    // the revision the watch has reached
	cli     *clientv3.Client
	cancel  context.CancelFunc
	done    chan struct{}
}

func startStepChecker(t *testing.T, cli *clientv3.Client, n int) *stepChecker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := cli.Get(ctx, inStepPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 0 {
		t.Fatalf("in-step keys before the test: %d", len(resp.Kvs))
	}
	sc := &stepChecker{in: map[string]bool{}, cli: cli, cancel: cancel, done: make(chan struct{})}
	ch := cli.Watch(ctx, inStepPrefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	go func() {
		defer close(sc.done)
		for wr := range ch {
			if err := wr.Err(); err != nil && ctx.Err() == nil {
				sc.mu.Lock()
				sc.bad = append(sc.bad, fmt.Sprintf("watch failed: %v", err))
				sc.mu.Unlock()
				return
			}
			sc.mu.Lock()
			sc.rev = max(sc.rev, wr.Header.Revision)
			for _, ev := range wr.Events {
				k := string(ev.Kv.Key)
				if ev.Type == clientv3.EventTypePut {
					if !sc.in[k] {
						sc.entered++
					}
					sc.in[k] = true
				} else {
					delete(sc.in, k)
				}
				if len(sc.in) > n {
					sc.bad = append(sc.bad, fmt.Sprintf("revision %d: %d hosts in a step (N=%d)", ev.Kv.ModRevision, len(sc.in), n))
				}
				sc.most = max(sc.most, len(sc.in))
			}
			sc.mu.Unlock()
		}
	}()
	t.Cleanup(sc.stop)
	return sc
}

// catchUp waits, for up to 30s, until the watch has reached etcd's revision now: the
// last events of the contenders may still be on their way. It asks for progress
// notifications, which carry the revision when no event of the prefix does.
func (sc *stepChecker) catchUp() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := sc.cli.Get(ctx, inStepPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return
	}
	for ctx.Err() == nil {
		sc.mu.Lock()
		reached := sc.rev >= resp.Header.Revision
		sc.mu.Unlock()
		if reached {
			return
		}
		_ = sc.cli.RequestProgress(ctx)
		time.Sleep(50 * time.Millisecond)
	}
}

func (sc *stepChecker) stop() {
	sc.cancel()
	<-sc.done
}

// result stops the checker, once its watch has seen every change made so far, and
// returns what it saw.
func (sc *stepChecker) result() (most, entered int, bad []string) {
	sc.catchUp()
	sc.stop()
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.most, sc.entered, sc.bad
}

// cycle is one contender's turn: acquire, re-check, enter the step through Guarded,
// hold for a while, leave the step, release. Errors that etcd may have applied anyway
// (a leader change mid-request) are handled as an agent would: leave the step marker
// deleted and the slot released before going on.
func cycle(ctx context.Context, e *Etcd, cli *clientv3.Client, group string, hold time.Duration) (bool, error) {
	if err := e.Acquire(ctx, group); err != nil {
		return false, err
	}
	defer retryUntil(ctx, func(ctx context.Context) error { return e.Release(ctx) })
	if err := e.Check(ctx); err != nil {
		return false, nil
	}
	key := inStepPrefix + e.o.Host
	err := e.Guarded(ctx, clientv3.OpPut(key, fmt.Sprint(e.Token())))
	defer retryUntil(ctx, func(ctx context.Context) error {
		_, err := cli.Delete(ctx, key)
		return err
	})
	if err != nil {
		if errors.Is(err, ErrNotHeld) {
			return false, fmt.Errorf("Guarded after a passing Check: %w", err)
		}
		return false, nil
	}
	time.Sleep(hold)
	return true, nil
}

// retryUntil runs f until it succeeds or ctx ends, each try bounded to 5s.
func retryUntil(ctx context.Context, f func(context.Context) error) {
	for ctx.Err() == nil {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := f(tctx)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runContenders runs contenders hosts, each doing cycles turns in group, spread over
// clis; during runs in the middle (after a fifth of the turns). It returns the turns
// that entered a step, and those after during returned.
func runContenders(t *testing.T, clis []*clientv3.Client, group string, contenders, cycles int, maxHold time.Duration, during func()) (steps, stepsAfter int64) {
	t.Helper()
	ctx := ctxT(t, 90*time.Second)
	var total, after atomic.Int64
	var duringDone atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, contenders)
	for i := range contenders {
		cli := clis[i%len(clis)]
		e := newEtcd(t, cli, fmt.Sprintf("host-%02d", i))
		wg.Go(func() {
			for range cycles {
				stepped, err := cycle(ctx, e, cli, group, rand.N(maxHold))
				if err != nil {
					errs <- fmt.Errorf("%s: %w", e.o.Host, err)
					return
				}
				if stepped {
					total.Add(1)
					if duringDone.Load() {
						after.Add(1)
					}
				}
				time.Sleep(rand.N(2 * time.Millisecond))
			}
		})
	}
	if during != nil {
		for total.Load() < int64(contenders*cycles/5) && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		during()
		duringDone.Store(true)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	return total.Load(), after.Load()
}

func TestEtcdSafetyUnderConcurrency(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("maxParallel=%d", n), func(t *testing.T) {
			c := testetcd.StartWith(t, testetcd.Options{NoFsync: true})
			var clis []*clientv3.Client
			for range 4 {
				clis = append(clis, c.Client(t))
			}
			if err := NewEtcd(clis[0], EtcdOptions{Host: "setup"}).SetSlots(ctxT(t, 10*time.Second), "web", n); err != nil {
				t.Fatal(err)
			}
			sc := startStepChecker(t, clis[0], n)
			start := time.Now()
			steps, _ := runContenders(t, clis, "web", 20, 20, 5*time.Millisecond, nil)
			most, entered, bad := sc.result()
			t.Logf("N=%d: %d steps by 20 contenders in %v; at most %d in a step at once", n, steps, time.Since(start).Round(time.Millisecond), most)
			if len(bad) > 0 {
				t.Fatalf("invariant broken:\n%s", strings.Join(bad, "\n"))
			}
			if steps < 20*20*9/10 || int64(entered) != steps {
				t.Fatalf("%d steps (checker saw %d), want about %d", steps, entered, 20*20)
			}
			if n > 1 && most < 2 {
				t.Errorf("never more than %d in a step with N=%d: the slots are not used", most, n)
			}
		})
	}
}

func TestEtcdSafetyThroughLeaderLoss(t *testing.T) {
	c := testetcd.StartWith(t, testetcd.Options{Members: 3, NoFsync: true})
	var clis []*clientv3.Client
	for range 4 {
		clis = append(clis, c.Client(t))
	}
	const n = 2
	if err := NewEtcd(clis[0], EtcdOptions{Host: "setup"}).SetSlots(ctxT(t, 10*time.Second), "web", n); err != nil {
		t.Fatal(err)
	}
	sc := startStepChecker(t, clis[0], n)
	killed := -1
	steps, after := runContenders(t, clis, "web", 10, 30, 10*time.Millisecond, func() {
		killed = c.KillLeader()
		t.Logf("killed the leader, member %d", killed)
	})
	most, _, bad := sc.result()
	t.Logf("%d steps, %d after the leader was killed; at most %d in a step at once", steps, after, most)
	if len(bad) > 0 {
		t.Fatalf("invariant broken:\n%s", strings.Join(bad, "\n"))
	}
	if after < 10*30/2 {
		t.Fatalf("only %d steps after the leader was killed: the cycles did not go on", after)
	}
	if lead := c.Leader(); lead == killed || lead < 0 {
		t.Fatalf("leader after the kill = %d", lead)
	}
}
