package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
// with the release staged and before the host leaves its load balancers and switches:
// once for the whole fleet, by the first host that gets here (migrate.Runner). A
// migration that failed, was interrupted or changed halts the service's rollout on
// every host until an operator resolves it (baton migration resolve): the transaction
// ends, and the gate (migrationHold) keeps this host waiting, saying why.
func (a *Agent) expand(ctx context.Context, w *work) core.Event {
	rs := expands(w.changed)
	if a.migrations == nil {
		return core.Event{Result: core.HostTrouble, Reason: "migrations need the etcd or local lease: FleetLock has no ledger"}
	}
	for _, r := range rs {
		ms := r.Phase(spec.PhaseExpand)
		step := fmt.Sprintf("running the expand migrations of %s %s", r.Name, r.Version)
		a.txnPhase(w.txn, step)
		err := a.runMigrations(ctx, r, ms, func(waiting string) { a.txnPhase(w.txn, step+": "+waiting) })
		if err != nil {
			return a.migrationWaits(ctx, err)
		}
	}
	a.obs.metrics.MigrationBlocked(false)
	return core.Event{}
}

// migrationWaits is the event of a migration run that did not finish: stopped, halted
// (Failed: the ledger's verdict, for the whole fleet) or the host's trouble (the
// ledger or the lock out of reach: tried again after a backoff).
func (a *Agent) migrationWaits(ctx context.Context, err error) core.Event {
	if ctx.Err() != nil {
		return core.Event{Result: core.Stopped}
	}
	var halt *migrate.Halt
	if errors.As(err, &halt) {
		a.obs.metrics.MigrationBlocked(true)
		return core.Event{Result: core.Failed, Reason: err.Error()}
	}
	return core.Event{Result: core.HostTrouble, Reason: err.Error()}
}

// migrationHold says why the expand migrations of the services txn changes hold it
// before the lease, "" when they do not: a migration of theirs that failed, was
// interrupted or changed (a migrate.Halt in the ledger) halts the service's rollout
// on every host, in every group, until an operator resolves it. The host waits here,
// not drained under a slot, and goes on at the first poll after the resolve. A ledger
// out of reach holds nothing here: the migrate step finds it again under the slot.
func (a *Agent) migrationHold(ctx context.Context, hs *spec.HostSpec, txn *rollback.Txn) string {
	rs := expands(changedServices(hs, txn))
	if a.migrations == nil || len(rs) == 0 {
		return ""
	}
	for _, r := range rs {
		cctx, cancel := context.WithTimeout(ctx, etcdCallTimeout)
		halt, err := a.migrations.Halted(cctx, r.Name, r.Phase(spec.PhaseExpand))
		cancel()
		if err != nil {
			a.log.Warn("read the migrations ledger", "service", r.Name, "err", err)
			return ""
		}
		if halt != nil {
			a.obs.metrics.MigrationBlocked(true)
			return "waiting: " + halt.Error()
		}
	}
	a.obs.metrics.MigrationBlocked(false)
	return ""
}

// migrationLockWait bounds, for the watchdog, the wait for the fleet's migration
// lock while another host holds it: that host's migrations may run for hours, as
// other hosts' upgrades may hold the lease (takeLease).
const migrationLockWait = 24 * time.Hour

// runMigrations runs ms of r (migrate.Runner.Run) under the watchdog: the run may
// take migrationsBound(ms), and a wait for the lock held by another host
// migrationLockWait, during which say tells what the host waits for.
func (a *Agent) runMigrations(ctx context.Context, r *spec.Rendered, ms []spec.Migration, say func(waiting string)) error {
	bound := migrationsBound(ms)
	a.notify.busy(bound)
	defer a.notify.busy(0)
	return a.migrations.RunWaiting(ctx, r.Name, r.Version, ms, func(holder string) {
		if holder == "" {
			a.notify.busy(bound)
			return
		}
		say("waiting for the migration lock, held by " + holder)
		a.notify.busy(migrationLockWait)
	})
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

// contracts is what the loop remembers of the contract migrations of the commit the
// host runs, between polls.
type contracts struct {
	due *spec.HostSpec // its contract migrations are not all done: tried at each poll
	why string         // what was logged of them last, not to repeat at each poll
}

// contract runs the contract migrations of the services hs runs, once no host of the
// fleet runs (or is going to run) a version older than theirs: after a commit, after
// a commit that changes nothing here, and at each poll that finds the host still at
// hs's commit while some are not done (contractAgain). The last host to commit a
// version finds no one holding them back and runs them, once for the fleet; a host
// that finds one still holding them back, or cannot finish them, tries again at its
// next poll, so that a failed try is not left for the next commit. With the local
// lease, they run right after the commit.
func (a *Agent) contract(ctx context.Context, hs *spec.HostSpec) {
	a.contracts.due = nil
	waits, troubles := a.runContracts(ctx, hs)
	if len(troubles) == 0 {
		a.obs.metrics.MigrationBlocked(false)
	}
	why := strings.Join(append(waits, troubles...), "; ")
	if why != "" {
		a.contracts.due = hs
	}
	if why != "" && why != a.contracts.why {
		if len(troubles) > 0 {
			a.log.Error(why)
		} else {
			a.log.Info(why)
		}
	}
	a.contracts.why = why
}

// contractAgain tries again the contract migrations left to run at commit, when the
// host still runs it.
func (a *Agent) contractAgain(ctx context.Context, commit string) {
	if hs := a.contracts.due; hs != nil && hs.Revision == commit {
		a.contract(ctx, hs)
	}
}

// runContracts runs what contract runs, and says of each service whose contract
// migrations are left why: waits, for a host that holds them back, and troubles, for
// a run that halted or did not finish (or a fleet state that cannot be read).
func (a *Agent) runContracts(ctx context.Context, hs *spec.HostSpec) (waits, troubles []string) {
	if a.migrations == nil {
		return nil, nil
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
				return nil, []string{fmt.Sprintf("contract migrations wait: the fleet state cannot be read: %v", err)}
			}
			snap = s
		}
		if snap != nil {
			if h := snap.ContractHoldout(r.Name, r.Version); h != nil {
				waits = append(waits, h.String())
				continue
			}
		}
		step := fmt.Sprintf("running the contract migrations of %s %s", r.Name, r.Version)
		err := a.runMigrations(ctx, r, ms, func(waiting string) { a.phase("%s: %s", step, waiting) })
		var halt *migrate.Halt
		switch {
		case errors.As(err, &halt):
			a.obs.metrics.MigrationBlocked(true)
			troubles = append(troubles, fmt.Sprintf("contract migrations of %s %s halted: %v", r.Name, r.Version, err))
		case err != nil:
			troubles = append(troubles, fmt.Sprintf("contract migrations of %s %s did not finish: %v", r.Name, r.Version, err))
		}
	}
	return waits, troubles
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
