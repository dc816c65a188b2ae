package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/rollback"
)

// recoverLeaseWait bounds how long recovery waits for the group's lease before it
// reverts without it. A host that crashed after SWITCHING is already out of service
// and counted among the group's hosts between switch and commit: putting it back
// adds no disruption, while waiting for a slot (held by another host, or with etcd
// down) would keep it broken. So recovery waits this long, the watchdog fed, then
// reverts locally.
const recoverLeaseWait = 30 * time.Second

// stepInterrupted is the step of a transaction that is reverted because it was
// interrupted (a crash, SIGTERM, a reboot, the watchdog), not because it failed.
const stepInterrupted = "interrupted"

// recover finishes the transaction that a crash (of the agent, or of the host) left
// open, before the agent does anything else:
//
//   - before SWITCHING (PREPARED, STAGED, LEASED, DRAINING) nothing on the host has
//     changed: the transaction is aborted, and the next poll starts it afresh;
//   - in SWITCHING the host is half-switched and nothing was verified: it is reverted
//     and the transaction aborted (interrupted, see giveUp);
//   - in VERIFYING it is verified once more, and committed or reverted; interrupted a
//     second time in VERIFYING, it is reverted and aborted;
//   - in ROLLING_BACK the revert goes on; COMMITTED and FAILED are finished.
//
// An interruption never counts as the release failing its checks: only a check that
// failed (or a switch that systemd refused) quarantines the commit and halts the group.
//
// A transaction that the agent has already resumed maxAttempts times is not resumed
// again (the loop guard): see giveUp.
func (a *Agent) recover(ctx context.Context) error {
	txn, err := a.store.Load()
	if err != nil {
		return err
	}
	if txn == nil {
		// No transaction is open, so no slot should be held: give back one that a
		// crash left (a FleetLock slot never expires). A no-op when none is; a
		// release that fails goes on in the background.
		if err := a.lease.Release(context.WithoutCancel(ctx)); err != nil {
			a.log.Warn("release a lease slot left from before the start", "err", err)
		}
		return nil
	}
	log := a.log.With("txn", txn.ID, "commit", commitid.ShortOrNone(txn.To), "group", txn.Group)
	txn.Attempts++
	log.Warn("resuming an interrupted transaction", "state", txn.State, "attempt", txn.Attempts)
	if err := a.store.Save(txn, txn.State); err != nil {
		return err
	}
	if txn.Attempts > maxAttempts {
		a.giveUp(ctx, log, txn, fmt.Sprintf("the agent stopped %d times during this transaction (last in %s)", txn.Attempts-1, txn.State))
		return nil
	}
	switch txn.State {
	case rollback.Prepared, rollback.Staged, rollback.Leased, rollback.Draining, rollback.Aborted:
		if txn.State == rollback.Draining {
			if err := a.undrainTxn(ctx, txn); err != nil {
				log.Error("undrain after a crash while draining", "err", err)
			}
		}
		a.abort(log, txn, fmt.Sprintf("the agent stopped in %s, before touching the host", txn.State))
	case rollback.Switching:
		a.giveUp(ctx, log, txn, "the agent stopped while switching units")
	case rollback.RollingBack:
		if txn.Step == stepInterrupted {
			a.giveUp(ctx, log, txn, txn.Reason)
			return nil
		}
		a.leaseToRevert(ctx, log, txn)
		a.notify.busy(stepBound)
		a.rollback(ctx, log, txn, "recover", txn.Reason, txn.Output)
	case rollback.Verifying:
		if txn.Attempts > 2 {
			a.giveUp(ctx, log, txn, "the agent stopped twice while verifying")
			return nil
		}
		if err := a.acquireBounded(ctx, txn.Group); err != nil {
			a.giveUp(ctx, log, txn, "the agent stopped while verifying, and the lease to verify again could not be had: "+err.Error())
			return nil
		}
		hs, _, err := a.load(ctx, txn.To)
		if err != nil {
			a.giveUp(ctx, log, txn, "the agent stopped while verifying, and the commit could not be loaded again: "+err.Error())
			return nil
		}
		a.verifyAndCommit(ctx, log, txn, hs)
	case rollback.Committed:
		a.commit(ctx, log, txn, 0)
	case rollback.Failed:
		a.fail(ctx, log, txn, txn.Step, txn.Reason, txn.Output)
	default:
		return fmt.Errorf("transaction %s is in unknown state %q", txn.ID, txn.State)
	}
	return nil
}

// giveUp ends a transaction that was interrupted and is not resumed, because it was
// interrupted in a step that cannot be resumed (SWITCHING, a second time in
// VERIFYING) or once too often (the loop guard, after maxAttempts starts). What it
// does depends on what the transaction knows of the release:
//
//   - the release failed its checks (a revert was under way, or it had FAILED): the
//     revert is finished once more and the commit quarantined and halted, as it would
//     have been without the interruptions;
//   - its checks passed (COMMITTED): the commit is recorded as the last good
//     revision and the transaction closed, without the steps that kept stopping;
//   - otherwise nothing is known against the release: the host goes back to the last
//     good revision if the transaction may have touched it, the transaction ends
//     ABORTED with why, the commit is neither quarantined nor halted, and the host tries
//     it again after a backoff that grows with each try (hostTroubles).
func (a *Agent) giveUp(ctx context.Context, log *slog.Logger, txn *rollback.Txn, why string) {
	switch {
	case txn.State == rollback.Committed:
		target := txn.Target
		target.Time = time.Now().UTC()
		if err := a.store.SetLastGood(&target); err != nil {
			log.Error("record the last good revision", "err", err)
			return
		}
		log.Warn("the checks had passed: recording the commit without finishing its steps", "reason", why)
		a.releaseLease(ctx, log)
		if err := a.store.End(); err != nil {
			log.Error("close the transaction", "err", err)
		}
		a.tlog.done()
		a.obs.metrics.TxnState("")
		a.setStatus(func(s *Status) { s.Applied, s.LastResult = txn.To, "upgraded (finished after: "+why+")" })
		a.phase("idle at %s", commitid.ShortOrNone(txn.To))
		return
	case txn.State == rollback.Failed || (txn.State == rollback.RollingBack && txn.Step != stepInterrupted):
		// The release failed its checks before the interruptions: that verdict stands.
		// FAILED is persisted (and the commit quarantined) before one last revert, so
		// that a revert that keeps stopping the agent is not resumed again.
		reason := fmt.Sprintf("%s; reverting after: %s", why, txn.Reason)
		touched := txn.State == rollback.RollingBack
		a.fail(ctx, log, txn, "recover", reason, txn.Output)
		if touched {
			a.leaseToRevert(ctx, log, txn)
			a.notify.busy(stepBound)
			if err := a.revert(context.WithoutCancel(ctx), txn); err != nil {
				log.Error("revert failed: the host needs an operator; it stays out of its load balancer", "err", err)
			} else if err := a.undrainTxn(context.WithoutCancel(ctx), txn); err != nil {
				log.Error("undrain after the revert", "err", err)
			}
			a.releaseLease(ctx, log)
		}
		return
	}
	if txn.State.Touched() {
		a.leaseToRevert(ctx, log, txn)
		log.Warn("interrupted: reverting to the last good revision; the commit is not quarantined", "reason", why)
		a.phase("reverting %s -> %s: %s", commitid.ShortOrNone(txn.To), commitid.ShortOrNone(txn.From), why)
		if txn.Attempts <= maxAttempts {
			// Resumable: a crash during the revert reverts again at the next start. At
			// the loop guard the state is not persisted again, so that a failpoint or a
			// crash at that same state does not stop the revert every time.
			txn.Step, txn.Reason = stepInterrupted, why
			if err := a.save(txn, rollback.RollingBack); err != nil {
				log.Error("persist the transaction", "err", err)
				return
			}
		}
		a.notify.busy(stepBound)
		rctx := context.WithoutCancel(ctx) // a revert, once started, finishes
		if err := a.revert(rctx, txn); err != nil {
			// The last good revision does not come back either: the host needs an
			// operator, and no other host should take the commit meanwhile.
			log.Error("revert failed: the host needs an operator; it stays out of its load balancer", "err", err)
			txn.RevertFailed = true
			a.fail(ctx, log, txn, "recover", fmt.Sprintf("%s; the revert failed too: %v", why, err), "")
			return
		}
		if err := a.undrainTxn(rctx, txn); err != nil {
			log.Error("undrain after the revert", "err", err)
		}
		why += "; reverted to " + commitid.ShortOrNone(txn.From)
	}
	retry := a.trouble.add(txn.To, time.Now(), why)
	a.abort(log, txn, fmt.Sprintf("%s; the commit is not quarantined and is tried again in %v", why, retry.Round(time.Second)))
	a.phase("%s", a.trouble.waiting(txn.To, time.Now()))
}

// leaseToRevert takes the group's lease for a revert in recovery, waiting at most
// recoverLeaseWait; without it the revert goes on (see recoverLeaseWait), and says so.
func (a *Agent) leaseToRevert(ctx context.Context, log *slog.Logger, txn *rollback.Txn) {
	if err := a.acquireBounded(ctx, txn.Group); err != nil {
		log.Warn("reverting without the lease: the host is already out of service, and waiting would keep it so", "err", err)
	}
}

// acquireBounded acquires the group's lease, waiting at most recoverLeaseWait, with
// the watchdog fed while it waits.
func (a *Agent) acquireBounded(ctx context.Context, group string) error {
	a.txnPhaseWaiting(group)
	actx, cancel := context.WithTimeout(ctx, recoverLeaseWait)
	defer cancel()
	// Acquire may take one etcd call past its context to withdraw from the line.
	a.notify.busy(recoverLeaseWait + 2*etcdBound)
	defer a.notify.busy(0)
	err := a.lease.Acquire(actx, group)
	if err != nil && errors.Is(actx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		return fmt.Errorf("no slot of group %s within %v: %w", group, recoverLeaseWait, err)
	}
	return err
}

// txnPhaseWaiting says that recovery waits for the group's lease.
func (a *Agent) txnPhaseWaiting(group string) {
	a.phase("recovering: waiting up to %v for the %s lease", recoverLeaseWait, group)
}
