package agent_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/fleet"
	"github.com/baton-fleet/baton/lease"
)

// watchdogProps run the agent as baton.service does, with a watchdog far shorter than
// the package's so that a wait that starves it shows within the test.
var watchdogProps = []string{"Type=notify", "WatchdogSec=4s", "Restart=on-failure", "RestartSec=200ms"}

// TestEtcdDown stops etcd under an agent run with a watchdog: the agent starts without
// etcd, keeps its host as it is while a new commit waits, says why in its phase and
// its journal, is never restarted by the watchdog, and upgrades once etcd is back.
func TestEtcdDown(t *testing.T) {
	cluster, hosts := newEtcdFleet(t, 1)
	h := hosts[0]
	c1 := h.push(release{version: "1.0.0", mode: "ok"})
	h.startAgent()
	h.settled(c1)
	h.stopAgent()

	cluster.Stop(0)
	h.startAgentWith(watchdogProps)
	c2 := h.push(release{version: "2.0.0", mode: "ok"})
	h.waitFor("the phase to say that etcd does not answer", time.Minute, func() bool {
		return strings.HasPrefix(h.unitProp(h.host.AgentUnit(), "StatusText"), "waiting for etcd")
	})
	time.Sleep(15 * time.Second) // several watchdog intervals and polls
	if n := h.unitProp(h.host.AgentUnit(), "NRestarts"); n != "0" {
		t.Fatalf("the agent was restarted %s times while etcd was down", n)
	}
	if lg := h.host.LastGood().Revision; lg != c1 || h.host.TxnState() != "" {
		t.Fatalf("with etcd down the host moved: last good %s (want %s), transaction %q", short(lg), short(c1), h.host.TxnState())
	}
	if h.host.Served() != "1.0.0" {
		t.Fatalf("with etcd down the host serves %q, want 1.0.0", h.host.Served())
	}
	if j := h.journal(); !strings.Contains(j, "etcd does not answer: keeping this host as it is") {
		t.Errorf("no journal line says that etcd does not answer")
	}

	cluster.Restart(0)
	h.settled(c2)
	if lg := h.host.LastGood().Revision; lg != c2 {
		t.Fatalf("once etcd was back the host did not upgrade: last good %s, quarantine %q", short(lg), h.host.QuarantineReason(c2))
	}
	h.consistent()
	if n := h.unitProp(h.host.AgentUnit(), "NRestarts"); n != "0" {
		t.Errorf("the agent was restarted %s times", n)
	}
	if j := h.journal(); !strings.Contains(j, "etcd answers again") {
		t.Errorf("no journal line says that etcd answers again")
	}
}

// TestInterruptedSwitch kills the agent in SWITCHING, then starts it again with a
// watchdog while another host holds the group's only slot for longer than the
// watchdog: recovery waits for the slot with the watchdog fed, then reverts the host
// without it. The interruption quarantines nothing and halts no group, and the commit
// goes through once the slot is free.
func TestInterruptedSwitch(t *testing.T) {
	cluster, hosts := newEtcdFleet(t, 1)
	h := hosts[0]
	c1 := h.push(release{version: "1.0.0", mode: "ok"})
	h.startAgent()
	h.settled(c1)
	h.stopAgent()

	c2 := h.push(release{version: "2.0.0", mode: "ok"})
	h.startAgent("BATON_FAILPOINT=SWITCHING")
	h.waitFor("the agent to die in SWITCHING", 2*time.Minute, func() bool { return !h.host.AgentActive() })
	if got := h.host.TxnState(); got != "SWITCHING" {
		t.Fatalf("the agent died in %q, want SWITCHING", got)
	}

	// Another host takes the slot, once h1's expires with its etcd lease.
	cli := cluster.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	other := lease.NewEtcd(cli, lease.EtcdOptions{Prefix: "/baton", Host: "other", TTL: 5 * time.Second})
	t.Cleanup(func() { other.Close() })
	if err := other.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}

	h.startAgentWith(watchdogProps)
	h.waitFor("the interrupted transaction to end", 2*time.Minute, func() bool { return h.host.TxnState() == "" })
	if n := h.unitProp(h.host.AgentUnit(), "NRestarts"); n != "0" {
		t.Fatalf("the watchdog restarted the agent %s times while it waited for the lease", n)
	}
	if h.host.Quarantined(c2) {
		t.Fatalf("an interruption quarantined %s: %s", short(c2), h.host.QuarantineReason(c2))
	}
	if lg := h.host.LastGood().Revision; lg != c1 {
		t.Fatalf("last good is %s, want %s", short(lg), short(c1))
	}
	h.consistent()
	snap, err := fleet.NewStore(cli, "/baton").Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if g := snap.Groups["web"]; g != nil && len(g.Failed) > 0 {
		t.Fatalf("an interruption halted the group: %+v", g.Failed)
	}
	j := h.journal()
	for _, want := range []string{"reverting without the lease", "interrupted: reverting to the last good revision"} {
		if !strings.Contains(j, want) {
			t.Errorf("the journal lacks %q", want)
		}
	}

	if err := other.Release(ctx); err != nil {
		t.Fatal(err)
	}
	h.settled(c2)
	if lg := h.host.LastGood().Revision; lg != c2 {
		t.Fatalf("the commit did not go through once the slot was free: last good %s, quarantine %q", short(lg), h.host.QuarantineReason(c2))
	}
	h.consistent()
	if n := h.unitProp(h.host.AgentUnit(), "NRestarts"); n != "0" {
		t.Errorf("the agent was restarted %s times", n)
	}
}
