package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/baton-fleet/baton/api"
	"github.com/baton-fleet/baton/config"
	"github.com/baton-fleet/baton/events"
	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/metrics"
	"github.com/baton-fleet/baton/rollback"
)

// observers are what the agent tells the world through: metrics, the recent-events
// ring, webhooks. Each method is cheap and never blocks a transaction.
type observers struct {
	metrics *metrics.Metrics
	ring    *events.Ring
	sender  *events.Sender
}

func newObservers(cfg *config.Config, version string, logger *slog.Logger) (*observers, error) {
	o := &observers{metrics: metrics.New(version), ring: events.NewRing(50)}
	var hooks []events.Webhook
	for i, w := range cfg.Webhooks {
		h := events.Webhook{URL: w.URL}
		if w.SecretFile != "" {
			secret, err := os.ReadFile(w.SecretFile)
			if err != nil {
				return nil, fmt.Errorf("webhook %d: read secretFile: %w", i+1, err)
			}
			h.Secret = []byte(strings.TrimSpace(string(secret)))
		}
		hooks = append(hooks, h)
	}
	o.sender = events.NewSender(hooks, logger, events.WithResult(o.metrics.Webhook))
	o.metrics.Host(cfg.Host, "")
	return o, nil
}

// emit records an event in the ring and sends it to the webhooks.
func (a *Agent) emit(typ, commit, service, msg string, fields map[string]string) {
	e := events.Event{Time: time.Now().UTC(), Type: typ, Host: a.cfg.Host, Group: a.Status().Group,
		Commit: commit, Service: service, Message: msg, Fields: fields}
	a.obs.ring.Add(e)
	a.obs.sender.Publish(e)
}

// result records the outcome of the last transaction or commit.
func (a *Agent) result(r api.Result) {
	r.Time = time.Now().UTC()
	a.mu.Lock()
	a.last = &r
	if r.Request != "" {
		a.lastRollback = &r
	}
	a.mu.Unlock()
}

// serve runs the local API, the metrics endpoint and the webhook sender until ctx
// ends; it returns once all three have stopped.
func (a *Agent) serve(ctx context.Context) func() {
	done := make(chan struct{}, 3)
	go func() {
		if err := metrics.Serve(ctx, a.cfg.Listen.Metrics, a.obs.metrics.Handler(), a.log); err != nil {
			a.log.Error("serve metrics", "addr", a.cfg.Listen.Metrics, "err", err)
		}
		done <- struct{}{}
	}()
	go func() {
		_ = a.obs.sender.Run(ctx)
		done <- struct{}{}
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		if a.cfg.Listen.API == "" {
			return
		}
		gid := -1
		if g, err := user.LookupGroup("baton"); err == nil {
			gid, _ = strconv.Atoi(g.Gid)
		}
		srv, err := api.NewServer(a.cfg.Listen.API, gid, apiBackend{a}, a.log)
		if err != nil {
			a.log.Error("start the local API", "socket", a.cfg.Listen.API, "err", err)
			return
		}
		if err := srv.Serve(ctx); err != nil {
			a.log.Error("serve the local API", "err", err)
		}
	}()
	return func() {
		for range 3 {
			<-done
		}
	}
}

// apiBackend answers the local API from the agent.
type apiBackend struct{ a *Agent }

func (b apiBackend) Sync(context.Context) error {
	b.a.SyncNow()
	return nil
}

func (b apiBackend) Rollback(_ context.Context, to string) (api.RollbackAnswer, error) {
	return b.a.requestRollback(to)
}

func (b apiBackend) Retry(_ context.Context, prefix string) error {
	commit, err := b.a.store.LiftQuarantine(prefix)
	switch {
	case errors.Is(err, rollback.ErrNotQuarantined):
		return fmt.Errorf("%w: %w", api.ErrNotFound, err)
	case errors.Is(err, commitid.ErrAmbiguous):
		return fmt.Errorf("%w: %w", api.ErrInvalid, err)
	case err != nil:
		return err
	}
	b.a.log.Info("quarantine lifted by an operator", "commit", commitid.ShortOrNone(commit))
	b.a.SyncNow()
	return nil
}

// State is what `baton status` shows: the agent's status, its last results, the
// services of the last good record (and of the open transaction) with their units and
// colors, the transaction, and the quarantine.
func (b apiBackend) State(ctx context.Context) (api.State, error) {
	a := b.a
	st := a.Status()
	s := api.State{Host: a.cfg.Host, Group: st.Group, Tracked: st.Tracked, Applied: st.Applied, Phase: st.Phase,
		Version: a.version, Events: a.obs.ring.Last(0), Lease: api.LeaseState{Backend: a.cfg.Lease.Backend}}
	a.mu.Lock()
	drift := a.drift
	if a.last != nil {
		r := *a.last
		s.LastResult = &r
	}
	if a.lastRollback != nil {
		r := *a.lastRollback
		s.LastRollback = &r
	}
	a.mu.Unlock()
	if st.Rejected != "" && st.Rejected == st.Tracked {
		s.Rejected = &api.Rejected{Commit: st.Rejected, Reason: st.RejectReason}
	}
	s.Fetch = api.FetchState{Time: st.FetchedAt, LastSuccess: st.FetchedOK, Error: st.FetchError, Shared: a.sharedHeadState()}
	lg, err := a.store.LastGood()
	if err != nil {
		return s, err
	}
	if s.Group == "" {
		s.Group = lg.Group
	}
	txn, _ := a.store.Load()
	s.Services = a.serviceStates(ctx, lg, txn, drift)
	if txn != nil {
		s.Txn = &api.TxnState{ID: txn.ID, From: txn.From, To: txn.To, State: string(txn.State), Since: txn.Updated,
			Started: txn.Started, Attempts: txn.Attempts, Services: txn.Services, Reason: txn.Reason}
		s.Lease.Held = txn.State != rollback.Prepared && txn.State != rollback.Staged
		s.Lease.Waiting = txn.State == rollback.Staged
	}
	q, err := a.store.Quarantine()
	if err != nil {
		return s, err
	}
	for _, e := range q {
		s.Quarantined = append(s.Quarantined, api.Quarantined{Commit: e.Commit, Reason: e.Reason, Time: e.Time})
	}
	return s, nil
}

// serviceStates are the services of lg, and those txn adds (with their target version
// only), each with its target, colors and units as systemd has them now.
func (a *Agent) serviceStates(ctx context.Context, lg *rollback.LastGood, txn *rollback.Txn, drift []Drift) []api.ServiceState {
	services := maps.Clone(lg.Services)
	if txn != nil {
		for name, t := range txn.Target.Services {
			if _, ok := services[name]; !ok {
				services[name] = rollback.ServiceRecord{Units: t.Units}
			}
		}
	}
	var out []api.ServiceState
	for _, name := range slices.Sorted(maps.Keys(services)) {
		rec := services[name]
		ss := api.ServiceState{Name: name, Version: rec.Version, Color: rec.Color}
		var target *rollback.ServiceRecord
		if txn != nil {
			if t, ok := txn.Target.Services[name]; ok {
				target = &t
			}
			if target != nil && target.Version != rec.Version {
				ss.Target = target.Version
			}
			if target != nil && target.Color != rec.Color {
				ss.TargetColor = target.Color
			}
		}
		if rec.Color != "" || ss.TargetColor != "" {
			ss.Colors = colorStates(rec, txn, target, func(u string) bool { return a.unitRuns(ctx, u) })
		}
		for _, u := range rec.Units {
			us := api.UnitState{Name: u, Drift: slices.ContainsFunc(drift, func(d Drift) bool { return d.Unit == u })}
			if a.systemd != nil {
				if sts, err := a.systemd.Status(ctx, u); err == nil {
					us.Active, us.Sub = sts.ActiveState, sts.SubState
				}
			}
			ss.Units = append(ss.Units, us)
		}
		out = append(out, ss)
	}
	return out
}
