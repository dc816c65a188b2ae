package sharedhead

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-fleet/baton/gitsync"
	"github.com/baton-fleet/baton/internal/testetcd"
	"github.com/baton-fleet/baton/internal/testgit"
)

// scaleAgentsEnv sets how many simulated agents BenchmarkScale runs (default 100);
// each has its own clone on disk and its own poll loop.
const scaleAgentsEnv = "BATON_SCALE_AGENTS"

// gitCounter counts the requests a smart-HTTP git server gets: ref listings
// (GET info/refs) and fetches (POST git-upload-pack).
type gitCounter struct{ listings, fetches atomic.Int64 }

func (c *gitCounter) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/info/refs"):
			c.listings.Add(1)
		case strings.HasSuffix(r.URL.Path, "/git-upload-pack"):
			c.fetches.Add(1)
		}
		next.ServeHTTP(w, r)
	})
}

// simAgent is an agent without systemd: the real gitsync and, with the shared
// head, the real election and watch, in the agent's fetch loop (agent.fetch and
// agent.nextPoll): poll when asked or when OwnPoll says so; the fetcher publishes.
type simAgent struct {
	git  *gitsync.Syncer
	sh   *Shared // nil without the shared head
	wake chan struct{}
	poll time.Duration
}

func (s *simAgent) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *simAgent) run(ctx context.Context) {
	asked := false
	for {
		own, wait := true, Jitter(s.poll)
		if s.sh != nil {
			v := s.sh.View()
			own, wait = OwnPoll(v)
		}
		if own || asked {
			if _, err := s.git.Poll(ctx); err == nil && s.sh != nil && s.sh.Fetcher() {
				_ = s.sh.Publish(ctx, s.git.Anchor(), s.git.Descends)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.wake:
			asked = true
		case <-t.C:
			asked = false
		}
		t.Stop()
	}
}

// BenchmarkScale runs simulated agents (BATON_SCALE_AGENTS, default 100) against
// one smart-HTTP git server and one etcd member, with and without the shared head,
// and prints: git ref listings a minute while idle, the time from a push (and a
// sync request, as a webhook makes) to every agent holding the commit, the fetches
// that push cost, and the heap per agent.
//
//	make bench-scale   # or: BATON_SCALE_AGENTS=1000 go test -run '^$' -bench Scale -benchtime 1x -timeout 30m ./sharedhead
func BenchmarkScale(b *testing.B) {
	n := 100
	if v, err := strconv.Atoi(os.Getenv(scaleAgentsEnv)); err == nil && v > 0 {
		n = v
	}
	for _, shared := range []bool{false, true} {
		b.Run(fmt.Sprintf("agents=%d/shared=%v", n, shared), func(b *testing.B) {
			for b.Loop() {
				benchScale(b, n, shared)
			}
		})
	}
}

func benchScale(b *testing.B, n int, shared bool) {
	const poll = 2 * time.Second
	repo := testgit.NewRepo(b)
	repo.WriteFile("fleet.yaml", "apiVersion: baton/v1\n")
	repo.Commit("first")
	upstream, _ := testgit.ServeHTTP(b, repo)
	u, _ := url.Parse(upstream)
	var count gitCounter
	proxy := httptest.NewServer(count.wrap(httputil.NewSingleHostReverseProxy(&url.URL{Scheme: u.Scheme, Host: u.Host})))
	b.Cleanup(proxy.Close)
	gitURL := proxy.URL + u.Path

	c := testetcd.StartWith(b, testetcd.Options{NoFsync: true})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.Cleanup(func() { cancel(); wg.Wait() })
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	agents := make([]*simAgent, n)
	var cli *clientv3.Client
	for i := range n {
		g, err := gitsync.New(gitsync.Options{URL: gitURL, Dir: filepath.Join(b.TempDir(), "repo.git")}, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := g.Poll(ctx); err != nil { // the clone, one agent at a time
			b.Fatal(err)
		}
		a := &simAgent{git: g, wake: make(chan struct{}, 1), poll: poll}
		if shared {
			if i%agentsPerClient == 0 {
				cli = c.Client(b)
			}
			o := testOptions(fmt.Sprintf("h%05d", i))
			o.Poll = poll
			a.sh = New(cli, o)
			wg.Go(func() { a.sh.Run(ctx, g.Anchor, a.signal) })
		}
		agents[i] = a
		wg.Go(func() { a.run(ctx) })
	}
	settle := 2 * StaleAfter(poll, testTTL) // every follower has heard the fetcher
	time.Sleep(settle)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)

	const window = 20 * time.Second
	l0 := count.listings.Load()
	time.Sleep(window)
	idle := float64(count.listings.Load()-l0) * float64(time.Minute) / float64(window)

	repo.WriteFile("fleet.yaml", "apiVersion: baton/v1\nfreeze: false\n")
	pushed := repo.Commit("second")
	f0 := count.fetches.Load()
	start := time.Now()
	if shared {
		if err := RequestSync(ctx, c.Client(b), "/baton", "main", Sync{By: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
	for _, a := range agents {
		for a.git.Head() != pushed {
			if time.Since(start) > time.Minute {
				b.Fatalf("an agent did not fetch the push within a minute")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	reach := time.Since(start)
	b.ReportMetric(idle, "ref-listings/min-idle")
	b.ReportMetric(float64(reach.Milliseconds()), "ms-push-to-all")
	b.ReportMetric(float64(count.fetches.Load()-f0), "fetches/push")
	b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/float64(n)/1024, "KiB-heap/agent")
}
