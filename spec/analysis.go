package spec

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/prometheus/prometheus/promql/parser"

	"github.com/baton-fleet/baton/internal/redact"
	"github.com/baton-fleet/baton/internal/yamldoc"
)

// Analysis defaults, used when service.yaml leaves a knob out.
const (
	DefaultAnalysisInterval = 10 * time.Second
	DefaultAnalysisTimeout  = 5 * time.Second
	DefaultAnalysisFailures = 2
	DefaultGateTimeout      = 5 * time.Second
)

// What an empty query result means to an analysis check (PrometheusCheck.NoData).
const (
	NoDataWait = "wait" // not counted: neither a pass nor a failure (the default)
	NoDataFail = "fail" // counted as a failure
	NoDataPass = "pass" // counted as a pass
)

// Analysis is what a host's metrics must show while it serves real traffic, after its
// checks passed and it is back in its load balancer, before the upgrade commits.
type Analysis struct {
	Window yamldoc.Duration `yaml:"window" json:"window"` // how long the host serves before it commits
	Checks []AnalysisCheck  `yaml:"checks" json:"checks"`
}

// AnalysisCheck is one query evaluated every Interval during the window; Failures
// failures in a row fail the upgrade.
type AnalysisCheck struct {
	Name       string           `yaml:"name" json:"name"`
	Prometheus *PrometheusCheck `yaml:"prometheus" json:"prometheus"`
	Interval   yamldoc.Duration `yaml:"interval" json:"interval"`
	Timeout    yamldoc.Duration `yaml:"timeout" json:"timeout"` // of one query (and its baseline)
	Failures   int              `yaml:"failures" json:"failures"`
}

// PrometheusCheck is an instant query whose value must lie within Min and Max, and,
// with a Baseline query, whose ratio to the baseline's value must not pass MaxRatio.
type PrometheusCheck struct {
	URL       string   `yaml:"url" json:"url"`     // template: the Prometheus server, http or https
	Query     string   `yaml:"query" json:"query"` // template: PromQL
	Min       *float64 `yaml:"min" json:"min,omitempty"`
	Max       *float64 `yaml:"max" json:"max,omitempty"`
	NoData    string   `yaml:"noData" json:"noData"`
	Baseline  string   `yaml:"baseline" json:"baseline,omitempty"` // template: PromQL
	MaxRatio  *float64 `yaml:"maxRatio" json:"maxRatio,omitempty"`
	TokenFile string   `yaml:"tokenFile" json:"tokenFile,omitempty"` // a bearer token, read at each query
	CAFile    string   `yaml:"caFile" json:"caFile,omitempty"`       // https: the CA, instead of the system's
}

// Gate holds a group's new upgrades while its query returns anything.
type Gate struct {
	Prometheus *PrometheusGate `yaml:"prometheus" json:"prometheus,omitempty"`
}

// PrometheusGate is the gate's query; any series in its result holds the group.
type PrometheusGate struct {
	URL       string           `yaml:"url" json:"url"`
	Query     string           `yaml:"query" json:"query"`
	Timeout   yamldoc.Duration `yaml:"timeout" json:"timeout"`
	TokenFile string           `yaml:"tokenFile" json:"tokenFile,omitempty"`
	CAFile    string           `yaml:"caFile" json:"caFile,omitempty"`
}

// ParsePromQL parses a query with Prometheus' own parser, so that a query Prometheus
// would refuse is refused before it reaches a host. Its error names the line and
// column within the query (a query may span lines of a YAML block).
func ParsePromQL(q string) error {
	if strings.TrimSpace(q) == "" {
		return fmt.Errorf("required: a PromQL query")
	}
	_, err := parser.ParseExpr(q)
	if err == nil {
		return nil
	}
	var list parser.ParseErrors
	if errors.As(err, &list) && len(list) > 0 {
		e := list[0]
		start := min(max(int(e.PositionRange.Start), 0), len(q))
		line := 1 + strings.Count(q[:start], "\n")
		col := 1 + start - (strings.LastIndex(q[:start], "\n") + 1)
		return fmt.Errorf("not valid PromQL: line %d, column %d of the query: %s", line, col, oneLine(e.Err.Error()))
	}
	return fmt.Errorf("not valid PromQL: %s", oneLine(err.Error()))
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func (s *Service) checkAnalysis(doc *yamldoc.Doc) yamldoc.Errors {
	a := s.Analysis
	if a == nil {
		return nil
	}
	var errs yamldoc.Errors
	switch {
	case !doc.Has("analysis", "window"):
		errs.Add(doc.At("analysis").Errorf("analysis.window: required: how long the host serves real traffic before it commits, such as 2m"))
	case a.Window <= 0:
		errs.Add(doc.At("analysis", "window").Errorf("analysis.window: must be longer than 0"))
	}
	if len(a.Checks) == 0 {
		errs.Add(doc.At("analysis").Errorf("analysis.checks: at least one check is required"))
	}
	names := map[string]bool{}
	for i := range a.Checks {
		c := &a.Checks[i]
		at := func(p ...any) yamldoc.Pos { return doc.At(append([]any{"analysis", "checks", i}, p...)...) }
		switch {
		case !checkRE.MatchString(c.Name):
			errs.Add(at("name").Errorf("analysis.checks: name: %q: use letters, digits and ._-", c.Name))
		case names[c.Name]:
			errs.Add(at("name").Errorf("analysis.checks: %q is defined twice", c.Name))
		}
		names[c.Name] = true
		errs = append(errs, c.checkKnobs(doc, i)...)
		if c.Prometheus == nil {
			errs.Add(at().Errorf("analysis check %q: prometheus: required", c.Name))
			continue
		}
		errs = append(errs, c.Prometheus.check(c.Name, func(k string) yamldoc.Pos { return at("prometheus", k) })...)
	}
	return errs
}

// checkKnobs sets the defaults of interval, timeout and failures, and checks them.
func (c *AnalysisCheck) checkKnobs(doc *yamldoc.Doc, i int) yamldoc.Errors {
	has := func(k string) bool { return doc.Has("analysis", "checks", i, k) }
	at := func(k string) yamldoc.Pos { return doc.At("analysis", "checks", i, k) }
	var errs yamldoc.Errors
	durations := []struct {
		key string
		v   *yamldoc.Duration
		def time.Duration
	}{{"interval", &c.Interval, DefaultAnalysisInterval}, {"timeout", &c.Timeout, DefaultAnalysisTimeout}}
	for _, d := range durations {
		if !has(d.key) {
			*d.v = yamldoc.Duration(d.def)
		} else if *d.v <= 0 {
			errs.Add(at(d.key).Errorf("analysis check %q: %s: must be longer than 0", c.Name, d.key))
		}
	}
	if !has("failures") {
		c.Failures = DefaultAnalysisFailures
	} else if c.Failures < 1 {
		errs.Add(at("failures").Errorf("analysis check %q: failures: must be at least 1, got %d", c.Name, c.Failures))
	}
	return errs
}

// check checks the query's bounds, noData, server and queries (those not templates:
// a template is checked once rendered).
func (p *PrometheusCheck) check(name string, at func(string) yamldoc.Pos) yamldoc.Errors {
	var errs yamldoc.Errors
	fail := func(k, format string, args ...any) {
		errs.Add(at(k).Errorf("analysis check %q: prometheus.%s: %s", name, k, fmt.Sprintf(format, args...)))
	}
	if p.Min == nil && p.Max == nil && p.MaxRatio == nil {
		errs.Add(at("query").Errorf("analysis check %q: prometheus: set a bound: min, max, or baseline and maxRatio", name))
	}
	for k, v := range map[string]*float64{"min": p.Min, "max": p.Max, "maxRatio": p.MaxRatio} {
		if v != nil && (math.IsNaN(*v) || math.IsInf(*v, 0)) {
			fail(k, "%v is not a finite number", *v)
		}
	}
	if p.Min != nil && p.Max != nil && *p.Min > *p.Max {
		fail("min", "%v is above max %v: no value could pass", *p.Min, *p.Max)
	}
	switch {
	case p.MaxRatio != nil && p.Baseline == "":
		fail("maxRatio", "needs a baseline query to divide by")
	case p.MaxRatio == nil && p.Baseline != "":
		fail("baseline", "needs maxRatio, the ratio not to pass")
	case p.MaxRatio != nil && *p.MaxRatio <= 0:
		fail("maxRatio", "must be above 0, got %v", *p.MaxRatio)
	}
	switch p.NoData {
	case "":
		p.NoData = NoDataWait
	case NoDataWait, NoDataFail, NoDataPass:
	default:
		fail("noData", "%q is not one of wait, fail, pass", p.NoData)
	}
	for _, e := range checkPrometheusServer(p.URL, p.TokenFile, p.CAFile) {
		fail(e.key, "%v", e.err)
	}
	for k, q := range map[string]string{"query": p.Query, "baseline": p.Baseline} {
		if k == "query" || q != "" {
			if err := checkQuery(q); err != nil {
				fail(k, "%v", err)
			}
		}
	}
	errs.Sort()
	return errs
}

// checkQuery parses q unless it is a template, which is parsed once rendered.
func checkQuery(q string) error {
	if strings.Contains(q, "{{") {
		return nil
	}
	return ParsePromQL(q)
}

type keyErr struct {
	key string
	err error
}

// checkPrometheusServer checks a Prometheus server's URL (unless it is a template,
// checked once rendered) and the files of its token and CA: absolute paths.
func checkPrometheusServer(rawURL, tokenFile, caFile string) []keyErr {
	var errs []keyErr
	if err := checkPrometheusURL(rawURL); err != nil {
		errs = append(errs, keyErr{"url", err})
	}
	for k, f := range map[string]string{"tokenFile": tokenFile, "caFile": caFile} {
		if f != "" && !path.IsAbs(f) {
			errs = append(errs, keyErr{k, fmt.Errorf("%q: must be an absolute path on the host", f)})
		}
	}
	return errs
}

// checkPrometheusURL checks the base URL of a Prometheus server: http or https, a
// host, and no user, query or fragment (a token goes in tokenFile).
func checkPrometheusURL(s string) error {
	if strings.Contains(s, "{{") {
		return nil // checked after rendering
	}
	if u, err := url.Parse(s); err == nil && u.User != nil {
		return fmt.Errorf("credentials in the URL are refused; put a bearer token in a file named by tokenFile")
	}
	if err := checkHTTPURL(s); err != nil {
		return err
	}
	if u, _ := url.Parse(s); u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%s: the server's base URL takes no query or fragment (a token goes in tokenFile)", redact.URL(s))
	}
	return nil
}

// checkGate sets the gate's defaults and checks it.
func checkGate(doc *yamldoc.Doc, i int, g *Gate) yamldoc.Errors {
	if g == nil {
		return nil
	}
	at := func(p ...any) yamldoc.Pos {
		return doc.At(append([]any{"groups", i, "rollout", "gate"}, p...)...)
	}
	p := g.Prometheus
	if p == nil {
		return yamldoc.Errors{at().Errorf("rollout.gate: set prometheus")}
	}
	var errs yamldoc.Errors
	fail := func(k string, err error) {
		errs.Add(at("prometheus", k).Errorf("rollout.gate.prometheus.%s: %v", k, err))
	}
	for _, e := range checkPrometheusServer(p.URL, p.TokenFile, p.CAFile) {
		fail(e.key, e.err)
	}
	if strings.Contains(p.URL, "{{") {
		fail("url", fmt.Errorf("fleet.yaml is not a template"))
	}
	if err := ParsePromQL(p.Query); err != nil {
		fail("query", err)
	}
	if !doc.Has("groups", i, "rollout", "gate", "prometheus", "timeout") {
		p.Timeout = yamldoc.Duration(DefaultGateTimeout)
	} else if p.Timeout <= 0 {
		fail("timeout", fmt.Errorf("must be longer than 0"))
	}
	errs.Sort()
	return errs
}

// renderAnalysis renders the templates of the analysis checks and checks what only
// rendering can: the URL and the queries.
func (r *renderer) renderAnalysis(a *Analysis) *Analysis {
	if a == nil {
		return nil
	}
	out := *a
	out.Checks = make([]AnalysisCheck, len(a.Checks))
	for i, c := range a.Checks {
		out.Checks[i] = c
		if c.Prometheus == nil {
			continue
		}
		p := *c.Prometheus
		at := func(k string) []any { return []any{"analysis", "checks", i, "prometheus", k} }
		fields := []struct {
			key string
			v   *string
		}{{"url", &p.URL}, {"query", &p.Query}, {"baseline", &p.Baseline}}
		for _, f := range fields {
			raw := *f.v
			*f.v = r.str(raw, at(f.key)...)
			if !strings.Contains(raw, "{{") || *f.v == "" {
				continue // checked when parsed, or not rendered
			}
			check := ParsePromQL
			if f.key == "url" {
				check = checkPrometheusURL
			}
			if err := check(*f.v); err != nil {
				r.errs.Add(r.doc.At(at(f.key)...).Errorf("analysis check %q: prometheus.%s: %v", c.Name, f.key, err))
			}
		}
		out.Checks[i].Prometheus = &p
	}
	return &out
}
