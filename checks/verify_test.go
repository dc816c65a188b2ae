package checks

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/yamldoc"
	"github.com/baton-fleet/baton/spec"
)

// fakeClock is a clock whose After moves time forward at once: with probes that
// take no clock time, Verify then runs a whole simulated verification without
// sleeping.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func newFakeClock() *fakeClock { return &fakeClock{now: epoch} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

func (c *fakeClock) elapsed() time.Duration { return c.Now().Sub(epoch) }

// fakeSystemd answers UnitState from a function of the simulated time.
type fakeSystemd struct {
	clock *fakeClock
	state func(unit string, at time.Duration) (UnitState, error)
	reads int
}

func (f *fakeSystemd) UnitState(_ context.Context, unit string) (UnitState, error) {
	f.reads++
	return f.state(unit, f.clock.elapsed())
}

func running(pid uint32) UnitState {
	return UnitState{ActiveState: "active", SubState: "running", Result: "success", MainPID: pid}
}

// script is a fake probe: each check's outcomes in turn, repeating the last. An
// outcome is "" for a pass, or the error of a failure.
type script map[string][]string

func (s script) probe(counts map[string]int) func(context.Context, spec.Check) Result {
	return func(_ context.Context, c spec.Check) Result {
		outs := s[c.Name]
		n := counts[c.Name]
		counts[c.Name]++
		out := outs[min(n, len(outs)-1)]
		return Result{Check: c.Name, OK: out == "", Err: out, Output: "probe " + c.Name}
	}
}

func check(name string, interval time.Duration, successes, failures int) spec.Check {
	return spec.Check{Name: name, Exec: &spec.ExecCheck{Command: []string{"/bin/true"}},
		Interval: yamldoc.Duration(interval), Timeout: yamldoc.Duration(time.Second), Successes: successes, Failures: failures}
}

// simulate runs a verification in simulated time with scripted probes.
func simulate(t *testing.T, ctx context.Context, v Verification, s script) (Report, map[string]int) {
	t.Helper()
	counts := map[string]int{}
	rep := newVerifier(v, s.probe(counts), true).run(ctx)
	if rep.OK && rep.Failed != nil {
		t.Errorf("OK %v with Failed %v", rep.OK, rep.Failed)
	}
	return rep, counts
}

func TestVerifyHealthyAfterMinHealthy(t *testing.T) {
	clock := newFakeClock()
	sd := &fakeSystemd{clock: clock, state: func(string, time.Duration) (UnitState, error) { return running(812), nil }}
	v := Verification{
		Checks:     []spec.Check{check("health", time.Second, 3, 3), check("port", 2*time.Second, 1, 3)},
		Units:      []string{"api.service", "api.socket"},
		Systemd:    sd,
		MinHealthy: 10 * time.Second,
		Deadline:   time.Minute,
		Clock:      clock,
	}
	rep, counts := simulate(t, context.Background(), v, script{"health": {""}, "port": {""}})
	if !rep.OK || rep.Reason != "healthy for 10s" {
		t.Fatalf("got OK %v, Reason %q; want healthy", rep.OK, rep.Reason)
	}
	// health passes at 0s, 1s, 2s: the window opens at 2s and lasts 10s.
	if rep.Elapsed != 12*time.Second {
		t.Errorf("Elapsed = %s, want 12s", rep.Elapsed)
	}
	if counts["health"] != 13 || counts["port"] != 7 {
		t.Errorf("probes run: %v, want health 13 (0..12s), port 7 (0..12s every 2s)", counts)
	}
	var names []string
	for _, r := range rep.Results {
		names = append(names, r.Check)
		if !r.OK {
			t.Errorf("result %+v not OK", r)
		}
	}
	if want := []string{"health", "port", "api.service", "api.socket"}; !slices.Equal(names, want) {
		t.Errorf("Results of %v, want %v", names, want)
	}
	if r := rep.Results[0]; r.At != epoch.Add(12*time.Second) || r.Output != "probe health" {
		t.Errorf("last health result %+v: want the probe of 12s", r)
	}
}

func TestVerifyFailuresInARow(t *testing.T) {
	clock := newFakeClock()
	v := Verification{Checks: []spec.Check{check("health", time.Second, 3, 3)}, MinHealthy: 10 * time.Second, Deadline: time.Minute, Clock: clock}
	bad := "GET http://127.0.0.1:8080/healthz: status 503, want 200"
	// One failure and two are forgiven; three in a row are not.
	rep, _ := simulate(t, context.Background(), v, script{"health": {"", bad, "", bad, bad, "", bad, bad, bad}})
	want := "check health failed 3 times in a row: " + bad
	if rep.OK || rep.Reason != want {
		t.Fatalf("got OK %v, Reason %q\nwant %q", rep.OK, rep.Reason, want)
	}
	if rep.Failed == nil || rep.Failed.Check != "health" || rep.Failed.Err != bad || rep.Failed.At != epoch.Add(8*time.Second) {
		t.Errorf("Failed = %+v, want the health probe of 8s", rep.Failed)
	}
	if rep.Elapsed != 8*time.Second {
		t.Errorf("Elapsed = %s, want 8s", rep.Elapsed)
	}

	v.Checks = []spec.Check{check("health", time.Second, 1, 1)}
	rep, _ = simulate(t, context.Background(), v, script{"health": {"", bad}})
	if want := "check health failed once: " + bad; rep.Reason != want {
		t.Errorf("Reason %q, want %q", rep.Reason, want)
	}
}

func TestVerifyFlappingCheckMissesDeadline(t *testing.T) {
	clock := newFakeClock()
	v := Verification{Checks: []spec.Check{check("health", time.Second, 3, 3)}, MinHealthy: 10 * time.Second, Deadline: time.Minute, Clock: clock}
	// Passing from 2s, failing once every 8 probes: never 10s in a row.
	bad := "GET http://127.0.0.1:8080/healthz: status 503, want 200"
	var flap []string
	for range 10 {
		flap = append(flap, "", "", "", "", "", "", "", bad)
	}
	var progress []Progress
	v.Progress = func(p Progress) { progress = append(progress, p) }
	rep, _ := simulate(t, context.Background(), v, script{"health": flap})
	if rep.OK || rep.Elapsed != time.Minute {
		t.Fatalf("got OK %v after %s (%s); want failed at the deadline", rep.OK, rep.Elapsed, rep.Reason)
	}
	// At 60s, the probes of 56..60s passed: 5 in a row, passing for 2s.
	want := "not healthy after 1m0s: passing for only 2s of the 10s minHealthy; " +
		"the healthy window last closed when check health failed at 55s: " + bad
	if rep.Reason != want {
		t.Errorf("Reason %q\nwant   %q", rep.Reason, want)
	}
	if rep.Failed == nil || rep.Failed.Err != bad || rep.Failed.At != epoch.Add(55*time.Second) {
		t.Errorf("Failed = %+v, want the probe of 55s that closed the window", rep.Failed)
	}
	longest := time.Duration(0)
	for _, p := range progress {
		longest = max(longest, p.Healthy)
	}
	if longest != 4*time.Second+750*time.Millisecond {
		t.Errorf("longest healthy stretch seen by Progress: %s, want 4.75s (opens at the 3rd pass, closes at the 8th probe)", longest)
	}

	// Failing at the deadline: the reason names the check and its last error.
	var fail []string
	for range 10 {
		fail = append(fail, "", "", "", "", bad, "", "", bad)
	}
	rep, _ = simulate(t, context.Background(), v, script{"health": fail})
	// The probe of 60s, the 5th of its round of 8, fails, after 3 passes (56..58s).
	want = "not healthy after 1m0s: check health has not passed 3 times in a row (last: " + bad + "); " +
		"the healthy window last closed when check health failed at 1m0s: " + bad
	if rep.OK || rep.Reason != want {
		t.Errorf("Reason %q\nwant   %q", rep.Reason, want)
	}
	if rep.Failed == nil || rep.Failed.Err != bad {
		t.Errorf("Failed = %+v, want the last health result", rep.Failed)
	}
}

func TestVerifyUnits(t *testing.T) {
	tests := []struct {
		name   string
		state  func(unit string, at time.Duration) (UnitState, error)
		units  []string
		reason string // "" for healthy
		at     time.Duration
	}{
		{
			name: "NRestarts grows",
			state: func(_ string, at time.Duration) (UnitState, error) {
				s := running(812)
				if at >= 5*time.Second {
					s.NRestarts, s.MainPID = 1, 845
				}
				return s, nil
			},
			reason: "api.service restarted (NRestarts 0 -> 1)", at: 5 * time.Second,
		},
		{
			name: "main PID changes",
			state: func(_ string, at time.Duration) (UnitState, error) {
				if at >= 3*time.Second {
					return running(845), nil
				}
				return running(812), nil
			},
			reason: "api.service main PID changed 812 -> 845", at: 3 * time.Second,
		},
		{
			name: "unit fails",
			state: func(_ string, at time.Duration) (UnitState, error) {
				if at >= 4*time.Second {
					return UnitState{ActiveState: "failed", SubState: "failed", Result: "exit-code"}, nil
				}
				return running(812), nil
			},
			reason: "api.service is failed (Result exit-code)", at: 4 * time.Second,
		},
		{
			name: "crashed, waiting to be restarted",
			state: func(_ string, at time.Duration) (UnitState, error) {
				if at >= 4*time.Second {
					return UnitState{ActiveState: "activating", SubState: "auto-restart", Result: "signal", MainPID: 0}, nil
				}
				return running(812), nil
			},
			reason: "api.service exited and waits to be restarted (Result signal)", at: 4 * time.Second,
		},
		{
			name: "activating at first: main PID settles when active",
			state: func(_ string, at time.Duration) (UnitState, error) {
				if at < 2*time.Second {
					return UnitState{ActiveState: "activating", SubState: "start", MainPID: uint32(at / time.Millisecond)}, nil
				}
				return running(900), nil
			},
			at: 12 * time.Second,
		},
		{
			name: "oneshot with RemainAfterExit: main PID 0 throughout",
			state: func(string, time.Duration) (UnitState, error) {
				return UnitState{ActiveState: "active", SubState: "exited", Result: "success"}, nil
			},
			at: 10 * time.Second,
		},
		{
			name: "main PID gone while still active",
			state: func(_ string, at time.Duration) (UnitState, error) {
				if at >= time.Second {
					return UnitState{ActiveState: "active", SubState: "exited", Result: "success"}, nil
				}
				return running(812), nil
			},
			reason: "api.service main PID changed 812 -> 0", at: time.Second,
		},
		{
			name:  "socket: only stays active",
			units: []string{"api.socket"},
			state: func(_ string, at time.Duration) (UnitState, error) {
				return UnitState{ActiveState: "active", SubState: "listening", NRestarts: uint32(at / time.Second), MainPID: uint32(at)}, nil
			},
			at: 10 * time.Second,
		},
		{
			name:  "socket stops",
			units: []string{"api.service", "api.socket"},
			state: func(unit string, at time.Duration) (UnitState, error) {
				if unit == "api.socket" && at >= 7*time.Second {
					return UnitState{ActiveState: "inactive", SubState: "dead", Result: "success"}, nil
				}
				return running(812), nil
			},
			reason: "api.socket is inactive (Result success)", at: 7 * time.Second,
		},
		{
			name: "read errors are not failures, but close the window",
			state: func(_ string, at time.Duration) (UnitState, error) {
				if at >= 3*time.Second && at < 4*time.Second {
					return UnitState{}, errors.New("dbus: connection reset")
				}
				return running(812), nil
			},
			at: 14 * time.Second, // the window opens again at 4s
		},
		{
			name: "never active",
			state: func(string, time.Duration) (UnitState, error) {
				return UnitState{ActiveState: "activating", SubState: "start-pre"}, nil
			},
			reason: "not healthy after 1m0s: api.service is activating (start-pre)", at: time.Minute,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			units := tt.units
			if units == nil {
				units = []string{"api.service"}
			}
			v := Verification{Units: units, Systemd: &fakeSystemd{clock: clock, state: tt.state},
				MinHealthy: 10 * time.Second, Deadline: time.Minute, Clock: clock}
			rep, _ := simulate(t, context.Background(), v, nil)
			switch {
			case tt.reason == "" && !rep.OK:
				t.Errorf("failed: %s", rep.Reason)
			case tt.reason != "" && (rep.OK || rep.Reason != tt.reason):
				t.Errorf("got OK %v, Reason %q; want %q", rep.OK, rep.Reason, tt.reason)
			}
			if rep.Elapsed != tt.at {
				t.Errorf("ended after %s, want %s", rep.Elapsed, tt.at)
			}
			if tt.reason != "" && !strings.HasPrefix(tt.reason, "not healthy") && (rep.Failed == nil || rep.Failed.Err != tt.reason) {
				t.Errorf("Failed = %+v, want the unit's result", rep.Failed)
			}
		})
	}
}

func TestVerifyJobResult(t *testing.T) {
	clock := newFakeClock()
	sd := &fakeSystemd{clock: clock, state: func(string, time.Duration) (UnitState, error) { return running(1), nil }}
	v := Verification{Units: []string{"api.service", "worker.service"}, Systemd: sd, Clock: clock,
		Jobs: map[string]string{"api.service": "done", "worker.service": "timeout"}}
	rep, _ := simulate(t, context.Background(), v, nil)
	if want := "worker.service restart job result is timeout, want done"; rep.OK || rep.Reason != want {
		t.Errorf("got OK %v, Reason %q; want %q", rep.OK, rep.Reason, want)
	}
	if sd.reads != 0 {
		t.Errorf("%d unit reads after a failed job", sd.reads)
	}
}

func TestVerifyCanceled(t *testing.T) {
	clock := newFakeClock()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v := Verification{Checks: []spec.Check{check("health", time.Second, 3, 3)}, MinHealthy: 10 * time.Second, Clock: clock}
	v.Progress = func(p Progress) {
		if p.Elapsed >= 4*time.Second {
			cancel()
		}
	}
	rep, _ := simulate(t, ctx, v, script{"health": {""}})
	if rep.OK || rep.Reason != "canceled" || rep.Failed != nil {
		t.Errorf("got OK %v, Reason %q, Failed %v; want canceled", rep.OK, rep.Reason, rep.Failed)
	}
	if rep.Elapsed != 4*time.Second {
		t.Errorf("Elapsed %s, want 4s", rep.Elapsed)
	}
}

func TestVerifyProgress(t *testing.T) {
	clock := newFakeClock()
	sd := &fakeSystemd{clock: clock, state: func(string, time.Duration) (UnitState, error) { return running(812), nil }}
	var got []Progress
	v := Verification{
		Checks: []spec.Check{check("health", time.Second, 2, 3)}, Units: []string{"api.service"}, Systemd: sd,
		MinHealthy: 3 * time.Second, Deadline: time.Minute, Clock: clock,
		Progress: func(p Progress) { got = append(got, p) },
	}
	rep, _ := simulate(t, context.Background(), v, script{"health": {""}})
	if !rep.OK {
		t.Fatal(rep.Reason)
	}
	// A tick every 250ms from 0s to 3.75s; health passes twice by 1s.
	if len(got) != 16 {
		t.Fatalf("%d progress calls, want 16: %v", len(got), got)
	}
	for i, p := range got {
		at := time.Duration(i) * 250 * time.Millisecond
		want := Progress{MinHealthy: 3 * time.Second, Passing: 1, Total: 2, Elapsed: at}
		if at >= time.Second {
			want.Passing, want.Healthy = 2, at-time.Second
		}
		if p != want {
			t.Errorf("progress %d = %+v, want %+v", i, p, want)
		}
	}
}

func TestVerifyNoChecks(t *testing.T) {
	clock := newFakeClock()
	sd := &fakeSystemd{clock: clock, state: func(string, time.Duration) (UnitState, error) { return running(812), nil }}
	v := Verification{Units: []string{"api.service"}, Systemd: sd, Clock: clock}
	rep, _ := simulate(t, context.Background(), v, nil)
	if !rep.OK || rep.Elapsed != 0 || sd.reads != 1 {
		t.Errorf("MinHealthy 0: OK %v after %s and %d reads; want OK at once after one read", rep.OK, rep.Elapsed, sd.reads)
	}

	v = Verification{MinHealthy: 2 * time.Second, Clock: clock}
	rep, _ = simulate(t, context.Background(), v, nil)
	if !rep.OK || rep.Elapsed != 2*time.Second || len(rep.Results) != 0 {
		t.Errorf("nothing to check: %+v, want OK after 2s", rep)
	}
}

// The public Verify with a fake clock runs without sleeping when no probe runs.
func TestVerifyFakeClock(t *testing.T) {
	clock := newFakeClock()
	sd := &fakeSystemd{clock: clock, state: func(_ string, at time.Duration) (UnitState, error) {
		if at < 3*time.Second {
			return UnitState{ActiveState: "activating", SubState: "start"}, nil
		}
		return running(4242), nil
	}}
	rep := Verify(context.Background(), Verification{Units: []string{"api.service"}, Systemd: sd,
		MinHealthy: 10 * time.Second, Deadline: 5 * time.Minute, Clock: clock})
	if !rep.OK || rep.Elapsed != 13*time.Second {
		t.Errorf("got OK %v after %s (%s); want OK after 13s", rep.OK, rep.Elapsed, rep.Reason)
	}
	if r := rep.Results[0]; r.Output != "active (running), NRestarts 0, MainPID 4242, Result success" {
		t.Errorf("unit result %+v", r)
	}
}
