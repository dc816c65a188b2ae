package chaos

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"
)

var (
	chaosDuration = flag.Duration("chaos.duration", 0, "run TestChaos for this long (make chaos DURATION=10m); 0 skips it")
	chaosSeed     = flag.Int64("chaos.seed", 0, "TestChaos's seed; 0 picks one from the clock")
)

// TestChaos pushes good and bad releases one after the other for -chaos.duration
// while faults are injected at random (seeded) times, then checks the promises over
// the whole run and prints a table: transactions, faults by kind, violations.
// `make chaos DURATION=10m`; replay a run with its seed (SEED=...).
func TestChaos(t *testing.T) {
	if *chaosDuration <= 0 {
		t.Skip("set -chaos.duration (make chaos DURATION=10m)")
	}
	seed := *chaosSeed
	if seed == 0 {
		seed = time.Now().UnixNano() % 1e9
	}
	fmt.Printf("chaos: seed %d (replay with SEED=%d)\n", seed, seed)
	h := startHarness(t)
	ctx := context.Background()
	start := time.Now()
	deadline := start.Add(*chaosDuration)
	rep := Report{Seed: seed, Hosts: len(h.f.Hosts), EtcdMembers: len(h.f.Cluster.Members()), Faults: map[string]int{}}
	kills := h.watchdogKills()

	stop := make(chan struct{})
	var stopOnce sync.Once
	var wg sync.WaitGroup
	var mu sync.Mutex
	halt := func() { stopOnce.Do(func() { close(stop) }); wg.Wait() }
	defer halt() // before the fleet's cleanup, should the test end early
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(uint64(seed), 1))
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(5+rng.IntN(16)) * time.Second):
			}
			kind, err := injectFault(h, rng, stop)
			mu.Lock()
			rep.Faults[kind]++
			mu.Unlock()
			if err != nil {
				t.Logf("fault %s: %v", kind, err)
			}
		}
	})

	rng := rand.New(rand.NewPCG(uint64(seed), 2))
	var last Release
	for time.Now().Before(deadline) {
		good := rng.IntN(4) != 0
		rel, err := h.push(good)
		if err != nil {
			t.Fatal(err)
		}
		last = rel
		rep.Pushed++
		if !good {
			rep.Bad++
		}
		if err := h.settle(ctx, rel, 2*time.Minute); err != nil {
			t.Logf("%v", err)
			rep.Unsettled++
		}
	}
	halt()
	if err := h.heal(); err != nil {
		t.Error(err)
	}
	if err := h.settle(ctx, last, 3*time.Minute); err != nil {
		t.Errorf("after the faults: %v", err)
	}
	in := h.input(ctx, start)
	rep.Violations = Check(in)
	rep.Txns = BuildTimeline(in.Journals, start).Count()
	for name, n := range h.watchdogKills() {
		rep.WatchdogKills += n - kills[name]
	}
	rep.Took = time.Since(start)
	mu.Lock()
	_ = rep.Write(os.Stdout)
	mu.Unlock()
	for _, v := range rep.Violations {
		t.Errorf("invariant violated: %v", v)
	}
}

// injectFault injects one fault chosen by rng, waits a random while (or until stop)
// and undoes it; it returns the fault's kind.
func injectFault(h *harness, rng *rand.Rand, stop <-chan struct{}) (string, error) {
	f := h.f
	hold := func(min, max int) {
		select {
		case <-stop:
		case <-time.After(time.Duration(min+rng.IntN(max-min+1)) * time.Second):
		}
	}
	switch rng.IntN(5) {
	case 0:
		host := f.Hosts[rng.IntN(len(f.Hosts))]
		if err := host.CutEtcd(); err != nil {
			return "host cut off etcd", err
		}
		hold(3, 20)
		return "host cut off etcd", host.HealEtcd()
	case 1:
		f.Cluster.KillAll()
		hold(5, 30)
		return "etcd down", f.Cluster.StartAll()
	case 2:
		l := f.Cluster.Leader()
		if l < 0 {
			return "etcd leader killed", fmt.Errorf("no leader")
		}
		f.Cluster.Kill(l)
		hold(5, 15)
		return "etcd leader killed", f.Cluster.Start(l)
	case 3:
		n := len(f.Cluster.Members())
		i := rng.IntN(n)
		if i == f.Cluster.Leader() {
			i = (i + 1) % n
		}
		f.Cluster.Kill(i)
		hold(5, 15)
		return "etcd follower killed", f.Cluster.Start(i)
	default:
		// systemd restarts it (Restart=on-failure), as it would the packaged agent.
		host := f.Hosts[rng.IntN(len(f.Hosts))]
		return "agent SIGKILL", host.KillAgent()
	}
}
