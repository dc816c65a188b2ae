package analysis

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/baton-fleet/baton/spec"
)

// fastClock is a clock whose After returns at once, having moved the time on: the
// logic of a two-minute window runs in microseconds.
type fastClock struct{ now time.Time }

func (c *fastClock) Now() time.Time { return c.now }
func (c *fastClock) After(d time.Duration) <-chan time.Time {
	c.now = c.now.Add(d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

// script answers each query with the next of its answers, the last one again once
// they run out: a fake Prometheus for the logic's tests (the real one is in
// real_test.go).
type script map[string][]answerOrErr

type answerOrErr struct {
	v   Vector
	err error
}

func (s script) Query(_ context.Context, q string) (Vector, error) {
	list := s[q]
	if len(list) == 0 {
		return nil, errors.New("no such query in the script")
	}
	a := list[0]
	if len(list) > 1 {
		s[q] = list[1:]
	}
	return a.v, a.err
}

func val(v float64) answerOrErr { return answerOrErr{v: Vector{{Metric: model.Metric{}, Value: v}}} }

var (
	empty = answerOrErr{v: Vector{}}
	down  = answerOrErr{err: errors.New(`prometheus unreachable: http://prometheus:9090: Post "http://prometheus:9090/api/v1/query": dial tcp 127.0.0.1:9090: connect: connection refused`)}
)

func ptr(v float64) *float64 { return &v }

func errorsCheck(s script, noData string) Check {
	return Check{Name: "errors", Query: "errors", Max: ptr(0.01), NoData: noData,
		Interval: 10 * time.Second, Timeout: time.Second, Failures: 2, Server: s}
}

func analyze(t *testing.T, window time.Duration, cs ...Check) (Result, []Sample, time.Duration) {
	t.Helper()
	clock := &fastClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	start := clock.now
	var seen []Sample
	r := &Run{Window: window, Checks: cs, Clock: clock, Report: func(s Sample) { seen = append(seen, s) }}
	res, err := r.Analyze(context.Background())
	if err != nil {
		t.Fatalf("Analyze: %v", err)
	}
	return res, seen, clock.now.Sub(start)
}

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name    string
		answers []answerOrErr
		noData  string
		want    string
		samples int
		took    time.Duration
	}{
		{"good release passes the window", []answerOrErr{val(0.001)}, spec.NoDataWait,
			"analysis passed: errors: 0.001 <= max 0.01", 12, 2 * time.Minute},
		{"two failures in a row fail at once", []answerOrErr{val(0.001), val(0.034), val(0.034)}, spec.NoDataWait,
			"analysis failed: errors: 0.034 > max 0.01 (2 of 2 failures)", 3, 30 * time.Second},
		{"a pass between failures resets the count", []answerOrErr{val(0.02), val(0.001), val(0.02), val(0.001)}, spec.NoDataWait,
			"analysis passed: errors: 0.001 <= max 0.01", 12, 2 * time.Minute},
		{"no data is not counted with wait", []answerOrErr{val(0.02), empty, val(0.03)}, spec.NoDataWait,
			"analysis failed: errors: 0.03 > max 0.01 (2 of 2 failures)", 3, 30 * time.Second},
		{"no data fails with fail", []answerOrErr{empty}, spec.NoDataFail,
			"analysis failed: errors: no data (empty result; noData: fail) (2 of 2 failures)", 2, 20 * time.Second},
		{"no data passes with pass", []answerOrErr{empty}, spec.NoDataPass,
			"analysis passed: errors: no data (empty result; noData: pass)", 12, 2 * time.Minute},
		{"no data to the end is inconclusive with wait", []answerOrErr{empty}, spec.NoDataWait,
			"analysis inconclusive: errors: no data (empty result; noData: wait)", 14, 140 * time.Second},
		{"Prometheus down is no data: inconclusive with wait", []answerOrErr{val(0.001), down}, spec.NoDataWait,
			"analysis inconclusive: errors: no data (" + down.err.Error() + "; noData: wait)", 14, 140 * time.Second},
		{"Prometheus down is no data: failed with fail", []answerOrErr{val(0.001), down}, spec.NoDataFail,
			"analysis failed: errors: no data (" + down.err.Error() + "; noData: fail) (2 of 2 failures)", 3, 30 * time.Second},
		{"Prometheus down is no data: passed with pass", []answerOrErr{val(0.001), down}, spec.NoDataPass,
			"analysis passed: errors: no data (" + down.err.Error() + "; noData: pass)", 12, 2 * time.Minute},
		{"Prometheus down, then a bad value, with wait: the down neither counts nor resets", []answerOrErr{val(0.02), down, val(0.02)}, spec.NoDataWait,
			"analysis failed: errors: 0.02 > max 0.01 (2 of 2 failures)", 3, 30 * time.Second},
		{"Prometheus down between two bad values, with pass: the pass resets", []answerOrErr{val(0.02), down, val(0.02), val(0.001)}, spec.NoDataPass,
			"analysis passed: errors: 0.001 <= max 0.01", 12, 2 * time.Minute},
		{"Prometheus down while a bad value counts, with fail: they add up", []answerOrErr{val(0.02), down, val(0.001)}, spec.NoDataFail,
			"analysis failed: errors: no data (" + down.err.Error() + "; noData: fail) (2 of 2 failures)", 2, 20 * time.Second},
		{"Prometheus back before the end passes", []answerOrErr{down, down, down, val(0.001)}, spec.NoDataWait,
			"analysis passed: errors: 0.001 <= max 0.01", 12, 2 * time.Minute},
		{"Prometheus back before the end passes, with fail", []answerOrErr{down, val(0.001)}, spec.NoDataFail,
			"analysis passed: errors: 0.001 <= max 0.01", 12, 2 * time.Minute},
		{"a failure as the window ends is followed up", append(repeat(val(0.001), 11), val(0.02), val(0.02)), spec.NoDataWait,
			"analysis failed: errors: 0.02 > max 0.01 (2 of 2 failures)", 13, 130 * time.Second},
		{"NaN (0/0, no requests) is no data", []answerOrErr{val(math.NaN())}, spec.NoDataFail,
			"analysis failed: errors: no data (NaN result; noData: fail) (2 of 2 failures)", 2, 20 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, seen, took := analyze(t, 2*time.Minute, errorsCheck(script{"errors": tc.answers}, tc.noData))
			if got := res.String(); got != tc.want {
				t.Errorf("result:\n  %s\nwant\n  %s", got, tc.want)
			}
			if len(seen) != tc.samples || took != tc.took {
				t.Errorf("%d samples over %v, want %d over %v", len(seen), took, tc.samples, tc.took)
			}
		})
	}
}

func repeat(a answerOrErr, n int) []answerOrErr {
	out := make([]answerOrErr, n)
	for i := range out {
		out[i] = a
	}
	return out
}

// TestRunTwoChecks: each check keeps its own interval and count; the first to fail
// ends the analysis, and the result names it.
func TestRunTwoChecks(t *testing.T) {
	s := script{
		"errors":   {val(0.001)},
		"latency":  {val(0.2), val(0.2), val(0.45)},
		"baseline": {val(0.15)},
	}
	lat := Check{Name: "latency-vs-fleet", Query: "latency", Baseline: "baseline", MaxRatio: ptr(1.5),
		NoData: spec.NoDataWait, Interval: 15 * time.Second, Timeout: time.Second, Failures: 1, Server: s}
	res, seen, took := analyze(t, 2*time.Minute, errorsCheck(s, spec.NoDataWait), lat)
	want := "analysis failed: latency-vs-fleet: 0.45 / baseline 0.15 = 3 > maxRatio 1.5 (1 of 1 failures)"
	if res.Outcome != Failed || res.String() != want {
		t.Errorf("result = %s, want %s", res, want)
	}
	if took != 45*time.Second || len(seen) != 7 { // errors at 10, 20, 30, 40; latency at 15, 30, 45
		t.Errorf("%d samples over %v", len(seen), took)
	}
	if len(res.Last) != 2 || res.Last[0].Check != "errors" || res.Last[0].Verdict != Pass {
		t.Errorf("last samples = %v", res.Last)
	}
}

// TestRunServicesWindows: the checks of two services run side by side, each for its
// own service's window; the samples name their service.
func TestRunServicesWindows(t *testing.T) {
	s := script{"errors": {val(0.001)}, "slow": {val(0.1)}}
	api := errorsCheck(s, spec.NoDataWait)
	api.Service, api.Window = "api", time.Minute
	db := Check{Service: "db", Window: 3 * time.Minute, Name: "slow", Query: "slow", Max: ptr(1), Interval: 30 * time.Second, Timeout: time.Second, Failures: 1, Server: s}
	res, seen, took := analyze(t, 0, api, db)
	if res.Outcome != Passed || took != 3*time.Minute || len(seen) != 6+6 {
		t.Errorf("%s after %d samples over %v", res, len(seen), took)
	}
	if seen[0].Service != "api" || seen[len(seen)-1].Service != "db" || res.Last[1].Fields()["service"] != "db" {
		t.Errorf("samples name services %q ... %q", seen[0].Service, seen[len(seen)-1].Service)
	}
}

// TestRunHold: a canary's analysis goes on past its window while the hold is on (a
// failure still ends it), and ends its window no sooner than the hold's release.
func TestRunHold(t *testing.T) {
	hold := make(chan struct{})
	n := 0
	clock := &fastClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	start := clock.now
	r := &Run{Window: time.Minute, Checks: []Check{errorsCheck(script{"errors": {val(0.001)}}, spec.NoDataWait)}, Clock: clock, Hold: hold,
		Report: func(Sample) {
			if n++; n == 20 { // 200 s: the pause ends
				close(hold)
			}
		}}
	res, err := r.Analyze(context.Background())
	if err != nil || res.Outcome != Passed || n != 20 || clock.now.Sub(start) != 200*time.Second {
		t.Errorf("held run: %s, %v after %d samples over %v; want passed after 20 over 200s", res, err, n, clock.now.Sub(start))
	}

	failing := &Run{Window: time.Minute, Checks: []Check{errorsCheck(script{"errors": {val(0.001), val(0.5)}}, spec.NoDataWait)}, Clock: clock, Hold: make(chan struct{})}
	if res, _ := failing.Analyze(context.Background()); res.String() != "analysis failed: errors: 0.5 > max 0.01 (2 of 2 failures)" {
		t.Errorf("failing held run: %s", res)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := &Run{Window: time.Minute, Checks: []Check{errorsCheck(script{"errors": {val(0)}}, "")}, Clock: &fastClock{}}
	if _, err := r.Analyze(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Analyze after cancel = %v, want context.Canceled", err)
	}
}

// TestRunDefaults: a check built in code with its knobs left at zero runs with
// spec's defaults (an interval of 0 would never end).
func TestRunDefaults(t *testing.T) {
	res, seen, took := analyze(t, time.Minute, Check{Name: "errors", Query: "errors", Max: ptr(0.01), Server: script{"errors": {empty}}})
	want := "analysis inconclusive: errors: no data (empty result; noData: wait)"
	if res.String() != want || len(seen) != 8 || took != 80*time.Second { // every 10s for 1m, then 2 more
		t.Errorf("result %s after %d samples over %v, want %s after 8 over 1m20s", res, len(seen), took, want)
	}
}

func TestJudge(t *testing.T) {
	many := Vector{
		{Metric: model.Metric{"host": "a"}, Value: 0.001},
		{Metric: model.Metric{"host": "b"}, Value: 0.5},
	}
	check := Check{Name: "c", Min: ptr(0.0001), Max: ptr(0.01), NoData: spec.NoDataWait, Failures: 3}
	failing, passing := check, check
	failing.NoData, passing.NoData = spec.NoDataFail, spec.NoDataPass
	ratio := Check{Name: "r", MaxRatio: ptr(1.5), Baseline: "b", NoData: spec.NoDataWait, Failures: 3}
	for _, tc := range []struct {
		c    Check
		a    Answer
		want string
		v    Verdict
	}{
		{check, Answer{Query: Vector{{Value: 0.00001}}}, "c: 1e-05 < min 0.0001 (0 of 3 failures)", Fail},
		{check, Answer{Query: Vector{{Value: 0.005}}}, "c: 0.005 <= max 0.01", Pass},
		{check, Answer{Query: many}, `c: 0.5 for {host="b"} > max 0.01 (0 of 3 failures)`, Fail},
		{check, Answer{Query: Vector{}}, "c: no data (empty result; noData: wait)", Wait},
		{check, Answer{Query: Vector{{Value: math.NaN()}}}, "c: no data (NaN result; noData: wait)", Wait},
		{check, Answer{QueryErr: errors.New("prometheus unreachable: x")}, "c: no data (prometheus unreachable: x; noData: wait)", Wait},
		{failing, Answer{QueryErr: errors.New("prometheus error: x: HTTP 503")}, "c: no data (prometheus error: x: HTTP 503; noData: fail) (0 of 3 failures)", Fail},
		{passing, Answer{QueryErr: errors.New("prometheus unreachable: x")}, "c: no data (prometheus unreachable: x; noData: pass)", Pass},
		{ratio, Answer{Query: Vector{{Value: 0.2}}, Baseline: Vector{{Value: 0.2}}}, "r: 0.2 / baseline 0.2 = 1 <= maxRatio 1.5", Pass},
		{ratio, Answer{Query: Vector{{Value: 0.2}}, Baseline: Vector{{Value: 0}}}, "r: 0.2 / baseline 0 = +Inf > maxRatio 1.5 (0 of 3 failures)", Fail},
		{ratio, Answer{Query: Vector{{Value: 0}}, Baseline: Vector{{Value: 0}}}, "r: no data (0 / baseline 0; noData: wait)", Wait},
		{ratio, Answer{Query: Vector{{Value: 0.2}}, Baseline: Vector{}}, "r: no data (empty baseline; noData: wait)", Wait},
		{ratio, Answer{Query: Vector{{Value: 0.2}}, BaselineErr: errors.New("prometheus unreachable: timeout")}, "r: no data (prometheus unreachable: timeout; noData: wait)", Wait},
		{ratio, Answer{Query: many, Baseline: Vector{{Value: 1}}}, "r: no data (the query returned 2 series and the baseline 1, a comparison needs one of each: aggregate with sum, avg or max; noData: wait)", Wait},
	} {
		s := Judge(tc.c, tc.a)
		s.Of = tc.c.Failures
		if got := s.String(); got != tc.want || s.Verdict != tc.v {
			t.Errorf("Judge(%s, %+v) = %s (%v), want %s (%v)", tc.c.Name, tc.a, got, s.Verdict, tc.want, tc.v)
		}
	}
}

// TestNoAnswerIsOneBoundedLine: an error from outside shows on one line of bounded length.
func TestNoAnswerIsOneBoundedLine(t *testing.T) {
	s := Judge(Check{Name: "c", Max: ptr(1), NoData: spec.NoDataWait}, Answer{QueryErr: errors.New("a\nb " + strings.Repeat("x", 2000))})
	if got := s.String(); strings.Contains(got, "\n") || len(got) > 600 || !strings.HasPrefix(got, "c: no data (a b xxx") || !s.Unanswered {
		t.Errorf("sample text = %q", got)
	}
}

func TestResultFields(t *testing.T) {
	res, _, _ := analyze(t, time.Minute, errorsCheck(script{"errors": {val(0.034)}}, spec.NoDataWait))
	got := res.Fields()
	want := map[string]string{"outcome": "failed", "service": "", "check": "errors", "verdict": "fail", "value": "0.034", "bound": "max", "limit": "0.01",
		"failures": "2 of 2", "text": "errors: 0.034 > max 0.01 (2 of 2 failures)"}
	if len(got) != len(want) {
		t.Errorf("fields = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("fields[%s] = %q, want %q", k, got[k], v)
		}
	}
}
