package agent

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/baton-fleet/baton/api"
	"github.com/baton-fleet/baton/core"
	"github.com/baton-fleet/baton/events"
	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/metrics"
	"github.com/baton-fleet/baton/release"
	"github.com/baton-fleet/baton/rollback"
	"github.com/baton-fleet/baton/spec"
)

// end performs the ending s of a transaction: Leave keeps the record open for the next
// start; Done closes it and reports its outcome, once, to the fleet record, the log,
// the status, the API's result, the events and the metrics.
func (a *Agent) end(ctx context.Context, w *work, s core.Step) {
	if s.Do == core.Leave {
		w.log.Warn("stopping with the transaction open; the next start resumes it", "state", w.txn.State)
		return
	}
	switch o := s.Outcome; o.Kind {
	case core.Committed:
		a.reportCommitted(ctx, w, o)
	case core.Reverted, core.RevertFailed:
		a.reportFailed(ctx, w, o)
	default:
		a.reportAborted(ctx, w, o)
	}
}

// reportCommitted reports a transaction that committed.
func (a *Agent) reportCommitted(ctx context.Context, w *work, o *core.Outcome) {
	txn, log := w.txn, w.log
	took := time.Since(txn.Started)
	outcome, done := api.OutcomeUpgraded, "upgraded"
	if txn.Rollback {
		outcome, done = api.OutcomeRolledBack, "rolled back"
	}
	if o.After != "" {
		log.Warn("the checks had passed: recording the commit without finishing its steps", "reason", o.After)
		done += " (finished after: " + o.After + ")"
	} else {
		log.Info("upgrade committed", "took", took.Round(time.Millisecond), "steps", strings.Join(txn.Durations(time.Now()), " "))
	}
	for _, svc := range txn.Services {
		a.obs.metrics.Upgrade(svc, metrics.Succeeded, took)
	}
	a.result(api.Result{Outcome: outcome, From: txn.From, To: txn.To, Request: txn.Request})
	_ = a.record(context.WithoutCancel(ctx), txn, rollback.Committed, txn.To, done)
	if !txn.Rollback {
		a.pruneFleetState(ctx)
	}
	if w.hs != nil {
		a.contract(ctx, w.hs)
	}
	a.emit(events.UpgradeSucceeded, txn.To, strings.Join(txn.Services, ","), fmt.Sprintf("%s %s -> %s in %v", done, commitid.ShortOrNone(txn.From), commitid.ShortOrNone(txn.To), took.Round(time.Millisecond)), txnFields(txn, nil))
	a.finish(ctx, w)
	a.setStatus(func(s *Status) {
		s.Applied = txn.To
		s.LastResult = fmt.Sprintf("%s %s -> %s", done, commitid.ShortOrNone(txn.From), commitid.ShortOrNone(txn.To))
	})
	a.phase("idle at %s", commitid.ShortOrNone(txn.To))
}

// reportFailed reports a transaction whose release failed: quarantined here and, when
// it ran here, halting its group (both done by the steps before).
func (a *Agent) reportFailed(ctx context.Context, w *work, o *core.Outcome) {
	txn, log := w.txn, w.log
	ctx = context.WithoutCancel(ctx)
	_ = a.record(ctx, txn, rollback.Failed, txn.From, "failed: "+o.Reason)
	log.Error("upgrade failed; commit quarantined", "step", o.Step, "reason", o.Reason, "steps", strings.Join(txn.Durations(time.Now()), " "))
	a.finish(ctx, w)
	a.setStatus(func(s *Status) {
		s.LastResult = fmt.Sprintf("failed %s -> %s in %s: %s", commitid.ShortOrNone(txn.From), commitid.ShortOrNone(txn.To), o.Step, o.Reason)
	})
	a.phase("idle at %s", commitid.ShortOrNone(txn.From))
	for _, svc := range txn.Services {
		a.obs.metrics.Upgrade(svc, metrics.Failed, time.Since(txn.Started))
	}
	outcome := api.OutcomeReverted // the last good revision runs: it never stopped, or it is back
	if o.Kind == core.RevertFailed {
		outcome = api.OutcomeFailed
	}
	a.result(api.Result{Outcome: outcome, From: txn.From, To: txn.To, Step: o.Step, Message: o.Reason, Output: o.Output, Check: o.Check, Request: txn.Request})
	fields := txnFields(txn, map[string]string{"step": o.Step})
	a.emit(events.UpgradeFailed, txn.To, strings.Join(txn.Services, ","), fmt.Sprintf("%s: %s", o.Step, o.Reason), fields)
	if o.Halts {
		a.emit(events.RolloutHalted, txn.To, strings.Join(txn.Services, ","), fmt.Sprintf("%s quarantined: %s: %s", commitid.ShortOrNone(txn.To), o.Step, o.Reason), fields)
	}
}

// reportAborted reports a transaction that ended without a verdict on the release:
// stopped before it touched the host, or reverted after an interruption. The commit is
// not quarantined; after the host's own trouble or an interruption it is tried again
// after a backoff.
func (a *Agent) reportAborted(ctx context.Context, w *work, o *core.Outcome) {
	txn, log := w.txn, w.log
	reason := o.Reason
	switch o.Retry {
	case core.RetryTrouble:
		retry := a.trouble.Add(txn.To, time.Now(), o.Reason)
		reason = fmt.Sprintf("this host %s; trying again in %v", o.Reason, retry.Round(time.Second))
	case core.RetryInterrupted:
		retry := a.trouble.Add(txn.To, time.Now(), o.Reason)
		reason = fmt.Sprintf("%s; the commit is not quarantined and is tried again in %v", o.Reason, retry.Round(time.Second))
	}
	if txn.Rollback {
		reason = fmt.Sprintf("the rollback was interrupted (%s); %s stays quarantined: run baton rollback again, or baton retry %s", reason, commitid.ShortOrNone(txn.From), commitid.ShortOrNone(txn.From))
	}
	txn.Reason = reason
	_ = a.store.Save(txn, rollback.Aborted)
	a.tlog.track(txn)
	if core.Switched(txn) {
		log.Warn("upgrade aborted after reverting the host", "reason", reason)
	} else {
		log.Warn("upgrade aborted before touching the host", "reason", reason)
	}
	if recorded(txn) {
		// The record said LEASED (or later) and where the host was going: the other
		// hosts' requirement checks count that as what it may serve, and a host left
		// switched and silent holds the group as if a halt were on its way
		// (core.Stranded). It runs From; said before the slot is free.
		a.recordIdle(context.WithoutCancel(ctx), txn.Group, txn.From, "aborted: "+reason)
	}
	a.releaseLease(context.Background(), log)
	if err := a.store.End(); err != nil {
		log.Error("close the transaction", "err", err)
	}
	a.tlog.done()
	a.obs.metrics.TxnState("")
	a.result(api.Result{Outcome: api.OutcomeAborted, From: txn.From, To: txn.To, Message: reason, Request: txn.Request})
	a.setStatus(func(s *Status) {
		s.LastResult = fmt.Sprintf("aborted %s to %s: %s", doing(txn), commitid.ShortOrNone(txn.To), reason)
	})
	a.phase("idle at %s", commitid.ShortOrNone(txn.From))
	if o.Retry != core.NoRetry {
		a.phase("%s", a.trouble.Waiting(txn.To, time.Now()))
	}
}

// finish releases the lease, prunes old releases and closes the transaction.
func (a *Agent) finish(ctx context.Context, w *work) {
	txn, log := w.txn, w.log
	a.releaseLease(ctx, log)
	a.obs.metrics.LeaseHeld(false)
	lg, err := a.store.LastGood()
	if err == nil {
		for name, rec := range lg.Services {
			keep := []string{rec.Release}
			if t, ok := txn.Target.Services[name]; ok {
				keep = append(keep, t.Release)
			}
			if _, err := release.Prune(a.cfg.Paths.State, name, keep, 2); err != nil {
				log.Warn("prune old releases", "service", name, "err", err)
			}
		}
		// Services the host no longer runs, or never committed, keep nothing.
		if removed, err := release.PruneServices(a.cfg.Paths.State, slices.Collect(maps.Keys(lg.Services))); err != nil {
			log.Warn("prune the releases of services this host does not run", "err", err)
		} else if len(removed) > 0 {
			log.Info("pruned the releases of services this host does not run", "removed", len(removed))
		}
	}
	if err := a.store.End(); err != nil {
		log.Error("close the transaction", "err", err)
	}
	a.tlog.done()
	a.obs.metrics.TxnState("")
	if q, err := a.store.Quarantine(); err == nil {
		a.obs.metrics.Quarantined(len(q))
	}
}

// releaseTimeout bounds the release of the lease at the end of a transaction.
const releaseTimeout = 10 * time.Second

// releaseLease gives the slot back at the end of a transaction, also when the agent is
// stopping (SIGTERM during the bake): a FleetLock slot never expires by itself. A
// release that fails is the backend's to finish (an etcd slot expires within its TTL).
func (a *Agent) releaseLease(ctx context.Context, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if err := a.lease.Release(ctx); err != nil {
		log.Warn("release the lease", "err", err)
	}
}

// look is a commit the loop looked at that started no transaction.
type look struct {
	log    *slog.Logger
	commit string
	lg     *rollback.LastGood
	hs     *spec.HostSpec // nil when the commit did not load
}

// What holds a commit back, the Step of a Blocked outcome.
const (
	heldByUnits      = "units"       // a unit file of the release belongs to someone else
	heldByFreeze     = "freeze"      // fleet.yaml sets freeze
	heldByGate       = "gate"        // the fleet's gate: a halt, canaries, requirements, a stranded host
	heldByMigration  = "migration"   // a migration of the release is halted in the ledger
	heldByAlerts     = "alerts"      // the group's gate on firing alerts
	heldByFleetState = "fleet-state" // the fleet state could not be read (logged where it failed)
)

// endLook reports the ending of a look that started no transaction, once: rejected
// (bad input; nothing on the host touched), blocked (it waits, and the phase says
// why) or unchanged (nothing to do here; good as it is).
func (a *Agent) endLook(ctx context.Context, l look, o core.Outcome) {
	switch o.Kind {
	case core.Rejected:
		a.reportRejected(l, o)
	case core.Blocked:
		a.reportBlocked(l, o)
	case core.Unchanged:
		a.setStatus(func(s *Status) {
			s.Applied, s.LastResult = l.commit, "nothing to change at "+commitid.ShortOrNone(l.commit)
		})
		a.idle()
		a.recordIdle(ctx, l.hs.Group.Name, l.commit, "unchanged")
		l.log.Info("commit changes nothing on this host")
	}
}

// reportRejected reports a commit refused as bad input.
func (a *Agent) reportRejected(l look, o core.Outcome) {
	a.setStatus(func(s *Status) {
		s.Rejected, s.RejectReason = l.commit, o.Reason
		s.LastResult = fmt.Sprintf("rejected %s: %s", commitid.ShortOrNone(l.commit), o.Reason)
	})
	a.obs.metrics.Rejected()
	a.idle()
	a.result(api.Result{Outcome: api.OutcomeRejected, To: l.commit, Message: o.Reason})
	a.emit(events.CommitRejected, l.commit, "", o.Reason, nil)
	l.log.Error("commit rejected; keeping the last good revision", "err", o.Reason)
}

// reportBlocked says why a commit waits, once while the reason stays the same.
func (a *Agent) reportBlocked(l look, o core.Outcome) {
	if o.Reason == "" || a.Status().Phase == o.Reason {
		return
	}
	a.phase("%s", o.Reason)
	switch o.Step {
	case heldByUnits:
		a.result(api.Result{Outcome: api.OutcomeAborted, From: l.lg.Revision, To: l.commit, Message: o.Reason})
		l.log.Error("not upgrading: a unit file of the release belongs to someone else", "reason", o.Reason)
	case heldByFreeze:
		l.log.Info("fleet.yaml sets freeze: not starting the upgrade")
	case heldByAlerts:
		l.log.Info("the group's gate holds new upgrades", "reason", o.Reason)
	}
}

// recorded reports whether txn wrote this host's fleet record (from LEASED on).
func recorded(txn *rollback.Txn) bool {
	return slices.ContainsFunc(txn.History, func(s rollback.Step) bool { return s.State == rollback.Leased })
}
