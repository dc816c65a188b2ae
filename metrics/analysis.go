package metrics

import (
	"math"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-fleet/baton/analysis"
)

// analysisMetrics are the values an analysis reads from Prometheus and what it made
// of them, and the state of the group's gate.
type analysisMetrics struct {
	value       *prometheus.GaugeVec
	baseline    *prometheus.GaugeVec
	bound       *prometheus.GaugeVec
	evaluations *prometheus.CounterVec
	unanswered  *prometheus.CounterVec
	analyses    *prometheus.CounterVec
	gateHeld    prometheus.Gauge
	gateSeries  prometheus.Gauge
}

func newAnalysisMetrics(f factory) analysisMetrics {
	a := analysisMetrics{
		value: f.gaugeVec("baton_analysis_value", "The last value of an analysis check's query, by service and check; absent while it has none (no data, no answer).",
			"service", "check"),
		baseline: f.gaugeVec("baton_analysis_baseline", "The last value of an analysis check's baseline query; absent while it has none.",
			"service", "check"),
		bound: f.gaugeVec("baton_analysis_bound", "The bound (min, max, maxRatio) an analysis check's last value was held to.",
			"service", "check", "bound"),
		evaluations: f.counterVec("baton_analysis_evaluations_total", "Evaluations of analysis checks, by service, check and verdict (pass, fail, wait).",
			"service", "check", "verdict"),
		unanswered: f.counterVec("baton_analysis_unanswered_total", "Evaluations of analysis checks that Prometheus did not answer (unreachable, or an error), by service and check: each is no data, judged by the check's noData.",
			"service", "check"),
		analyses: f.counterVec("baton_analyses_total", "Analyses finished, by service and outcome (passed, failed, inconclusive).",
			"service", "outcome"),
		gateHeld:   f.gauge("baton_gate_held", "1 while the group's gate holds new upgrades (its query returns series, or Prometheus does not answer)."),
		gateSeries: f.gauge("baton_gate_series", "How many series the gate's query returned when last asked."),
	}
	return a
}

// AnalysisSample records one evaluation of an analysis check: its value, baseline and
// bound, and its verdict. Its signature fits analysis.Run.Report.
func (m *Metrics) AnalysisSample(s analysis.Sample) {
	a := &m.analysis
	service := s.Service
	setOrDelete(a.value, s.Value, service, s.Check)
	setOrDelete(a.baseline, s.Baseline, service, s.Check)
	if s.Bound != "" {
		a.bound.WithLabelValues(service, s.Check, s.Bound).Set(s.Limit)
	}
	a.evaluations.WithLabelValues(service, s.Check, s.Verdict.String()).Inc()
	if s.Unanswered {
		a.unanswered.WithLabelValues(service, s.Check).Inc()
	}
}

// Analysis counts a finished analysis once for each service it checked.
func (m *Metrics) Analysis(r analysis.Result) {
	seen := map[string]bool{}
	for _, s := range r.Last {
		if !seen[s.Service] {
			seen[s.Service] = true
			m.analysis.analyses.WithLabelValues(s.Service, r.Outcome.String()).Inc()
		}
	}
}

// Gate records what the group's gate said when last asked.
func (m *Metrics) Gate(r analysis.GateResult) {
	m.analysis.gateHeld.Set(bool01(r.Held))
	m.analysis.gateSeries.Set(float64(len(r.Series) + r.More))
}

// setOrDelete sets g's series to v, or deletes it when v is NaN (no value).
func setOrDelete(g *prometheus.GaugeVec, v float64, labels ...string) {
	if math.IsNaN(v) {
		g.DeleteLabelValues(labels...)
		return
	}
	g.WithLabelValues(labels...).Set(v)
}
