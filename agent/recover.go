package agent

import (
	"context"
	"fmt"

	"github.com/baton-fleet/baton/rollback"
)

// recover finishes the transaction that a crash (of the agent, or of the host) left
// open, before the agent does anything else:
//
//   - before SWITCHING (PREPARED, STAGED, LEASED, DRAINING) nothing on the host has
//     changed: the transaction is aborted, and the next poll starts it afresh;
//   - in SWITCHING the host is half-switched: it is reverted;
//   - in VERIFYING it is verified once more, and committed or reverted;
//   - in ROLLING_BACK the revert goes on; COMMITTED and FAILED are finished.
//
// A transaction that the agent has already resumed maxAttempts times is not resumed
// again (a loop guard): it is reverted if it touched the host, its commit quarantined,
// and the reason reported.
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
	log := a.log.With("txn", txn.ID, "commit", short(txn.To), "group", txn.Group)
	txn.Attempts++
	log.Warn("resuming an interrupted transaction", "state", txn.State, "attempt", txn.Attempts)
	if err := a.store.Save(txn, txn.State); err != nil {
		return err
	}
	if txn.Attempts > maxAttempts {
		reason := fmt.Sprintf("the agent stopped %d times during this upgrade (last in %s); giving up", txn.Attempts-1, txn.State)
		if txn.State.Touched() && txn.State != rollback.Failed && txn.State != rollback.Committed {
			// One last revert, not resumed again if it crashes too: Failed is persisted first.
			a.fail(ctx, log, txn, "recover", reason, "")
			if err := a.lease.Acquire(ctx, txn.Group); err == nil {
				_ = a.revert(context.WithoutCancel(ctx), txn)
				_ = a.lease.Release(ctx)
			}
			return nil
		}
		a.fail(ctx, log, txn, "recover", reason, "")
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
	case rollback.Switching, rollback.RollingBack:
		if err := a.lease.Acquire(ctx, txn.Group); err != nil {
			return fmt.Errorf("re-acquire the lease to revert: %w", err)
		}
		reason := txn.Reason
		if txn.State == rollback.Switching {
			reason = "the agent stopped while switching units"
		}
		a.rollback(ctx, log, txn, "recover", reason, txn.Output)
	case rollback.Verifying:
		if err := a.lease.Acquire(ctx, txn.Group); err != nil {
			return fmt.Errorf("re-acquire the lease to verify: %w", err)
		}
		hs, _, err := a.load(ctx, txn.To)
		if err != nil || txn.Attempts > 2 {
			a.rollback(ctx, log, txn, "recover", "the agent stopped while verifying", "")
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
