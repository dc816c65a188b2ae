package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/baton-fleet/baton/api"
	"github.com/baton-fleet/baton/core"
	"github.com/baton-fleet/baton/drain"
	"github.com/baton-fleet/baton/events"
	"github.com/baton-fleet/baton/rollback"
	"github.com/baton-fleet/baton/room"
	"github.com/baton-fleet/baton/spec"
)

// colorMove is one bluegreen service of a transaction moving its clients from one
// color to the other: from is nil on a first install.
type colorMove struct {
	service  string
	deploy   *spec.Deploy
	from, to *spec.RenderedColor
}

// colorMoves lists the changed bluegreen services of w, with the color each had
// active (lg, the last good record) and the one the transaction starts.
func colorMoves(w *work, lg *rollback.LastGood) []colorMove {
	var out []colorMove
	for _, r := range w.changed {
		if len(r.Colors) == 0 {
			continue
		}
		to, _ := r.Color(w.txn.Target.Services[r.Name].Color)
		from, _ := r.Color(lg.Services[r.Name].Color)
		if to == nil || from == to {
			continue
		}
		out = append(out, colorMove{service: r.Name, deploy: r.Deploy, from: from, to: to})
	}
	return out
}

// haproxyOf is the load balancer's server of color c.
func (a *Agent) haproxyOf(w *work, c *spec.RenderedColor) *drain.HAProxy {
	return drain.NewHAProxy(c.Drain, w.log.With("color", c.Name))
}

// cutover sends the bluegreen services' clients to their new color, checked on its
// own port already: the new color's server ready (once HAProxy's health check sees it
// up), then the old one draining: persistent sessions stay on the old color until they
// end (see retire). On a first install the other color's server is put in maint.
func (a *Agent) cutover(ctx context.Context, w *work) core.Event {
	lg, err := a.store.LastGood()
	if err != nil {
		return core.Event{Result: core.Failed, Reason: err.Error()}
	}
	a.txnPhase(w.txn, "switching the load balancer to the new color")
	for _, mv := range colorMoves(w, lg) {
		to := a.haproxyOf(w, mv.to)
		start := time.Now()
		if mv.from == nil {
			other, _ := rendered(w.hs, mv.service).OtherColor(mv.to.Name)
			err = drain.SwitchBack(ctx, a.haproxyOf(w, other), to)
		} else {
			err = drain.Switch(ctx, a.haproxyOf(w, mv.from), to)
		}
		if err != nil {
			return stopOr(ctx, fmt.Errorf("%s: the load balancer to %s: %w", mv.service, mv.to.Name, err))
		}
		took := time.Since(start)
		a.obs.metrics.ColorSwitched(mv.service, took)
		w.log.Info("the load balancer sends new clients to the new color", "service", mv.service, "color", mv.to.Name, "took", took)
		from := "-"
		if mv.from != nil {
			from = mv.from.Name
		}
		a.emit(events.ColorSwitched, w.txn.To, mv.service, fmt.Sprintf("%s: clients to %s (from %s)", mv.service, mv.to.Name, from), map[string]string{"from": from, "to": mv.to.Name})
	}
	return core.Event{}
}

// retire ends the old colors once the new ones held: each old color's server keeps its
// persistent sessions until none came for drainIdle (at most drainTimeout), then goes
// to maint, and its units are stopped and disabled. A failure here is logged: the
// release is good, and the old color is the one to clean up.
func (a *Agent) retire(ctx context.Context, w *work) core.Event {
	lg, err := a.store.LastGood()
	if err != nil {
		return core.Event{Result: core.Failed, Reason: err.Error()}
	}
	var errs []error
	for _, mv := range colorMoves(w, lg) {
		if mv.from == nil {
			continue
		}
		a.txnPhase(w.txn, fmt.Sprintf("waiting for the sessions on %s's old color %s to end (at most %v)", mv.service, mv.from.Name, mv.deploy.DrainTimeout.D()))
		a.notify.busy(mv.deploy.DrainTimeout.D() + stepBound)
		old := a.haproxyOf(w, mv.from)
		idle, err := old.WaitIdle(ctx, mv.deploy.DrainIdle.D(), mv.deploy.DrainTimeout.D())
		if err == nil {
			w.log.Info("the old color drained", "service", mv.service, "color", mv.from.Name, "idle", idle.Idle, "took", idle.Took, "sessions_cut", idle.Sessions)
			a.emit(events.ColorRetired, w.txn.To, mv.service, fmt.Sprintf("%s: %s drained in %v, %d sessions cut", mv.service, mv.from.Name, idle.Took.Round(time.Millisecond), idle.Sessions),
				map[string]string{"color": mv.from.Name, "took": idle.Took.Round(time.Millisecond).String(), "sessionsCut": fmt.Sprint(idle.Sessions)})
			a.obs.metrics.ColorRetired(mv.service, idle.Took, idle.Sessions)
			err = old.SetState(ctx, drain.StateMaint)
		}
		errs = append(errs, err, a.stopColor(ctx, mv.from))
	}
	a.notify.busy(0)
	if err := errors.Join(errs...); err != nil {
		w.log.Error("retire the old color", "err", err)
		return core.Event{Result: core.Failed, Reason: err.Error()}
	}
	return core.Event{}
}

// stopColor stops and disables a color's units: its files stay, for the next release
// to start in. A unit whose file is not there (a switch interrupted before it wrote
// it) has nothing to stop.
func (a *Agent) stopColor(ctx context.Context, c *spec.RenderedColor) error {
	var errs []error
	var installed []string
	for _, u := range c.Units.Names() {
		if exists(a.unitDir, u) {
			installed = append(installed, u)
			errs = append(errs, a.systemd.Stop(ctx, u))
		}
	}
	if len(installed) > 0 {
		errs = append(errs, a.systemd.Disable(ctx, installed...))
	}
	return errors.Join(errs...)
}

// switchBack undoes a bluegreen transaction's colors, before the generic revert puts
// the last good unit files back: the old color's server ready again and the new one's
// in maint (idempotent, whether or not the cutover happened), then the new color's
// units stopped. The old color never stopped, so the revert does not restart it.
func (a *Agent) switchBack(ctx context.Context, w *work, lg *rollback.LastGood) error {
	if w.hs == nil {
		hs, _, err := a.load(ctx, w.txn.To)
		if err != nil {
			return fmt.Errorf("load %s to switch its colors back: %w", w.txn.To, err)
		}
		w.load(a, hs)
	}
	var errs []error
	for _, mv := range colorMoves(w, lg) {
		to := a.haproxyOf(w, mv.to)
		if mv.from != nil {
			start := time.Now()
			err := drain.SwitchBack(ctx, to, a.haproxyOf(w, mv.from))
			if err == nil {
				w.log.Info("the load balancer sends the clients back to the old color", "service", mv.service, "color", mv.from.Name, "clientsMoved", w.txn.CutOver, "took", time.Since(start))
			}
			errs = append(errs, err)
		} else {
			errs = append(errs, to.SetState(ctx, drain.StateMaint))
		}
		errs = append(errs, a.stopColor(ctx, mv.to))
	}
	return errors.Join(errs...)
}

// rendered is the service name of hs.
func rendered(hs *spec.HostSpec, name string) *spec.Rendered {
	for _, r := range hs.Services {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// disableIdleColors disables, after a revert put their files back, the units of the
// colors txn had started: installing a file enables it, and an idle color must not
// start at the next boot.
func (a *Agent) disableIdleColors(ctx context.Context, txn *rollback.Txn, lg *rollback.LastGood) error {
	var idle []string
	for _, name := range txn.Services {
		rec := txn.Target.Services[name]
		if rec.Color == "" || rec.Color == lg.Services[name].Color {
			continue
		}
		for _, u := range rec.Restart {
			if _, ok := lg.Files[u]; ok {
				idle = append(idle, u)
			}
		}
	}
	if len(idle) == 0 {
		return nil
	}
	return a.systemd.Disable(ctx, idle...)
}

// secondCopy says why a bluegreen service of w has no room for its second copy on this
// host ("" when each has): the active color's memory, as systemd accounts it, must fit
// in MemAvailable with a reserve left free (room.Check). A host without room waits.
func (a *Agent) secondCopy(ctx context.Context, w *work, lg *rollback.LastGood) string {
	for _, mv := range colorMoves(w, lg) {
		if mv.from == nil {
			continue
		}
		var usages []room.Usage
		for _, u := range mv.from.Units.Names() {
			b, known, err := a.systemd.MemoryCurrent(ctx, u)
			usages = append(usages, room.Usage{Unit: u, Bytes: b, Known: known && err == nil})
		}
		mem, err := room.ReadMemInfo("/")
		if err != nil {
			return "blocked: " + err.Error()
		}
		v := room.Check(room.RunningOf(usages), mem)
		if why := v.Reason(); !v.OK {
			return why
		} else if why != "" {
			w.log.Info("starting a second copy", "service", mv.service, "note", why)
		}
	}
	return ""
}

// colorStates are a bluegreen service's colors as `baton status` shows them, the
// active one first: the version each runs and its state. rec is the service's last
// good record, target its record in txn (both nil when no transaction changes it),
// running whether a unit runs now. The colors are the records' (both, once a
// release recorded them) and those read from the units' names
// (<service>@<color>.service), as baton renders them.
func colorStates(rec rollback.ServiceRecord, txn *rollback.Txn, target *rollback.ServiceRecord, running func(unit string) bool) []api.ColorState {
	units := map[string][]string{}
	var order []string
	add := func(color string, us ...string) {
		if _, seen := units[color]; !seen && color != "" {
			order = append(order, color)
			units[color] = nil
		}
		if color != "" {
			units[color] = append(units[color], us...)
		}
	}
	add(rec.Color)
	if target != nil {
		add(target.Color)
		for _, c := range target.Colors {
			add(c)
		}
	}
	for _, c := range rec.Colors {
		add(c)
	}
	all := slices.Clone(rec.Units)
	if target != nil {
		all = append(all, target.Units...)
	}
	slices.Sort(all)
	for _, u := range slices.Compact(all) {
		add(colorOfUnit(u), u)
	}
	var out []api.ColorState
	for _, c := range order {
		out = append(out, colorState(c, slices.ContainsFunc(units[c], running), rec, txn, target))
	}
	slices.SortStableFunc(out, func(a, b api.ColorState) int {
		return boolInt(b.State == api.ColorActive) - boolInt(a.State == api.ColorActive)
	})
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// unitRuns says whether systemd runs unit now (active, or on its way in or out).
func (a *Agent) unitRuns(ctx context.Context, unit string) bool {
	if a.systemd == nil {
		return false
	}
	st, err := a.systemd.Status(ctx, unit)
	return err == nil && st.ActiveState != "" && st.ActiveState != "inactive" && st.ActiveState != "failed"
}

// colorState is color's state: what the last good record and the transaction say it
// does, and whether its units run.
func colorState(color string, runs bool, rec rollback.ServiceRecord, txn *rollback.Txn, target *rollback.ServiceRecord) api.ColorState {
	moving := txn != nil && target != nil && target.Color != "" && target.Color != rec.Color
	reverting := moving && (txn.State == rollback.RollingBack || txn.State == rollback.Failed)
	st := api.ColorState{Name: color, State: api.ColorStopped}
	if !runs {
		return st
	}
	switch {
	case moving && color == target.Color:
		st.Version, st.State = target.Version, api.ColorStarting
		if reverting {
			st.State = api.ColorReverting
		} else if txn.CutOver {
			st.State = api.ColorActive
		}
	case color == rec.Color:
		st.Version, st.State = rec.Version, api.ColorActive
		if moving && txn.CutOver && !reverting {
			st.State = api.ColorDraining
		}
	default:
		st.State = api.ColorIdle
	}
	return st
}

// colorOfUnit is the color of a bluegreen unit, <service>@<color>.service; "" for
// another unit.
func colorOfUnit(unit string) string {
	_, rest, ok := strings.Cut(unit, "@")
	color, isService := strings.CutSuffix(rest, ".service")
	if !ok || !isService {
		return ""
	}
	return color
}
