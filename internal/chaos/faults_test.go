package chaos

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testfleet"
	"github.com/baton-fleet/baton/rollback"
)

// scenario is one fault of the suite: run injects it around a rollout, returns the
// release that rollout pushed and reports through t what it saw beyond the invariants.
type scenario struct {
	name string
	run  func(ctx context.Context, t *testing.T, h *harness) (Release, error)
}

// TestFaults runs each fault of the suite on one fleet of three real hosts, three
// etcd members and agents under the watchdog, and checks the four promises after each
// (see Check). Needs root; CI runs it.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("boots real hosts")
	}
	h := startHarness(t)
	scenarios := []scenario{
		{"holder cut off from etcd while draining", cutHolderWhileDraining},
		{"etcd down while a commit arrives", etcdDown},
		{"etcd leader lost during a rollout", etcdMemberLost(true)},
		{"etcd member lost during a rollout", etcdMemberLost(false)},
	}
	for _, st := range []rollback.State{rollback.Prepared, rollback.Staged, rollback.Leased, rollback.Draining,
		rollback.Switching, rollback.Verifying, rollback.Committed, rollback.RollingBack, rollback.Failed} {
		scenarios = append(scenarios, scenario{"agent killed in " + string(st), killAgentIn(st)})
	}
	for _, s := range scenarios {
		t.Run(s.name, func(t *testing.T) {
			ctx := context.Background()
			since := time.Now()
			kills := h.watchdogKills()
			rel, err := s.run(ctx, t, h)
			if err != nil {
				t.Error(err)
			}
			if err := h.heal(); err != nil {
				t.Fatal(err)
			}
			if rel.Commit != "" {
				if err := h.settle(ctx, rel, settleLimit); err != nil {
					t.Error(err)
				}
			}
			for name, n := range h.watchdogKills() {
				if n > kills[name] {
					t.Errorf("%s: the watchdog killed the agent %d times", name, n-kills[name])
				}
			}
			for _, v := range Check(h.input(ctx, since)) {
				t.Errorf("invariant violated: %v", v)
			}
			h.saveJournals(t)
		})
	}
}

// cutHolderWhileDraining cuts the lease holder off from etcd (packets dropped) at the
// start of a drain that outlasts the TTL, lets another host take the slot, then lets
// the cut-off host's drain end, and heals it later.
func cutHolderWhileDraining(ctx context.Context, t *testing.T, h *harness) (Release, error) {
	f := h.f
	for _, host := range f.Hosts {
		if err := host.CloseDrainGate(); err != nil {
			return Release{}, err
		}
	}
	rel, err := h.push(true)
	if err != nil {
		return rel, err
	}
	var holder *testfleet.Host
	err = f.WaitFor(ctx, "a host draining", time.Minute, func() bool {
		for _, host := range f.Hosts {
			if host.TxnState() == string(rollback.Draining) {
				holder = host
				return true
			}
		}
		return false
	})
	if err != nil {
		return rel, err
	}
	if err := holder.CutEtcd(); err != nil {
		return rel, err
	}
	t.Logf("%s cut off from etcd while draining", holder.Name)
	for _, host := range f.Hosts {
		if host != holder {
			_ = host.OpenDrainGate()
		}
	}
	// Another host takes the slot once the holder's etcd lease expires.
	err = f.WaitFor(ctx, "another host to switch", 3*testfleet.LeaseTTL+20*time.Second, func() bool {
		for _, host := range f.Hosts {
			if host == holder {
				continue
			}
			switch host.TxnState() {
			case string(rollback.Switching), string(rollback.Verifying):
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Logf("no other host switched while %s was cut off: %v", holder.Name, err)
	}
	if err := holder.OpenDrainGate(); err != nil {
		return rel, err
	}
	time.Sleep(2 * testfleet.LeaseTTL)
	return rel, holder.HealEtcd()
}

// etcdDown kills every etcd member while a new commit arrives, for etcdOutage, with
// the agents under the watchdog: none may be restarted, and the rollout goes on after.
func etcdDown(ctx context.Context, t *testing.T, h *harness) (Release, error) {
	f := h.f
	before := map[string]int{}
	for _, host := range f.Hosts {
		before[host.Name] = host.AgentRestarts()
	}
	f.Cluster.KillAll()
	rel, err := h.push(true)
	if err != nil {
		return rel, err
	}
	time.Sleep(*etcdOutage)
	for _, host := range f.Hosts {
		if !host.AgentActive() {
			t.Errorf("%s: the agent is not running after etcd was down for %v", host.Name, *etcdOutage)
		}
		if n := host.AgentRestarts() - before[host.Name]; n > 0 {
			t.Errorf("%s: systemd restarted the agent %d times while etcd was down", host.Name, n)
		}
	}
	return rel, f.Cluster.StartAll()
}

// etcdMemberLost kills the etcd leader (or a follower) while a host is switched, and
// starts it again 10s later.
func etcdMemberLost(leader bool) func(context.Context, *testing.T, *harness) (Release, error) {
	return func(ctx context.Context, t *testing.T, h *harness) (Release, error) {
		f := h.f
		rel, err := h.push(true)
		if err != nil {
			return rel, err
		}
		err = f.WaitFor(ctx, "a host switching", time.Minute, func() bool {
			for _, host := range f.Hosts {
				switch host.TxnState() {
				case string(rollback.Switching), string(rollback.Verifying):
					return true
				}
			}
			return false
		})
		if err != nil {
			return rel, err
		}
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		l, err := f.Cluster.WaitLeaderContext(lctx)
		cancel()
		if err != nil {
			return rel, err
		}
		victim := l
		if !leader {
			victim = (l + 1) % len(f.Cluster.Members())
		}
		f.Cluster.Kill(victim)
		t.Logf("killed etcd member %d (leader %d)", victim, l)
		time.Sleep(10 * time.Second)
		return rel, f.Cluster.Start(victim)
	}
}

// killAgentIn kills h1's agent (SIGKILL, its failpoint) in state, with the other
// agents stopped so that h1 runs the release first (a bad one for the revert
// states), then starts it again while the fleet's own contender holds the slot for
// longer than the watchdog: recovery must wait without being killed by it.
func killAgentIn(state rollback.State) func(context.Context, *testing.T, *harness) (Release, error) {
	return func(ctx context.Context, t *testing.T, h *harness) (Release, error) {
		f := h.f
		h1, others := f.Hosts[0], f.Hosts[1:]
		for _, host := range append(others, h1) {
			if err := host.StopAgent(); err != nil {
				return Release{}, err
			}
		}
		if err := h1.StartAgentOnce(failpointEnv + "=" + string(state)); err != nil {
			return Release{}, err
		}
		good := state != rollback.RollingBack && state != rollback.Failed
		rel, err := h.push(good)
		if err != nil {
			return rel, err
		}
		if err := f.WaitFor(ctx, fmt.Sprintf("h1's agent killed in %s", state), 90*time.Second, func() bool { return !h1.AgentActive() }); err != nil {
			return rel, err
		}
		if got := h1.TxnState(); got != string(state) {
			t.Logf("h1 died with its transaction in %q", got)
		}
		holdCtx, cancel := context.WithTimeout(ctx, time.Minute)
		release, err := f.HoldSlot(holdCtx, "holder")
		cancel()
		if err != nil {
			return rel, fmt.Errorf("hold the slot: %w", err)
		}
		if err := h1.StartAgent(); err != nil {
			release()
			return rel, err
		}
		time.Sleep(watchdog + 5*time.Second)
		release()
		if n := h1.AgentRestarts(); n > 0 || !h1.AgentActive() {
			t.Errorf("h1: restarted %d times (active %v) while another held the slot for %v", n, h1.AgentActive(), watchdog+5*time.Second)
		}
		for _, host := range others {
			if err := host.StartAgent(); err != nil {
				return rel, err
			}
		}
		return rel, nil
	}
}

// failpointEnv is agent.FailpointEnv: set to a state, the agent kills itself there.
const failpointEnv = "BATON_FAILPOINT"
