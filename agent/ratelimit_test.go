package agent_test

import (
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testetcd"
	"github.com/baton-fleet/baton/internal/testfleet"
	"github.com/baton-fleet/baton/internal/testgit"
)

// TestFetcherObeysRateLimit: two hosts poll a git server over smart HTTP every
// second and share the head. The server starts answering 429 Too Many Requests
// with Retry-After: 20. The fleet's fetcher publishes the refusal (the other host's
// baton status says so), stays the fetcher, and no agent asks the server again
// before the 20 s are over: polling on their own, as a follower that stopped
// hearing the fetcher would, the two would have asked some thirty times. Once the
// server serves again, a push reaches both hosts.
func TestFetcherObeysRateLimit(t *testing.T) {
	cluster := testetcd.Start(t)
	h1 := newHarness(t)
	outage := new(testgit.Outage)
	listings := &requestLog{}
	repoURL, _ := testgit.ServeHTTP(t, h1.repo, testgit.WithOutage(outage), testgit.WithWrap(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/info/refs") {
				listings.add(outage.Mode() == testgit.RateLimited)
			}
			next.ServeHTTP(w, r)
		})
	}))
	u, err := url.Parse(repoURL)
	if err != nil {
		t.Fatal(err)
	}
	gitRelay := testfleet.Forward(t, h1.gateway, u.Host)
	etcdRelay := testfleet.Forward(t, h1.gateway, strings.TrimPrefix(cluster.Endpoints()[0], "http://"))
	hosts := []*harness{h1, h1.sibling("h2")}
	for _, h := range hosts {
		// The agent takes http:// only to a loopback address: a socket proxy in the
		// host relays to the server through the bridge.
		h.host.MustExec(t, "systemd-run", "--unit=git-relay", "--socket-property=ListenStream=127.0.0.1:8418",
			"/lib/systemd/systemd-socket-proxyd", gitRelay)
		cfg := "host: " + h.host.Name + "\nartifacts: {allowInsecure: [\"" + h.gateway + "\"]}\n" +
			"repo:\n  url: http://127.0.0.1:8418" + u.Path + "\n  branch: main\n  poll: 1s\n" +
			"lease:\n  backend: etcd\n  etcd: {endpoints: [\"http://" + etcdRelay + "\"], prefix: /baton, ttl: 5s}\n"
		if err := os.WriteFile(h.host.Path("/etc/baton/agent.yaml"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fetcher, follower := startSharing(t, hosts)

	const retryAfter = 20 * time.Second
	outage.RateLimit("20")
	follower.waitFor(follower.host.Name+" to hear that the fetcher was refused", 30*time.Second, func() bool {
		return strings.Contains(sharedHead(t, follower).Failed, "429")
	})
	first := listings.firstRefused()
	time.Sleep(time.Until(first.Add(retryAfter - 2*time.Second)))
	asked := listings.since(first, retryAfter-2*time.Second)
	t.Logf("%d ref listings reached the server in the %v after its first 429 (Retry-After: 20) from 2 agents that poll every second",
		asked, retryAfter-2*time.Second)
	if asked > 2 {
		t.Errorf("%d ref listings reached the server before its Retry-After was over, want at most 2 (the fetcher's refused one, and one a follower had under way)", asked)
	}
	if f := sharedHead(t, fetcher); !f.Self {
		t.Errorf("%s stepped down for a refusal every agent would meet: %+v", fetcher.host.Name, f)
	}
	if out := follower.host.MustExec(t, "/usr/local/bin/baton", "status"); !strings.Contains(out, "its last poll failed: ") {
		t.Errorf("baton status on %s does not say the fetcher's poll failed:\n%s", follower.host.Name, out)
	}

	outage.Set(testgit.Up)
	c2 := h1.push(release{version: "2.0.0", mode: "ok"})
	for _, h := range hosts {
		h.settled(c2)
	}
	if f := sharedHead(t, follower).Failed; f != "" {
		t.Errorf("baton status on %s still shows the fetcher's failure once the server served again: %q", follower.host.Name, f)
	}
}

// requestLog records when requests reached a server, and whether each was refused.
type requestLog struct {
	mu   sync.Mutex
	at   []time.Time
	refd []bool
}

func (l *requestLog) add(refused bool) {
	l.mu.Lock()
	l.at, l.refd = append(l.at, time.Now()), append(l.refd, refused)
	l.mu.Unlock()
}

// firstRefused is when the first refused request came.
func (l *requestLog) firstRefused() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, r := range l.refd {
		if r {
			return l.at[i]
		}
	}
	return time.Time{}
}

// since counts the requests that came in [from, from+d).
func (l *requestLog) since(from time.Time, d time.Duration) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, at := range l.at {
		if !at.Before(from) && at.Before(from.Add(d)) {
			n++
		}
	}
	return n
}
