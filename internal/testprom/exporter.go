package testprom

import (
	"maps"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Exporter serves, from the test process, gauges whose values the test sets: what
// Prometheus scrapes is exactly what the test said.
type Exporter struct {
	Addr string // host:port, a target for Config.Targets

	mu     sync.Mutex
	values map[string]gauge // by name and labels
}

type gauge struct {
	name   string
	labels map[string]string
	value  float64
}

// NewExporter starts an exporter on a loopback port; t.Cleanup stops it.
func NewExporter(t testing.TB) *Exporter {
	t.Helper()
	e := &Exporter{values: map[string]gauge{}}
	reg := prometheus.NewRegistry()
	reg.MustRegister(e)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	e.Addr = strings.TrimPrefix(srv.URL, "http://")
	return e
}

// Set sets the gauge name{labels} to v; it is exported from the next scrape on.
func (e *Exporter) Set(name string, labels map[string]string, v float64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.values[key(name, labels)] = gauge{name: name, labels: maps.Clone(labels), value: v}
}

// Delete stops exporting name{labels}: Prometheus marks it stale at the next scrape.
func (e *Exporter) Delete(name string, labels map[string]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.values, key(name, labels))
}

func key(name string, labels map[string]string) string {
	var b strings.Builder
	b.WriteString(name)
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		b.WriteString("\x00" + k + "\x00" + labels[k])
	}
	return b.String()
}

// Describe sends nothing: the exporter is an unchecked collector, its series change.
func (e *Exporter) Describe(chan<- *prometheus.Desc) {}

// Collect sends every gauge set.
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, g := range e.values {
		names := slices.Sorted(maps.Keys(g.labels))
		values := make([]string, len(names))
		for i, n := range names {
			values[i] = g.labels[n]
		}
		desc := prometheus.NewDesc(g.name, "set by the test", names, nil)
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, g.value, values...)
	}
}
