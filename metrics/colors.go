package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// colorMetrics are the moves of bluegreen services between their colors.
type colorMetrics struct {
	switches *prometheus.HistogramVec
	drains   *prometheus.HistogramVec
	cut      *prometheus.CounterVec
}

func newColorMetrics(f factory) colorMetrics {
	return colorMetrics{
		switches: f.histogramVec("baton_color_switch_seconds", "How long moving a bluegreen service's clients to its new color took in the load balancer (cutover), by service.",
			[]float64{.001, .005, .01, .05, .1, .5, 1, 5, 15}, "service"),
		drains: f.histogramVec("baton_color_drain_seconds", "How long the old color of a bluegreen service served its sessions after the cutover before it stopped, by service.",
			[]float64{1, 5, 15, 30, 60, 120, 300, 600}, "service"),
		cut: f.counterVec("baton_color_sessions_cut_total", "Sessions still open on an old color when its drainTimeout ended them, by service.", "service"),
	}
}

// ColorSwitched records a cutover of service to its new color, which took d.
func (m *Metrics) ColorSwitched(service string, d time.Duration) {
	m.colors.switches.WithLabelValues(service).Observe(d.Seconds())
}

// ColorRetired records the drain of service's old color: how long it served, and how
// many sessions its bound cut.
func (m *Metrics) ColorRetired(service string, took time.Duration, cut int) {
	m.colors.drains.WithLabelValues(service).Observe(took.Seconds())
	m.colors.cut.WithLabelValues(service).Add(float64(cut))
}
