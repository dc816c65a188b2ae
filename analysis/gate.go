package analysis

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/baton-fleet/baton/spec"
)

// Limits of how a held gate names its series.
const (
	GateShown     = 5   // series named; the others are counted
	SeriesShownAt = 200 // bytes of one series' name
)

// Gate holds a group's new upgrades while its query returns anything. It never stops
// an upgrade in flight: the caller asks it only before one starts.
type Gate struct {
	Query   string
	Timeout time.Duration
	Server  Querier
	fixed   map[string]bool // labels every series has by the query's own matchers
}

// NewGate makes the gate g of fleet.yaml, asking server.
func NewGate(g spec.PrometheusGate, server Querier) *Gate {
	return &Gate{Query: g.Query, Timeout: g.Timeout.D(), Server: server, fixed: fixedLabels(g.Query)}
}

// GateResult is what the gate said.
type GateResult struct {
	Held   bool
	Series []string // the series that hold it, sorted, at most GateShown
	More   int      // series that hold it beyond those named
	Err    error    // why Prometheus gave no answer: the gate holds
}

// String is the result as status, events and the journal show it:
//
//	open
//	held: ALERTS{alertname="DiskFull",instance="db-02"}
//	held: A{...}, B{...}, C{...}, D{...}, E{...} and 3 more
//	held: prometheus unreachable: http://prometheus:9090: ...
func (r GateResult) String() string {
	switch {
	case !r.Held:
		return "open"
	case r.Err != nil:
		return "held: " + r.Err.Error()
	}
	text := "held: " + strings.Join(r.Series, ", ")
	if r.More > 0 {
		text += fmt.Sprintf(" and %d more", r.More)
	}
	return text
}

// Check asks the gate's query once, within its timeout. Any series holds the gate;
// no answer holds it too (the safe side: a new upgrade waits for Prometheus).
func (g *Gate) Check(ctx context.Context) GateResult {
	timeout := g.Timeout
	if timeout <= 0 {
		timeout = spec.DefaultGateTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	v, err := g.Server.Query(ctx, g.Query)
	if err != nil {
		return GateResult{Held: true, Err: err}
	}
	if len(v) == 0 {
		return GateResult{}
	}
	names := make([]string, len(v))
	for i, s := range v {
		names[i] = shorten(seriesString(s.Metric, g.fixed), SeriesShownAt)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	r := GateResult{Held: true, Series: names[:min(len(names), GateShown)]}
	r.More = len(names) - len(r.Series)
	return r
}

// fixedLabels are the labels a query fixes with an equality matcher in every one of
// its selectors (alertstate="firing" in ALERTS{alertstate="firing"}): every series
// of its answer has them, so naming them again says nothing. A query that does not
// parse fixes none.
func fixedLabels(query string) map[string]bool {
	expr, err := parser.ParseExpr(query)
	if err != nil {
		return nil
	}
	var fixed map[string]bool
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		here := map[string]bool{}
		for _, m := range vs.LabelMatchers {
			if m.Type == labels.MatchEqual && m.Name != model.MetricNameLabel {
				here[m.Name] = true
			}
		}
		if fixed == nil {
			fixed = here
		} else {
			for k := range fixed {
				if !here[k] {
					delete(fixed, k)
				}
			}
		}
		return nil
	})
	return fixed
}

// seriesString writes m as PromQL does, without spaces and without the labels in
// hidden: ALERTS{alertname="DiskFull",instance="db-02"}.
func seriesString(m model.Metric, hidden map[string]bool) string {
	var b strings.Builder
	b.WriteString(string(m[model.MetricNameLabel]))
	var pairs []string
	for k, v := range m {
		if k != model.MetricNameLabel && !hidden[string(k)] {
			pairs = append(pairs, string(k)+"="+strconv.Quote(string(v)))
		}
	}
	slices.Sort(pairs)
	if len(pairs) > 0 || b.Len() == 0 {
		b.WriteString("{" + strings.Join(pairs, ",") + "}")
	}
	return b.String()
}

// GateFor makes the gate of a group's rollout (spec.Rollout.Gate) and its client;
// close releases the client's connections.
func GateFor(g *spec.Gate) (gate *Gate, close func(), err error) {
	p := g.Prometheus
	c, err := NewClient(Server{URL: p.URL, TokenFile: p.TokenFile, CAFile: p.CAFile})
	if err != nil {
		return nil, nil, fmt.Errorf("rollout.gate: %w", err)
	}
	return NewGate(*p, c), c.Close, nil
}
