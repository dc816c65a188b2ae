package spec

import (
	"encoding/json"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

const analysisFleet = `apiVersion: baton/v1
groups:
  - name: web
    hosts: ["web-*"]
    services: [api]
    rollout:
      gate:
        prometheus:
          url: "https://prometheus.internal:9090"
          query: 'ALERTS{alertstate="firing",severity="page"}'
          caFile: /etc/baton/prometheus-ca.pem
`

const analysisService = `version: "1.0.0"
units: [api.service]
analysis:
  window: 2m
  checks:
    - name: errors
      prometheus:
        url: "http://prometheus.internal:9090"
        query: |
          sum(rate(http_requests_total{host="{{ .Host }}",code=~"5.."}[30s]))
          / sum(rate(http_requests_total{host="{{ .Host }}"}[30s]))
        max: 0.01
        tokenFile: /etc/baton/prometheus-token
      interval: 10s
      failures: 2
    - name: latency-vs-fleet
      prometheus:
        url: "http://prometheus.internal:9090"
        query: 'histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{host="{{ .Host }}"}[1m])))'
        baseline: 'histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job="api",host!="{{ .Host }}"}[1m])))'
        maxRatio: 1.5
`

const analysisUnit = "[Unit]\nDescription=api\n\n[Service]\nExecStart={{ .Release }}/api\n"

func loadAnalysis(t *testing.T, service string) *Repo {
	t.Helper()
	r, err := Load(fstest.MapFS{
		"fleet.yaml":                {Data: []byte(analysisFleet)},
		"services/api/service.yaml": {Data: []byte(service)},
		"services/api/api.service":  {Data: []byte(analysisUnit)},
	})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return r
}

// TestAnalysisParsed reads the example: defaults filled in, templates kept
// until rendering, then rendered with the host's name; the gate's defaults.
func TestAnalysisParsed(t *testing.T) {
	r := loadAnalysis(t, analysisService)
	a := r.Services["api"].Analysis
	if a == nil || a.Window.D() != 2*time.Minute || len(a.Checks) != 2 {
		t.Fatalf("analysis = %+v", a)
	}
	errs, lat := a.Checks[0], a.Checks[1]
	if errs.Interval.D() != 10*time.Second || errs.Failures != 2 || errs.Prometheus.NoData != NoDataWait || *errs.Prometheus.Max != 0.01 {
		t.Errorf("errors check = %+v, prometheus %+v", errs, errs.Prometheus)
	}
	if lat.Interval.D() != DefaultAnalysisInterval || lat.Timeout.D() != DefaultAnalysisTimeout || lat.Failures != DefaultAnalysisFailures {
		t.Errorf("latency check defaults = %+v", lat)
	}
	if lat.Prometheus.Min != nil || lat.Prometheus.Max != nil || *lat.Prometheus.MaxRatio != 1.5 {
		t.Errorf("latency bounds = %+v", lat.Prometheus)
	}
	g := r.Fleet.Groups[0].Rollout.Gate
	if g == nil || g.Prometheus.Timeout.D() != DefaultGateTimeout || g.Prometheus.CAFile != "/etc/baton/prometheus-ca.pem" {
		t.Fatalf("gate = %+v", g)
	}

	hs, err := r.ForHost("web-01", "0", "/var/lib/baton")
	if err != nil {
		t.Fatal(err)
	}
	ra := hs.Services[0].Analysis
	if q := ra.Checks[0].Prometheus.Query; !strings.Contains(q, `host="web-01",code=~"5.."`) || strings.Contains(q, "{{") {
		t.Errorf("rendered query = %q", q)
	}
	if b := ra.Checks[1].Prometheus.Baseline; !strings.Contains(b, `host!="web-01"`) {
		t.Errorf("rendered baseline = %q", b)
	}
	if strings.Contains(a.Checks[0].Prometheus.Query, "web-01") {
		t.Error("rendering changed the parsed service")
	}
}

// TestFingerprintCoversAnalysis: a change to any knob of the analysis is another
// release; a service without analysis keeps the fingerprint it had before analysis
// existed (the field is left out of the JSON).
func TestFingerprintCoversAnalysis(t *testing.T) {
	base := loadAnalysis(t, analysisService).Services["api"].Fingerprint()
	for _, change := range [][2]string{
		{"max: 0.01", "max: 0.02"},
		{"window: 2m", "window: 3m"},
		{"maxRatio: 1.5", "maxRatio: 1.4"},
		{"failures: 2", "failures: 3"},
	} {
		other := loadAnalysis(t, strings.Replace(analysisService, change[0], change[1], 1)).Services["api"].Fingerprint()
		if other == base {
			t.Errorf("%s -> %s left the fingerprint at %s", change[0], change[1], base)
		}
	}
	plain := loadAnalysis(t, analysisService[:strings.Index(analysisService, "analysis:")]).Services["api"]
	if j, _ := json.Marshal(plain); strings.Contains(string(j), "analysis") {
		t.Errorf("a service without analysis has it in its JSON: %s", j)
	}
}

func TestParsePromQL(t *testing.T) {
	for q, want := range map[string]string{
		`up`:                        "",
		`sum(rate(x[1m])) / sum(y)`: "",
		``:                          "required: a PromQL query",
		`sum(rate(x[1m])`:           "not valid PromQL: line 1, column 16 of the query: unclosed left parenthesis",
		"up\n  and on() ) foo":      "not valid PromQL: line 2, column 13 of the query: unexpected right parenthesis ')'",
		`rate(x[5q])`:               "not valid PromQL: line 1, column 8 of the query: bad number or duration syntax: \"5\"",
	} {
		err := ParsePromQL(q)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != want {
			t.Errorf("ParsePromQL(%q) = %q, want %q", q, got, want)
		}
	}
}
