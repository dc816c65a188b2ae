package sharedhead

import (
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-fleet/baton/internal/testetcd"
)

// agentsPerClient is how many simulated agents share one etcd client (one gRPC
// connection) in the benchmark: a real agent has its own, but a thousand
// connections from one test process measure the process more than etcd.
const agentsPerClient = 10

// BenchmarkPublishToWatchers measures the time from the fetcher's Publish to the
// moment every other agent has seen the new head (their watches woke them), with
// 100 and 1,000 agents on one etcd member. It prints the median and the slowest
// round; each round publishes one new commit.
//
//	go test -run '^$' -bench PublishToWatchers -benchtime 20x ./sharedhead
func BenchmarkPublishToWatchers(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) { benchPublish(b, n) })
	}
}

func benchPublish(b *testing.B, n int) {
	c := testetcd.StartWith(b, testetcd.Options{NoFsync: true})
	var target atomic.Pointer[string]
	none := ""
	target.Store(&none)
	var seen atomic.Int64
	all := make(chan struct{}, 1)
	agents := make([]*agent, n)
	var cli *clientv3.Client
	for i := range n {
		if i%agentsPerClient == 0 {
			cli = c.Client(b)
		}
		o := testOptions(fmt.Sprintf("h%04d", i))
		o.Poll = time.Hour
		counted := "" // the hook runs in one goroutine at a time: the agent's watch
		agents[i] = runAgentHook(b, cli, o, func(s *Shared) {
			h, _ := s.Head()
			if t := *target.Load(); h.Commit == t && counted != t {
				counted = t
				if seen.Add(1) == int64(n) {
					all <- struct{}{}
				}
			}
		})
	}
	waitFor(b, time.Minute, "one fetcher elected", func() bool { return len(fetchers(agents)) == 1 })
	f := fetchers(agents)[0]
	anything := func(string, string) (bool, error) { return true, nil }
	var rounds []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		commit := fmt.Sprintf("%040x", i+1)
		seen.Store(0)
		target.Store(&commit)
		start := time.Now()
		if err := f.Publish(b.Context(), commit, anything); err != nil {
			b.Fatal(err)
		}
		select {
		case <-all:
		case <-time.After(time.Minute):
			b.Fatalf("round %d: %d of %d agents saw the head after a minute", i, seen.Load(), n)
		}
		rounds = append(rounds, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(rounds)
	b.ReportMetric(float64(rounds[len(rounds)/2].Microseconds())/1000, "ms-median-to-last")
	b.ReportMetric(float64(rounds[len(rounds)-1].Microseconds())/1000, "ms-max-to-last")
	for _, a := range agents {
		a.halt()
	}
}
