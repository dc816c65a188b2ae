package metrics

import (
	"context"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newTest() *Metrics {
	m := New("1.2.3")
	m.now = func() time.Time { return t0 }
	return m
}

// exercise calls every method, as an agent would over an upgrade that failed.
func exercise(m *Metrics) {
	m.Host("web-01", "web")
	m.Info("aaaaaaa", "bbbbbbb")
	m.FetchError()
	m.FetchOK(t0)
	m.TxnState("PREPARED")
	m.TxnState("STAGED")
	m.LeaseWait(1500 * time.Millisecond)
	m.LeaseHeld(true)
	m.TxnState("VERIFYING")
	m.CheckFailure("api", "health")
	m.CheckFailure("api", "health")
	m.CheckFailure("api", "port")
	m.Upgrade("api", Failed, 30*time.Second)
	m.TxnState("ROLLING_BACK")
	m.Revert("api", Succeeded, 4*time.Second)
	m.TxnState("FAILED")
	m.TxnState(Idle)
	m.LeaseHeld(false)
	m.Quarantined(1)
	m.Halted(true)
	m.Upgrade("db", Succeeded, 12*time.Second)
	m.Info("bbbbbbb", "bbbbbbb")
	m.Drift("api.service", true)
	m.Drift("db.service", true)
	m.Drift("db.service", false)
	m.Rejected()
	m.Webhook("sent")
	m.Webhook("sent")
	m.Webhook("dropped")
	exerciseAnalysis(m)
	m.Migration("api", "expand", "done", 3*time.Second)
	m.Migration("api", "contract", "failed", 90*time.Second)
	m.MigrationBlocked(true)
	m.Fetcher(true)
	m.PushDelivery("fetch")
	m.PushDelivery("refused")
}

const wantScrape = `
# HELP baton_info Always 1: the agent's version, host, group, and the applied (last good) and tracked (branch head) commits.
# TYPE baton_info gauge
baton_info{applied="bbbbbbb",group="web",host="web-01",tracked="bbbbbbb",version="1.2.3"} 1
# HELP baton_converged 1 when the applied commit is the tracked one, else 0.
# TYPE baton_converged gauge
baton_converged 1
# HELP baton_transaction_state 1 for the state of the current transaction (IDLE when there is none), 0 for the others.
# TYPE baton_transaction_state gauge
baton_transaction_state{state="ABORTED"} 0
baton_transaction_state{state="COMMITTED"} 0
baton_transaction_state{state="DRAINING"} 0
baton_transaction_state{state="FAILED"} 0
baton_transaction_state{state="IDLE"} 1
baton_transaction_state{state="LEASED"} 0
baton_transaction_state{state="PREPARED"} 0
baton_transaction_state{state="ROLLING_BACK"} 0
baton_transaction_state{state="STAGED"} 0
baton_transaction_state{state="SWITCHING"} 0
baton_transaction_state{state="VERIFYING"} 0
# HELP baton_transaction_started_timestamp_seconds When the current transaction began (as this agent process saw it), in Unix time; 0 when idle.
# TYPE baton_transaction_started_timestamp_seconds gauge
baton_transaction_started_timestamp_seconds 0
# HELP baton_upgrades_total Upgrades finished, by service and result (succeeded, failed, aborted).
# TYPE baton_upgrades_total counter
baton_upgrades_total{result="failed",service="api"} 1
baton_upgrades_total{result="succeeded",service="db"} 1
# HELP baton_reverts_total Reverts to the last good revision, by service and result (succeeded, failed).
# TYPE baton_reverts_total counter
baton_reverts_total{result="succeeded",service="api"} 1
# HELP baton_last_revert_timestamp_seconds When the last revert ended, in Unix time; 0 if none since the agent started.
# TYPE baton_last_revert_timestamp_seconds gauge
baton_last_revert_timestamp_seconds 1.767323045e+09
# HELP baton_check_failures_total Checks that failed an upgrade, by service and check.
# TYPE baton_check_failures_total counter
baton_check_failures_total{check="health",service="api"} 2
baton_check_failures_total{check="port",service="api"} 1
# HELP baton_lease_held 1 while this host holds a slot of its group's lease.
# TYPE baton_lease_held gauge
baton_lease_held 0
# HELP baton_fetches_total Polls of the fleet repository, failed ones included.
# TYPE baton_fetches_total counter
baton_fetches_total 2
# HELP baton_fetch_errors_total Polls of the fleet repository that failed.
# TYPE baton_fetch_errors_total counter
baton_fetch_errors_total 1
# HELP baton_fetch_failing 1 when the last poll of the fleet repository failed.
# TYPE baton_fetch_failing gauge
baton_fetch_failing 0
# HELP baton_last_fetch_success_timestamp_seconds When a poll of the fleet repository last succeeded, in Unix time.
# TYPE baton_last_fetch_success_timestamp_seconds gauge
baton_last_fetch_success_timestamp_seconds 1.767323045e+09
# HELP baton_unit_drift 1 for each managed unit whose files were changed outside baton (edited, or a drop-in added); absent otherwise.
# TYPE baton_unit_drift gauge
baton_unit_drift{unit="api.service"} 1
# HELP baton_commits_rejected_total Commits refused as bad input (invalid repository, bad signature, rewound branch).
# TYPE baton_commits_rejected_total counter
baton_commits_rejected_total 1
# HELP baton_quarantined_commits Commits quarantined on this host (failed here or in its group).
# TYPE baton_quarantined_commits gauge
baton_quarantined_commits 1
# HELP baton_rollout_halted 1 when the tracked commit is quarantined, so this host does not move to it.
# TYPE baton_rollout_halted gauge
baton_rollout_halted 1
# HELP baton_webhook_events_total Rollout events per webhook outcome (sent, failed, dropped), summed over hooks.
# TYPE baton_webhook_events_total counter
baton_webhook_events_total{result="dropped"} 1
baton_webhook_events_total{result="failed"} 0
baton_webhook_events_total{result="sent"} 2
# HELP baton_migrations_total Data migrations this host ran, by service, phase (expand, contract) and result (done, failed).
# TYPE baton_migrations_total counter
baton_migrations_total{phase="contract",result="failed",service="api"} 1
baton_migrations_total{phase="expand",result="done",service="api"} 1
# HELP baton_migration_blocked 1 while this host's rollout waits for an operator on a data migration (failed, interrupted, or changed after it ran).
# TYPE baton_migration_blocked gauge
baton_migration_blocked 1
`

var scalarNames = []string{
	"baton_info", "baton_converged", "baton_transaction_state", "baton_transaction_started_timestamp_seconds",
	"baton_upgrades_total", "baton_reverts_total", "baton_last_revert_timestamp_seconds", "baton_check_failures_total",
	"baton_lease_held", "baton_fetches_total", "baton_fetch_errors_total", "baton_fetch_failing",
	"baton_last_fetch_success_timestamp_seconds", "baton_unit_drift", "baton_commits_rejected_total",
	"baton_quarantined_commits", "baton_rollout_halted", "baton_webhook_events_total",
	"baton_migrations_total", "baton_migration_blocked",
}

// scrape fetches the handler's exposition over HTTP and parses it.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse the exposition: %v", err)
	}
	return mfs
}

func TestScrapeAfterAFailedUpgrade(t *testing.T) {
	m := newTest()
	exercise(m)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	if err := testutil.ScrapeAndCompare(srv.URL, strings.NewReader(wantScrape), scalarNames...); err != nil {
		t.Error(err)
	}

	mfs := scrape(t, m)
	hist := func(name string, labels map[string]string) *dto.Histogram {
		t.Helper()
		mf := mfs[name]
		if mf == nil {
			t.Fatalf("no %s", name)
		}
	next:
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			return s.GetHistogram()
		}
		t.Fatalf("no %s%v", name, labels)
		return nil
	}
	tests := []struct {
		name   string
		labels map[string]string
		count  uint64
		sum    float64
	}{
		{"baton_upgrade_duration_seconds", map[string]string{"service": "api"}, 1, 30},
		{"baton_upgrade_duration_seconds", map[string]string{"service": "db"}, 1, 12},
		{"baton_revert_duration_seconds", map[string]string{"service": "api"}, 1, 4},
		{"baton_lease_wait_seconds", nil, 1, 1.5},
	}
	for _, tt := range tests {
		h := hist(tt.name, tt.labels)
		if h.GetSampleCount() != tt.count || math.Abs(h.GetSampleSum()-tt.sum) > 1e-9 {
			t.Errorf("%s%v: count %d sum %v, want %d %v", tt.name, tt.labels, h.GetSampleCount(), h.GetSampleSum(), tt.count, tt.sum)
		}
	}
	// 30 s falls in the 30 s bucket, not the 20 s one.
	for _, b := range hist("baton_upgrade_duration_seconds", map[string]string{"service": "api"}).GetBucket() {
		want := uint64(0)
		if b.GetUpperBound() >= 30 {
			want = 1
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
	if mfs["go_goroutines"] == nil || mfs["process_resident_memory_bytes"] == nil {
		t.Error("the Go and process collectors are missing")
	}
}

func TestInfoReplacesItsSeries(t *testing.T) {
	m := newTest()
	m.Info("", "")
	m.Host("web-01", "web")
	for _, c := range []struct{ applied, tracked string }{{"a", "b"}, {"a", "c"}, {"c", "c"}, {"c", "c"}} {
		m.Info(c.applied, c.tracked)
		if n := testutil.CollectAndCount(m.info); n != 1 {
			t.Fatalf("after Info(%s, %s): %d baton_info series, want 1", c.applied, c.tracked, n)
		}
	}
	m.Host("web-02", "canary")
	if n := testutil.CollectAndCount(m.info); n != 1 {
		t.Fatalf("after Host: %d baton_info series", n)
	}
	want := `# HELP baton_info Always 1: the agent's version, host, group, and the applied (last good) and tracked (branch head) commits.
# TYPE baton_info gauge
baton_info{applied="c",group="canary",host="web-02",tracked="c",version="1.2.3"} 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "baton_info"); err != nil {
		t.Error(err)
	}
	m.Info("c", "d")
	if got := testutil.ToFloat64(m.converged); got != 0 {
		t.Errorf("converged = %v behind the tracked commit", got)
	}
}

func TestTxnState(t *testing.T) {
	m := newTest()
	check := func(want string, started float64) {
		t.Helper()
		ones := 0
		for _, s := range append(TxnStates, "SOMETHING_NEW") {
			v := testutil.ToFloat64(m.txnState.WithLabelValues(s))
			if v == 1 {
				ones++
				if s != want {
					t.Errorf("state %s is 1, want %s", s, want)
				}
			}
		}
		if ones != 1 {
			t.Errorf("%d states at 1, want 1 (%s)", ones, want)
		}
		if got := testutil.ToFloat64(m.txnStarted); got != started {
			t.Errorf("started = %v, want %v", got, started)
		}
	}
	check(Idle, 0)
	m.TxnState("PREPARED")
	check("PREPARED", float64(t0.Unix()))
	m.now = func() time.Time { return t0.Add(time.Hour) }
	m.TxnState("VERIFYING") // the same transaction: its start stays
	check("VERIFYING", float64(t0.Unix()))
	m.TxnState("SOMETHING_NEW")
	check("SOMETHING_NEW", float64(t0.Unix()))
	m.TxnState("")
	check(Idle, 0)
}

func TestLint(t *testing.T) {
	m := newTest()
	exercise(m)
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "baton_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}

func TestServe(t *testing.T) {
	if err := Serve(context.Background(), "", nil, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("disabled: %v", err)
	}
	if err := Serve(context.Background(), "256.0.0.1:bad", nil, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("a bad address did not fail")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := newTest()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, l, m.Handler()) }()
	base := "http://" + l.Addr().String()
	for path, want := range map[string]int{"/metrics": 200, "/": 200, "/nope": 404} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
		if path == "/metrics" && !strings.Contains(string(body), `baton_transaction_state{state="IDLE"} 1`) {
			t.Errorf("GET /metrics:\n%s", body)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}
