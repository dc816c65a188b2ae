package agent_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-fleet/baton/fleet"
	"github.com/baton-fleet/baton/internal/testetcd"
	"github.com/baton-fleet/baton/internal/testfleet"
)

// TestFleetHaltsABadRelease runs two hosts of one group on the etcd lease: a release
// that fails on the first host to try it is reverted there and never started on the
// second; a good release then rolls through both, never both at once.
func TestFleetHaltsABadRelease(t *testing.T) {
	cluster := testetcd.Start(t)
	h1 := newHarness(t)
	endpoint := strings.TrimPrefix(cluster.Endpoints()[0], "http://")
	relay := testfleet.Forward(t, h1.gateway, endpoint)
	h1.writeConfig("lease:\n  backend: etcd\n  etcd: {endpoints: [\"http://" + relay + "\"], prefix: /baton, ttl: 5s}\n")
	h2 := h1.sibling("h2")
	hosts := []*harness{h1, h2}

	c1 := h1.push(release{version: "1.0.0", mode: "ok"})
	for _, h := range hosts {
		h.startAgent()
	}
	for _, h := range hosts {
		h.settled(c1)
		h.consistent()
	}

	// a bad release: exactly one host tries it
	c2 := h1.push(release{version: "2.0.0", mode: "fail-health"})
	var tried, spared *harness
	h1.waitFor("one host to fail the bad release", 2*time.Minute, func() bool {
		for i, h := range hosts {
			if h.host.Quarantined(c2) && h.host.TxnState() == "" {
				tried, spared = h, hosts[1-i]
				return true
			}
		}
		return false
	})
	time.Sleep(5 * time.Second) // five polls of the other host
	// The other host may have staged it while waiting for the lease; it must never
	// have switched to it.
	if strings.Contains(spared.journal(), "upgrading "+short(c1)+" -> "+short(c2)+": switching") {
		t.Errorf("%s switched to the release that failed on %s", spared.host.Name, tried.host.Name)
	}
	if !strings.Contains(spared.journal(), "the group is halted") {
		t.Errorf("%s does not say the group is halted", spared.host.Name)
	}
	for _, h := range hosts {
		if h.host.LastGood().Revision != c1 {
			t.Errorf("%s left %s", h.host.Name, short(c1))
		}
		h.consistent()
	}
	snap, err := fleet.NewStore(cluster.Client(t), "/baton").Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := snap.Groups["web"].Failed[c2]; !ok || f.Host != tried.host.Name {
		t.Errorf("the fleet state does not halt web on %s: %+v", short(c2), snap.Groups["web"])
	}

	// A follow-up commit that changes something else carries the same release: the
	// group stays halted on the release, not only on the commit.
	h1.repo.WriteFile("NOTES", "an unrelated change\n")
	c2b := h1.repo.Commit("an unrelated change on top of the bad release")
	h1.waitFor("the spared host to see the halt on the release", time.Minute, func() bool {
		return strings.Contains(spared.journal(), "release demo 2.0.0 failed on "+tried.host.Name)
	})
	if strings.Contains(spared.journal(), "-> "+short(c2b)+": switching") {
		t.Errorf("%s switched to %s, which carries the release that failed on %s", spared.host.Name, short(c2b), tried.host.Name)
	}

	fleetView := h1.host.MustExec(t, "/usr/local/bin/baton", "fleet")
	t.Logf("baton fleet:\n%s", fleetView)
	if !strings.Contains(fleetView, "HALTED on "+short(c2)) {
		t.Errorf("baton fleet does not show the halt")
	}

	// a pause holds the next release back until resume
	h1.host.MustExec(t, "/usr/local/bin/baton", "pause", "web", "--reason", "testing the pause")
	cPaused := h1.push(release{version: "2.5.0", mode: "ok"})
	h1.waitFor("the hosts to see the pause", time.Minute, func() bool {
		return strings.Contains(h1.journal(), "group web is paused: testing the pause") && strings.Contains(h2.journal(), "group web is paused")
	})
	for _, h := range hosts {
		if h.host.LastGood().Revision != c1 {
			t.Errorf("%s upgraded while its group was paused", h.host.Name)
		}
	}
	h1.host.MustExec(t, "/usr/local/bin/baton", "resume", "web")
	for _, h := range hosts {
		h.settled(cPaused)
	}

	// a newer good release rolls through both hosts, one at a time
	var both atomic.Bool
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			n := 0
			for _, h := range hosts {
				if s := h.host.TxnState(); s == "SWITCHING" || s == "VERIFYING" {
					n++
				}
			}
			if n > 1 {
				both.Store(true)
			}
		}
	}()
	c3 := h1.push(release{version: "3.0.0", mode: "ok"})
	for _, h := range hosts {
		h.settled(c3)
	}
	close(stop)
	<-sampled
	for _, h := range hosts {
		if h.host.LastGood().Revision != c3 {
			t.Errorf("%s did not upgrade to the good release after the halt", h.host.Name)
		}
		h.consistent()
	}
	if both.Load() {
		t.Error("both hosts were switching or verifying at once with maxParallel 1")
	}
}

// newEtcdFleet starts etcd and hosts h1..hn following one repository on the etcd lease.
func newEtcdFleet(t *testing.T, n int) (*testetcd.Cluster, []*harness) {
	t.Helper()
	cluster := testetcd.Start(t)
	h1 := newHarness(t)
	relay := testfleet.Forward(t, h1.gateway, strings.TrimPrefix(cluster.Endpoints()[0], "http://"))
	h1.writeConfig("lease:\n  backend: etcd\n  etcd: {endpoints: [\"http://" + relay + "\"], prefix: /baton, ttl: 5s}\n")
	hosts := []*harness{h1}
	for i := 2; i <= n; i++ {
		hosts = append(hosts, h1.sibling("h"+string(rune('0'+i))))
	}
	return cluster, hosts
}

// TestFleetCanaryAndPromote: with canary 1 and a manual pause, one host takes the new
// release and the other waits until `baton promote`.
func TestFleetCanaryAndPromote(t *testing.T) {
	_, hosts := newEtcdFleet(t, 2)
	h1 := hosts[0]
	canaryFleet := strings.Replace(fleetYAML, "rollout: {", "rollout: {canary: 1, canaryPause: manual, ", 1)
	c1 := h1.push(release{version: "1.0.0", mode: "ok", fleet: canaryFleet})
	for _, h := range hosts {
		h.startAgent()
	}
	// The first commit has canaries too: promote it once the canary runs it.
	h1.waitFor("a canary on the first commit", 2*time.Minute, func() bool {
		return hosts[0].host.LastGood().Revision == c1 || hosts[1].host.LastGood().Revision == c1
	})
	h1.host.MustExec(t, "/usr/local/bin/baton", "promote", "web", c1)
	for _, h := range hosts {
		h.settled(c1)
	}

	c2 := h1.push(release{version: "2.0.0", mode: "ok", fleet: canaryFleet})
	var canary, rest *harness
	h1.waitFor("the canary to commit", 2*time.Minute, func() bool {
		for i, h := range hosts {
			if h.host.LastGood().Revision == c2 {
				canary, rest = h, hosts[1-i]
				return true
			}
		}
		return false
	})
	h1.waitFor("the other host to wait for promote", time.Minute, func() bool {
		return strings.Contains(rest.journal(), "waiting for baton promote web")
	})
	time.Sleep(3 * time.Second)
	if rest.host.LastGood().Revision != c1 {
		t.Fatalf("%s upgraded past the canary %s without a promote", rest.host.Name, canary.host.Name)
	}
	out := h1.host.MustExec(t, "/usr/local/bin/baton", "promote", "web", c2[:7])
	if !strings.Contains(out, "promoted "+short(c2)) {
		t.Errorf("baton promote said %q", out)
	}
	rest.settled(c2)
	if rest.host.LastGood().Revision != c2 {
		t.Fatalf("%s did not upgrade after the promote", rest.host.Name)
	}
	rest.consistent()
}

// TestFleetAfter: group web waits for group db to converge on a commit.
func TestFleetAfter(t *testing.T) {
	_, hosts := newEtcdFleet(t, 2)
	db, web := hosts[0], hosts[1] // h1 in db, h2 in web
	twoGroups := `apiVersion: baton/v1
groups:
  - name: db
    hosts: ["h1"]
    services: [demo]
    rollout: {minHealthy: 5s, healthyDeadline: 30s}
  - name: web
    hosts: ["h2"]
    services: [demo]
    after: [db]
    rollout: {minHealthy: 5s, healthyDeadline: 30s}
`
	c1 := db.push(release{version: "1.0.0", mode: "ok", fleet: twoGroups})
	for _, h := range hosts {
		h.startAgent()
	}
	for _, h := range hosts {
		h.settled(c1)
	}
	// db cannot converge on the next commit (its release fails there): web must wait
	// and never start it.
	c2 := db.push(release{version: "2.0.0", mode: "fail-health", fleet: twoGroups})
	db.settled(c2)
	web.waitFor("web to wait for db", time.Minute, func() bool {
		return strings.Contains(web.journal(), "waiting for group db to converge on "+short(c2))
	})
	if strings.Contains(web.journal(), "-> "+short(c2)+": switching") {
		t.Errorf("web switched to a commit db never converged on")
	}
	c3 := db.push(release{version: "3.0.0", mode: "ok", fleet: twoGroups})
	for _, h := range hosts {
		h.settled(c3)
	}
	// web committed after db: its commit came later
	if !db.host.LastGood().Time.Before(web.host.LastGood().Time) {
		t.Errorf("web committed %s at %v, before db at %v", short(c3), web.host.LastGood().Time, db.host.LastGood().Time)
	}
}

// TestFleetHolderKilled kills a host's agent (SIGKILL) while it holds the group's only
// slot in VERIFYING: the other host gets the slot once the etcd lease expires, waits
// for the silent host's verdict for as long as a live host would need to give it, then
// upgrades; the killed host, started again, finishes its own transaction first.
func TestFleetHolderKilled(t *testing.T) {
	_, hosts := newEtcdFleet(t, 2)
	h1, h2 := hosts[0], hosts[1]
	c1 := h1.push(release{version: "1.0.0", mode: "ok"})
	for _, h := range hosts {
		h.startAgent()
	}
	for _, h := range hosts {
		h.settled(c1)
	}
	h2.stopAgent()
	h1.stopAgent()

	c2 := h1.push(release{version: "2.0.0", mode: "ok"})
	h1.startAgent("BATON_FAILPOINT=VERIFYING")
	h1.waitFor("h1 to die holding the slot", 2*time.Minute, func() bool { return !h1.host.AgentActive() })
	if got := h1.host.TxnState(); got != "VERIFYING" {
		t.Fatalf("h1 died in %q, want VERIFYING", got)
	}
	killed := time.Now()
	h2.startAgent()
	h2.settled(c2)
	if h2.host.LastGood().Revision != c2 {
		t.Fatalf("h2 did not upgrade after h1's slot expired")
	}
	// h1 died after recording its switch: h2 waited for h1's verdict (healthyDeadline
	// and a revert's time) before it took c2 itself.
	if !strings.Contains(h2.journal(), "for h1: switched (to "+short(c2)+" or an earlier commit) and silent since") {
		t.Errorf("h2 did not wait for the verdict of h1, silent since its switch:\n%s", h2.journal())
	}
	t.Logf("h2 committed %v after h1 died holding the slot (etcd lease TTL 5s, healthyDeadline 30s)", time.Since(killed).Round(100*time.Millisecond))
	h2.consistent()

	h1.startAgent()
	h1.settled(c2)
	if h1.host.LastGood().Revision != c2 {
		t.Fatalf("h1 did not finish its own transaction: %s", h1.host.QuarantineReason(c2))
	}
	if !strings.Contains(h1.journal(), "resuming an interrupted transaction") {
		t.Errorf("h1 did not resume its transaction first")
	}
	h1.consistent()
}
