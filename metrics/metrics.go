// Package metrics exposes the agent's state and history as Prometheus metrics.
package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/baton-fleet/baton/internal/httpserve"
	"github.com/baton-fleet/baton/rollback"
)

// Idle is the transaction state when there is no transaction.
const Idle = "IDLE"

// TxnStates are the values of baton_transaction_state's state label, exported from
// the start so that a dashboard sees every state at 0. Another state passed to
// TxnState is added when it first appears.
var TxnStates = []string{
	Idle,
	string(rollback.Prepared), string(rollback.Staged), string(rollback.Leased), string(rollback.Draining),
	string(rollback.Switching), string(rollback.Verifying), string(rollback.Committed),
	string(rollback.RollingBack), string(rollback.Failed), string(rollback.Aborted),
}

// Results of an upgrade (Upgrade) and of a revert (Revert).
const (
	Succeeded = "succeeded" // an upgrade committed; a revert verified
	Failed    = "failed"    // an upgrade failed (and was reverted); a revert did not verify
	Aborted   = "aborted"   // an upgrade stopped before it touched the host
)

// Buckets of the duration histograms, in seconds.
var (
	// DurationBuckets: an upgrade or a revert, restart to healthy plus minHealthy.
	DurationBuckets = []float64{1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600}
	// LeaseWaitBuckets: from a free slot (milliseconds) to a long canary pause.
	LeaseWaitBuckets = []float64{0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600}
)

// Metrics holds the agent's metrics in a registry of its own. Its methods are safe
// for concurrent use; none blocks or fails. Label values come from the fleet
// repository (services, checks, units) and commits: no secret belongs in them.
type Metrics struct {
	reg     *prometheus.Registry
	version string
	now     func() time.Time

	mu                            sync.Mutex
	host, group, applied, tracked string
	haveInfo                      bool
	state                         string

	info          *prometheus.GaugeVec
	converged     prometheus.Gauge
	txnState      *prometheus.GaugeVec
	txnStarted    prometheus.Gauge
	upgrades      *prometheus.CounterVec
	upgradeTime   *prometheus.HistogramVec
	reverts       *prometheus.CounterVec
	revertTime    *prometheus.HistogramVec
	lastRevert    prometheus.Gauge
	checkFailures *prometheus.CounterVec
	leaseHeld     prometheus.Gauge
	leaseWait     prometheus.Histogram
	fetches       prometheus.Counter
	fetchErrors   prometheus.Counter
	fetchFailing  prometheus.Gauge
	lastFetch     prometheus.Gauge
	drift         *prometheus.GaugeVec
	rejected      prometheus.Counter
	quarantined   prometheus.Gauge
	halted        prometheus.Gauge
	webhooks      *prometheus.CounterVec
	analysis      analysisMetrics
	colors        colorMetrics
	migrations    *prometheus.CounterVec
	migrationTime *prometheus.HistogramVec
	migrationStop prometheus.Gauge
	fetcher       prometheus.Gauge
	pushes        *prometheus.CounterVec
}

// New returns the metrics of an agent of this version, in a new registry that also
// holds the Go runtime and process collectors.
func New(version string) *Metrics {
	m := &Metrics{
		reg:     prometheus.NewRegistry(),
		version: version,
		now:     time.Now,
	}
	f := factory{m.reg}
	m.info = f.gaugeVec("baton_info", "Always 1: the agent's version, host, group, and the applied (last good) and tracked (branch head) commits.",
		"version", "host", "group", "applied", "tracked")
	m.converged = f.gauge("baton_converged", "1 when the applied commit is the tracked one, else 0.")
	m.txnState = f.gaugeVec("baton_transaction_state", "1 for the state of the current transaction (IDLE when there is none), 0 for the others.", "state")
	m.txnStarted = f.gauge("baton_transaction_started_timestamp_seconds", "When the current transaction began (as this agent process saw it), in Unix time; 0 when idle.")
	m.upgrades = f.counterVec("baton_upgrades_total", "Upgrades finished, by service and result (succeeded, failed, aborted).", "service", "result")
	m.upgradeTime = f.histogramVec("baton_upgrade_duration_seconds", "How long upgrades took, start to commit or failure, by service.", DurationBuckets, "service")
	m.reverts = f.counterVec("baton_reverts_total", "Reverts to the last good revision, by service and result (succeeded, failed).", "service", "result")
	m.revertTime = f.histogramVec("baton_revert_duration_seconds", "How long reverts took, by service.", DurationBuckets, "service")
	m.lastRevert = f.gauge("baton_last_revert_timestamp_seconds", "When the last revert ended, in Unix time; 0 if none since the agent started.")
	m.checkFailures = f.counterVec("baton_check_failures_total", "Checks that failed an upgrade, by service and check.", "service", "check")
	m.leaseHeld = f.gauge("baton_lease_held", "1 while this host holds a slot of its group's lease.")
	m.leaseWait = f.histogram("baton_lease_wait_seconds", "How long this host waited for a slot of its group's lease.", LeaseWaitBuckets)
	m.fetches = f.counter("baton_fetches_total", "Polls of the fleet repository, failed ones included.")
	m.fetchErrors = f.counter("baton_fetch_errors_total", "Polls of the fleet repository that failed.")
	m.fetchFailing = f.gauge("baton_fetch_failing", "1 when the last poll of the fleet repository failed.")
	m.lastFetch = f.gauge("baton_last_fetch_success_timestamp_seconds", "When a poll of the fleet repository last succeeded, in Unix time.")
	m.drift = f.gaugeVec("baton_unit_drift", "1 for each managed unit whose files were changed outside baton (edited, or a drop-in added); absent otherwise.", "unit")
	m.rejected = f.counter("baton_commits_rejected_total", "Commits refused as bad input (invalid repository, bad signature, rewound branch).")
	m.quarantined = f.gauge("baton_quarantined_commits", "Commits quarantined on this host (failed here or in its group).")
	m.halted = f.gauge("baton_rollout_halted", "1 when the tracked commit is quarantined, so this host does not move to it.")
	m.analysis = newAnalysisMetrics(f)
	m.colors = newColorMetrics(f)
	m.webhooks = f.counterVec("baton_webhook_events_total", "Rollout events per webhook outcome (sent, failed, dropped), summed over hooks.", "result")
	m.migrations = f.counterVec("baton_migrations_total", "Data migrations this host ran, by service, phase (expand, contract) and result (done, failed).", "service", "phase", "result")
	m.migrationTime = f.histogramVec("baton_migration_duration_seconds", "How long the data migrations this host ran took, backup included, by service.", DurationBuckets, "service")
	m.migrationStop = f.gauge("baton_migration_blocked", "1 while this host's rollout waits for an operator on a data migration (failed, interrupted, or changed after it ran).")
	m.fetcher = f.gauge("baton_fleet_fetcher", "1 while this agent is the fleet's elected fetcher (repo.sharedHead), which polls the repository for the fleet.")
	m.pushes = f.counterVec("baton_push_deliveries_total", "Push events received from the forge (listen.webhook), by result: fetch, ignored (another branch or event), refused.", "result")
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	for _, s := range TxnStates {
		m.txnState.WithLabelValues(s)
	}
	m.state = Idle
	m.txnState.WithLabelValues(Idle).Set(1)
	for _, r := range []string{"sent", "failed", "dropped"} {
		m.webhooks.WithLabelValues(r)
	}
	for _, r := range []string{"fetch", "ignored", "refused"} {
		m.pushes.WithLabelValues(r)
	}
	return m
}

// Registry returns the registry, to gather from or to add collectors to.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError})
}

// Host sets the host and group labels of baton_info, replacing its series.
func (m *Metrics) Host(host, group string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setInfo(host, group, m.applied, m.tracked)
}

// Info sets the applied (last good) and tracked (branch head) commits on baton_info,
// replacing its series, and baton_converged.
func (m *Metrics) Info(applied, tracked string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setInfo(m.host, m.group, applied, tracked)
}

func (m *Metrics) setInfo(host, group, applied, tracked string) {
	if m.haveInfo {
		m.info.DeleteLabelValues(m.version, m.host, m.group, m.applied, m.tracked)
	}
	m.host, m.group, m.applied, m.tracked, m.haveInfo = host, group, applied, tracked, true
	m.info.WithLabelValues(m.version, host, group, applied, tracked).Set(1)
	m.converged.Set(bool01(applied != "" && applied == tracked))
}

// TxnState sets the state of the current transaction: a rollback.State, or Idle (or
// "") when there is none. Leaving Idle records the start of a transaction.
func (m *Metrics) TxnState(state string) {
	if state == "" {
		state = Idle
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if state == m.state {
		return
	}
	m.txnState.WithLabelValues(m.state).Set(0)
	m.txnState.WithLabelValues(state).Set(1)
	switch {
	case state == Idle:
		m.txnStarted.Set(0)
	case m.state == Idle:
		m.txnStarted.Set(unix(m.now()))
	}
	m.state = state
}

// Upgrade counts a finished upgrade of service with result Succeeded, Failed or
// Aborted, and observes how long it took. An upgrade of several services counts once
// per service.
func (m *Metrics) Upgrade(service, result string, d time.Duration) {
	m.upgrades.WithLabelValues(service, result).Inc()
	m.upgradeTime.WithLabelValues(service).Observe(d.Seconds())
}

// Revert counts a revert of service with result Succeeded (the last good revision
// verified) or Failed, and observes how long it took.
func (m *Metrics) Revert(service, result string, d time.Duration) {
	m.reverts.WithLabelValues(service, result).Inc()
	m.revertTime.WithLabelValues(service).Observe(d.Seconds())
	m.lastRevert.Set(unix(m.now()))
}

// CheckFailure counts a check of service that failed an upgrade. The implicit
// systemd checks use names such as "systemd" too; keep them few.
func (m *Metrics) CheckFailure(service, check string) {
	m.checkFailures.WithLabelValues(service, check).Inc()
}

// Migration counts a data migration this host ran of service in phase, with result
// "done" or "failed" (migrate.StateDone, migrate.StateFailed), and observes how long
// it took.
func (m *Metrics) Migration(service, phase, result string, d time.Duration) {
	m.migrations.WithLabelValues(service, phase, result).Inc()
	m.migrationTime.WithLabelValues(service).Observe(d.Seconds())
}

// MigrationBlocked sets whether this host's rollout waits for an operator on a data
// migration (a migrate.Halt).
func (m *Metrics) MigrationBlocked(blocked bool) { m.migrationStop.Set(bool01(blocked)) }

// LeaseHeld sets whether this host holds a slot of its group's lease.
func (m *Metrics) LeaseHeld(held bool) { m.leaseHeld.Set(bool01(held)) }

// LeaseWait observes how long an Acquire of the lease waited.
func (m *Metrics) LeaseWait(d time.Duration) { m.leaseWait.Observe(d.Seconds()) }

// FetchError counts a failed poll of the fleet repository.
func (m *Metrics) FetchError() {
	m.fetches.Inc()
	m.fetchErrors.Inc()
	m.fetchFailing.Set(1)
}

// FetchOK records a successful poll of the fleet repository at t.
func (m *Metrics) FetchOK(t time.Time) {
	m.fetches.Inc()
	m.fetchFailing.Set(0)
	m.lastFetch.Set(unix(t))
}

// Drift sets whether unit's files drifted from what baton installed. A unit no
// longer drifted has no series.
func (m *Metrics) Drift(unit string, drifted bool) {
	if drifted {
		m.drift.WithLabelValues(unit).Set(1)
	} else {
		m.drift.DeleteLabelValues(unit)
	}
}

// Rejected counts a commit refused as bad input.
func (m *Metrics) Rejected() { m.rejected.Inc() }

// Quarantined sets how many commits are quarantined on this host.
func (m *Metrics) Quarantined(n int) { m.quarantined.Set(float64(n)) }

// Halted sets whether the tracked commit is quarantined, so the rollout stopped here.
func (m *Metrics) Halted(halted bool) { m.halted.Set(bool01(halted)) }

// Webhook counts one event's outcome for one webhook: "sent", "failed" or
// "dropped". Its signature fits events.WithResult.
func (m *Metrics) Webhook(result string) { m.webhooks.WithLabelValues(result).Inc() }

// Fetcher sets whether this agent is the fleet's elected fetcher.
func (m *Metrics) Fetcher(on bool) { m.fetcher.Set(bool01(on)) }

// PushDelivery counts one push event received: "fetch", "ignored" or "refused". Its
// signature fits webhook.Options.Result.
func (m *Metrics) PushDelivery(result string) { m.pushes.WithLabelValues(result).Inc() }

// Serve serves h at /metrics on addr (host:port) until ctx ends. An empty addr
// disables metrics: Serve returns nil at once. It returns an error when it cannot
// listen or serve, and nil when ctx ends.
func Serve(ctx context.Context, addr string, h http.Handler, logger *slog.Logger) error {
	if addr == "" {
		return nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for metrics: %w", err)
	}
	logger.Info("serving metrics", "addr", l.Addr().String())
	return serve(ctx, l, h)
}

func serve(ctx context.Context, l net.Listener, h http.Handler) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "baton agent: metrics at /metrics")
	})
	if err := httpserve.Run(ctx, l, httpserve.Server(mux)); err != nil {
		return fmt.Errorf("serve metrics: %w", err)
	}
	return nil
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// factory creates collectors and registers them in one registry.
type factory struct{ reg *prometheus.Registry }

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(g)
	return g
}

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	f.reg.MustRegister(h)
	return h
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(h)
	return h
}
