package sim

import (
	"cmp"
	"flag"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// defaultSeeds is how many seeds TestSimulation runs without -seeds.
var defaultSeeds = 10000

var (
	seeds    = flag.Int("seeds", 0, "how many seeds TestSimulation runs (default 10,000; 300 with -race)")
	seed     = flag.Uint64("seed", 0, "replay this one seed, with its trace")
	firstArg = flag.Uint64("first", 1, "the first seed TestSimulation runs")
)

// simConfig is the rollout each seed simulates.
func simConfig(s uint64) Config {
	return Config{Seed: s, Faulty: 20 * time.Minute, Settle: 40 * time.Minute}
}

// TestSimulation runs many seeds of a fleet upgrading under faults, each checked after
// every event; a seed that breaks a promise fails the test with its replay command.
func TestSimulation(t *testing.T) {
	if *seed != 0 {
		cfg := simConfig(*seed)
		cfg.Trace = true
		res := Run(cfg)
		t.Logf("seed %d: %d events, %d steps, %d faults, %d commits\n%s", res.Seed, res.Events, res.Steps, res.Faults, res.Commits, strings.Join(res.Trace, "\n"))
		if res.Violation != "" {
			t.Fatalf("seed %d: %s", res.Seed, res.Violation)
		}
		return
	}
	if *seeds == 0 {
		*seeds = defaultSeeds
	}
	start := time.Now()
	var events, steps, faults, superseded atomic.Int64
	var mu sync.Mutex
	var failed []Result
	next := atomic.Uint64{}
	next.Store(*firstArg)
	last := *firstArg + uint64(*seeds)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for s := next.Add(1) - 1; s < last; s = next.Add(1) - 1 {
				res := Run(simConfig(s))
				events.Add(int64(res.Events))
				steps.Add(int64(res.Steps))
				faults.Add(int64(res.Faults))
				superseded.Add(int64(res.Superseded))
				if res.Violation != "" {
					mu.Lock()
					failed = append(failed, res)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	slices.SortFunc(failed, func(a, b Result) int { return cmp.Compare(a.Seed, b.Seed) })
	fmt.Printf("sim: %d seeds, %d events, %d transaction steps, %d faults, %d lease waits superseded in %v (%.0f seeds/s); %d broke a promise\n",
		*seeds, events.Load(), steps.Load(), faults.Load(), superseded.Load(), took.Round(time.Millisecond), float64(*seeds)/took.Seconds(), len(failed))
	for i, res := range failed {
		if i == 5 {
			t.Errorf("... and %d more", len(failed)-5)
			break
		}
		t.Errorf("seed %d: %s\n  replay: go test ./sim -run TestSimulation -seed %d", res.Seed, res.Violation, res.Seed)
	}
}

// Pushes come during the rollout, so some hosts find a newer commit while they wait
// for the lease and go to it: the simulation checks the promises with superseded
// transactions in the mix.
func TestSupersededInTheMix(t *testing.T) {
	n := 0
	for s := uint64(1); s <= 50; s++ {
		n += Run(simConfig(s)).Superseded
	}
	if n == 0 {
		t.Fatal("no lease wait was superseded in 50 seeds")
	}
	t.Logf("%d lease waits superseded in 50 seeds", n)
}

// A seed replays exactly: the same steps, the same trace.
func TestReplay(t *testing.T) {
	for s := uint64(1); s <= 20; s++ {
		cfg := simConfig(s)
		cfg.Trace = true
		a, b := Run(cfg), Run(cfg)
		if strings.Join(a.Trace, "\n") != strings.Join(b.Trace, "\n") || a.Events != b.Events {
			t.Fatalf("seed %d ran twice differently", s)
		}
		if a.Steps == 0 || a.Commits == 0 {
			t.Fatalf("seed %d did nothing: %+v", s, a)
		}
	}
}
