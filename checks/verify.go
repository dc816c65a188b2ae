package checks

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/baton-fleet/baton/spec"
)

// Cadence and bounds of the implicit checks.
const (
	pollInterval    = 250 * time.Millisecond // implicit checks read units this often
	unitReadTimeout = 5 * time.Second        // bound of one unit state read
)

// Verification says what Verify checks and for how long.
type Verification struct {
	Checks []spec.Check
	// Units were just restarted (or started): the implicit checks read them
	// through Systemd. A unit that is not a .service (a socket, a timer) is only
	// required to stay active.
	Units []string
	// Systemd reads the units' states. Nil: no implicit checks (Units is ignored).
	Systemd UnitStater
	// Jobs holds, by unit, the result of its restart job as systemd reported it
	// ("done", "failed", "timeout", "canceled", "dependency", "skipped"): anything
	// but "done" fails the verification at once. Nil: not checked.
	Jobs map[string]string
	// MinHealthy is how long every check must keep passing, and every unit stay
	// active, for the service to be healthy.
	MinHealthy time.Duration
	// Deadline is healthyDeadline: not healthy by then is a failure. 0: the default
	// of spec.
	Deadline time.Duration
	Clock    Clock // nil: RealClock
	// Progress, when set, is called on every implicit-check tick (about every
	// 250ms), from Verify's goroutine: it must return quickly.
	Progress func(Progress)
	Prober   *Prober // runs the checks; nil: a zero Prober
}

// Progress is how far a verification has come.
type Progress struct {
	Healthy    time.Duration // how long everything has been passing, 0 when not
	MinHealthy time.Duration
	Passing    int // checks passing and units up
	Total      int // checks and units
	Elapsed    time.Duration
}

// Report is the outcome of Verify.
type Report struct {
	OK bool
	// Reason is one line for an operator: why it failed, or "healthy for 10s".
	Reason string
	// Failed is the result that failed the verification, when one did; on a
	// deadline, the last result of the first check or unit not passing, or else
	// the result that last closed the healthy window.
	Failed *Result
	// Results holds the last result of every check, in order, then of every unit.
	Results []Result
	Elapsed time.Duration
}

// Verify runs the checks until the service is healthy or has failed.
//
// Every check runs at its own interval from the start, one probe at a time: the
// next starts an interval after the previous one started, or when it ends if it
// took longer. A check is passing once it has passed Successes times in a row,
// and stops passing at its first failure; Failures failures in a row fail the
// verification at once. The implicit checks read every unit at the start (their
// baseline) and about every 250ms, and fail the verification at once when a unit
// leaves the active state, restarts or changes its main PID (see unitWatch for the
// rules).
//
// The healthy window opens when every check is passing and every unit is active,
// and closes whenever that stops being true: a failed probe or a unit read that
// finds it not active (or fails) closes it, and it opens again only once the
// checks pass Successes times again. When it has stayed open MinHealthy, the
// units are read once more and the verification passes. When Deadline passes
// first, it fails naming what was not passing. When ctx ends, it fails with
// Reason "canceled". Every goroutine that Verify starts has ended when it returns.
func Verify(ctx context.Context, v Verification) Report {
	p := v.Prober
	if p == nil {
		p = &Prober{}
	}
	return newVerifier(v, p.Probe, false).run(ctx)
}

// verifier is the state of one Verify.
type verifier struct {
	v      Verification
	clock  Clock
	probe  func(context.Context, spec.Check) Result
	inline bool // run probes on the loop's goroutine, taking no clock time (tests)
	checks []*checkRun
	units  []*unitWatch
	start  time.Time

	open      bool      // the healthy window is open
	openedAt  time.Time // when it opened
	lastReset string    // why the window last closed
	resetBy   *Result   // the result that last closed it
}

// checkRun is the state of one check during a verification.
type checkRun struct {
	c         spec.Check
	name      string
	next      time.Time // when the next probe is due
	started   time.Time // when the probe in flight started
	running   bool
	successes int // in a row
	failures  int // in a row
	passing   bool
	ran       bool
	last      Result
}

type probeDone struct {
	c *checkRun
	r Result
}

func newVerifier(v Verification, probe func(context.Context, spec.Check) Result, inline bool) *verifier {
	vf := &verifier{v: v, clock: v.Clock, probe: probe, inline: inline}
	if vf.clock == nil {
		vf.clock = RealClock
	}
	if vf.v.Deadline <= 0 {
		vf.v.Deadline = spec.DefaultHealthyDeadline
	}
	vf.v.MinHealthy = max(vf.v.MinHealthy, 0)
	for _, c := range v.Checks {
		c = withDefaults(c)
		vf.checks = append(vf.checks, &checkRun{c: c, name: checkName(c)})
	}
	if v.Systemd != nil {
		seen := map[string]bool{}
		for _, u := range v.Units {
			if !seen[u] {
				seen[u] = true
				vf.units = append(vf.units, newUnitWatch(u))
			}
		}
	}
	return vf
}

func (vf *verifier) run(ctx context.Context) Report {
	vf.start = vf.clock.Now()
	if rep, failed := vf.checkJobs(); failed {
		return rep
	}
	for _, c := range vf.checks {
		c.next = vf.start
	}
	deadline := vf.start.Add(vf.v.Deadline)
	nextPoll := vf.start

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // runs first: ends the probes in flight
	done := make(chan probeDone, len(vf.checks))

	for {
		if ctx.Err() != nil {
			return vf.report(false, "canceled", nil)
		}
		now := vf.clock.Now()
		polled := false
		if !now.Before(nextPoll) {
			if rep, failed := vf.poll(ctx, now); failed {
				return rep
			}
			polled = true
			for !nextPoll.After(now) {
				nextPoll = nextPoll.Add(pollInterval)
			}
		}
		if rep, failed := vf.startDue(ctx, now, &wg, done); failed {
			return rep
		}
		vf.updateWindow(now)
		if rep, ended := vf.endIfHealthy(ctx, now, polled); ended {
			return rep
		}
		if !now.Before(deadline) {
			return vf.deadlineReport()
		}
		if polled && vf.v.Progress != nil {
			vf.v.Progress(vf.progress(now))
			if ctx.Err() != nil {
				continue // said at the top
			}
		}

		select {
		case <-ctx.Done():
		case d := <-done:
			if rep, failed := vf.record(d.c, d.r, vf.clock.Now()); failed {
				return rep
			}
		case <-vf.clock.After(vf.wakeAt(nextPoll, deadline).Sub(now)):
		}
	}
}

// startDue starts the probe of every check that is due and has none in flight:
// on a goroutine of its own, which sends the result on done, or inline, whose
// result is recorded at once and may fail the verification.
func (vf *verifier) startDue(ctx context.Context, now time.Time, wg *sync.WaitGroup, done chan<- probeDone) (Report, bool) {
	for _, c := range vf.checks {
		if c.running || now.Before(c.next) {
			continue
		}
		c.running, c.started = true, now
		if vf.inline {
			if rep, failed := vf.record(c, vf.probe(ctx, c.c), now); failed {
				return rep, true
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			done <- probeDone{c, vf.probe(ctx, c.c)}
		}()
	}
	return Report{}, false
}

// endIfHealthy passes the verification when the healthy window has stayed
// open MinHealthy. The units are read once more first, unless this tick just
// read them, so that a unit that went down since the last read is not missed:
// that read may fail the verification instead, or close the window, and then
// the verification goes on.
func (vf *verifier) endIfHealthy(ctx context.Context, now time.Time, polled bool) (Report, bool) {
	if !vf.open || now.Before(vf.openedAt.Add(vf.v.MinHealthy)) {
		return Report{}, false
	}
	if !polled && len(vf.units) > 0 {
		if rep, failed := vf.poll(ctx, now); failed {
			return rep, true
		}
		vf.updateWindow(now)
	}
	if vf.open && ctx.Err() == nil {
		return vf.report(true, fmt.Sprintf("healthy for %s", vf.v.MinHealthy), nil), true
	}
	return Report{}, false
}

// wakeAt is when the loop has something to do next: read the units, fail at the
// deadline, pass at the end of the healthy window, or start a probe.
func (vf *verifier) wakeAt(nextPoll, deadline time.Time) time.Time {
	wake := earliest(nextPoll, deadline)
	if vf.open {
		wake = earliest(wake, vf.openedAt.Add(vf.v.MinHealthy))
	}
	for _, c := range vf.checks {
		if !c.running {
			wake = earliest(wake, c.next)
		}
	}
	return wake
}

// checkJobs fails the verification when a restart job did not end "done".
func (vf *verifier) checkJobs() (Report, bool) {
	units := slices.Clone(vf.v.Units)
	var extra []string
	for u := range vf.v.Jobs {
		if !slices.Contains(units, u) {
			extra = append(extra, u)
		}
	}
	sort.Strings(extra)
	for _, u := range append(units, extra...) {
		job, ok := vf.v.Jobs[u]
		if !ok || job == "done" {
			continue
		}
		msg := fmt.Sprintf("%s restart job result is %s, want done", u, job)
		r := Result{Check: u, Output: "job " + job, Err: msg, At: vf.start}
		return vf.report(false, msg, &r), true
	}
	return Report{}, false
}

// poll reads every unit once.
func (vf *verifier) poll(ctx context.Context, now time.Time) (Report, bool) {
	for _, u := range vf.units {
		rctx, cancel := context.WithTimeout(ctx, unitReadTimeout)
		s, err := vf.v.Systemd.UnitState(rctx, u.name)
		cancel()
		r := Result{Check: u.name, At: now, Duration: vf.clock.Now().Sub(now)}
		if err != nil {
			if ctx.Err() != nil {
				return Report{}, false // canceled: said by the loop
			}
			u.fail(r, err)
			continue
		}
		if fatal := u.observe(r, s); fatal != "" {
			return vf.report(false, fatal, &u.last), true
		}
	}
	return Report{}, false
}

// record applies the result of a probe started at c.started.
func (vf *verifier) record(c *checkRun, r Result, now time.Time) (Report, bool) {
	r.Check, r.At = c.name, c.started
	c.running, c.ran, c.last = false, true, r
	c.next = c.started.Add(c.c.Interval.D())
	if c.next.Before(now) {
		c.next = now
	}
	if r.OK {
		c.failures = 0
		c.successes++
		c.passing = c.passing || c.successes >= c.c.Successes
		return Report{}, false
	}
	c.successes, c.passing = 0, false
	c.failures++
	if vf.open {
		vf.open = false
		vf.lastReset = fmt.Sprintf("check %s failed at %s: %s", c.name, c.started.Sub(vf.start), r.Err)
		vf.resetBy = &r
	}
	if c.failures < c.c.Failures {
		return Report{}, false
	}
	reason := fmt.Sprintf("check %s failed %s: %s", c.name, times(c.failures), r.Err)
	return vf.report(false, reason, &c.last), true
}

// updateWindow opens or closes the healthy window.
func (vf *verifier) updateWindow(now time.Time) {
	why := vf.notPassing()
	switch {
	case len(why) == 0 && !vf.open:
		vf.open, vf.openedAt = true, now
	case len(why) > 0 && vf.open:
		vf.open = false
		vf.lastReset = fmt.Sprintf("%s (at %s)", why[0], now.Sub(vf.start))
		vf.resetBy = nil
		for _, u := range vf.units {
			if !u.up {
				r := u.last
				vf.resetBy = &r
				break
			}
		}
	}
}

// notPassing says, for each check and unit not passing, why.
func (vf *verifier) notPassing() []string {
	var why []string
	for _, c := range vf.checks {
		if s := c.notPassing(); s != "" {
			why = append(why, s)
		}
	}
	for _, u := range vf.units {
		if s := u.notUp(); s != "" {
			why = append(why, s)
		}
	}
	return why
}

func (c *checkRun) notPassing() string {
	n := c.c.Successes
	switch {
	case c.passing:
		return ""
	case !c.ran:
		return fmt.Sprintf("check %s has no result yet", c.name)
	case c.last.OK:
		return fmt.Sprintf("check %s has passed only %d of %d times in a row", c.name, c.successes, n)
	case n == 1:
		return fmt.Sprintf("check %s has not passed (last: %s)", c.name, c.last.Err)
	}
	return fmt.Sprintf("check %s has not passed %d times in a row (last: %s)", c.name, n, c.last.Err)
}

func (vf *verifier) deadlineReport() Report {
	why := vf.notPassing()
	var failed *Result
	for _, c := range vf.checks {
		if !c.passing && c.ran {
			failed = &c.last
			break
		}
	}
	for _, u := range vf.units {
		if failed == nil && !u.up && u.read {
			failed = &u.last
		}
	}
	if failed == nil {
		failed = vf.resetBy
	}
	if len(why) == 0 {
		// Everything passes, but not for long enough: the window reopened late.
		healthy := vf.clock.Now().Sub(vf.openedAt)
		why = []string{fmt.Sprintf("passing for only %s of the %s minHealthy", healthy, vf.v.MinHealthy)}
	}
	reason := fmt.Sprintf("not healthy after %s: %s", vf.v.Deadline, strings.Join(why, "; "))
	if vf.lastReset != "" {
		reason += fmt.Sprintf("; the healthy window last closed when %s", vf.lastReset)
	}
	return vf.report(false, reason, failed)
}

func (vf *verifier) progress(now time.Time) Progress {
	p := Progress{MinHealthy: vf.v.MinHealthy, Total: len(vf.checks) + len(vf.units), Elapsed: now.Sub(vf.start)}
	if vf.open {
		p.Healthy = now.Sub(vf.openedAt)
	}
	for _, c := range vf.checks {
		if c.passing {
			p.Passing++
		}
	}
	for _, u := range vf.units {
		if u.up {
			p.Passing++
		}
	}
	return p
}

func (vf *verifier) report(ok bool, reason string, failed *Result) Report {
	rep := Report{OK: ok, Reason: reason, Elapsed: vf.clock.Now().Sub(vf.start)}
	if failed != nil {
		f := *failed
		rep.Failed = &f
	}
	for _, c := range vf.checks {
		r := c.last
		if !c.ran {
			r = Result{Check: c.name, Err: "no result yet"}
		}
		rep.Results = append(rep.Results, r)
	}
	for _, u := range vf.units {
		r := u.last
		if !u.read && r.Err == "" {
			r = Result{Check: u.name, Err: "state not read yet"}
		}
		rep.Results = append(rep.Results, r)
	}
	return rep
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
