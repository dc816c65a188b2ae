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
		a.reportAborted(w, o)
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
func (a *Agent) reportAborted(w *work, o *core.Outcome) {
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
		// Reverted (an interruption, an inconclusive analysis): the fleet record must not
		// leave this host switched and silent, which holds the group as if a halt were
		// on its way (core.Stranded).
		a.recordIdle(context.Background(), txn.Group, txn.From, "aborted")
	} else {
		log.Warn("upgrade aborted before touching the host", "reason", reason)
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
