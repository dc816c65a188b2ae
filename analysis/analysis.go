// Package analysis reads a host's metrics from Prometheus while the host serves real traffic, decides whether its release passes, and reads the fleet's gate on firing alerts.
package analysis

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/baton-fleet/baton/spec"
)

// Querier answers an instant query: a Prometheus server (Client), or a fake in tests
// of the logic. Its error is shown as why there was no data, so it says what failed
// ("prometheus unreachable: http://prometheus:9090: ...").
type Querier interface {
	Query(ctx context.Context, query string) (Vector, error)
}

// Check is one analysis check of a rendered service, ready to run.
type Check struct {
	Service  string // the service whose analysis it is
	Name     string
	Query    string
	Baseline string   // "" when there is none
	Min, Max *float64 // nil when unset
	MaxRatio *float64 // of Query to Baseline; nil when unset
	NoData   string   // spec.NoDataWait, NoDataFail or NoDataPass
	Interval time.Duration
	Timeout  time.Duration // of one evaluation: the query and its baseline
	Failures int           // failures in a row that fail the check
	Window   time.Duration // its service's window; 0: the Run's
	Server   Querier
}

// NewCheck makes the check c of the analysis a of a rendered service, asking server.
func NewCheck(service string, a *spec.Analysis, c spec.AnalysisCheck, server Querier) Check {
	p := c.Prometheus
	return Check{
		Service: service, Window: a.Window.D(), Name: c.Name, Query: p.Query, Baseline: p.Baseline,
		Min: p.Min, Max: p.Max, MaxRatio: p.MaxRatio, NoData: p.NoData,
		Interval: c.Interval.D(), Timeout: c.Timeout.D(), Failures: c.Failures,
		Server: server,
	}
}

// Verdict is what one evaluation of a check says.
type Verdict int

// Verdicts of an evaluation.
const (
	Pass Verdict = iota // within its bounds, or no data with noData: pass
	Fail                // out of its bounds, or no data with noData: fail
	Wait                // no data with noData: wait: neither a pass nor a failure
)

var verdictNames = [...]string{Pass: "pass", Fail: "fail", Wait: "wait"}

func (v Verdict) String() string { return verdictNames[v] }

// Sample is one evaluation of one check: a value, the bound it was held to, and the
// count of failures in a row so far.
type Sample struct {
	Service  string
	Check    string
	Verdict  Verdict
	Value    float64 // the query's value; NaN when it had none
	Baseline float64 // the baseline's value; NaN without one
	Bound    string  // the bound that decided: "min", "max" or "maxRatio"; "" when none did
	Limit    float64 // that bound's value
	Series   string  // the series whose value failed, when the query returned several
	// Reason is set when there was no data: why, and the noData that judged it.
	Reason string
	// Unanswered says that the no data was Prometheus not answering (unreachable, or
	// an error): judged by noData like an empty answer, and counted apart in metrics.
	Unanswered bool
	Failures   int // failures in a row, this one included
	Of         int // failures in a row that fail the check
	At         time.Time
}

// String is the sample as status, events and the journal show it:
//
//	errors: 0.034 > max 0.01 (2 of 2 failures)
//	latency-vs-fleet: 0.45 / baseline 0.15 = 3 > maxRatio 1.5 (1 of 2 failures)
//	errors: no data (empty result; noData: wait)
//	errors: no data (prometheus unreachable: http://prometheus:9090: Post "http://prometheus:9090/api/v1/query": dial tcp 10.0.0.9:9090: connect: connection refused; noData: fail) (2 of 2 failures)
func (s Sample) String() string {
	text := s.Check + ": "
	switch {
	case s.Reason != "":
		text += s.Reason
	case s.Bound == "maxRatio":
		text += fmt.Sprintf("%s / baseline %s = %s", num(s.Value), num(s.Baseline), num(s.Value/s.Baseline))
	default:
		text += num(s.Value)
	}
	if s.Series != "" {
		text += " for " + s.Series
	}
	if s.Bound != "" {
		op := map[string]string{"min": "<", "max": ">", "maxRatio": ">"}[s.Bound]
		if s.Verdict == Pass {
			op = map[string]string{"min": ">=", "max": "<=", "maxRatio": "<="}[s.Bound]
		}
		text += fmt.Sprintf(" %s %s %s", op, s.Bound, num(s.Limit))
	}
	if s.Verdict == Fail {
		text += fmt.Sprintf(" (%d of %d failures)", s.Failures, s.Of)
	}
	return text
}

// Fields are the sample for an event's fields: service, check, verdict, value, baseline,
// bound, limit, failures; a value the sample has not is left out.
func (s Sample) Fields() map[string]string {
	f := map[string]string{"service": s.Service, "check": s.Check, "verdict": s.Verdict.String(), "text": s.String()}
	if !math.IsNaN(s.Value) {
		f["value"] = num(s.Value)
	}
	if !math.IsNaN(s.Baseline) {
		f["baseline"] = num(s.Baseline)
	}
	if s.Bound != "" {
		f["bound"], f["limit"] = s.Bound, num(s.Limit)
	}
	if s.Of > 0 {
		f["failures"] = fmt.Sprintf("%d of %d", s.Failures, s.Of)
	}
	return f
}

// num writes a value with at most 4 significant digits: 0.034, 1.5, 1.235e+06.
func num(v float64) string { return strconv.FormatFloat(v, 'g', 4, 64) }

// Evaluate evaluates c once: it asks c.Server for the query (and the baseline), within
// c.Timeout, and judges the answer. failures is the count of failures in a row before
// this one.
func Evaluate(ctx context.Context, c Check, failures int, now time.Time) Sample {
	c = withDefaults(c)
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	q, qerr := c.Server.Query(ctx, c.Query)
	var b Vector
	var berr error
	if c.Baseline != "" && qerr == nil {
		b, berr = c.Server.Query(ctx, c.Baseline)
	}
	s := Judge(c, Answer{Query: q, QueryErr: qerr, Baseline: b, BaselineErr: berr})
	s.At, s.Of = now, c.Failures
	s.Failures = failures
	if s.Verdict == Fail {
		s.Failures++
	}
	return s
}

// Answer is what Prometheus answered to a check's query and baseline.
type Answer struct {
	Query       Vector
	QueryErr    error
	Baseline    Vector
	BaselineErr error
}

// Judge decides what an answer says of c: a pure function of the two. Whatever leaves
// it without one number to judge is no data, which c's noData decides: an empty
// answer; a NaN value (0/0: a rate of errors over no requests); an empty baseline, or
// a comparison of several series; and Prometheus not answering at all, which is no
// more a pass than an empty answer is.
func Judge(c Check, a Answer) Sample {
	s := Sample{Service: c.Service, Check: c.Name, Value: math.NaN(), Baseline: math.NaN()}
	if err := firstErr(a.QueryErr, a.BaselineErr); err != nil {
		s.Unanswered = true
		return noData(c, s, shorten(err.Error(), 512))
	}
	q := a.Query.numbers()
	if len(q) == 0 {
		return noData(c, s, emptyWhy(a.Query, "result"))
	}
	if c.Baseline == "" {
		return judgeBounds(c, s, q)
	}
	b := a.Baseline.numbers()
	switch {
	case len(q) > 1 || len(b) > 1:
		return noData(c, s, fmt.Sprintf("the query returned %d series and the baseline %d, a comparison needs one of each: aggregate with sum, avg or max", len(q), len(b)))
	case len(b) == 0:
		return noData(c, s, emptyWhy(a.Baseline, "baseline"))
	}
	s.Baseline = b[0].Value
	if s = judgeBounds(c, s, q); s.Verdict != Pass {
		return s
	}
	s.Bound, s.Limit = "maxRatio", *c.MaxRatio
	if ratio := s.Value / s.Baseline; !(ratio <= *c.MaxRatio) { // NaN and +Inf fail: a baseline of 0 under a value above 0
		if math.IsNaN(ratio) {
			return noData(c, s, "0 / baseline 0")
		}
		s.Verdict = Fail
	}
	return s
}

// emptyWhy says why an answer without numbers has none: "empty result", or "NaN
// result" when its series are all NaN.
func emptyWhy(v Vector, what string) string {
	if len(v) > 0 {
		return "NaN " + what
	}
	return "empty " + what
}

// judgeBounds holds every series of q to c's min and max: the first (in the order of
// their labels) out of them fails the check.
func judgeBounds(c Check, s Sample, q Vector) Sample {
	s.Value = q[0].Value
	for _, x := range q {
		switch {
		case c.Min != nil && x.Value < *c.Min:
			s.Bound, s.Limit = "min", *c.Min
		case c.Max != nil && x.Value > *c.Max:
			s.Bound, s.Limit = "max", *c.Max
		default:
			continue
		}
		s.Verdict, s.Value = Fail, x.Value
		if len(q) > 1 {
			s.Series = x.String()
		}
		return s
	}
	s.Verdict = Pass
	switch {
	case c.Max != nil:
		s.Bound, s.Limit = "max", *c.Max
	case c.Min != nil:
		s.Bound, s.Limit = "min", *c.Min
	}
	return s
}

// noData applies c's noData to an answer without a value, and says why it had none.
func noData(c Check, s Sample, why string) Sample {
	s.Bound, s.Limit = "", 0
	s.Reason = fmt.Sprintf("no data (%s; noData: %s)", why, c.NoData)
	switch c.NoData {
	case spec.NoDataFail:
		s.Verdict = Fail
	case spec.NoDataPass:
		s.Verdict = Pass
	default:
		s.Verdict = Wait
	}
	return s
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
