package agent_test

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/api"
	"github.com/baton-fleet/baton/internal/testetcd"
	"github.com/baton-fleet/baton/internal/testfleet"
)

const pushSecret = "push-secret-for-the-test"

// TestWebhookPushReachesTheFleet: two hosts on the etcd lease poll every ten
// minutes and share the head. A GitHub push delivered to h1's webhook receiver
// makes the fleet's fetcher poll and publish, and each host starts the new commit's
// transaction within a second of the delivery (journal times), not at its next poll.
func TestWebhookPushReachesTheFleet(t *testing.T) {
	cluster := testetcd.Start(t)
	h1 := newHarness(t)
	relay := testfleet.Forward(t, h1.gateway, strings.TrimPrefix(cluster.Endpoints()[0], "http://"))
	h1.writeConfig("lease:\n  backend: etcd\n  etcd: {endpoints: [\"http://" + relay + "\"], prefix: /baton, ttl: 5s}\n" +
		"listen:\n  webhook: {address: \"0.0.0.0:9733\", secretFile: /etc/baton/push.secret}\n")
	hosts := []*harness{h1, h1.sibling("h2")}
	for _, h := range hosts {
		slowPoll(t, h)
		if err := os.WriteFile(h.host.Path("/etc/baton/push.secret"), []byte(pushSecret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	startSharing(t, hosts) // the first poll, at the start, is each agent's own

	c2 := h1.push(release{version: "2.0.0", mode: "ok"})
	time.Sleep(2 * time.Second)
	for _, h := range hosts {
		if _, ok := txnStart(t, h, c2); ok {
			t.Fatalf("%s started %s before any webhook, with a ten-minute poll", h.host.Name, short(c2))
		}
	}
	sent := time.Now()
	deliverPush(t, "http://"+h1.host.IP+":9733/", "delivery-1")
	var first time.Duration
	for _, h := range hosts {
		var at time.Time
		h.waitEvery("the transaction of the pushed commit", 30*time.Second, 50*time.Millisecond, func() bool {
			var ok bool
			at, ok = txnStart(t, h, c2)
			return ok
		})
		d := at.Sub(sent)
		t.Logf("%s started %s %v after the delivery", h.host.Name, short(c2), d.Round(time.Millisecond))
		if first == 0 || d < first {
			first = d
		}
	}
	if first > time.Second {
		t.Errorf("the first host started the pushed commit %v after the delivery, over a second", first)
	}
	for _, h := range hosts {
		h.settled(c2)
	}
	// A replay of the same delivery is refused.
	if code := postPush(t, "http://"+h1.host.IP+":9733/", "delivery-1"); code != http.StatusConflict {
		t.Errorf("a replayed delivery: %d, want 409", code)
	}

	// baton sync --fleet on h2 does what the webhook did.
	c3 := h1.push(release{version: "3.0.0", mode: "ok"})
	sent = time.Now()
	out := hosts[1].host.MustExec(t, "/usr/local/bin/baton", "sync", "--fleet")
	if !strings.Contains(out, "the fleet's fetcher polls main now") {
		t.Errorf("baton sync --fleet said %q", out)
	}
	for _, h := range hosts {
		h.waitEvery("the transaction of the commit synced", 30*time.Second, 50*time.Millisecond, func() bool {
			at, ok := txnStart(t, h, c3)
			if ok {
				t.Logf("%s started %s %v after baton sync --fleet began", h.host.Name, short(c3), at.Sub(sent).Round(time.Millisecond))
			}
			return ok
		})
		h.settled(c3)
	}
	fetcherKilled(t, hosts)
}

// fetcherKilled is the last phase of TestWebhookPushReachesTheFleet: baton status
// names the fleet's fetcher on both hosts; its agent is killed (SIGKILL: its
// election key stays until its etcd lease expires) and the other host becomes the
// fetcher. The killed agent, started again, follows it: a push and a baton sync
// --fleet run there reach both hosts, whose polls are ten minutes apart.
func fetcherKilled(t *testing.T, hosts []*harness) {
	t.Helper()
	fetcher, other := hosts[0], hosts[1]
	if sharedHead(t, other).Self {
		fetcher, other = other, fetcher
	}
	if f := sharedHead(t, fetcher); !f.Self || f.Fetcher != fetcher.host.Name {
		t.Fatalf("baton status on %s, the fetcher: %+v", fetcher.host.Name, f)
	}
	if o := sharedHead(t, other); o.Self || o.Fetcher != fetcher.host.Name || o.Heard.IsZero() || o.Stale {
		t.Errorf("baton status on %s does not name %s as the fetcher it hears: %+v", other.host.Name, fetcher.host.Name, o)
	}
	if out := fetcher.host.MustExec(t, "/usr/local/bin/baton", "status"); !strings.Contains(out, "fetcher     this host, head "+short(fetcher.host.LastGood().Revision)) {
		t.Errorf("baton status on the fetcher:\n%s", out)
	}

	fetcher.host.MustExec(t, "systemctl", "kill", "--kill-whom=main", "--signal=SIGKILL", fetcher.host.AgentUnit())
	killed := time.Now()
	other.waitFor(other.host.Name+" elected the fetcher", time.Minute, func() bool { return sharedHead(t, other).Self })
	t.Logf("%s became the fetcher %v after %s's agent was killed (etcd lease TTL 5s)", other.host.Name, time.Since(killed).Round(100*time.Millisecond), fetcher.host.Name)

	fetcher.startAgent()
	fetcher.waitFor("the restarted agent to answer", time.Minute, func() bool { _, ok := status(t, fetcher); return ok })
	c4 := fetcher.push(release{version: "4.0.0", mode: "ok"})
	fetcher.host.MustExec(t, "/usr/local/bin/baton", "sync", "--fleet")
	for _, h := range hosts {
		h.settled(c4)
		if got := h.host.LastGood().Revision; got != c4 {
			t.Fatalf("%s is on %s after the push, want %s", h.host.Name, short(got), short(c4))
		}
	}
	if s := sharedHead(t, fetcher); s.Self || s.Fetcher != other.host.Name || s.Head != c4 {
		t.Errorf("baton status on %s after the takeover: %+v, want %s publishing %s", fetcher.host.Name, s, other.host.Name, short(c4))
	}
}

// TestPushDuringARollout: a fix is pushed while both hosts are in transactions of
// a release that soaks for 30 s, one verifying it under the lease, the other
// waiting for the lease. The fleet's fetcher is one of them: it polls beside its
// agent's loop, not in it, so the fleet hears of the fix while the fetcher's own
// transaction is still open. (Polling in the loop, it kept the whole fleet on the
// old head until its transaction ended: behind a rollout of a large group, for
// hours.) The host that waited for the lease goes straight to the fix, without
// ever switching to the release it waited for; the other finishes its soak and
// follows. A bad push before the fix (a release that does not match its sha256)
// does not end the wait: the rollout under way is not split by it.
func TestPushDuringARollout(t *testing.T) {
	cluster := testetcd.Start(t)
	h1 := newHarness(t)
	relay := testfleet.Forward(t, h1.gateway, strings.TrimPrefix(cluster.Endpoints()[0], "http://"))
	h1.writeConfig("lease:\n  backend: etcd\n  etcd: {endpoints: [\"http://" + relay + "\"], prefix: /baton, ttl: 5s}\n")
	hosts := []*harness{h1, h1.sibling("h2")}
	for _, h := range hosts {
		slowPoll(t, h)
	}
	fetcher, follower := startSharing(t, hosts)

	slow := strings.Replace(fleetYAML, "minHealthy: 5s, healthyDeadline: 30s", "minHealthy: 30s, healthyDeadline: 60s", 1)
	c2 := h1.push(release{version: "2.0.0", mode: "ok", fleet: slow})
	follower.host.MustExec(t, "/usr/local/bin/baton", "sync", "--fleet")
	var verifying, waiting *harness
	h1.waitFor("one host verifying "+short(c2)+" and the other waiting for the lease", time.Minute, func() bool {
		a, b := hosts[0].host.TxnState(), hosts[1].host.TxnState()
		switch {
		case a == "VERIFYING" && b == "STAGED":
			verifying, waiting = hosts[0], hosts[1]
		case b == "VERIFYING" && a == "STAGED":
			verifying, waiting = hosts[1], hosts[0]
		}
		return waiting != nil
	})

	// A push whose release does not match its sha256 does not supersede the wait:
	// the waiting host stages it, finds it bad, and stays in line for c2.
	bad := h1.push(release{version: "2.5.0", mode: "ok", sha256: strings.Repeat("0", 64)})
	follower.host.MustExec(t, "/usr/local/bin/baton", "sync", "--fleet")
	waiting.waitFor(waiting.host.Name+" to judge "+short(bad), 30*time.Second, func() bool {
		return strings.Contains(waiting.journal(), "a newer commit's release does not stage")
	})
	if st, to := waiting.host.TxnState(), waiting.status().Txn; st != "STAGED" || to == nil || to.To != c2 {
		t.Fatalf("%s after %s, a release that does not stage, was pushed: txn %q %+v, want still waiting for the lease for %s", waiting.host.Name, short(bad), st, to, short(c2))
	}

	c3 := h1.push(release{version: "3.0.0", mode: "ok"})
	asked := time.Now()
	follower.host.MustExec(t, "/usr/local/bin/baton", "sync", "--fleet")
	follower.waitEvery(follower.host.Name+" to hear "+short(c3)+" from the fetcher", 15*time.Second, 100*time.Millisecond, func() bool {
		return sharedHead(t, follower).Head == c3
	})
	heard := time.Since(asked)
	state := fetcher.host.TxnState()
	if state == "" || state == "COMMITTED" {
		t.Fatalf("%s's transaction of %s ended before the fleet heard %s: the test proves nothing", fetcher.host.Name, short(c2), short(c3))
	}
	t.Logf("%s heard %s %v after baton sync --fleet, while the fetcher %s was %s in its transaction of %s",
		follower.host.Name, short(c3), heard.Round(time.Millisecond), fetcher.host.Name, state, short(c2))

	for _, h := range hosts {
		h.settled(c3)
	}
	j := waiting.journal()
	if strings.Contains(j, "-> "+short(c2)+": switching") {
		t.Errorf("%s, waiting for the lease when %s came, went on to switch to %s", waiting.host.Name, short(c3), short(c2))
	}
	if !strings.Contains(j, "superseded by "+short(c3)) {
		t.Errorf("%s's journal does not say that %s superseded its wait for %s", waiting.host.Name, short(c3), short(c2))
	}
	if !strings.Contains(verifying.journal(), "-> "+short(c2)+": switching") {
		t.Errorf("%s did not go through %s, which it was verifying", verifying.host.Name, short(c2))
	}
}

// startSharing pushes release 1.0.0, starts the agents of hosts (two), and waits
// until each settled on it and the fleet's fetcher published it. It returns the
// fetcher and the other host.
func startSharing(t *testing.T, hosts []*harness) (fetcher, follower *harness) {
	t.Helper()
	c1 := hosts[0].push(release{version: "1.0.0", mode: "ok"})
	for _, h := range hosts {
		h.startAgent()
	}
	for _, h := range hosts {
		h.settled(c1)
	}
	fetcher = waitForFetcher(t, hosts, c1)
	follower = hosts[0]
	if follower == fetcher {
		follower = hosts[1]
	}
	return fetcher, follower
}

// waitForFetcher waits until one of hosts is the fleet's fetcher and has
// published commit, and returns it. Its first poll, which its election asks for
// at once, is then done: a push after this is seen only when something asks.
func waitForFetcher(t *testing.T, hosts []*harness, commit string) *harness {
	t.Helper()
	var fetcher *harness
	hosts[0].waitFor("the fleet's fetcher to publish "+short(commit), time.Minute, func() bool {
		for _, h := range hosts {
			if sh := sharedHead(t, h); sh.Self && sh.Head == commit {
				fetcher = h
				return true
			}
		}
		return false
	})
	return fetcher
}

// sharedHead is the shared head as baton status --json on h shows it; an empty one
// while the agent does not answer.
func sharedHead(t *testing.T, h *harness) api.SharedHead {
	t.Helper()
	sh, _ := status(t, h)
	return sh
}

// status is the shared head as baton status --json on h shows it, and whether the
// agent answered with one.
func status(t *testing.T, h *harness) (api.SharedHead, bool) {
	t.Helper()
	out, err := h.host.Exec(context.Background(), "/usr/local/bin/baton", "status", "--json")
	var st api.State
	if err != nil || json.Unmarshal(out, &st) != nil || st.Fetch.Shared == nil {
		return api.SharedHead{}, false
	}
	return *st.Fetch.Shared, true
}

// slowPoll sets the host's poll to ten minutes.
func slowPoll(t *testing.T, h *harness) {
	t.Helper()
	p := h.host.Path("/etc/baton/agent.yaml")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(strings.Replace(string(b), "poll: 1s", "poll: 10m", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// txnStart is when the host's journal first shows the transaction to commit.
func txnStart(t *testing.T, h *harness, commit string) (time.Time, bool) {
	t.Helper()
	out, err := h.host.Exec(context.Background(), "journalctl", "--no-pager", "-o", "short-unix", "-t", agentTag)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "-> "+short(commit)) {
			continue
		}
		stamp, _, _ := strings.Cut(line, " ")
		f, err := strconv.ParseFloat(stamp, 64)
		if err != nil {
			t.Fatalf("journal line %q: %v", line, err)
		}
		return time.Unix(0, int64(f*1e9)), true
	}
	return time.Time{}, false
}

func deliverPush(t *testing.T, url, id string) {
	t.Helper()
	if code := postPush(t, url, id); code != http.StatusAccepted {
		t.Fatalf("webhook delivery: %d, want 202", code)
	}
}

// postPush delivers a push to main of the test repository as GitHub does
// (docs.github.com/webhooks: X-GitHub-Event, X-GitHub-Delivery, X-Hub-Signature-256).
func postPush(t *testing.T, url, id string) int {
	t.Helper()
	// The repository as the hosts follow it: file:///srv/git/repo.git (writeConfig).
	body := fmt.Sprintf(`{"ref":"refs/heads/main","after":"%040d","repository":{"full_name":"ops/fleet","clone_url":"file:///srv/git/repo.git"}}`, 0)
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, []byte(pushSecret))
	m.Write([]byte(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", id)
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(m.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
