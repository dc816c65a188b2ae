package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/baton-fleet/baton/api"
	"github.com/baton-fleet/baton/checks"
	"github.com/baton-fleet/baton/events"
	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/lease"
	"github.com/baton-fleet/baton/metrics"
	"github.com/baton-fleet/baton/plan"
	"github.com/baton-fleet/baton/release"
	"github.com/baton-fleet/baton/rollback"
	"github.com/baton-fleet/baton/spec"
	"github.com/baton-fleet/baton/units"
)

func newTxn(hs *spec.HostSpec, lg *rollback.LastGood, p *plan.Plan) *rollback.Txn {
	id := make([]byte, 4)
	_, _ = rand.Read(id)
	t := &rollback.Txn{
		ID: hex.EncodeToString(id), Host: hs.Host, Group: hs.Group.Name, From: lg.Revision, To: hs.Revision,
		Target: rollback.LastGood{Revision: hs.Revision, Host: hs.Host, Group: hs.Group.Name,
			Services: map[string]rollback.ServiceRecord{}, Files: map[string]string{}, History: lg.NextHistory()},
	}
	changed := map[string]bool{}
	for _, s := range p.Services {
		if s.Change != plan.Unchanged {
			changed[s.Name] = true
		}
		if s.Change == plan.Removed {
			t.Remove = append(t.Remove, lg.Services[s.Name].Units...)
		}
	}
	for _, r := range hs.Services {
		rec := rollback.ServiceRecord{Version: r.Version, Release: r.ReleaseID, Units: r.Units.Names(), Restart: r.Restart, Fingerprint: r.Fingerprint}
		t.Target.Services[r.Name] = rec
		for name, data := range r.Units {
			t.Target.Files[name] = string(data)
		}
		if !changed[r.Name] {
			continue
		}
		t.Services = append(t.Services, r.Name)
		t.Restart = append(t.Restart, r.Restart...)
		for _, u := range rec.Units {
			if !slices.Contains(lg.Services[r.Name].Units, u) && !slices.Contains(r.Restart, u) && startable(u) {
				t.Start = append(t.Start, u)
			}
		}
		for _, u := range lg.Services[r.Name].Units {
			if !slices.Contains(rec.Units, u) {
				t.Remove = append(t.Remove, u)
			}
		}
	}
	return t
}

// txnPhase records the step of txn that the agent is in, as "upgrading a -> b: step".
func (a *Agent) txnPhase(txn *rollback.Txn, step string) {
	a.phase("%s %s -> %s: %s", doing(txn), commitid.ShortOrNone(txn.From), commitid.ShortOrNone(txn.To), step)
}

// doing is what a transaction does, in the phase: "upgrading", or "rolling back"
// for an operator's rollback.
func doing(txn *rollback.Txn) string {
	if txn.Rollback {
		return "rolling back"
	}
	return "upgrading"
}

// txnFields adds to an event's fields that the transaction is an operator's
// rollback, when it is.
func txnFields(txn *rollback.Txn, fields map[string]string) map[string]string {
	if !txn.Rollback {
		return fields
	}
	out := map[string]string{"rollback": "operator"}
	maps.Copy(out, fields)
	return out
}

// startable reports whether a new unit of this type is started when installed:
// sockets, timers and paths are; a template or a target is not.
func startable(unit string) bool {
	switch filepath.Ext(unit) {
	case ".socket", ".timer", ".path":
		return !strings.Contains(unit, "@.")
	}
	return false
}

// save persists the transaction's next state; a failure to persist stops the step.
func (a *Agent) save(txn *rollback.Txn, state rollback.State) error {
	if err := a.store.Save(txn, state); err != nil {
		return err
	}
	a.tlog.track(txn)
	a.obs.metrics.TxnState(string(state))
	a.hit(state)
	return nil
}

// upgrade runs the transaction from PREPARED to COMMITTED or FAILED. Each step ends
// the transaction itself, and says so (false), when the upgrade cannot go on.
func (a *Agent) upgrade(ctx context.Context, log *slog.Logger, txn *rollback.Txn, hs *spec.HostSpec) {
	txn.Attempts = 1
	a.tlog.track(txn)
	a.emit(events.UpgradeStarted, txn.To, strings.Join(txn.Services, ","), fmt.Sprintf("%s %s -> %s", doing(txn), commitid.ShortOrNone(txn.From), commitid.ShortOrNone(txn.To)), txnFields(txn, nil))
	if err := a.save(txn, rollback.Prepared); err != nil {
		log.Error("persist the transaction", "err", err)
		return
	}
	if a.stageAll(ctx, log, txn, hs) && a.takeLease(ctx, log, txn, hs) && a.lookAgain(ctx, log, txn, hs) {
		a.drainAndSwitch(ctx, log, txn, hs)
	}
}

// stageAll stages the releases of the services txn changes, then records STAGED.
func (a *Agent) stageAll(ctx context.Context, log *slog.Logger, txn *rollback.Txn, hs *spec.HostSpec) bool {
	a.txnPhase(txn, "preparing")
	for _, r := range hs.Services {
		if !slices.Contains(txn.Services, r.Name) {
			continue
		}
		a.phase("%s %s %s: staging artifacts", doing(txn), r.Name, r.Version)
		a.notify.busy(time.Hour)
		_, err := a.stager.Stage(ctx, r)
		a.notify.busy(0)
		if ctx.Err() != nil {
			a.abort(log, txn, "the agent is stopping")
			return false
		}
		switch {
		case errors.Is(err, release.ErrBadArtifact):
			// The release is wrong the same way on every host, and nothing switched:
			// quarantined here, the group not halted (each host finds it for itself).
			a.fail(ctx, log, txn, "stage", err.Error(), "")
			return false
		case err != nil:
			a.hostTrouble(log, txn, "stage", err)
			return false
		}
	}
	if err := a.save(txn, rollback.Staged); err != nil {
		a.abort(log, txn, "persist the transaction: "+err.Error())
		return false
	}
	return true
}

// takeLease waits for a slot of the group's lease, records LEASED and checks the hold.
func (a *Agent) takeLease(ctx context.Context, log *slog.Logger, txn *rollback.Txn, hs *spec.HostSpec) bool {
	a.txnPhase(txn, "waiting for the "+txn.Group+" lease")
	if a.fleet != nil && !txn.Rollback { // a rollback's old revision does not set the group's slots
		if err := a.fleet.lease.SetSlots(ctx, txn.Group, hs.Group.Rollout.MaxParallel); err != nil {
			a.abort(log, txn, "set the group's slots: "+err.Error())
			return false
		}
	}
	a.notify.busy(24 * time.Hour) // other hosts' upgrades may hold the lease that long
	waitStart := time.Now()
	err := a.lease.Acquire(ctx, txn.Group)
	a.notify.busy(0)
	a.obs.metrics.LeaseWait(time.Since(waitStart))
	a.obs.metrics.LeaseHeld(err == nil)
	if errors.Is(err, lease.ErrFleetlockRefused) {
		// The server's configuration refuses this host (an unknown group, say): ask
		// again after a backoff, not at every poll.
		a.hostTrouble(log, txn, "take the lease", err)
		return false
	}
	if err != nil {
		a.abort(log, txn, "lease: "+err.Error())
		return false
	}
	if err := a.save(txn, rollback.Leased); err != nil {
		a.abort(log, txn, "persist the transaction: "+err.Error())
		return false
	}
	if err := a.lease.Check(ctx); err != nil {
		a.abort(log, txn, "lease lost before switching: "+err.Error())
		return false
	}
	return true
}

// lookAgain checks, under the lease, what may have changed while the host waited for
// it: the fleet's gate (and a canary spot), and unit files put in the way. It records
// which unit files the transaction creates.
func (a *Agent) lookAgain(ctx context.Context, log *slog.Logger, txn *rollback.Txn, hs *spec.HostSpec) bool {
	// An operator's rollback goes back to a revision the host ran: no gate holds it.
	if txn.Rollback {
		log.Info("rolling back on an operator's request")
	} else if v, err := a.gate(ctx, hs.Group, txn); err != nil || !v.OK {
		why := v.Why
		if err != nil {
			why = "read the fleet state: " + err.Error()
		}
		a.abort(log, txn, why)
		return false
	} else if v.Canary && a.fleet != nil {
		cctx, cancel := a.fleetCall(ctx)
		ok, err := a.fleet.store.ClaimCanary(cctx, a.fleet.fence(), txn.Group, txn.To, a.cfg.Host, hs.Group.Rollout.Canary)
		cancel()
		if err != nil || !ok {
			a.abort(log, txn, fmt.Sprintf("no canary spot left for %s (%v)", commitid.ShortOrNone(txn.To), err))
			return false
		}
		log.Info("upgrading as a canary of the group")
	}
	_ = a.record(ctx, txn, rollback.Leased, txn.From, "")
	lg, err := a.store.LastGood()
	if err != nil {
		a.abort(log, txn, err.Error())
		return false
	}
	if why := a.foreignUnits(hs, lg); why != "" {
		a.hostTrouble(log, txn, "switch", errors.New(why))
		return false
	}
	txn.Created = nil
	for _, name := range slices.Sorted(maps.Keys(txn.Target.Files)) {
		if _, ours := lg.Files[name]; !ours {
			txn.Created = append(txn.Created, name)
		}
	}
	return true
}

// drainAndSwitch takes the host out of its load balancers, checks the hold once more
// right before the first unit file is written, switches, then verifies and commits or
// reverts.
func (a *Agent) drainAndSwitch(ctx context.Context, log *slog.Logger, txn *rollback.Txn, hs *spec.HostSpec) {
	ds := a.drainers(hs, txn)
	undrain := func() {
		if len(ds) > 0 {
			if err := a.undrainAll(context.WithoutCancel(ctx), ds); err != nil {
				log.Error("undrain after giving up the switch", "err", err)
			}
		}
	}
	if len(ds) > 0 {
		a.txnPhase(txn, "draining")
		if err := a.save(txn, rollback.Draining); err != nil {
			a.abort(log, txn, "persist the transaction: "+err.Error())
			return
		}
		if err := a.lease.Check(ctx); err != nil {
			a.abort(log, txn, "lease lost before draining: "+err.Error())
			return
		}
		if err := a.drainAll(ctx, ds); err != nil {
			if ctx.Err() != nil {
				a.abort(log, txn, "the agent is stopping")
				return
			}
			a.hostTrouble(log, txn, "drain", err)
			return
		}
	}
	// A drain can outlast the lease (HAProxy waits for sessions, hooks run for a
	// minute): the hold is checked again right before the first unit file is written.
	if err := a.mayswitch(ctx, txn); err != nil {
		undrain()
		a.abort(log, txn, err.Error())
		return
	}
	a.txnPhase(txn, "switching")
	if err := a.save(txn, rollback.Switching); err != nil {
		undrain()
		a.abort(log, txn, "persist the transaction: "+err.Error())
		return
	}
	if err := a.switchTo(ctx, txn); err != nil {
		if ctx.Err() != nil {
			// Stopped mid-switch: an interruption, not a release systemd refused.
			a.giveUp(context.WithoutCancel(ctx), log, txn, "the agent was stopped while switching units")
			return
		}
		a.rollback(ctx, log, txn, "switch", err.Error(), "")
		return
	}
	a.verifyAndCommit(ctx, log, txn, hs)
}

// mayswitch says whether the host may switch now, right before the first unit file is
// written: the lease is still certainly held, and the fleet state records that this
// host switches to txn.To, written through the slot's fence so that etcd itself refuses
// it once the slot is another host's. A host whose switch is recorded and that then
// goes silent holds the group (see stranded) until it reports.
func (a *Agent) mayswitch(ctx context.Context, txn *rollback.Txn) error {
	if ctx.Err() != nil {
		return errors.New("the agent is stopping")
	}
	if err := a.lease.Check(ctx); err != nil {
		return fmt.Errorf("lease lost before switching: %w", err)
	}
	if err := a.record(ctx, txn, rollback.Switching, txn.From, ""); err != nil {
		return fmt.Errorf("lease not certain before switching: %w", err)
	}
	return nil
}

// hostTrouble ends a transaction that this host, not the release, could not carry out
// (staging on a full disk or without network, a drain the load balancer refused, a
// unit file someone else put in the way): nothing was switched, the commit is not
// quarantined and the group not halted. The host tries it again after a backoff.
func (a *Agent) hostTrouble(log *slog.Logger, txn *rollback.Txn, step string, err error) {
	why := fmt.Sprintf("could not %s: %v", step, err)
	retry := a.trouble.add(txn.To, time.Now(), why)
	reason := fmt.Sprintf("this host %s; trying again in %v", why, retry.Round(time.Second))
	a.abort(log, txn, reason)
	a.phase("%s", a.trouble.waiting(txn.To, time.Now()))
}

// verifyAndCommit runs the checks of the changed services and commits or reverts.
func (a *Agent) verifyAndCommit(ctx context.Context, log *slog.Logger, txn *rollback.Txn, hs *spec.HostSpec) {
	if err := a.save(txn, rollback.Verifying); err != nil {
		a.rollback(ctx, log, txn, "switch", "persist the transaction: "+err.Error(), "")
		return
	}
	rep := a.verify(ctx, txn, hs)
	if !rep.OK && ctx.Err() != nil {
		log.Warn("stopping while verifying; the next start verifies again")
		return
	}
	if !rep.OK {
		out := ""
		if rep.Failed != nil {
			out = rep.Failed.Output
			txn.Check = rep.Failed.Check
			for _, r := range hs.Services {
				for _, c := range r.Checks {
					if c.Name == rep.Failed.Check && slices.Contains(txn.Services, r.Name) {
						a.obs.metrics.CheckFailure(r.Name, c.Name)
					}
				}
			}
		}
		a.rollback(ctx, log, txn, "verify", rep.Reason, out)
		return
	}
	if err := a.undrainAll(ctx, a.drainers(hs, txn)); err != nil {
		log.Error("undrain after a healthy upgrade; the host stays out of its load balancer", "err", err)
	}
	a.commit(ctx, log, txn, hs.Group.Rollout.Bake.D())
}

// verify checks the new revision: the changed services' checks and the implicit
// systemd checks of the units restarted or started.
func (a *Agent) verify(ctx context.Context, txn *rollback.Txn, hs *spec.HostSpec) checks.Report {
	v := checks.Verification{
		Units:      append(slices.Clone(txn.Restart), txn.Start...),
		Systemd:    unitStater{a.systemd},
		MinHealthy: hs.Group.Rollout.MinHealthy.D(),
		Deadline:   hs.Group.Rollout.HealthyDeadline.D(),
		Clock:      a.clock,
	}
	for _, r := range hs.Services {
		if slices.Contains(txn.Services, r.Name) {
			v.Checks = append(v.Checks, r.Checks...)
		}
	}
	a.notify.busy(v.Deadline + time.Minute)
	defer a.notify.busy(0)
	v.Progress = func(p checks.Progress) {
		phase := fmt.Sprintf("%s %s -> %s: verifying %d/%d s, %d/%d checks passing",
			doing(txn), commitid.ShortOrNone(txn.From), commitid.ShortOrNone(txn.To), int(p.Healthy.Seconds()), int(p.MinHealthy.Seconds()), p.Passing, p.Total)
		a.setStatus(func(s *Status) { s.Phase = phase })
		a.notify.send("STATUS=" + phase)
	}
	a.txnPhase(txn, "verifying")
	return checks.Verify(ctx, v)
}

// switchTo installs the target's unit files and restarts what changed.
func (a *Agent) switchTo(ctx context.Context, txn *rollback.Txn) error {
	lg, err := a.store.LastGood()
	if err != nil {
		return err
	}
	change := units.Change{Install: map[string][]byte{}, Remove: txn.Remove, Restart: txn.Restart, Start: txn.Start}
	for name, data := range txn.Target.Files {
		if lg.Files[name] != data || !exists(a.unitDir, name) {
			change.Install[name] = []byte(data)
		}
	}
	return a.systemd.Apply(ctx, a.unitDir, change, owns(lg, txn))
}

func exists(d units.Dir, name string) bool {
	ok, err := d.Exists(name)
	return err == nil && ok
}

// owns reports whether baton owns unit: it installed it in the last good revision,
// or this transaction created it (the file did not exist before). A unit that is
// merely named by the target revision is not baton's to write.
func owns(lg *rollback.LastGood, txn *rollback.Txn) func(string) bool {
	return func(unit string) bool {
		_, ok := lg.Files[unit]
		return ok || lg.Service(unit) != "" || slices.Contains(txn.Created, unit)
	}
}

// commit makes the target the last good revision, then lets the lease go.
func (a *Agent) commit(ctx context.Context, log *slog.Logger, txn *rollback.Txn, bake time.Duration) {
	if err := a.save(txn, rollback.Committed); err != nil {
		log.Error("persist the transaction", "err", err)
		return
	}
	target := txn.Target
	target.Time = time.Now().UTC()
	if err := a.store.SetLastGood(&target); err != nil {
		log.Error("record the last good revision", "err", err)
		return
	}
	if bake > 0 {
		a.phase("upgraded to %s: baking %v before releasing the lease", commitid.ShortOrNone(txn.To), bake)
		a.notify.busy(bake + time.Minute)
		select {
		case <-ctx.Done():
		case <-a.clock.After(bake):
		}
	}
	took := time.Since(txn.Started)
	log.Info("upgrade committed", "took", took.Round(time.Millisecond), "steps", strings.Join(txn.Durations(time.Now()), " "))
	for _, svc := range txn.Services {
		a.obs.metrics.Upgrade(svc, metrics.Succeeded, took)
	}
	outcome, done := api.OutcomeUpgraded, "upgraded"
	if txn.Rollback {
		outcome, done = api.OutcomeRolledBack, "rolled back"
	}
	a.result(api.Result{Outcome: outcome, From: txn.From, To: txn.To, Request: txn.Request})
	_ = a.record(context.WithoutCancel(ctx), txn, rollback.Committed, txn.To, done)
	if !txn.Rollback {
		a.pruneFleetState(ctx)
	}
	a.emit(events.UpgradeSucceeded, txn.To, strings.Join(txn.Services, ","), fmt.Sprintf("%s %s -> %s in %v", done, commitid.ShortOrNone(txn.From), commitid.ShortOrNone(txn.To), took.Round(time.Millisecond)), txnFields(txn, nil))
	a.finish(ctx, log, txn)
	a.setStatus(func(s *Status) {
		s.Applied = txn.To
		s.LastResult = fmt.Sprintf("%s %s -> %s", done, commitid.ShortOrNone(txn.From), commitid.ShortOrNone(txn.To))
	})
	a.phase("idle at %s", commitid.ShortOrNone(txn.To))
}

// finish releases the lease, prunes old releases and closes the transaction.
func (a *Agent) finish(ctx context.Context, log *slog.Logger, txn *rollback.Txn) {
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

// abort ends a transaction that has not touched the host, or that an interruption
// made revert (giveUp). The commit is not quarantined: the next poll tries it again.
func (a *Agent) abort(log *slog.Logger, txn *rollback.Txn, reason string) {
	if txn.Rollback {
		reason = fmt.Sprintf("the rollback was interrupted (%s); %s stays quarantined: run baton rollback again, or baton retry %s", reason, commitid.ShortOrNone(txn.From), commitid.ShortOrNone(txn.From))
	}
	txn.Reason = reason
	_ = a.store.Save(txn, rollback.Aborted)
	a.tlog.track(txn)
	if switched(txn) {
		log.Warn("upgrade aborted after reverting the host", "reason", reason)
	} else {
		log.Warn("upgrade aborted before touching the host", "reason", reason)
	}
	a.releaseLease(context.Background(), log)
	if err := a.store.End(); err != nil {
		log.Error("close the transaction", "err", err)
	}
	a.tlog.done()
	a.result(api.Result{Outcome: api.OutcomeAborted, From: txn.From, To: txn.To, Message: reason, Request: txn.Request})
	a.setStatus(func(s *Status) {
		s.LastResult = fmt.Sprintf("aborted %s to %s: %s", doing(txn), commitid.ShortOrNone(txn.To), reason)
	})
	a.phase("idle at %s", commitid.ShortOrNone(txn.From))
}

// fail ends a transaction whose release failed: the commit is quarantined on this host
// and, when the release ran here (see switched), its group halts on it. Any revert is
// done.
func (a *Agent) fail(ctx context.Context, log *slog.Logger, txn *rollback.Txn, step, reason, output string) {
	txn.Step, txn.Reason, txn.Output = step, reason, output
	if err := a.store.AddQuarantine(txn.To, fmt.Sprintf("%s: %s", step, reason)); err != nil {
		log.Error("quarantine the commit", "err", err)
	}
	_ = a.save(txn, rollback.Failed)
	halts := switched(txn)
	if halts && !a.halt(ctx, txn, fmt.Sprintf("%s: %s", step, reason)) {
		// Stopping before the halt is written: the transaction stays FAILED, with the
		// slot (an etcd slot expires, and the host's SWITCHING record keeps the group
		// waiting: see stranded), and the next start halts the group again.
		log.Warn("stopping before the group's halt was written; the next start writes it")
		return
	}
	_ = a.record(context.WithoutCancel(ctx), txn, rollback.Failed, txn.From, "failed: "+reason)
	log.Error("upgrade failed; commit quarantined", "step", step, "reason", reason, "steps", strings.Join(txn.Durations(time.Now()), " "))
	a.finish(context.WithoutCancel(ctx), log, txn)
	a.setStatus(func(s *Status) {
		s.LastResult = fmt.Sprintf("failed %s -> %s in %s: %s", commitid.ShortOrNone(txn.From), commitid.ShortOrNone(txn.To), step, reason)
	})
	a.phase("idle at %s", commitid.ShortOrNone(txn.From))
	for _, svc := range txn.Services {
		a.obs.metrics.Upgrade(svc, metrics.Failed, time.Since(txn.Started))
	}
	outcome := api.OutcomeReverted // the last good revision runs: it never stopped, or it is back
	if txn.RevertFailed {
		outcome = api.OutcomeFailed
	}
	a.result(api.Result{Outcome: outcome, From: txn.From, To: txn.To, Step: step, Message: reason, Output: output, Check: txn.Check, Request: txn.Request})
	a.emit(events.UpgradeFailed, txn.To, strings.Join(txn.Services, ","), fmt.Sprintf("%s: %s", step, reason), txnFields(txn, map[string]string{"step": step}))
	if halts {
		a.emit(events.RolloutHalted, txn.To, strings.Join(txn.Services, ","), fmt.Sprintf("%s quarantined: %s: %s", commitid.ShortOrNone(txn.To), step, reason), txnFields(txn, map[string]string{"step": step}))
	}
}

// switched reports whether txn reached SWITCHING. Only a release that ran on the host
// can have failed its checks there, and only such a failure halts the group: one found
// before (an artifact that does not match its sha256) is found by every host for
// itself, with nothing switched.
func switched(txn *rollback.Txn) bool {
	return slices.ContainsFunc(txn.History, func(s rollback.Step) bool { return s.State == rollback.Switching })
}

// rollback reverts a transaction that touched the host, then fails it.
func (a *Agent) rollback(ctx context.Context, log *slog.Logger, txn *rollback.Txn, step, reason, output string) {
	stopping := ctx
	ctx = context.WithoutCancel(ctx) // a revert, once started, finishes
	txn.Step, txn.Reason, txn.Output = step, reason, output
	log.Error("upgrade failed; reverting", "step", step, "reason", reason, "output", output)
	a.phase("reverting %s -> %s: %s", commitid.ShortOrNone(txn.To), commitid.ShortOrNone(txn.From), reason)
	if err := a.save(txn, rollback.RollingBack); err != nil {
		log.Error("persist the transaction", "err", err)
		return
	}
	if err := a.lease.Check(ctx); err != nil {
		// The revert goes on: the host is out of its load balancer and only goes back
		// to what it ran; waiting for a slot would leave the failed release running.
		log.Warn("reverting without a certain hold of the lease", "err", err)
	}
	start := time.Now()
	revertResult := metrics.Succeeded
	if err := a.revert(ctx, txn); err != nil {
		reason = fmt.Sprintf("%s; the revert failed too: %v", reason, err)
		txn.RevertFailed = true
		revertResult = metrics.Failed
		log.Error("revert failed: the host needs an operator; it stays out of its load balancer", "err", err)
	} else if err := a.undrainTxn(ctx, txn); err != nil {
		log.Error("undrain after the revert", "err", err)
	}
	for _, svc := range txn.Services {
		a.obs.metrics.Revert(svc, revertResult, time.Since(start))
	}
	a.emit(events.RevertDone, txn.From, strings.Join(txn.Services, ","), fmt.Sprintf("reverted %s -> %s", commitid.ShortOrNone(txn.To), commitid.ShortOrNone(txn.From)), txnFields(txn, map[string]string{"result": revertResult}))
	a.fail(stopping, log, txn, step, reason, output)
}

// revertDeadline is how long the last good revision has to be healthy again after
// a revert.
const revertDeadline = time.Minute

// revert puts the last good revision's unit files back, removes the units the
// transaction added, and restarts the last good versions of the changed services.
// It is idempotent: a crash during it is resumed by running it again.
func (a *Agent) revert(ctx context.Context, txn *rollback.Txn) error {
	lg, err := a.store.LastGood()
	if err != nil {
		return err
	}
	change := units.Change{Install: map[string][]byte{}}
	for name, data := range lg.Files {
		cur, err := a.unitDir.Read(name)
		if err != nil || string(cur) != data {
			change.Install[name] = []byte(data)
		}
	}
	for _, name := range txn.Created {
		if _, old := lg.Files[name]; !old {
			change.Remove = append(change.Remove, name)
		}
	}
	slices.Sort(change.Remove)
	for svc, rec := range lg.Services {
		if t, ok := txn.Target.Services[svc]; ok && t.Release == rec.Release && !filesChanged(lg, &txn.Target, rec.Units) {
			continue
		}
		change.Restart = append(change.Restart, rec.Restart...)
		for _, u := range rec.Units {
			if startable(u) {
				change.Start = append(change.Start, u)
			}
		}
	}
	if err := a.systemd.Apply(ctx, a.unitDir, change, owns(lg, txn)); err != nil {
		return err
	}
	rep := checks.Verify(ctx, checks.Verification{
		Units: append(slices.Clone(change.Restart), change.Start...), Systemd: unitStater{a.systemd},
		MinHealthy: 2 * time.Second, Deadline: revertDeadline, Clock: a.clock,
	})
	if !rep.OK {
		return fmt.Errorf("the last good revision is not healthy either: %s", rep.Reason)
	}
	return nil
}

func filesChanged(a, b *rollback.LastGood, units []string) bool {
	for _, u := range units {
		if a.Files[u] != b.Files[u] {
			return true
		}
	}
	return false
}

// unitStater adapts units.Systemd to what the checks read.
type unitStater struct{ sd *units.Systemd }

func (u unitStater) UnitState(ctx context.Context, unit string) (checks.UnitState, error) {
	st, err := u.sd.Status(ctx, unit)
	if err != nil {
		return checks.UnitState{}, err
	}
	return checks.UnitState{ActiveState: st.ActiveState, SubState: st.SubState, Result: st.Result, NRestarts: st.NRestarts, MainPID: st.MainPID}, nil
}
