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

	"github.com/baton-fleet/baton/checks"
	"github.com/baton-fleet/baton/core"
	"github.com/baton-fleet/baton/drain"
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
		old := lg.Services[r.Name]
		rec := targetRecord(t, r, lg, changed[r.Name])
		t.Target.Services[r.Name] = rec
		if !changed[r.Name] {
			continue
		}
		t.Services = append(t.Services, r.Name)
		t.Restart = append(t.Restart, rec.Restart...)
		for _, u := range rec.Units {
			if !slices.Contains(old.Units, u) && !slices.Contains(rec.Restart, u) && startable(u) {
				t.Start = append(t.Start, u)
			}
		}
		for _, u := range old.Units {
			if !slices.Contains(rec.Units, u) {
				t.Remove = append(t.Remove, u)
			}
		}
	}
	return t
}

// targetRecord is what the last good record says of r once t commits, with r's unit
// files added to t's target. A bluegreen service that changes starts its idle color
// (plan.NextColor), which becomes the active one; the other color's files stay
// installed, and its units stopped once the new one held (see retire).
func targetRecord(t *rollback.Txn, r *spec.Rendered, lg *rollback.LastGood, changed bool) rollback.ServiceRecord {
	old := lg.Services[r.Name]
	rec := rollback.ServiceRecord{Version: r.Version, Release: r.ReleaseID, Units: r.Units.Names(), Restart: r.Restart, Fingerprint: r.Fingerprint, Requires: r.Requires}
	files := r.Units
	if len(r.Colors) > 0 {
		c := plan.NextColor(r, old)
		if active, ok := r.Color(old.Color); ok && !changed {
			c = active
		}
		rec.Color, rec.Restart, files = c.Name, c.Units.Names(), c.Units
		for _, rc := range r.Colors {
			rec.Colors = append(rec.Colors, rc.Name)
		}
		rec.Units = slices.Clone(rec.Restart)
		for _, u := range old.Units {
			if _, ours := c.Units[u]; !ours && plan.Keeps(r, u) {
				rec.Units = append(rec.Units, u) // the other color's, as installed
				t.Target.Files[u] = lg.Files[u]
			}
		}
		slices.Sort(rec.Units)
	}
	for name, data := range files {
		t.Target.Files[name] = string(data)
	}
	return rec
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
	a.hit(txn, state)
	return nil
}

// upgrade runs a new transaction, step by step as the core decides, to its ending.
func (a *Agent) upgrade(ctx context.Context, log *slog.Logger, txn *rollback.Txn, hs *spec.HostSpec) {
	a.tlog.track(txn)
	a.emit(events.UpgradeStarted, txn.To, strings.Join(txn.Services, ","), fmt.Sprintf("%s %s -> %s", doing(txn), commitid.ShortOrNone(txn.From), commitid.ShortOrNone(txn.To)), txnFields(txn, nil))
	w := &work{txn: txn, log: log, m: &core.Machine{Txn: txn}}
	w.load(a, hs)
	w.m.Drains = len(w.drains) > 0
	a.drive(ctx, w, w.m.Begin())
}

// work is a transaction the agent performs the steps of: its record, the core that
// decides them, and what the steps need of the target revision (nil in recovery until
// it is loaded again).
type work struct {
	txn     *rollback.Txn
	m       *core.Machine
	log     *slog.Logger
	hs      *spec.HostSpec
	changed []*spec.Rendered // the services of hs the transaction changes
	drains  []drain.Drainer
	halts   int  // attempts at the group's halt
	canary  bool // the host took a canary spot of the group
}

// load keeps hs, the target revision as rendered for this host, its drainers, and
// what the core must know of it.
func (w *work) load(a *Agent, hs *spec.HostSpec) {
	w.hs = hs
	w.changed = changedServices(hs, w.txn)
	w.drains = a.drainers(w.changed)
	if w.m != nil {
		w.m.BlueGreen = slices.ContainsFunc(w.changed, func(r *spec.Rendered) bool { return len(r.Colors) > 0 })
		w.m.Analyzes = slices.ContainsFunc(w.changed, func(r *spec.Rendered) bool { return r.Analysis != nil })
		w.m.Migrates = len(expands(w.changed)) > 0
	}
}

// changedServices are the services of hs that txn changes, in hs's order.
func changedServices(hs *spec.HostSpec, txn *rollback.Txn) []*spec.Rendered {
	var out []*spec.Rendered
	for _, r := range hs.Services {
		if slices.Contains(txn.Services, r.Name) {
			out = append(out, r)
		}
	}
	return out
}

// drive performs steps from s on until an ending: it persists each step's state, does
// its action and hands the core the event.
func (a *Agent) drive(ctx context.Context, w *work, s core.Step) {
	for {
		if s.Persist != "" {
			if err := a.save(w.txn, s.Persist); err != nil {
				w.log.Error("persist the transaction", "state", s.Persist, "err", err)
				s = w.m.Next(core.Event{Did: s.Do, Result: core.Unpersisted, Reason: err.Error()})
				continue
			}
		}
		if s.Do.Ended() {
			a.end(ctx, w, s)
			return
		}
		ev := a.perform(ctx, w, s.Do)
		ev.Did = s.Do
		s = w.m.Next(ev)
	}
}

// perform does one action of a transaction and says how it ended.
func (a *Agent) perform(ctx context.Context, w *work, do core.Action) core.Event {
	act, ok := actions[do]
	if !ok {
		panic("agent: the core asked for an unknown action " + string(do))
	}
	return act(a, ctx, w)
}

// actions are how the agent performs each action of the core.
var actions = map[core.Action]func(*Agent, context.Context, *work) core.Event{
	core.Stage:       (*Agent).stageAll,
	core.Acquire:     (*Agent).takeLease,
	core.AcquireSoon: (*Agent).acquireSoon,
	core.CheckHold:   (*Agent).checkHold,
	core.LookAgain:   (*Agent).lookAgain,
	core.Drain:       (*Agent).drainHost,
	core.Migrate:     (*Agent).expand,
	core.ConfirmHold: (*Agent).confirmHold,
	core.Switch:      (*Agent).switchHost,
	core.Load:        (*Agent).loadAgain,
	core.Verify:      (*Agent).verifyTarget,
	core.Cutover:     (*Agent).cutover,
	core.Undrain:     (*Agent).rejoin,
	core.Analyze:     (*Agent).analyzeTarget,
	core.Retire:      (*Agent).retire,
	core.Commit:      (*Agent).commitTarget,
	core.Revert:      (*Agent).revertHost,
	core.Quarantine:  (*Agent).quarantine,
	core.HaltEarly:   (*Agent).haltEarly,
	core.Halt:        (*Agent).haltGroup,
}

// confirmHold is mayswitch as an event.
func (a *Agent) confirmHold(ctx context.Context, w *work) core.Event {
	return outcomeOf(a.mayswitch(ctx, w.txn), core.Failed)
}

// switchHost installs the target's unit files and restarts what changed.
func (a *Agent) switchHost(ctx context.Context, w *work) core.Event {
	a.txnPhase(w.txn, "switching")
	return stopOr(ctx, a.switchTo(ctx, w.txn))
}

// loadAgain loads the target commit again, in recovery.
func (a *Agent) loadAgain(ctx context.Context, w *work) core.Event {
	hs, _, err := a.load(ctx, w.txn.To)
	if err == nil {
		w.load(a, hs)
	}
	return outcomeOf(err, core.Failed)
}

// quarantine marks the commit failed on this host.
func (a *Agent) quarantine(_ context.Context, w *work) core.Event {
	txn := w.txn
	if err := a.store.AddQuarantine(txn.To, fmt.Sprintf("%s: %s", txn.Step, txn.Reason)); err != nil {
		w.log.Error("quarantine the commit", "err", err)
	}
	return core.Event{}
}

// haltEarly is one quick try at the group's halt, before the revert.
func (a *Agent) haltEarly(ctx context.Context, w *work) core.Event {
	if a.haltOnce(ctx, w.txn) {
		return core.Event{}
	}
	return core.Event{Result: core.Failed}
}

// haltGroup is one attempt at the group's halt; the core asks again until it is
// written, or the agent stops.
func (a *Agent) haltGroup(ctx context.Context, w *work) core.Event {
	w.halts++
	switch {
	case a.haltTry(ctx, w.txn, w.halts):
		return core.Event{}
	case ctx.Err() != nil:
		w.log.Warn("stopping before the group's halt was written; the next start writes it")
		return core.Event{Result: core.Stopped}
	}
	return core.Event{Result: core.Failed, Reason: "the fleet state cannot be written"}
}

// outcomeOf is OK for no error, or else the result r with the error's words.
func outcomeOf(err error, r core.Result) core.Event {
	if err == nil {
		return core.Event{}
	}
	return core.Event{Result: r, Reason: err.Error()}
}

// stopOr is outcomeOf(err, Failed), except that an error while the agent stops is an
// interruption (Stopped), not a failure of the step.
func stopOr(ctx context.Context, err error) core.Event {
	if err != nil && ctx.Err() != nil {
		return core.Event{Result: core.Stopped, Reason: err.Error()}
	}
	return outcomeOf(err, core.Failed)
}

// stageAll stages the releases of the services txn changes.
func (a *Agent) stageAll(ctx context.Context, w *work) core.Event {
	txn := w.txn
	a.txnPhase(txn, "preparing")
	for _, r := range w.changed {
		a.phase("%s %s %s: staging artifacts", doing(txn), r.Name, r.Version)
		a.notify.busy(time.Hour)
		_, err := a.stager.Stage(ctx, r)
		a.notify.busy(0)
		switch {
		case ctx.Err() != nil:
			return core.Event{Result: core.Stopped}
		case errors.Is(err, release.ErrBadArtifact):
			return core.Event{Result: core.BadRelease, Reason: err.Error()}
		case err != nil:
			return core.Event{Result: core.HostTrouble, Reason: err.Error()}
		}
	}
	return core.Event{}
}

// takeLease waits for a slot of the group's lease, or until a newer commit
// supersedes the transaction (supersedable).
func (a *Agent) takeLease(ctx context.Context, w *work) core.Event {
	txn := w.txn
	a.txnPhase(txn, "waiting for the "+txn.Group+" lease")
	if a.fleet != nil && !txn.Rollback { // a rollback's old revision does not set the group's slots
		if err := a.fleet.lease.SetSlots(ctx, txn.Group, w.hs.Group.Rollout.MaxParallel); err != nil {
			return core.Event{Result: core.Failed, Reason: "set the group's slots: " + err.Error()}
		}
	}
	a.notify.busy(24 * time.Hour) // other hosts' upgrades may hold the lease that long
	waitStart := time.Now()
	lctx, stopWatch := a.supersedable(ctx, w)
	err := a.lease.Acquire(lctx, txn.Group)
	newer := stopWatch()
	a.notify.busy(0)
	a.obs.metrics.LeaseWait(time.Since(waitStart))
	a.obs.metrics.LeaseHeld(err == nil)
	if err != nil && newer != "" && ctx.Err() == nil {
		wakeUp(a.wake) // the loop takes the newer commit as soon as this one ends
		return core.Event{Result: core.Superseded, Reason: fmt.Sprintf("superseded by %s, which came while this host waited for the %s lease; nothing was touched",
			commitid.ShortOrNone(newer), txn.Group)}
	}
	if errors.Is(err, lease.ErrFleetlockRefused) {
		// The server's configuration refuses this host (an unknown group, say): ask
		// again after a backoff, not at every poll.
		return core.Event{Result: core.HostTrouble, Reason: err.Error()}
	}
	return stopOr(ctx, err)
}

// checkHold checks that the slot is certainly still held. Before a revert a hold that
// is not certain is logged, and the revert goes on (see core.Machine.revert).
func (a *Agent) checkHold(ctx context.Context, w *work) core.Event {
	err := a.lease.Check(ctx)
	if err != nil && w.txn.State == rollback.RollingBack {
		w.log.Warn("reverting without a certain hold of the lease", "err", err)
	}
	return outcomeOf(err, core.Failed)
}

// lookAgain checks, under the lease, what may have changed while the host waited for
// it: the fleet's gate (and a canary spot), and unit files put in the way. It records
// which unit files the transaction creates.
func (a *Agent) lookAgain(ctx context.Context, w *work) core.Event {
	txn, hs, log := w.txn, w.hs, w.log
	// An operator's rollback goes back to a revision the host ran: no gate holds it.
	if txn.Rollback {
		log.Info("rolling back on an operator's request")
	} else if v, err := a.gate(ctx, hs.Group, txn); err != nil || !v.OK {
		why := v.Why
		if err != nil {
			why = "read the fleet state: " + err.Error()
		}
		return core.Event{Result: core.Failed, Reason: why}
	} else if v.Canary && a.fleet != nil {
		cctx, cancel := a.fleetCall(ctx)
		ok, err := a.fleet.store.ClaimCanary(cctx, a.fleet.fence(), txn.Group, txn.To, a.cfg.Host, hs.Group.Rollout.Canary)
		cancel()
		if err != nil || !ok {
			return core.Event{Result: core.Failed, Reason: fmt.Sprintf("no canary spot left for %s (%v)", commitid.ShortOrNone(txn.To), err)}
		}
		w.canary = true
		log.Info("upgrading as a canary of the group")
	}
	if !txn.Rollback {
		if why := a.promGate(ctx, hs.Group, txn.To); why != "" {
			return core.Event{Result: core.Failed, Reason: why}
		}
	}
	_ = a.record(ctx, txn, rollback.Leased, txn.From, "")
	lg, err := a.store.LastGood()
	if err != nil {
		return core.Event{Result: core.Failed, Reason: err.Error()}
	}
	if why := a.foreignUnits(hs, lg); why != "" {
		return core.Event{Result: core.HostTrouble, Reason: why}
	}
	if why := a.secondCopy(ctx, w, lg); why != "" {
		return core.Event{Result: core.HostTrouble, Reason: why}
	}
	txn.Created = nil
	for _, name := range slices.Sorted(maps.Keys(txn.Target.Files)) {
		if _, ours := lg.Files[name]; !ours {
			txn.Created = append(txn.Created, name)
		}
	}
	return core.Event{}
}

// drainHost takes the host out of its load balancers.
func (a *Agent) drainHost(ctx context.Context, w *work) core.Event {
	a.txnPhase(w.txn, "draining")
	err := a.drainAll(ctx, w.drains)
	if err != nil && ctx.Err() != nil {
		return core.Event{Result: core.Stopped}
	}
	return outcomeOf(err, core.HostTrouble)
}

// rejoin puts the host back into its load balancers; a failure leaves it out, and says
// so: the step goes on.
func (a *Agent) rejoin(ctx context.Context, w *work) core.Event {
	ctx = context.WithoutCancel(ctx)
	var err error
	if w.hs != nil {
		err = a.undrainAll(ctx, w.drains)
	} else {
		err = a.undrainTxn(ctx, w.txn)
	}
	if err != nil {
		w.log.Error("undrain; the host stays out of its load balancer", "state", w.txn.State, "err", err)
	}
	return core.Event{}
}

// mayswitch says whether the host may switch now, right before the first unit file is
// written: the lease is still certainly held, and the fleet state records that this
// host switches to txn.To, written through the slot's fence so that etcd itself refuses
// it once the slot is another host's. A host whose switch is recorded and that then
// goes silent holds the group (see core.Stranded) until it reports.
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
	return a.requirementsHold(ctx, txn)
}

// requirementsHold checks the requirements between services once more, after this
// host's SWITCHING record says what it is going to run: two hosts of different groups
// that passed the gate at once each see the other's record now.
func (a *Agent) requirementsHold(ctx context.Context, txn *rollback.Txn) error {
	if a.fleet == nil || txn.Rollback {
		return nil
	}
	cctx, cancel := a.fleetCall(ctx)
	defer cancel()
	snap, err := a.fleet.store.Snapshot(cctx)
	if err != nil {
		return fmt.Errorf("read the fleet state before switching: %w", err)
	}
	if u := snap.Unmet(a.cfg.Host, runsOf(&txn.Target), time.Now()); u != nil {
		return errors.New(u.String())
	}
	return nil
}

// verifyTarget runs the checks of the changed services. A check that fails is counted
// in the metrics, and named in the record.
func (a *Agent) verifyTarget(ctx context.Context, w *work) core.Event {
	txn := w.txn
	rep := a.verify(ctx, txn, w.hs)
	switch {
	case rep.OK:
		return core.Event{}
	case ctx.Err() != nil:
		w.log.Warn("stopping while verifying; the next start verifies again")
		return core.Event{Result: core.Stopped}
	}
	out := ""
	if rep.Failed != nil {
		out = rep.Failed.Output
		txn.Check = rep.Failed.Check
		for _, r := range w.hs.Services {
			for _, c := range r.Checks {
				if c.Name == rep.Failed.Check && slices.Contains(txn.Services, r.Name) {
					a.obs.metrics.CheckFailure(r.Name, c.Name)
				}
			}
		}
	}
	return core.Event{Result: core.Failed, Reason: rep.Reason, Output: out}
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
	for _, r := range changedServices(hs, txn) {
		v.Checks = append(v.Checks, r.Checks...)
		if c, ok := r.Color(txn.Target.Services[r.Name].Color); ok {
			v.Checks = append(v.Checks, c.Checks...) // on the new color's own port
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

// commitTarget makes the target the last good revision, then bakes: the slot is held
// for the group's bake before the next host may start.
func (a *Agent) commitTarget(ctx context.Context, w *work) core.Event {
	target := w.txn.Target
	target.Time = time.Now().UTC()
	if err := a.store.SetLastGood(&target); err != nil {
		w.log.Error("record the last good revision", "err", err)
		return core.Event{Result: core.Unpersisted, Reason: err.Error()}
	}
	if w.hs == nil {
		return core.Event{} // finishing after a crash: the bake is not served again
	}
	if bake := w.hs.Group.Rollout.Bake.D(); bake > 0 {
		a.phase("upgraded to %s: baking %v before releasing the lease", commitid.ShortOrNone(w.txn.To), bake)
		a.notify.busy(bake + time.Minute)
		select {
		case <-ctx.Done():
		case <-a.clock.After(bake):
		}
	}
	return core.Event{}
}

// acquireSoon takes the group's lease in recovery, waiting at most recoverLeaseWait.
func (a *Agent) acquireSoon(ctx context.Context, w *work) core.Event {
	err := a.acquireBounded(ctx, w.txn.Group)
	if err != nil && w.txn.State != rollback.Verifying {
		w.log.Warn("reverting without the lease: the host is already out of service, and waiting would keep it so", "err", err)
	}
	return outcomeOf(err, core.Failed)
}

// revertHost puts the last good revision back (see revert), and reports the revert.
func (a *Agent) revertHost(ctx context.Context, w *work) core.Event {
	txn, log := w.txn, w.log
	ctx = context.WithoutCancel(ctx) // a revert, once started, finishes
	if txn.Step == core.StepInterrupted || txn.Step == "" {
		log.Warn("interrupted: reverting to the last good revision; the commit is not quarantined", "reason", txn.Reason)
	} else {
		log.Error("upgrade failed; reverting", "step", txn.Step, "reason", txn.Reason, "output", txn.Output)
	}
	a.phase("reverting %s -> %s: %s", commitid.ShortOrNone(txn.To), commitid.ShortOrNone(txn.From), txn.Reason)
	a.notify.busy(stepBound)
	defer a.notify.busy(0)
	start := time.Now()
	result := metrics.Succeeded
	err := a.revert(ctx, w)
	if err != nil {
		result = metrics.Failed
		log.Error("revert failed: the host needs an operator; it stays out of its load balancer", "err", err)
	}
	for _, svc := range txn.Services {
		a.obs.metrics.Revert(svc, result, time.Since(start))
	}
	a.emit(events.RevertDone, txn.From, strings.Join(txn.Services, ","), fmt.Sprintf("reverted %s -> %s", commitid.ShortOrNone(txn.To), commitid.ShortOrNone(txn.From)), txnFields(txn, map[string]string{"result": result}))
	return outcomeOf(err, core.Failed)
}

// revertDeadline is how long the last good revision has to be healthy again after
// a revert.
const revertDeadline = core.RevertDeadline

// revert puts the last good revision's unit files back, removes the units the
// transaction added, and restarts the last good versions of the changed services.
// It is idempotent: a crash during it is resumed by running it again.
func (a *Agent) revert(ctx context.Context, w *work) error {
	txn := w.txn
	lg, err := a.store.LastGood()
	if err != nil {
		return err
	}
	if slices.ContainsFunc(txn.Services, func(s string) bool { return txn.Target.Services[s].Color != "" }) {
		if err := a.switchBack(ctx, w, lg); err != nil {
			return err
		}
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
	var colors []string // the old colors: they never stopped, and are checked as they run
	for svc, rec := range lg.Services {
		if t, ok := txn.Target.Services[svc]; ok && t.Release == rec.Release && !filesChanged(lg, &txn.Target, rec.Units) {
			continue
		}
		if rec.Color != "" {
			colors = append(colors, rec.Restart...)
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
	if err := a.disableIdleColors(ctx, txn, lg); err != nil {
		return err
	}
	rep := checks.Verify(ctx, checks.Verification{
		Units: slices.Concat(change.Restart, change.Start, colors), Systemd: unitStater{a.systemd},
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
