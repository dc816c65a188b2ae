package analysis

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
)

// alertsAnswer is an answer of n firing alerts, as Prometheus writes it.
func alertsAnswer(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"status":"success","data":{"resultType":"vector","result":[`)
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"metric":{"__name__":"ALERTS","alertname":"DiskFull","alertstate":"firing","instance":"db-%04d","job":"node","severity":"page"},"value":[1767323045.123,"1"]}`, i)
	}
	b.WriteString(`]}}`)
	return []byte(b.String())
}

// BenchmarkParseAnswer reads an answer of 1,000 series (a gate over a fleet in
// trouble); it reports the answer's size.
func BenchmarkParseAnswer(b *testing.B) {
	body := alertsAnswer(1000)
	b.SetBytes(int64(len(body)))
	b.ReportMetric(float64(len(body)), "answer-bytes")
	for b.Loop() {
		if v, err := ParseAnswer(200, body); err != nil || len(v) != 1000 {
			b.Fatal(v, err)
		}
	}
}

// BenchmarkGateText names the series of 1,000 firing alerts, as a held gate does.
func BenchmarkGateText(b *testing.B) {
	v, err := ParseAnswer(200, alertsAnswer(1000))
	if err != nil {
		b.Fatal(err)
	}
	fixed := fixedLabels(`ALERTS{alertstate="firing",severity="page"}`)
	for b.Loop() {
		for _, s := range v {
			_ = seriesString(s.Metric, fixed)
		}
	}
}

// BenchmarkJudge is the decision on one answer, without I/O.
func BenchmarkJudge(b *testing.B) {
	c := Check{Name: "latency", Baseline: "b", MaxRatio: ptr(1.5), Max: ptr(2)}
	a := Answer{Query: Vector{{Metric: model.Metric{}, Value: 0.2}}, Baseline: Vector{{Metric: model.Metric{}, Value: 0.18}}}
	for b.Loop() {
		if s := Judge(c, a); s.Verdict != Pass {
			b.Fatal(s)
		}
	}
}
