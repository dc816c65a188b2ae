package analysis

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/baton-fleet/baton/checks"
	"github.com/baton-fleet/baton/internal/testetcd"
	"github.com/baton-fleet/baton/internal/testprom"
	"github.com/baton-fleet/baton/internal/yamldoc"
	"github.com/baton-fleet/baton/spec"
)

// The real tests run short windows against a real Prometheus scraping every 250 ms.
const (
	realWindow   = 2 * time.Second
	realInterval = 250 * time.Millisecond
)

var host = map[string]string{"host": "web-01"}

// realProm starts an exporter and a Prometheus scraping it, and a client of it.
func realProm(t *testing.T, rules string) (*testprom.Exporter, *testprom.Prometheus, *Client) {
	t.Helper()
	e := testprom.NewExporter(t)
	p := testprom.Start(t, testprom.Config{Targets: []string{e.Addr}, Rules: rules})
	c, err := NewClient(Server{URL: p.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return e, p, c
}

// waitSeries waits until Prometheus answers q with n series: the values the test
// set were scraped (and rules evaluated).
func waitSeries(t *testing.T, c *Client, q string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, err := c.Query(context.Background(), q)
		if err == nil && len(v) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d series (%v), want %d", q, len(v), err, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// realCheck is the check named name of a service.yaml analysis, as parsed and
// rendered by spec, asking c.
func realCheck(t *testing.T, c *Client, name, prometheus string) Check {
	t.Helper()
	p := spec.PrometheusCheck{URL: "http://unused", NoData: spec.NoDataWait}
	for line := range strings.SplitSeq(prometheus, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		switch k {
		case "query":
			p.Query = v
		case "baseline":
			p.Baseline = v
		case "noData":
			p.NoData = v
		case "max":
			p.Max = ptr(mustFloat(t, v))
		case "maxRatio":
			p.MaxRatio = ptr(mustFloat(t, v))
		}
	}
	return NewCheck("api", &spec.Analysis{Window: yamldoc.Duration(realWindow)}, spec.AnalysisCheck{Name: name, Prometheus: &p, Interval: yamldoc.Duration(realInterval),
		Timeout: yamldoc.Duration(time.Second), Failures: 2}, c)
}

func mustFloat(t *testing.T, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func realRun(cs ...Check) (Result, []Sample) {
	var seen []Sample
	r := &Run{Window: realWindow, Checks: cs, Clock: checks.RealClock, Report: func(s Sample) { seen = append(seen, s) }}
	res, err := r.Analyze(context.Background())
	if err != nil {
		panic(err) // a background context does not end
	}
	return res, seen
}

// TestAnalysisAgainstPrometheus: the checks of the issue against a real Prometheus.
func TestAnalysisAgainstPrometheus(t *testing.T) {
	e, _, c := realProm(t, "")
	e.Set("error_ratio", host, 0.001)
	e.Set("error_ratio", map[string]string{"host": "web-02"}, 0.034)
	e.Set("p99_seconds", host, 0.45)
	e.Set("p99_seconds", map[string]string{"host": "web-02"}, 0.15)
	e.Set("p99_seconds", map[string]string{"host": "web-03"}, 0.2)
	waitSeries(t, c, "error_ratio", 2)
	waitSeries(t, c, "p99_seconds", 3)

	for _, tc := range []struct {
		name, check, want string
		samples           int // at least
	}{
		{"a good release passes the window", `query=error_ratio{host="web-01"}; max=0.01`,
			`analysis passed: errors: 0.001 <= max 0.01`, int(realWindow / realInterval)},
		{"an error rate above max fails after 2 failures", `query=error_ratio{host="web-02"}; max=0.01`,
			`analysis failed: errors: 0.034 > max 0.01 (2 of 2 failures)`, 2},
		{"noData: wait is inconclusive at the end", `query=error_ratio{host="web-09"}; max=0.01; noData=wait`,
			`analysis inconclusive: errors: no data (empty result; noData: wait)`, int(realWindow/realInterval) + 2},
		{"noData: fail fails", `query=error_ratio{host="web-09"}; max=0.01; noData=fail`,
			`analysis failed: errors: no data (empty result; noData: fail) (2 of 2 failures)`, 2},
		{"noData: pass passes", `query=error_ratio{host="web-09"}; max=0.01; noData=pass`,
			`analysis passed: errors: no data (empty result; noData: pass)`, int(realWindow / realInterval)},
		{"a ratio to the baseline above maxRatio fails", `query=p99_seconds{host="web-01"}; baseline=avg(p99_seconds{host!="web-01"}); maxRatio=1.5`,
			`analysis failed: errors: 0.45 / baseline 0.175 = 2.571 > maxRatio 1.5 (2 of 2 failures)`, 2},
		{"a ratio within maxRatio passes", `query=p99_seconds{host="web-03"}; baseline=avg(p99_seconds{host!="web-03"}); maxRatio=1.5`,
			`analysis passed: errors: 0.2 / baseline 0.3 = 0.6667 <= maxRatio 1.5`, int(realWindow / realInterval)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, seen := realRun(realCheck(t, c, "errors", tc.check))
			if got := res.String(); got != tc.want {
				t.Errorf("result:\n  %s\nwant\n  %s", got, tc.want)
			}
			if len(seen) < tc.samples {
				t.Errorf("%d samples, want at least %d", len(seen), tc.samples)
			}
		})
	}
}

// TestAnalysisPrometheusDown: Prometheus stopped in the middle of a window is no
// data, and each check's noData decides: wait goes on waiting, and with Prometheus
// still down at the end the analysis is inconclusive (the release not blamed, and not
// passed); fail counts a failure at each evaluation, so the analysis fails; pass
// passes. The text says why there was no data.
func TestAnalysisPrometheusDown(t *testing.T) {
	e, p, c := realProm(t, "")
	e.Set("error_ratio", host, 0.001)
	for _, tc := range []struct {
		noData  string
		outcome Outcome
		suffix  string
	}{
		{spec.NoDataWait, Inconclusive, "; noData: wait)"},
		{spec.NoDataFail, Failed, "; noData: fail) (2 of 2 failures)"},
		{spec.NoDataPass, Passed, "; noData: pass)"},
	} {
		t.Run(tc.noData, func(t *testing.T) {
			if p.PID() == 0 {
				p.Restart(t)
			}
			waitSeries(t, c, `error_ratio{host="web-01"}`, 1)
			res, seen := analyzeStoppingPrometheus(t, p, tc.noData)
			want := "analysis " + tc.outcome.String() + ": errors: no data (prometheus unreachable: " + p.URL + ": "
			if res.Outcome != tc.outcome || !strings.HasPrefix(res.String(), want) || !strings.HasSuffix(res.String(), tc.suffix) ||
				!strings.Contains(res.String(), "connection refused") {
				t.Errorf("result:\n  %s\nwant\n  %s...%s", res, want, tc.suffix)
			}
			if len(seen) == 0 || seen[0].Verdict != Pass || !seen[len(seen)-1].Unanswered {
				t.Errorf("samples = %v, want a pass before Prometheus stopped, and no answer after", seen)
			}
		})
	}
}

// analyzeStoppingPrometheus runs an analysis of error_ratio against p, as the
// repository would say it with noData, and stops p halfway through its window.
func analyzeStoppingPrometheus(t *testing.T, p *testprom.Prometheus, noData string) (Result, []Sample) {
	t.Helper()
	a := &spec.Analysis{Window: yamldoc.Duration(realWindow), Checks: []spec.AnalysisCheck{{
		Name:       "errors",
		Prometheus: &spec.PrometheusCheck{URL: p.URL, Query: `error_ratio{host="web-01"}`, Max: ptr(0.01), NoData: noData},
		Interval:   yamldoc.Duration(realInterval), Timeout: yamldoc.Duration(time.Second), Failures: 2,
	}}}
	run, closeRun, err := ForServices(map[string]*spec.Analysis{"api": a}, checks.RealClock)
	if err != nil {
		t.Fatal(err)
	}
	defer closeRun()
	var seen []Sample
	run.Report = func(s Sample) { seen = append(seen, s) }
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		time.Sleep(realWindow / 2)
		p.Stop()
	}()
	res, err := run.Analyze(context.Background())
	<-stopped
	if err != nil {
		t.Fatal(err)
	}
	return res, seen
}

// TestGateAgainstPrometheus: the gate holds while a real alert fires, names it, lets
// go when it resolves, and holds while Prometheus does not answer.
func TestGateAgainstPrometheus(t *testing.T) {
	e, p, c := realProm(t, `groups:
  - name: test
    rules:
      - alert: DiskFull
        expr: max without (job) (disk_full) == 1
        labels: {severity: page}
`)
	disk := map[string]string{"instance": "db-02"}
	e.Set("disk_full", disk, 0)
	waitSeries(t, c, "disk_full", 1)
	gate, closeGate, err := GateFor(&spec.Gate{Prometheus: &spec.PrometheusGate{URL: p.URL, Query: `ALERTS{alertstate="firing",severity="page"}`, Timeout: yamldoc.Duration(time.Second)}})
	if err != nil {
		t.Fatal(err)
	}
	defer closeGate()
	if r := gate.Check(context.Background()); r.String() != "open" {
		t.Errorf("gate with no alert: %s", r)
	}
	e.Set("disk_full", disk, 1)
	waitSeries(t, c, `ALERTS{alertstate="firing"}`, 1)
	if r := gate.Check(context.Background()); r.String() != `held: ALERTS{alertname="DiskFull",instance="db-02"}` {
		t.Errorf("gate while DiskFull fires: %s", r)
	}
	e.Set("disk_full", disk, 0)
	waitSeries(t, c, `ALERTS{alertstate="firing"}`, 0)
	if r := gate.Check(context.Background()); r.String() != "open" {
		t.Errorf("gate once DiskFull resolved: %s", r)
	}
	p.Stop()
	if r := gate.Check(context.Background()); !r.Held || !strings.HasPrefix(r.String(), "held: prometheus unreachable: "+p.URL) {
		t.Errorf("gate with Prometheus stopped: %s", r)
	}
}

// TestClientHTTPSAgainstPrometheus: a Prometheus serving https is asked with the CA
// of caFile; with the system's CAs, or another CA, the query is refused and the
// analysis has no answer.
func TestClientHTTPSAgainstPrometheus(t *testing.T) {
	certs := testetcd.NewCerts(t)
	e := testprom.NewExporter(t)
	e.Set("error_ratio", host, 0.001)
	p := testprom.Start(t, testprom.Config{Targets: []string{e.Addr}, TLS: &testprom.TLS{CertFile: certs.ServerCert, KeyFile: certs.ServerKey, CAFile: certs.CAFile}})
	if !strings.HasPrefix(p.URL, "https://") {
		t.Fatalf("URL = %s", p.URL)
	}
	c, err := NewClient(Server{URL: p.URL, CAFile: certs.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitSeries(t, c, "error_ratio", 1)
	for _, ca := range []string{"", certs.OtherCAFile} {
		other, err := NewClient(Server{URL: p.URL, CAFile: ca})
		if err != nil {
			t.Fatal(err)
		}
		s := Evaluate(context.Background(), realCheck(t, other, "errors", `query=error_ratio; max=0.01`), 0, time.Now())
		if !s.Unanswered || s.Verdict != Wait || !strings.Contains(s.String(), "certificate") {
			t.Errorf("with caFile %q: %s", ca, s)
		}
		other.Close()
	}
}

// BenchmarkEvaluateAgainstPrometheus is one evaluation of a check with a baseline
// (two instant queries) against a real Prometheus on loopback: what each interval of
// an analysis costs beyond waiting.
func BenchmarkEvaluateAgainstPrometheus(b *testing.B) {
	e := testprom.NewExporter(b)
	e.Set("p99_seconds", host, 0.2)
	e.Set("p99_seconds", map[string]string{"host": "web-02"}, 0.18)
	p := testprom.Start(b, testprom.Config{Targets: []string{e.Addr}})
	c, err := NewClient(Server{URL: p.URL})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	check := Check{Name: "latency", Query: `p99_seconds{host="web-01"}`, Baseline: `avg(p99_seconds{host!="web-01"})`,
		MaxRatio: ptr(1.5), Timeout: 5 * time.Second, Failures: 1, Server: c}
	for deadline := time.Now().Add(20 * time.Second); Evaluate(context.Background(), check, 0, time.Now()).Verdict != Pass; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("no pass from Prometheus within 20s")
		}
	}
	for b.Loop() {
		if s := Evaluate(context.Background(), check, 0, time.Now()); s.Verdict != Pass {
			b.Fatal(s)
		}
	}
}

// TestRepositoryAgainstPrometheus: from the fleet repository's YAML (templates with
// the host's name) to the analysis' verdict and the gate's, against a real Prometheus.
func TestRepositoryAgainstPrometheus(t *testing.T) {
	e, p, c := realProm(t, "")
	e.Set("error_ratio", host, 0.034)
	e.Set("error_ratio", map[string]string{"host": "web-02"}, 0.001)
	waitSeries(t, c, "error_ratio", 2)
	fleetYAML := `apiVersion: baton/v1
groups:
  - name: web
    hosts: ["web-*"]
    services: [api]
    rollout:
      gate:
        prometheus: {url: "` + p.URL + `", query: 'ALERTS{alertstate="firing"}'}
`
	serviceYAML := `version: "1.0.0"
units: [api.service]
analysis:
  window: 2s
  checks:
    - name: errors
      prometheus:
        url: "` + p.URL + `"
        query: 'error_ratio{host="{{ .Host }}"}'
        max: 0.01
      interval: 250ms
`
	repo, err := spec.Load(fstest.MapFS{
		"fleet.yaml":                {Data: []byte(fleetYAML)},
		"services/api/service.yaml": {Data: []byte(serviceYAML)},
		"services/api/api.service":  {Data: []byte("[Service]\nExecStart={{ .Release }}/api\n")},
	})
	if err != nil {
		t.Fatal(err)
	}
	for h, want := range map[string]string{
		"web-01": "analysis failed: errors: 0.034 > max 0.01 (2 of 2 failures)",
		"web-02": "analysis passed: errors: 0.001 <= max 0.01",
	} {
		hs, err := repo.ForHost(h, "0", t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		run, closeRun, err := ForServices(map[string]*spec.Analysis{"api": hs.Services[0].Analysis}, checks.RealClock)
		if err != nil {
			t.Fatal(err)
		}
		res, err := run.Analyze(context.Background())
		closeRun()
		if err != nil || res.String() != want {
			t.Errorf("%s: %s (%v), want %s", h, res, err, want)
		}
		gate, closeGate, err := GateFor(hs.Group.Rollout.Gate)
		if err != nil {
			t.Fatal(err)
		}
		if r := gate.Check(context.Background()); r.String() != "open" {
			t.Errorf("%s: gate %s", h, r)
		}
		closeGate()
	}
}
