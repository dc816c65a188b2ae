package checks

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/yamldoc"
	"github.com/baton-fleet/baton/spec"
)

// These tests run Verify in real time against real servers and commands, with
// short intervals. They assert outcomes and reasons, never durations.

// checkNoLeak fails the test when goroutines started after it was called are
// still running a while after the test (servers shut down first).
func checkNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		for range 100 {
			if runtime.NumGoroutine() <= before {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
	})
}

// realUnits is a UnitStater whose units are always running.
type realUnits struct{ reads atomic.Int32 }

func (u *realUnits) UnitState(context.Context, string) (UnitState, error) {
	u.reads.Add(1)
	return UnitState{ActiveState: "active", SubState: "running", Result: "success", MainPID: 812}, nil
}

func fast(c spec.Check, successes, failures int) spec.Check {
	c.Interval = yamldoc.Duration(20 * time.Millisecond)
	c.Successes, c.Failures = successes, failures
	return c
}

func TestVerifyRealHealthy(t *testing.T) {
	checkNoLeak(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	defer srv.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	units := &realUnits{}
	var ticks atomic.Int32
	rep := Verify(context.Background(), Verification{
		Checks: []spec.Check{
			fast(httpCheck(srv.URL, 200, "ok", 2*time.Second), 3, 3),
			fast(tcpCheck(l.Addr().String()), 2, 3),
			fast(execCheck(2*time.Second, "/bin/sh", "-c", "echo fine"), 2, 3),
		},
		Units:      []string{"api.service"},
		Systemd:    units,
		MinHealthy: 300 * time.Millisecond,
		Deadline:   time.Minute,
		Progress:   func(Progress) { ticks.Add(1) },
	})
	if !rep.OK {
		t.Fatalf("not healthy: %s", rep.Reason)
	}
	if len(rep.Results) != 4 {
		t.Fatalf("%d results, want 4", len(rep.Results))
	}
	for _, r := range rep.Results {
		if !r.OK || r.At.IsZero() {
			t.Errorf("result %+v", r)
		}
	}
	if units.reads.Load() < 2 || ticks.Load() < 1 {
		t.Errorf("%d unit reads, %d progress calls; want a baseline and a final read, and ticks", units.reads.Load(), ticks.Load())
	}
}

func TestVerifyRealFailingCheck(t *testing.T) {
	checkNoLeak(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "draining", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	rep := Verify(context.Background(), Verification{
		Checks:     []spec.Check{fast(httpCheck(srv.URL+"/healthz", 200, "", 2*time.Second), 3, 2)},
		MinHealthy: time.Second,
		Deadline:   time.Minute,
	})
	want := "check health failed 2 times in a row: GET " + srv.URL + "/healthz: status 503, want 200"
	if rep.OK || rep.Reason != want {
		t.Fatalf("got OK %v, Reason %q; want %q", rep.OK, rep.Reason, want)
	}
	if rep.Failed == nil || !strings.HasPrefix(rep.Failed.Output, "HTTP/1.1 503 Service Unavailable\ndraining") {
		t.Errorf("Failed = %+v, want the 503 answer", rep.Failed)
	}
}

func TestVerifyRealDeadline(t *testing.T) {
	checkNoLeak(t)
	rep := Verify(context.Background(), Verification{
		Checks:     []spec.Check{fast(execCheck(2*time.Second, "/bin/sh", "-c", "echo not yet; exit 1"), 1, 1000)},
		MinHealthy: time.Second,
		Deadline:   200 * time.Millisecond,
	})
	want := "not healthy after 200ms: check smoke has not passed (last: /bin/sh: exit status 1: not yet)"
	if rep.OK || rep.Reason != want {
		t.Fatalf("got OK %v, Reason %q; want %q", rep.OK, rep.Reason, want)
	}
}

// Canceling Verify while a probe hangs ends it at once: the probe's process group
// is killed and every goroutine has ended.
func TestVerifyRealCancel(t *testing.T) {
	checkNoLeak(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
	}))
	defer slow.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{})
	go func() {
		<-started
		cancel()
	}()
	var once atomic.Bool
	rep := Verify(ctx, Verification{
		Checks: []spec.Check{
			fast(execCheck(time.Minute, "/bin/sh", "-c", fmt.Sprintf("sleep 30 & echo $! > %s; wait", pidFile)), 1, 1),
			fast(httpCheck(slow.URL, 200, "", time.Minute), 1, 1),
		},
		MinHealthy: time.Second,
		Deadline:   time.Minute,
		Progress: func(Progress) {
			// The probes start just before the first tick: wait for the sleep to run.
			if once.Load() {
				return
			}
			for range 200 {
				if _, err := readPidMaybe(pidFile); err == nil {
					once.Store(true)
					close(started)
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		},
	})
	if rep.OK || rep.Reason != "canceled" {
		t.Fatalf("got OK %v, Reason %q; want canceled", rep.OK, rep.Reason)
	}
	waitGone(t, readPid(t, pidFile))
}
