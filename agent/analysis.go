package agent

import (
	"context"
	"time"

	"github.com/baton-fleet/baton/analysis"
	"github.com/baton-fleet/baton/core"
	"github.com/baton-fleet/baton/events"
	"github.com/baton-fleet/baton/spec"
)

// analyzeTarget runs the analysis of the changed services while the host serves the
// release: Passed goes on; Failed fails the release (drained again, reverted,
// quarantined, halted), be it on bad values or on no data (Prometheus down included)
// with noData: fail; Inconclusive (no data to the end, with noData: wait) blames no
// one: the host is reverted and tries the commit again after a backoff.
func (a *Agent) analyzeTarget(ctx context.Context, w *work) core.Event {
	txn := w.txn
	m := map[string]*spec.Analysis{}
	for _, r := range w.changed {
		if r.Analysis != nil {
			m[r.Name] = r.Analysis
		}
	}
	run, closeRun, err := analysis.ForServices(m, a.clock)
	if err != nil {
		return core.Event{Result: core.HostTrouble, Reason: err.Error()}
	}
	if run == nil {
		return core.Event{}
	}
	defer closeRun()
	a.txnPhase(txn, "analysing the release's metrics")
	run.Report = func(s analysis.Sample) {
		a.obs.metrics.AnalysisSample(s)
		a.txnPhase(txn, "analysing: "+s.String())
		w.log.Info("analysis", "sample", s.String())
	}
	if w.canary {
		run.Hold = a.canaryHold(ctx, w.hs.Group)
	}
	longest := time.Duration(0)
	for _, an := range m {
		longest = max(longest, an.Window.D())
	}
	a.notify.busy(longest + w.hs.Group.Rollout.CanaryPause.After + stepBound)
	defer a.notify.busy(0)
	res, err := run.Analyze(ctx)
	if err != nil {
		return core.Event{Result: core.Stopped}
	}
	a.obs.metrics.Analysis(res)
	a.emit(events.AnalysisFinished, txn.To, "", res.String(), txnFields(txn, res.Fields()))
	switch res.Outcome {
	case analysis.Failed:
		if res.Decided != nil {
			txn.Check = res.Decided.Check
			a.obs.metrics.CheckFailure(res.Decided.Service, res.Decided.Check)
		}
		return core.Event{Result: core.Failed, Reason: res.String()}
	case analysis.Inconclusive:
		return core.Event{Result: core.HostTrouble, Reason: res.String()}
	}
	w.log.Info(res.String())
	return core.Event{}
}

// canaryHold is closed when the group's canary pause ends: a canary's analysis runs
// through it. A manual pause is not waited for here (`baton promote` lets the group go
// whatever the canary's analysis still says).
func (a *Agent) canaryHold(ctx context.Context, g *spec.Group) <-chan struct{} {
	hold := make(chan struct{})
	pause := g.Rollout.CanaryPause
	if pause.Manual || pause.After <= 0 {
		close(hold)
		return hold
	}
	go func() {
		defer close(hold)
		select {
		case <-ctx.Done():
		case <-a.clock.After(pause.After):
		}
	}()
	return hold
}

// promGate asks the group's Prometheus gate, when it has one, whether new upgrades
// may start: "" when they may, else why not ("held: ALERTS{...}"). A change of its
// verdict is an event.
func (a *Agent) promGate(ctx context.Context, g *spec.Group, commit string) string {
	if g.Rollout.Gate == nil || g.Rollout.Gate.Prometheus == nil {
		return ""
	}
	gate, closeGate, err := analysis.GateFor(g.Rollout.Gate)
	if err != nil {
		return "held: " + err.Error()
	}
	defer closeGate()
	r := gate.Check(ctx)
	a.obs.metrics.Gate(r)
	said := r.String()
	// Only the agent's loop asks the gate (or, while it waits for the lease, its
	// watch for a newer commit: never both at once).
	switch {
	case r.Held && said != a.promSaid.said:
		a.emit(events.GateHeld, commit, "", said, nil)
	case !r.Held && a.promSaid.held:
		a.emit(events.GateOpened, commit, "", "the gate lets new upgrades go", nil)
	}
	a.promSaid.held, a.promSaid.said = r.Held, said
	if r.Held {
		return said
	}
	return ""
}
