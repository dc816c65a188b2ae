package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-fleet/baton/analysis"
	"github.com/baton-fleet/baton/checks"
	"github.com/baton-fleet/baton/internal/testprom"
	"github.com/baton-fleet/baton/internal/yamldoc"
	"github.com/baton-fleet/baton/spec"
)

// TestAnalysisOfBadReleases: the recipes of docs/operations.md, against a real
// Prometheus scraping demo servers under load. (Without "or vector(0)" the error
// rate of a host that never answered a 5xx is no data, not 0: there is no 5xx series.) A flaky release (its /healthz fine)
// fails the error-rate check; a slow one fails the p99 comparison with the fleet; a
// good one passes both.
func TestAnalysisOfBadReleases(t *testing.T) {
	servers := map[string]string{"web-01": modeOK, "web-02": modeFlaky, "web-03": modeSlow, "web-04": modeOK}
	var targets, urls []string
	for host, mode := range servers {
		srv := httptest.NewServer(newHandler(config{Version: "1", Mode: mode}, host))
		t.Cleanup(srv.Close)
		targets = append(targets, strings.TrimPrefix(srv.URL, "http://"))
		urls = append(urls, srv.URL)
	}
	p := testprom.Start(t, testprom.Config{Targets: targets})
	stop := load(t, urls)
	defer stop()

	errorRate := spec.AnalysisCheck{Name: "errors", Prometheus: &spec.PrometheusCheck{URL: p.URL, Max: ptr(0.01), NoData: spec.NoDataWait,
		Query: `(sum(rate(http_requests_total{host="{{ .Host }}",code=~"5.."}[2s])) or vector(0)) / sum(rate(http_requests_total{host="{{ .Host }}"}[2s]))`}}
	latency := spec.AnalysisCheck{Name: "latency-vs-fleet", Prometheus: &spec.PrometheusCheck{URL: p.URL, MaxRatio: ptr(1.5), NoData: spec.NoDataWait,
		Query:    `histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{host="{{ .Host }}"}[2s])))`,
		Baseline: `histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{host!="{{ .Host }}"}[2s])))`}}
	time.Sleep(3 * time.Second) // the rates' range filled with scrapes under load
	for host, want := range map[string]string{
		"web-01": "analysis passed: errors: ",
		"web-02": "analysis failed: errors: ",
		"web-03": "analysis failed: latency-vs-fleet: ",
	} {
		res := analyze(t, host, errorRate, latency)
		t.Logf("%s (%s): %s", host, servers[host], res)
		if !strings.HasPrefix(res.String(), want) {
			t.Errorf("%s (%s): %s, want %s...", host, servers[host], res, want)
		}
	}
}

// analyze runs the checks, rendered for host, for a window of 3 s.
func analyze(t *testing.T, host string, cs ...spec.AnalysisCheck) analysis.Result {
	t.Helper()
	a := &spec.Analysis{Window: yamldoc.Duration(3 * time.Second)}
	for _, c := range cs {
		p := *c.Prometheus
		p.Query = strings.ReplaceAll(p.Query, "{{ .Host }}", host)
		p.Baseline = strings.ReplaceAll(p.Baseline, "{{ .Host }}", host)
		c.Prometheus = &p
		c.Interval, c.Timeout, c.Failures = yamldoc.Duration(250*time.Millisecond), yamldoc.Duration(2*time.Second), 2
		a.Checks = append(a.Checks, c)
	}
	run, closeRun, err := analysis.ForServices(map[string]*spec.Analysis{"demo": a}, checks.RealClock)
	if err != nil {
		t.Fatal(err)
	}
	defer closeRun()
	res, err := run.Analyze(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// load sends requests to every URL, a few at a time, until stopped.
func load(t *testing.T, urls []string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, u := range urls {
		for range 4 {
			wg.Go(func() {
				for ctx.Err() == nil {
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u+"/", nil)
					if resp, err := http.DefaultClient.Do(req); err == nil {
						resp.Body.Close()
					}
					time.Sleep(5 * time.Millisecond)
				}
			})
		}
	}
	return func() { cancel(); wg.Wait() }
}

func ptr(v float64) *float64 { return &v }
