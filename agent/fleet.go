package agent

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-fleet/baton/config"
	"github.com/baton-fleet/baton/core"
	"github.com/baton-fleet/baton/fleet"
	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/lease"
	"github.com/baton-fleet/baton/migrate"
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
	cli    *clientv3.Client

	silence  core.Silence // hosts stranded on a commit; only the agent's loop uses it
	lastBeat time.Time    // the last heartbeat written, see heartbeat
}

// heartbeatEvery is how often an idle agent tells the fleet state that it is alive:
// far below fleet.StaleAfter, and cheap for etcd at any fleet size.
const heartbeatEvery = time.Minute

// newLease builds the configured lease backend and, for etcd, the fleet state; and
// the ledger of data migrations that goes with it (nil with FleetLock, which has no
// shared store).
func newLease(cfg *config.Config, logger *slog.Logger) (Lease, *fleetState, migrate.Store, error) {
	l, fs, err := leaseBackend(cfg, logger)
	if err != nil {
		return nil, nil, nil, err
	}
	switch {
	case fs != nil:
		return l, fs, migrate.NewLedger(fs.cli, cfg.Lease.Etcd.Prefix), nil
	case cfg.Lease.Backend == config.LeaseLocal:
		return l, nil, migrate.NewLocal(filepath.Join(cfg.Paths.State, migrate.LocalDir)), nil
	}
	return l, nil, nil, nil
}

// leaseBackend builds the configured lease backend and, for etcd, the fleet state.
func leaseBackend(cfg *config.Config, logger *slog.Logger) (Lease, *fleetState, error) {
	switch cfg.Lease.Backend {
	case config.LeaseLocal:
		return &lease.Local{Path: cfg.Paths.State + "/lease.lock"}, nil, nil
	case config.LeaseEtcd:
		e := cfg.Lease.Etcd
		cli, err := lease.NewClient(lease.EtcdClientConfig{
			Endpoints: e.Endpoints, Username: e.Username, PasswordFile: e.PasswordFile, Logger: logger,
			TLS: lease.EtcdTLS{CAFile: e.TLS.CAFile, CertFile: e.TLS.CertFile, KeyFile: e.TLS.KeyFile},
		})
		if err != nil {
			return nil, nil, fmt.Errorf("lease.etcd: %w", err)
		}
		l := lease.NewEtcd(cli, lease.EtcdOptions{Prefix: e.Prefix, Host: cfg.Host, TTL: e.TTL.D(), Logger: logger})
		return l, &fleetState{store: fleet.NewStore(cli, e.Prefix), lease: l, prefix: e.Prefix, cli: cli}, nil
	case config.LeaseFleetlock:
		f := lease.NewFleetlock(cfg.Lease.Fleetlock.URL, cfg.Host, nil)
		f.Logger = logger
		// A FleetLock slot never expires: the record lets the next start give back one
		// that a crash, or a release the server did not answer, left behind.
		f.MarkPath = filepath.Join(cfg.Paths.State, FleetlockMarkFile)
		return fleetlockGroup{f, cfg.Lease.Fleetlock.Group}, nil, nil
	}
	return nil, nil, fmt.Errorf("lease backend %q is unknown", cfg.Lease.Backend)
}

// FleetlockMarkFile, in the state directory, records the FleetLock slot this host
// may hold (lease.Fleetlock.MarkPath).
const FleetlockMarkFile = "fleetlock-slot.json"

// fleetlockGroup uses the FleetLock group of the configuration, whatever the fleet
// group: FleetLock servers know their own groups.
type fleetlockGroup struct {
	*lease.Fleetlock
	group string
}

func (f fleetlockGroup) Acquire(ctx context.Context, _ string) error {
	return f.Fleetlock.Acquire(ctx, f.group)
}

// fence guards the fleet-state writes of a transaction under the lease: the slot this
// host acquired, whether or not its hold lapsed since (etcd then refuses the write). It
// is nil when no slot was acquired: a write that must be fenced then fails, never
// goes out unfenced.
func (f *fleetState) fence() *fleet.Fence {
	if key, token, ok := f.lease.Fence(); ok {
		return &fleet.Fence{Key: key, Token: token}
	}
	return nil
}

// etcdCallTimeout bounds one fleet-state call, so that an etcd that does not answer
// cannot stop the agent's loop.
const etcdCallTimeout = 5 * time.Second

// fleetCall bounds one fleet-state call: by etcdCallTimeout and, while the host holds
// its slot, by what is left of the hold, so that no call under the lease outlives it.
func (a *Agent) fleetCall(ctx context.Context) (context.Context, context.CancelFunc) {
	d := etcdCallTimeout
	if until := a.fleet.lease.HeldUntil(); !until.IsZero() {
		d = min(d, time.Until(until))
	}
	return context.WithTimeout(ctx, d)
}

// gate asks the fleet state whether this host may start txn now (core.Gate). With no
// fleet state every transaction may start.
func (a *Agent) gate(ctx context.Context, g *spec.Group, txn *rollback.Txn) (fleet.Verdict, error) {
	if a.fleet == nil {
		return fleet.Verdict{OK: true}, nil
	}
	ctx, cancel := a.fleetCall(ctx)
	defer cancel()
	snap, err := a.fleet.store.Snapshot(ctx)
	if err != nil {
		return fleet.Verdict{}, err
	}
	line, _, err := a.fleet.lease.Line(ctx, g.Name)
	if err != nil {
		return fleet.Verdict{}, err
	}
	var holding []string
	for _, h := range line {
		if h.Holding {
			holding = append(holding, h.Host)
		}
	}
	return core.Gate(snap, g, core.Move{Commit: txn.To, Host: a.cfg.Host, Releases: releases(txn), Going: runsOf(&txn.Target)}, holding, &a.fleet.silence, time.Now()), nil
}

// record writes this host's record in the fleet state for txn. Under the lease the
// write is fenced: it fails, and the caller learns it, once the slot is not this
// host's any more. The record of a transaction that ended (IDLE) is the host's own
// word about itself: when the fence no longer holds it is written unfenced.
func (a *Agent) record(ctx context.Context, txn *rollback.Txn, state rollback.State, commit, result string) error {
	target := txn.To
	if state == rollback.Committed || state == rollback.Failed {
		target, state = "", "IDLE"
	}
	if a.fleet == nil || txn.Group == "" {
		return nil
	}
	h := fleet.Host{Host: a.cfg.Host, Group: txn.Group, Commit: commit, Target: target, State: string(state), Result: result, Runs: a.runs()}
	if target != "" {
		h.Going = runsOf(&txn.Target)
	}
	f := a.fleet.fence()
	if f == nil && state != "IDLE" {
		return fmt.Errorf("record this host in the fleet state: %w", fleet.ErrFenced)
	}
	cctx, cancel := a.fleetCall(ctx)
	err := a.fleet.store.PutHost(cctx, f, h)
	cancel()
	if err != nil && state == "IDLE" && f != nil {
		err = a.putHost(ctx, h)
	}
	if err != nil {
		a.log.Warn("record this host in the fleet state", "state", state, "err", err)
	}
	return err
}

// recordIdle writes the record of an idle host that runs commit.
func (a *Agent) recordIdle(ctx context.Context, group, commit, result string) {
	if a.fleet == nil || group == "" {
		return
	}
	if err := a.putHost(ctx, fleet.Host{Host: a.cfg.Host, Group: group, Commit: commit, State: "IDLE", Result: result, Runs: a.runs()}); err != nil {
		a.log.Warn("record this host in the fleet state", "err", err)
	}
}

// runs is what this host runs by its last good record (runsOf), for its fleet record;
// an unreadable record says nothing (nil), which holds back the requirement checks of
// the others: the safe side.
func (a *Agent) runs() map[string]fleet.Run {
	lg, err := a.store.LastGood()
	if err != nil {
		return nil
	}
	return runsOf(lg)
}

// putHost writes h unfenced, bounded by etcdCallTimeout.
func (a *Agent) putHost(ctx context.Context, h fleet.Host) error {
	ctx, cancel := context.WithTimeout(ctx, etcdCallTimeout)
	defer cancel()
	return a.fleet.store.PutHost(ctx, nil, h)
}

// haltTry makes one attempt, the attempt-th, at halting txn's group on its commit and
// its releases (see haltCommit); after a failure it waits a backoff, with the watchdog
// fed, so that the core's next ask is the next attempt. It is false when the halt was
// not written.
func (a *Agent) haltTry(ctx context.Context, txn *rollback.Txn, attempt int) bool {
	return a.haltAttempt(ctx, txn.Group, txn.To, fmt.Sprintf("%s: %s", txn.Step, txn.Reason), attempt, releases(txn)...)
}

// haltEarlyTimeout bounds the one try at the halt before a revert: the revert waits
// for it, with the failed release running.
const haltEarlyTimeout = 2 * time.Second

// haltOnce makes one quick try at halting txn's group, before the revert (see
// core.Machine.revert): no backoff, no retry; the halt after the revert retries.
func (a *Agent) haltOnce(ctx context.Context, txn *rollback.Txn) bool {
	if a.fleet == nil || txn.Group == "" {
		return true
	}
	cctx, cancel := context.WithTimeout(ctx, haltEarlyTimeout)
	defer cancel()
	err := a.fleet.store.Fail(cctx, nil, txn.Group, txn.To, a.cfg.Host, fmt.Sprintf("%s: %s", txn.Step, txn.Reason), releases(txn)...)
	if err != nil {
		a.log.Warn("halt the group before reverting; it is written after the revert", "err", err)
		return false
	}
	a.obs.metrics.Halted(true)
	return true
}

// releases are the releases txn changes, as the group halts on them.
func releases(txn *rollback.Txn) []fleet.Release {
	var out []fleet.Release
	for _, name := range txn.Services {
		if rec := txn.Target.Services[name]; rec.Fingerprint != "" {
			out = append(out, fleet.Release{Service: name, Version: rec.Version, Fingerprint: rec.Fingerprint})
		}
	}
	return out
}

// haltCommit records in the fleet state that commit is bad in group, and so are rels,
// the releases it changed. The halt must be durable before the slot is released, or
// the next host would start commit: so it is retried until it is written or ctx ends
// (false).
func (a *Agent) haltCommit(ctx context.Context, group, commit, reason string, rels ...fleet.Release) bool {
	for attempt := 1; ctx.Err() == nil; attempt++ {
		if a.haltAttempt(ctx, group, commit, reason, attempt, rels...) {
			return true
		}
	}
	return false
}

// haltAttempt is one attempt at haltCommit. A halt is never unsafe, so it is written
// unfenced: a holder that lost its slot still halts the group. After a failure it
// waits (500 ms doubling up to 5 s), the watchdog fed, and says why the group waits.
func (a *Agent) haltAttempt(ctx context.Context, group, commit, reason string, attempt int, rels ...fleet.Release) bool {
	if a.fleet == nil || group == "" {
		return true
	}
	cctx, cancel := context.WithTimeout(ctx, etcdCallTimeout)
	err := a.fleet.store.Fail(cctx, nil, group, commit, a.cfg.Host, reason, rels...)
	cancel()
	if err == nil {
		if attempt > 1 {
			a.log.Info("group halted in the fleet state", "attempts", attempt)
		}
		a.obs.metrics.Halted(true)
		return true
	}
	if attempt == 1 {
		a.phase("halting group %s on %s: the fleet state cannot be written (%v); keeping the lease slot so that no other host starts it", group, commitid.ShortOrNone(commit), err)
	}
	a.log.Error("halt the group in the fleet state; retrying, and keeping the lease slot meanwhile", "attempt", attempt, "err", err)
	backoff := min(500*time.Millisecond<<min(attempt-1, 4), 5*time.Second)
	a.notify.alive()
	select {
	case <-ctx.Done():
	case <-time.After(backoff):
	}
	a.notify.alive()
	return false
}

// pruneFleetState removes the fleet state that a committed upgrade made obsolete:
// halts of commits the whole group has moved past (in git order), canary spots and
// promotions of commits no host runs. Best effort: a failure only leaves records.
func (a *Agent) pruneFleetState(ctx context.Context) {
	if a.fleet == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), etcdCallTimeout)
	defer cancel()
	pruned, err := a.fleet.store.Prune(ctx, a.git.Descends)
	if err != nil {
		a.log.Warn("prune the fleet state", "err", err)
		return
	}
	if len(pruned) > 0 {
		a.log.Info("pruned the fleet state", "records", strings.Join(pruned, ", "))
	}
}

// heartbeat tells the fleet state that this host is alive (fleet.Host.Seen), so that
// it is not taken as stale; a host whose record is gone (forgotten) writes it anew.
func (a *Agent) heartbeat(ctx context.Context) {
	if a.fleet == nil || a.etcdDown != "" || time.Since(a.fleet.lastBeat) < heartbeatEvery {
		return
	}
	lg, err := a.store.LastGood()
	if err != nil || lg.Group == "" {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, etcdCallTimeout)
	ok, err := a.fleet.store.Touch(cctx, a.cfg.Host)
	cancel()
	switch {
	case err != nil:
		a.log.Debug("heartbeat to the fleet state", "err", err)
		return
	case !ok:
		a.recordIdle(ctx, lg.Group, lg.Revision, "")
	}
	a.fleet.lastBeat = time.Now()
}
