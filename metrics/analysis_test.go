package metrics

import (
	"math"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/baton-fleet/baton/analysis"
)

// exerciseAnalysis records an analysis that failed on its error rate while the
// latency check had lost Prometheus, and a gate held by two series.
func exerciseAnalysis(m *Metrics) {
	m.AnalysisSample(analysis.Sample{Service: "api", Check: "latency", Verdict: analysis.Pass, Value: 0.2, Baseline: 0.18, Bound: "maxRatio", Limit: 1.5})
	m.AnalysisSample(analysis.Sample{Service: "api", Check: "latency", Verdict: analysis.Wait, Value: math.NaN(), Baseline: math.NaN(), Unanswered: true})
	m.AnalysisSample(analysis.Sample{Service: "api", Check: "errors", Verdict: analysis.Fail, Value: 0.034, Baseline: math.NaN(), Bound: "max", Limit: 0.01})
	m.AnalysisSample(analysis.Sample{Service: "api", Check: "errors", Verdict: analysis.Fail, Value: 0.05, Baseline: math.NaN(), Bound: "max", Limit: 0.01})
	m.Analysis(analysis.Result{Outcome: analysis.Failed, Last: []analysis.Sample{{Service: "api", Check: "latency"}, {Service: "api", Check: "errors"}}})
	m.Gate(analysis.GateResult{Held: true, Series: []string{`ALERTS{alertname="DiskFull"}`}, More: 1})
}

const wantAnalysisScrape = `
# HELP baton_analysis_value The last value of an analysis check's query, by service and check; absent while it has none (no data, no answer).
# TYPE baton_analysis_value gauge
baton_analysis_value{check="errors",service="api"} 0.05
# HELP baton_analysis_baseline The last value of an analysis check's baseline query; absent while it has none.
# TYPE baton_analysis_baseline gauge
# HELP baton_analysis_bound The bound (min, max, maxRatio) an analysis check's last value was held to.
# TYPE baton_analysis_bound gauge
baton_analysis_bound{bound="max",check="errors",service="api"} 0.01
baton_analysis_bound{bound="maxRatio",check="latency",service="api"} 1.5
# HELP baton_analysis_evaluations_total Evaluations of analysis checks, by service, check and verdict (pass, fail, wait).
# TYPE baton_analysis_evaluations_total counter
baton_analysis_evaluations_total{check="errors",service="api",verdict="fail"} 2
baton_analysis_evaluations_total{check="latency",service="api",verdict="pass"} 1
baton_analysis_evaluations_total{check="latency",service="api",verdict="wait"} 1
# HELP baton_analysis_unanswered_total Evaluations of analysis checks that Prometheus did not answer (unreachable, or an error), by service and check: each is no data, judged by the check's noData.
# TYPE baton_analysis_unanswered_total counter
baton_analysis_unanswered_total{check="latency",service="api"} 1
# HELP baton_analyses_total Analyses finished, by service and outcome (passed, failed, inconclusive).
# TYPE baton_analyses_total counter
baton_analyses_total{outcome="failed",service="api"} 1
# HELP baton_gate_held 1 while the group's gate holds new upgrades (its query returns series, or Prometheus does not answer).
# TYPE baton_gate_held gauge
baton_gate_held 1
# HELP baton_gate_series How many series the gate's query returned when last asked.
# TYPE baton_gate_series gauge
baton_gate_series 2
`

// TestAnalysisMetrics: values and bounds as last seen, a value gone when the check
// has none, verdicts and outcomes counted, the gate's state.
func TestAnalysisMetrics(t *testing.T) {
	m := newTest()
	exerciseAnalysis(m)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	names := []string{"baton_analysis_value", "baton_analysis_baseline", "baton_analysis_bound", "baton_analysis_evaluations_total", "baton_analysis_unanswered_total",
		"baton_analyses_total", "baton_gate_held", "baton_gate_series"}
	if err := testutil.ScrapeAndCompare(srv.URL, strings.NewReader(wantAnalysisScrape), names...); err != nil {
		t.Error(err)
	}
	m.Gate(analysis.GateResult{})
	if got := testutil.ToFloat64(m.analysis.gateHeld); got != 0 {
		t.Errorf("baton_gate_held after an open gate = %v", got)
	}
}
