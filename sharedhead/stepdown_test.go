package sharedhead

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-fleet/baton/gitsync"
	"github.com/baton-fleet/baton/internal/testetcd"
)

// TestFetcherFailedPolls: the fetcher publishes each poll that failed, so the
// followers hear it and see why; refusals of the git server's own and rewinds never
// make it step down (every agent would meet them), while StepDownAfter failures in
// a row that may be its host's own (a network fault) do, and another agent takes
// over. A poll that succeeds ends the run.
func TestFetcherFailedPolls(t *testing.T) {
	c := testetcd.Start(t)
	as, f := startThree(t, c, nil)
	// All three stand, so that each step down hands the post to one that stood.
	cli := c.Client(t)
	waitFor(t, time.Minute, "three candidates standing", func() bool {
		resp, err := cli.Get(t.Context(), electionPrefix("/baton", "main")+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 3
	})
	ctx := t.Context()
	poll := func(a *agent, pollErr error) {
		t.Helper()
		if err := a.AfterPoll(ctx, c1, pollErr, history); err != nil {
			t.Fatalf("AfterPoll(%v) on the fetcher: %v", pollErr, err)
		}
	}
	poll(f, nil)

	refused := &gitsync.ServerError{Status: 429, RetryAfter: time.Minute}
	rewound := fmt.Errorf("main moved to 2222222: %w", gitsync.ErrRewound)
	for range 2 * StepDownAfter {
		poll(f, refused)
		poll(f, rewound)
	}
	follower := as[0]
	if follower == f {
		follower = as[1]
	}
	waitFor(t, 5*time.Second, "the follower sees the fetcher's last poll failed", func() bool {
		h, _ := follower.Head()
		return strings.Contains(h.Failed, "rewound")
	})
	if own, _ := OwnPoll(follower.View()); own {
		t.Error("a follower polls on its own while the fetcher publishes its failures")
	}
	if !f.Fetcher() {
		t.Fatal("the fetcher stepped down for the git server's refusals and a rewind")
	}

	network := errors.New("list refs of https://git.example.com/fleet.git: dial tcp: connection refused")
	for range StepDownAfter - 1 {
		poll(f, network)
	}
	poll(f, nil) // a success ends the run
	for range StepDownAfter - 1 {
		poll(f, network)
	}
	time.Sleep(time.Second)
	if !f.Fetcher() {
		t.Fatalf("the fetcher stepped down after %d failures that a success separated", 2*(StepDownAfter-1))
	}
	poll(f, network)
	waitFor(t, 15*time.Second, "another agent elected after the fetcher stepped down", func() bool {
		fs := fetchers(as)
		return len(fs) == 1 && fs[0] != f
	})
	h, _ := follower.Head()
	if !strings.Contains(h.Failed, "connection refused") || h.Commit != c1 {
		t.Errorf("the head last heard = %+v, want %s with the network error", h, c1)
	}
	next := fetchers(as)[0]
	if err := next.AfterPoll(ctx, c1, nil, history); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a success clears the failure in the published head", func() bool {
		h, _ := f.Head()
		return h.Failed == "" && h.By == next.o.Host
	})

	// A fetcher whose polls never brought it a head (a host cut off since it
	// started) publishes nothing, and steps down all the same.
	for range StepDownAfter {
		if err := next.AfterPoll(ctx, "", network, history); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 15*time.Second, "another agent elected after a fetcher without a head stepped down", func() bool {
		fs := fetchers(as)
		return len(fs) == 1 && fs[0] != next
	})
	if h, _ := f.Head(); h.By != next.o.Host || h.Failed != "" {
		t.Errorf("a fetcher without a head wrote one: %+v", h)
	}
}
