package agent

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/baton-fleet/baton/fleet"
	"github.com/baton-fleet/baton/lease"
	"github.com/baton-fleet/baton/rollback"
	"github.com/baton-fleet/baton/spec"
)

// fleetState is the agent's view of the fleet-wide state, with the etcd lease: nil
// with the local and FleetLock backends, which have none (a failed commit is then
// quarantined on this host only).
type fleetState struct {
	store  *fleet.Store
	lease  *lease.Etcd
	prefix string
}

// newLease builds the configured lease backend and, for etcd, the fleet state.
func newLease(cfg *Config, logger *slog.Logger) (Lease, *fleetState, error) {
	switch cfg.Lease.Backend {
	case LeaseLocal:
		return &lease.Local{Path: cfg.Paths.State + "/lease.lock"}, nil, nil
	case LeaseEtcd:
		e := cfg.Lease.Etcd
		cli, err := lease.NewClient(lease.EtcdClientConfig{
			Endpoints: e.Endpoints, Username: e.Username, PasswordFile: e.PasswordFile, Logger: logger,
			TLS: lease.EtcdTLS{CAFile: e.TLS.CAFile, CertFile: e.TLS.CertFile, KeyFile: e.TLS.KeyFile},
		})
		if err != nil {
			return nil, nil, fmt.Errorf("lease.etcd: %w", err)
		}
		l := lease.NewEtcd(cli, lease.EtcdOptions{Prefix: e.Prefix, Host: cfg.Host, TTL: e.TTL.D(), Logger: logger})
		return l, &fleetState{store: fleet.NewStore(cli, e.Prefix), lease: l, prefix: e.Prefix}, nil
	case LeaseFleetlock:
		f := lease.NewFleetlock(cfg.Lease.Fleetlock.URL, cfg.Host, nil)
		return fleetlockGroup{f, cfg.Lease.Fleetlock.Group}, nil, nil
	}
	return nil, nil, fmt.Errorf("lease backend %q is unknown", cfg.Lease.Backend)
}

// fleetlockGroup uses the FleetLock group of the configuration, whatever the fleet
// group: FleetLock servers know their own groups.
type fleetlockGroup struct {
	*lease.Fleetlock
	group string
}

func (f fleetlockGroup) Acquire(ctx context.Context, _ string) error {
	return f.Fleetlock.Acquire(ctx, f.group)
}

// fence guards the agent's fleet-state writes while it holds its slot.
func (f *fleetState) fence(group, host string) *fleet.Fence {
	if t := f.lease.Token(); t != 0 {
		return &fleet.Fence{Key: fleet.SlotKey(f.prefix, group, host), Token: t}
	}
	return nil
}

// gate asks the fleet state whether this host may start commit now. With no fleet
// state every commit may start.
func (a *Agent) gate(ctx context.Context, g *spec.Group, commit string) (fleet.Verdict, error) {
	if a.fleet == nil {
		return fleet.Verdict{OK: true}, nil
	}
	snap, err := a.fleet.store.Snapshot(ctx)
	if err != nil {
		return fleet.Verdict{}, err
	}
	return snap.Gate(g, commit, a.cfg.Host, time.Now()), nil
}

// record writes this host's record in the fleet state, fenced while it holds its slot.
func (a *Agent) record(ctx context.Context, txn *rollback.Txn, state rollback.State, commit, result string) {
	target := txn.To
	if state == rollback.Committed || state == rollback.Failed {
		target, state = "", "IDLE"
	}
	a.recordHost(ctx, fleet.Host{Host: a.cfg.Host, Group: txn.Group, Commit: commit, Target: target, State: string(state), Result: result})
}

// recordIdle writes the record of an idle host that runs commit.
func (a *Agent) recordIdle(ctx context.Context, group, commit, result string) {
	a.recordHost(ctx, fleet.Host{Host: a.cfg.Host, Group: group, Commit: commit, State: "IDLE", Result: result})
}

func (a *Agent) recordHost(ctx context.Context, h fleet.Host) {
	if a.fleet == nil || h.Group == "" {
		return
	}
	if err := a.fleet.store.PutHost(ctx, a.fleet.fence(h.Group, h.Host), h); err != nil {
		a.log.Warn("record this host in the fleet state", "err", err)
	}
}

// halt records in the fleet state that commit failed here: no other host of the
// group starts it until a newer commit or `baton retry`.
func (a *Agent) halt(ctx context.Context, txn *rollback.Txn, reason string) {
	a.haltCommit(ctx, txn.Group, txn.To, reason)
}

// haltCommit records in the fleet state that commit is bad in group.
func (a *Agent) haltCommit(ctx context.Context, group, commit, reason string) {
	if a.fleet == nil || group == "" {
		return
	}
	if err := a.fleet.store.Fail(ctx, a.fleet.fence(group, a.cfg.Host), group, commit, a.cfg.Host, reason); err != nil {
		// Fenced out: the slot was lost. Record the halt anyway; a halt is never unsafe.
		if err := a.fleet.store.Fail(ctx, nil, group, commit, a.cfg.Host, reason); err != nil {
			a.log.Error("halt the group in the fleet state", "err", err)
			return
		}
	}
	a.obs.metrics.Halted(true)
}
