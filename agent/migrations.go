package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/baton-fleet/baton/core"
	"github.com/baton-fleet/baton/fleet"
	"github.com/baton-fleet/baton/migrate"
	"github.com/baton-fleet/baton/rollback"
	"github.com/baton-fleet/baton/spec"
)

// expands lists the changed services that have expand migrations: run before the
// first host switches to their version.
func expands(changed []*spec.Rendered) []*spec.Rendered {
	var out []*spec.Rendered
	for _, r := range changed {
		if len(r.Phase(spec.PhaseExpand)) > 0 {
			out = append(out, r)
		}
	}
	return out
}

// expand runs the pending expand migrations of the changed services, under the slot,
// with the release staged and before it switches: once for the whole fleet, by the
// first host that gets here (migrate.Runner). A migration that failed, was interrupted
// or changed halts the service's rollout on every host until an operator resolves it
// (baton migration resolve): this host waits and says so.
func (a *Agent) expand(ctx context.Context, w *work) core.Event {
	rs := expands(w.changed)
	if a.migrations == nil {
		return core.Event{Result: core.HostTrouble, Reason: "migrations need the etcd or local lease: FleetLock has no ledger"}
	}
	for _, r := range rs {
		ms := r.Phase(spec.PhaseExpand)
		a.txnPhase(w.txn, fmt.Sprintf("running the expand migrations of %s %s", r.Name, r.Version))
		a.notify.busy(migrationsBound(ms))
		err := a.migrations.Run(ctx, r.Name, r.Version, ms)
		a.notify.busy(0)
		if err != nil {
			return a.migrationWaits(ctx, err)
		}
	}
	a.obs.metrics.MigrationBlocked(false)
	return core.Event{}
}

// migrationWaits is the event of a migration run that did not finish: stopped, or
// waiting (a halt in the ledger, or the ledger out of reach).
func (a *Agent) migrationWaits(ctx context.Context, err error) core.Event {
	if ctx.Err() != nil {
		return core.Event{Result: core.Stopped}
	}
	var halt *migrate.Halt
	if errors.As(err, &halt) {
		a.obs.metrics.MigrationBlocked(true)
	}
	return core.Event{Result: core.HostTrouble, Reason: err.Error()}
}

// migrationsBound is how long running ms may take: each migration's timeout, twice
// for its backup, and a minute for the lock.
func migrationsBound(ms []spec.Migration) time.Duration {
	d := time.Minute
	for _, m := range ms {
		d += 2 * m.Timeout.D()
	}
	return d
}

// migrationRan reports a migration this host ran, done or failed.
func (a *Agent) migrationRan(e migrate.Entry) {
	a.obs.metrics.Migration(e.Service, e.Phase, e.State, e.End.Sub(e.Start))
	ev := e.Event()
	a.emit(ev.Type, "", ev.Service, ev.Message, ev.Fields)
}

// contract runs the contract migrations of the services hs runs, once no host of the
// fleet runs (or is going to run) a version older than theirs: after a commit, and at
// a poll that finds the host's commit unchanged. The last host to commit a version
// finds no one holding them back and runs them, once for the fleet; with the local
// lease, right after the commit. A run that does not finish is logged; the next
// commit or poll that gets here tries again.
func (a *Agent) contract(ctx context.Context, hs *spec.HostSpec) {
	if a.migrations == nil {
		return
	}
	var snap *fleet.Snapshot
	for _, r := range hs.Services {
		ms := r.Phase(spec.PhaseContract)
		if len(ms) == 0 {
			continue
		}
		if a.fleet != nil && snap == nil {
			cctx, cancel := context.WithTimeout(ctx, etcdCallTimeout)
			s, err := a.fleet.store.Snapshot(cctx)
			cancel()
			if err != nil {
				a.log.Warn("contract migrations: read the fleet state", "err", err)
				return
			}
			snap = s
		}
		if snap != nil {
			if h := snap.ContractHoldout(r.Name, r.Version); h != nil {
				a.log.Info("contract migrations wait", "service", r.Name, "version", r.Version, "for", h.String())
				continue
			}
		}
		a.notify.busy(migrationsBound(ms))
		err := a.migrations.Run(ctx, r.Name, r.Version, ms)
		a.notify.busy(0)
		if err != nil {
			a.log.Error("contract migrations did not finish", "service", r.Name, "version", r.Version, "err", err)
		}
	}
}

// runsOf is what a host runs by its last good record (or a transaction's target), as
// its fleet record says it for the requirement checks of the others: never nil.
func runsOf(lg *rollback.LastGood) map[string]fleet.Run {
	out := make(map[string]fleet.Run, len(lg.Services))
	for name, rec := range lg.Services {
		out[name] = fleet.Run{Version: rec.Version, Requires: rec.Requires}
	}
	return out
}
