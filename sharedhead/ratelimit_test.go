package sharedhead

import (
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testetcd"
	"github.com/baton-fleet/baton/internal/testgit"
)

// TestRateLimitedServerKeepsFollowersOff: a git server past its rate limit (429 with
// a Retry-After, as GitLab and GitHub answer) for three times as long as a follower
// trusts the published head. The fetcher publishes each refusal, so the five
// followers keep hearing it and never turn to the server: the server gets the
// fetcher's polls only, one per Retry-After. (Before, the fetcher published only a
// poll that succeeded: the followers fell back to their own polls, and a fleet of N
// sent N times the load to the server that was already refusing it.) Once the
// server serves again, a push reaches every agent.
func TestRateLimitedServerKeepsFollowersOff(t *testing.T) {
	const poll, retryAfter = 2 * time.Second, 3 * time.Second
	repo := testgit.NewRepo(t)
	repo.WriteFile("fleet.yaml", "apiVersion: baton/v1\n")
	start := repo.Commit("first")
	git := &gitServer{slots: make(chan struct{}, gitServerSlots)}
	var outage testgit.Outage
	gitURL, _ := testgit.ServeHTTP(t, repo, testgit.WithWrap(git.wrap), testgit.WithOutage(&outage))
	c := testetcd.Start(t)
	procs := startSimProcs(t, simConfig{Count: 6, GitURL: gitURL, Template: cloneTemplate(t, gitURL), Start: start,
		Dir: t.TempDir(), Endpoints: c.Endpoints(), Poll: poll, TTL: testTTL}, 3, nil)
	for i, s := range askAll[simSettled](t, procs, "settle 1m") {
		if s.Settled != procs[i].count {
			t.Fatalf("process %d: %d of %d agents polled and heard the fetcher", i, s.Settled, procs[i].count)
		}
	}

	outage.RateLimit("3")
	window := 3 * StaleAfter(poll, testTTL)
	listings := git.listings.Load()
	for end := time.Now().Add(window); time.Now().Before(end); time.Sleep(time.Second) {
		fetchers, stale := 0, 0
		for _, s := range askAll[simStats](t, procs, "stats") {
			fetchers, stale = fetchers+s.Fetchers, stale+s.Stale
		}
		if fetchers != 1 || stale != 0 {
			t.Fatalf("while the server refused: %d fetchers, %d followers polling on their own; want 1 and none", fetchers, stale)
		}
	}
	asked := git.listings.Load() - listings
	// The fetcher asks once a Retry-After (its polls in between are answered by
	// gitsync), rounded up to its poll, plus one at each end of the window.
	most := int64(window/(retryAfter+poll)) + 2
	t.Logf("the rate-limited server was asked %d times in %v by 6 agents polling every %v (at most %d allowed)", asked, window, poll, most)
	if asked > most {
		t.Errorf("the server was asked %d times in %v while it refused; want at most %d, the fetcher's", asked, window, most)
	}

	outage.Set(testgit.Up)
	repo.WriteFile("fleet.yaml", "apiVersion: baton/v1\nfreeze: false\n")
	pushed := repo.Commit("second")
	if err := RequestSync(t.Context(), c.Client(t), "/baton", "main", Sync{By: "test"}); err != nil {
		t.Fatal(err)
	}
	fetched := 0
	for _, r := range askAll[simReach](t, procs, "reach "+pushed+" 1m") {
		fetched += r.Fetched
	}
	if fetched != 6 {
		t.Errorf("%d of 6 agents fetched the push once the server served again", fetched)
	}
}
