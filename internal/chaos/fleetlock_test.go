package chaos

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testfleet"
	"github.com/baton-fleet/baton/internal/testfleetlock"
	"github.com/baton-fleet/baton/rollback"
)

// TestFaultsFleetLock runs the FleetLock faults on a fleet whose agents take their
// slot from a FleetLock server that answers as airlock does: the server killed
// between a host's acquire and its release, and an agent killed holding a slot. After
// each, the slot is free again and the promises hold.
func TestFaultsFleetLock(t *testing.T) {
	if testing.Short() {
		t.Skip("boots real hosts")
	}
	srv := testfleetlock.Start(t, map[string]uint64{testfleet.Group: 1})
	h := startHarnessWith(t, testfleet.Options{
		Hosts: 3, MinHealthy: minHealthy, Watchdog: watchdog,
		FleetLock: strings.TrimPrefix(srv.URL(), "http://"),
	})
	scenarios := []struct {
		name string
		run  func(ctx context.Context, t *testing.T) (Release, error)
	}{
		{"server killed between acquire and release", func(ctx context.Context, t *testing.T) (Release, error) {
			rel, err := h.push(true)
			if err != nil {
				return rel, err
			}
			holder, err := waitState(ctx, h.f, time.Minute, rollback.Verifying)
			if err != nil {
				return rel, err
			}
			srv.Stop()
			t.Logf("FleetLock server killed while %s verifies", holder.Name)
			// The holder commits and cannot give the slot back.
			_ = h.f.WaitFor(ctx, holder.Name+" to end its transaction", time.Minute, func() bool { return holder.TxnState() == "" })
			time.Sleep(5 * time.Second)
			return rel, srv.Start()
		}},
		{"agent killed holding a slot", func(ctx context.Context, t *testing.T) (Release, error) {
			f := h.f
			h1, others := f.Hosts[0], f.Hosts[1:]
			for _, host := range append(others, h1) {
				if err := host.StopAgent(); err != nil {
					return Release{}, err
				}
			}
			if err := h1.StartAgentOnce(failpointEnv + "=" + string(rollback.Committed)); err != nil {
				return Release{}, err
			}
			rel, err := h.push(true)
			if err != nil {
				return rel, err
			}
			if err := f.WaitFor(ctx, "h1's agent killed holding the slot", 90*time.Second, func() bool { return !h1.AgentActive() }); err != nil {
				return rel, err
			}
			t.Logf("h1 killed in %s; the server's holders: %v", h1.TxnState(), srv.Holders(testfleet.Group))
			for _, host := range f.Hosts {
				if err := host.StartAgent(); err != nil {
					return rel, err
				}
			}
			return rel, nil
		}},
	}
	for _, s := range scenarios {
		t.Run(s.name, func(t *testing.T) {
			ctx := context.Background()
			since := time.Now()
			rel, err := s.run(ctx, t)
			if err != nil {
				t.Error(err)
			}
			if err := h.heal(); err != nil {
				t.Fatal(err)
			}
			if err := h.settle(ctx, rel, settleLimit); err != nil {
				t.Error(err)
			}
			if held := srv.Holders(testfleet.Group); len(held) > 0 {
				t.Errorf("the FleetLock slot is still held by %v after the rollout", held)
			}
			if n := srv.MostHolders(testfleet.Group); n > 1 {
				t.Errorf("the FleetLock server saw %d holders at once", n)
			}
			for _, v := range Check(h.input(ctx, since)) {
				t.Errorf("invariant violated: %v", v)
			}
			h.saveJournals(t)
		})
	}
}

// waitState waits until a host's transaction is in one of states and returns it.
func waitState(ctx context.Context, f *testfleet.Fleet, timeout time.Duration, states ...rollback.State) (*testfleet.Host, error) {
	var found *testfleet.Host
	err := f.WaitFor(ctx, fmt.Sprintf("a host in %v", states), timeout, func() bool {
		for _, host := range f.Hosts {
			for _, s := range states {
				if host.TxnState() == string(s) {
					found = host
					return true
				}
			}
		}
		return false
	})
	return found, err
}
