package main

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// What the flaky and slow modes do to requests of /.
const (
	flakyPercent = 3                      // flaky: this many of every 100 requests answer 500
	slowDelay    = 300 * time.Millisecond // slow: added to every request
)

// requestMetrics counts the requests of / by status code and observes how long they
// took, by host, as the analysis recipes in docs/operations.md query them, beside the
// process's own metrics.
type requestMetrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	host     string
}

func newRequestMetrics(host string) *requestMetrics {
	m := &requestMetrics{
		reg:  prometheus.NewRegistry(),
		host: host,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total", Help: "Requests of /, by status code.",
		}, []string{"host", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "http_request_duration_seconds", Help: "How long requests of / took.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
		}, []string{"host"}),
	}
	// The process's own figures (process_resident_memory_bytes, ...): what a second
	// copy of the service costs a host.
	m.reg.MustRegister(m.requests, m.duration, collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// handler serves the metrics in the Prometheus exposition formats.
func (m *requestMetrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// observe wraps the handler of /: it counts each request by the status it answered
// and observes its duration.
func (m *requestMetrics) observe(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next(rec, r)
		m.requests.WithLabelValues(m.host, strconv.Itoa(rec.status)).Inc()
		m.duration.WithLabelValues(m.host).Observe(time.Since(start).Seconds())
	}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// flaky says whether the n-th request (from 0) answers 500 in flaky mode: flakyPercent
// of every 100, spread out.
func flaky(n uint64) bool { return n%100 < flakyPercent }

// counter numbers the requests of / for flaky mode.
type counter struct{ n atomic.Uint64 }

func (c *counter) next() uint64 { return c.n.Add(1) - 1 }
