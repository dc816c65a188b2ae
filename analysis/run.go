package analysis

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/baton-fleet/baton/checks"
	"github.com/baton-fleet/baton/spec"
)

// Outcome is how an analysis ended.
type Outcome int

// Outcomes of an analysis.
const (
	Passed       Outcome = iota // every check passed at the end of the window
	Failed                      // a check failed its failures in a row: the release is at fault
	Inconclusive                // a check had no data to the end, with noData: wait: the release is not blamed
)

var outcomeNames = [...]string{Passed: "passed", Failed: "failed", Inconclusive: "inconclusive"}

func (o Outcome) String() string { return outcomeNames[o] }

// Result is how an analysis ended and what each check last said.
type Result struct {
	Outcome Outcome
	Last    []Sample // the last sample of each check, in the order of the checks
	Decided *Sample  // the sample that decided a Failed or Inconclusive outcome
}

// String is the result on one line:
//
//	analysis passed: errors: 0.002 <= max 0.01; latency-vs-fleet: 0.21 / baseline 0.2 = 1.05 <= maxRatio 1.5
//	analysis failed: errors: 0.034 > max 0.01 (2 of 2 failures)
//	analysis inconclusive: errors: no data (prometheus unreachable: ...; noData: wait)
func (r Result) String() string {
	if r.Decided != nil {
		return fmt.Sprintf("analysis %s: %s", r.Outcome, r.Decided)
	}
	texts := make([]string, len(r.Last))
	for i, s := range r.Last {
		texts[i] = s.String()
	}
	return fmt.Sprintf("analysis %s: %s", r.Outcome, strings.Join(texts, "; "))
}

// Fields are the result for an event's fields: the outcome, and the deciding (or,
// for a pass, the first) check's sample.
func (r Result) Fields() map[string]string {
	f := map[string]string{}
	switch {
	case r.Decided != nil:
		f = r.Decided.Fields()
	case len(r.Last) > 0:
		f = r.Last[0].Fields()
	}
	f["outcome"] = r.Outcome.String()
	return f
}

// Run is one analysis of a host: the checks of the services it changed, each
// evaluated every Interval from the start, for its service's window (or Window).
//
// A check fails the analysis at once when it fails Failures times in a row (a pass
// resets the count; no data with noData: wait leaves it as it was). No data is an
// empty answer, or no answer at all (Prometheus down): noData: fail counts it as a
// failure, noData: pass as a pass. When the window ends, a check whose last
// evaluation passed is done; one that did not pass last goes on, for at most Failures
// more intervals, until it passes or fails: so a release failing as the window closes
// is still caught. A check that still has no data then (noData: wait) makes the
// analysis Inconclusive: Prometheus down, or no traffic to judge, is not the
// release's fault, and not a pass either.
type Run struct {
	Window time.Duration // of the checks that have none of their own
	Checks []Check
	Clock  checks.Clock
	// Report, when set, is called with each sample as it is taken, in the goroutine
	// of Analyze: for status, events, metrics and the journal.
	Report func(Sample)
	// Hold, when set, keeps every check going past its window until it is closed: a
	// canary's analysis runs through the group's canaryPause (closed when the pause
	// ends, or at `baton promote`). A failure still ends the run at once. Its closing
	// is seen at the next evaluation; the windows then end no sooner than that.
	Hold <-chan struct{}
}

// checkState is where one check of a run stands.
type checkState struct {
	check    Check
	next     time.Time // when it is evaluated next
	failures int       // in a row
	last     *Sample
	done     bool
}

// Analyze runs the analysis to its outcome. It returns an error only when ctx ends
// first; a crash or an error leaves nothing to resume but the run itself: a resumed
// analysis starts its window over.
func (r *Run) Analyze(ctx context.Context) (Result, error) {
	start := r.Clock.Now()
	states := make([]*checkState, len(r.Checks))
	for i, c := range r.Checks {
		c = withDefaults(c)
		if c.Window <= 0 {
			c.Window = r.Window
		}
		states[i] = &checkState{check: c, next: start.Add(c.Interval)}
	}
	held := r.Hold != nil
	for {
		st := earliest(states)
		if st == nil {
			return result(states), nil
		}
		if err := r.sleepUntil(ctx, st.next); err != nil {
			return Result{}, err
		}
		now := r.Clock.Now()
		s := Evaluate(ctx, st.check, st.failures, now)
		if ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
		if r.Report != nil {
			r.Report(s)
		}
		if held && released(r.Hold) {
			held = false
			for _, other := range states {
				other.check.Window = max(other.check.Window, now.Sub(start))
			}
		}
		elapsed := now.Sub(start)
		if over := st.record(s, !held && elapsed >= st.check.Window, !held && elapsed >= deadline(st.check)); over {
			return Result{Outcome: Failed, Last: lastSamples(states), Decided: st.last}, nil
		}
		st.next = st.next.Add(st.check.Interval)
	}
}

// released reports whether hold is closed.
func released(hold <-chan struct{}) bool {
	select {
	case <-hold:
		return true
	default:
		return false
	}
}

// withDefaults fills the knobs that a check built in code (rather than parsed by
// spec, which sets them) leaves at zero.
func withDefaults(c Check) Check {
	if c.Interval <= 0 {
		c.Interval = spec.DefaultAnalysisInterval
	}
	if c.Timeout <= 0 {
		c.Timeout = spec.DefaultAnalysisTimeout
	}
	if c.Failures < 1 {
		c.Failures = spec.DefaultAnalysisFailures
	}
	if c.NoData == "" {
		c.NoData = spec.NoDataWait
	}
	return c
}

// deadline is how long after the start c is evaluated at most: its window, then
// Failures more intervals for a check that did not pass last.
func deadline(c Check) time.Duration {
	return c.Window + time.Duration(c.Failures)*c.Interval
}

// record takes a sample; it reports whether the check failed the analysis.
func (st *checkState) record(s Sample, windowOver, pastDeadline bool) bool {
	st.last = &s
	switch s.Verdict {
	case Fail:
		st.failures = s.Failures
		if st.failures >= st.check.Failures {
			return true
		}
	case Pass:
		st.failures = 0
	}
	st.done = (windowOver && s.Verdict == Pass) || pastDeadline
	return false
}

// earliest is the check evaluated next, nil when all are done.
func earliest(states []*checkState) *checkState {
	var first *checkState
	for _, st := range states {
		if !st.done && (first == nil || st.next.Before(first.next)) {
			first = st
		}
	}
	return first
}

func (r *Run) sleepUntil(ctx context.Context, t time.Time) error {
	d := t.Sub(r.Clock.Now())
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-r.Clock.After(d):
		return nil
	}
}

// result is the outcome once every check is done: Inconclusive when one did not
// pass last, else Passed.
func result(states []*checkState) Result {
	res := Result{Outcome: Passed, Last: lastSamples(states)}
	for _, st := range states {
		if st.last == nil || st.last.Verdict != Pass {
			res.Outcome, res.Decided = Inconclusive, st.last
			break
		}
	}
	return res
}

func lastSamples(states []*checkState) []Sample {
	var out []Sample
	for _, st := range states {
		if st.last != nil {
			out = append(out, *st.last)
		}
	}
	return out
}

// ForServices makes one analysis of the rendered services a transaction changed
// (spec.Rendered.Analysis, by service name; those without analysis left out): their
// checks run side by side, each for its own service's window, and the first to fail
// ends it. There is one client for each Prometheus server the checks name. The
// caller sets Report, runs Analyze, then calls close, which releases the clients'
// connections. A nil run means no service has an analysis.
func ForServices(analyses map[string]*spec.Analysis, clock checks.Clock) (run *Run, close func(), err error) {
	clients := map[Server]*Client{}
	close = func() {
		for _, c := range clients {
			c.Close()
		}
	}
	for _, service := range slices.Sorted(maps.Keys(analyses)) {
		a := analyses[service]
		if a == nil {
			continue
		}
		if run == nil {
			run = &Run{Clock: clock}
		}
		run.Window = max(run.Window, a.Window.D())
		for _, c := range a.Checks {
			p := c.Prometheus
			s := Server{URL: p.URL, TokenFile: p.TokenFile, CAFile: p.CAFile}
			client, ok := clients[s]
			if !ok {
				if client, err = NewClient(s); err != nil {
					close()
					return nil, nil, fmt.Errorf("service %s: analysis check %s: %w", service, c.Name, err)
				}
				clients[s] = client
			}
			run.Checks = append(run.Checks, NewCheck(service, a, c, client))
		}
	}
	return run, close, nil
}
