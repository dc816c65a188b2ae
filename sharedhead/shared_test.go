package sharedhead

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-fleet/baton/internal/testetcd"
)

const (
	c1 = "1111111111111111111111111111111111111111"
	c2 = "2222222222222222222222222222222222222222"
	c3 = "3333333333333333333333333333333333333333"
)

// history is a line of commits c1 <- c2 <- c3; anything else is unknown.
func history(ancestor, commit string) (bool, error) {
	order := map[string]int{c1: 1, c2: 2, c3: 3}
	a, ok := order[ancestor]
	if !ok {
		return false, errors.New("not in the local repository")
	}
	return order[commit] >= a, nil
}

func wakeWithin(t *testing.T, a *agent, d time.Duration, what string) {
	t.Helper()
	select {
	case <-a.wakes:
	case <-time.After(d):
		t.Fatalf("no wake within %v: %s", d, what)
	}
}

func noWake(t *testing.T, a *agent, d time.Duration, what string) {
	t.Helper()
	select {
	case <-a.wakes:
		t.Fatalf("woken: %s", what)
	case <-time.After(d):
	}
}

// TestPublishReachesFollowers: the fetcher's head wakes each follower whose own head
// differs, and confirms it to all; only the fetcher may publish, and never a rewind.
func TestPublishReachesFollowers(t *testing.T) {
	c := testetcd.Start(t)
	as, f := startThree(t, c, nil)
	wakeWithin(t, f, time.Second, "the fetcher is woken when elected, to poll at once")
	var followers []*agent
	for _, a := range as {
		if a != f {
			followers = append(followers, a)
		}
	}
	followers[1].local = c1 // already has it: confirmed, not woken
	ctx := t.Context()
	if err := followers[0].Publish(ctx, c1, history); !errors.Is(err, ErrNotFetcher) {
		t.Fatalf("a follower published: %v", err)
	}
	f.local = c1
	if err := f.Publish(ctx, c1, history); err != nil {
		t.Fatal(err)
	}
	wakeWithin(t, followers[0], 5*time.Second, "a follower behind the published head")
	noWake(t, followers[1], 300*time.Millisecond, "a follower already at the published head")
	for _, a := range followers {
		if h, age := a.Head(); h.Commit != c1 || h.By != f.o.Host || age > 5*time.Second {
			t.Errorf("follower sees %+v, %v ago", h, age)
		}
		if poll, _ := OwnPoll(a.View()); poll {
			t.Errorf("a follower that heard the fetcher polls on its own")
		}
	}
	if poll, _ := OwnPoll(f.View()); !poll {
		t.Error("the fetcher does not poll")
	}

	// c3 descends from c1: published. c2 does not descend from c3: refused, kept.
	if err := f.Publish(ctx, c3, history); err != nil {
		t.Fatal(err)
	}
	if err := f.Publish(ctx, c2, history); !errors.Is(err, ErrRewind) {
		t.Fatalf("publish a rewind: %v, want ErrRewind", err)
	}
	if got := readHead(t, c, f); got.Commit != c3 {
		t.Fatalf("head %s after a refused rewind, want c3", got.Commit)
	}
	// A head this fetcher does not know (a rewind past its history) is refused too.
	putRaw(t, c, `{"commit":"4444444444444444444444444444444444444444","by":"x","time":"2026-01-01T00:00:00Z"}`)
	if err := f.Publish(ctx, c3, history); !errors.Is(err, ErrRewind) {
		t.Fatalf("publish over an unknown head: %v, want ErrRewind", err)
	}
	// An unreadable head is overwritten by the fetcher, and ignored by followers.
	putRaw(t, c, `{"commit":"nope"}`)
	if err := f.Publish(ctx, c3, history); err != nil {
		t.Fatalf("publish over an unreadable head: %v", err)
	}
}

func readHead(t *testing.T, c *testetcd.Cluster, a *agent) Head {
	t.Helper()
	resp, err := c.Client(t).Get(t.Context(), HeadKey(a.o.Prefix, a.o.Branch))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("read head: %v", err)
	}
	h, err := ParseHead(resp.Kvs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func putRaw(t *testing.T, c *testetcd.Cluster, value string) {
	t.Helper()
	if _, err := c.Client(t).Put(t.Context(), HeadKey("/baton", "main"), value); err != nil {
		t.Fatal(err)
	}
}

// TestSyncWakesTheFetcher: a sync request (baton sync --fleet, a webhook) wakes the
// fetcher alone.
func TestSyncWakesTheFetcher(t *testing.T) {
	c := testetcd.Start(t)
	as := []*agent{startAgent(t, c, "a", nil), startAgent(t, c, "b", nil)}
	waitFor(t, 15*time.Second, "one fetcher elected", func() bool { return len(fetchers(as)) == 1 })
	f := fetchers(as)[0]
	other := as[0]
	if other == f {
		other = as[1]
	}
	wakeWithin(t, f, time.Second, "elected")
	time.Sleep(200 * time.Millisecond) // the watches are set up after the first read
	select {
	case <-other.wakes: // the first read of a missing head wakes nobody; drain anyway
	default:
	}
	if err := RequestSync(t.Context(), c.Client(t), "/baton", "main", Sync{By: "ci"}); err != nil {
		t.Fatal(err)
	}
	wakeWithin(t, f, 5*time.Second, "sync request to the fetcher")
	noWake(t, other, 300*time.Millisecond, "a follower woken by a sync request")
}

// TestFetcherKilled: the fetcher's process dies (SIGKILL: its election key stays
// until its lease expires); a remaining agent is elected within the TTL and a
// margin, and never two at once.
func TestFetcherKilled(t *testing.T) {
	c := testetcd.Start(t)
	child := startCandidate(t, c, "first")
	as := []*agent{startAgent(t, c, "b", nil), startAgent(t, c, "c", nil)}
	time.Sleep(time.Second)
	if n := len(fetchers(as)); n != 0 {
		t.Fatalf("%d agents elected while the first one leads", n)
	}
	killed := time.Now()
	child.Kill()
	deadline := time.Now().Add(testTTL + 10*time.Second)
	for len(fetchers(as)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no fetcher elected %v after the first was killed", time.Since(killed))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("a new fetcher %v after the kill (TTL %v)", time.Since(killed).Round(10*time.Millisecond), testTTL)
	for range 50 {
		if n := len(fetchers(as)); n != 1 {
			t.Fatalf("%d fetchers", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A fetcher that stops cleanly resigns: the other is elected at once, not after the TTL.
	f := fetchers(as)[0]
	f.halt()
	start := time.Now()
	rest := as[0]
	if rest == f {
		rest = as[1]
	}
	waitFor(t, testTTL-time.Second, "the other agent elected after a resignation", rest.Fetcher)
	t.Logf("elected %v after the fetcher resigned", time.Since(start).Round(time.Millisecond))
}

// TestCandidatesBounded: of ten agents, at most Candidates hold an election key
// (and a session); when the fetcher goes, one of the rest stands and another is
// elected.
func TestCandidatesBounded(t *testing.T) {
	c := testetcd.Start(t)
	cli := c.Client(t)
	var as []*agent
	for i := range 10 {
		as = append(as, runAgent(t, cli, withHost(testOptions(""), i)))
	}
	waitFor(t, 15*time.Second, "one fetcher elected", func() bool { return len(fetchers(as)) == 1 })
	count := func() int64 {
		resp, err := cli.Get(t.Context(), electionPrefix("/baton", "main")+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	waitFor(t, 10*time.Second, "three candidates left standing", func() bool { return count() == DefaultCandidates })
	for range 3 {
		f := fetchers(as)[0]
		f.halt()
		waitFor(t, 10*time.Second, "another fetcher", func() bool { n := fetchers(as); return len(n) == 1 && n[0] != f })
		time.Sleep(200 * time.Millisecond)
		if n := count(); n > DefaultCandidates {
			t.Fatalf("%d candidates, more than %d", n, DefaultCandidates)
		}
	}
}

func withHost(o Options, i int) Options {
	o.Host = strings.Repeat("h", i+1)
	return o
}

// TestEtcdUnreachable: a follower cut off from etcd stops hearing the fetcher and,
// after StaleAfter, polls on its own; the fetcher cut off loses its election.
func TestEtcdUnreachable(t *testing.T) {
	c := testetcd.Start(t)
	fp := testetcd.NewProxy(t, c.Endpoints()[0])
	cfg := c.ClientConfig()
	cfg.Endpoints = []string{fp.URL()}
	fo := testOptions("f")
	fo.TTL = 2 * testTTL // still elected when the follower gives up on it
	f := runAgent(t, c.ClientWith(t, cfg), fo)
	waitFor(t, 15*time.Second, "f elected", f.Fetcher)
	follower := startAgent(t, c, "g", nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { // the fetcher confirms its head at each poll
		for ctx.Err() == nil {
			_ = f.Publish(ctx, c1, history)
			time.Sleep(f.o.Poll)
		}
	}()
	waitFor(t, 5*time.Second, "the follower hears the fetcher", func() bool { h, _ := follower.Head(); return h.Commit == c1 })
	if poll, _ := OwnPoll(follower.View()); poll {
		t.Fatal("a follower polls while it hears the fetcher")
	}
	fp.Block()
	cut := time.Now()
	stale := StaleAfter(follower.o.Poll, follower.o.TTL)
	waitFor(t, stale+3*time.Second, "the follower falls back to its own poll", func() bool { poll, _ := OwnPoll(follower.View()); return poll })
	if v := follower.View(); v.SinceAck < stale {
		t.Errorf("fell back %v after the fetcher was last heard, before StaleAfter %v", v.SinceAck, stale)
	}
	t.Logf("fell back %v after the cut", time.Since(cut).Round(time.Millisecond))
	if follower.Fetcher() {
		t.Fatal("the follower was elected while the fetcher's session lives")
	}
	waitFor(t, fo.TTL+10*time.Second, "the cut-off fetcher steps down", func() bool { return !f.Fetcher() })
	waitFor(t, fo.TTL+10*time.Second, "the follower elected", follower.Fetcher)
	fp.Unblock()
}
