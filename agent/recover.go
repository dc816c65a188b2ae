package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/baton-fleet/baton/core"
	"github.com/baton-fleet/baton/internal/commitid"
)

// recoverLeaseWait bounds how long recovery waits for the group's lease before it
// reverts without it. A host that crashed after SWITCHING is already out of service
// and counted among the group's hosts between switch and commit: putting it back
// adds no disruption, while waiting for a slot (held by another host, or with etcd
// down) would keep it broken. So recovery waits this long, the watchdog fed, then
// reverts locally.
const recoverLeaseWait = 30 * time.Second

// resumeOpen finishes the transaction that a crash (of the agent, or of the host) left
// open, before the agent does anything else, as core.Machine.Resume decides. With no
// transaction open, it gives back a slot that a crash may have left.
func (a *Agent) resumeOpen(ctx context.Context) error {
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
	a.tlog.track(txn)
	// The target's drainers are known once its commit is loaded again (rejoin).
	w := &work{txn: txn, log: log, m: &core.Machine{Txn: txn, Drains: true}}
	a.drive(ctx, w, w.m.Resume())
	return nil
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
