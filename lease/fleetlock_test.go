package lease

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testfleetlock"
)

// testPoll is the poll interval of the tests: short, so they run fast; the schedule
// scales with it.
const testPoll = 20 * time.Millisecond

// logBuffer collects what a client logs.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines returns the lines at level (INFO, WARN, ...) that contain every one of want.
func (l *logBuffer) lines(level string, want ...string) []string {
	var out []string
	for line := range strings.Lines(l.String()) {
		if !strings.Contains(line, "level="+level+" ") {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

// newFleetlock makes the client of host id on base, polling every testPoll, with its
// log in the returned buffer (and on stderr with BATON_LEASE_TEST_LOG=1). Its background
// release is stopped when the test ends.
func newFleetlock(t testing.TB, base, id string) (*Fleetlock, *logBuffer) {
	f := NewFleetlock(base, id, nil)
	f.Poll, f.MaxWait, f.RequestTimeout = testPoll, 10*testPoll, 2*time.Second
	buf := &logBuffer{}
	var w io.Writer = buf
	if os.Getenv(testLogEnv) == "1" {
		w = io.MultiWriter(buf, os.Stderr)
	}
	f.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})).With("host", id)
	t.Cleanup(func() { f.Close() })
	return f, buf
}

// preReboots returns the times the server received pre-reboot from id.
func preReboots(s *testfleetlock.Server, id string) []time.Time {
	var at []time.Time
	for _, r := range s.Requests() {
		if r.Path == testfleetlock.PreReboot && r.ID == id {
			at = append(at, r.At)
		}
	}
	return at
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func acquireFleetlockAsync(ctx context.Context, f *Fleetlock, group string) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f.Acquire(ctx, group) }()
	return ch
}

func TestFleetlockAcquireWaitRelease(t *testing.T) {
	for _, slash := range []string{"", "/"} {
		t.Run("base"+slash, func(t *testing.T) {
			srv := testfleetlock.Start(t, map[string]uint64{"web": 1})
			a, _ := newFleetlock(t, srv.URL()+slash, "web-01")
			b, _ := newFleetlock(t, srv.URL()+slash, "web-02")
			ctx := ctxT(t, 30*time.Second)

			if err := a.Check(ctx); !errors.Is(err, ErrNotHeld) {
				t.Fatalf("Check before Acquire = %v, want ErrNotHeld", err)
			}
			if err := a.Release(ctx); err != nil {
				t.Fatalf("Release before Acquire: %v", err)
			}
			if n := len(srv.Requests()); n != 0 {
				t.Fatalf("Release before any Acquire sent %d requests, want none", n)
			}
			if err := a.Acquire(ctx, "web"); err != nil {
				t.Fatal(err)
			}
			if err := a.Acquire(ctx, "web"); err != nil {
				t.Fatalf("second Acquire: %v", err)
			}
			if err := a.Check(ctx); err != nil {
				t.Fatal(err)
			}
			short, cancel := context.WithTimeout(ctx, 10*testPoll)
			err := b.Acquire(short, "web")
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Acquire of a full semaphore = %v, want to wait until the deadline", err)
			}
			if err := b.Check(ctx); !errors.Is(err, ErrNotHeld) {
				t.Fatalf("Check after a refused Acquire = %v, want ErrNotHeld", err)
			}
			// The release of a host that may have won after its deadline: airlock answers 200.
			if err := b.Release(ctx); err != nil {
				t.Fatalf("Release by a host that holds nothing: %v", err)
			}
			got := acquireFleetlockAsync(ctx, b, "web")
			if err := a.Release(ctx); err != nil {
				t.Fatal(err)
			}
			if err := <-got; err != nil {
				t.Fatal(err)
			}
			if h := srv.Holders("web"); !slices.Equal(h, []string{"web-02"}) {
				t.Fatalf("server says %v hold, want [web-02]", h)
			}
			if err := a.Release(ctx); err != nil {
				t.Fatalf("second Release: %v", err)
			}
			if err := a.Check(ctx); !errors.Is(err, ErrNotHeld) {
				t.Fatalf("Check after Release = %v, want ErrNotHeld", err)
			}
			for _, r := range srv.Requests() {
				if r.Status == http.StatusNotFound || r.ID == "" {
					t.Fatalf("request %+v; base %q was not joined right", r, srv.URL()+slash)
				}
			}
		})
	}
}

// TestFleetlockFullIsAnAnswer: airlock's "all slots taken" is HTTP 500 with a kind. It
// is logged with its kind and value, at INFO, and tried again once per poll: never as
// an unreachable server, never several requests per poll.
func TestFleetlockFullIsAnAnswer(t *testing.T) {
	srv := testfleetlock.Start(t, map[string]uint64{"web": 1})
	a, _ := newFleetlock(t, srv.URL(), "web-01")
	b, blog := newFleetlock(t, srv.URL(), "web-02")
	ctx := ctxT(t, 30*time.Second)
	if err := a.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	const wait = 25 * testPoll
	short, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := b.Acquire(short, "web"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire = %v, want to wait until the deadline", err)
	}
	at := preReboots(srv, "web-02")
	// One request per poll, each wait in [poll, 1.5 poll): wait/poll requests at most,
	// wait/(1.5 poll) at least (minus the one cut short).
	if n := len(at); n > int(wait/testPoll)+1 || n < int(wait/(testPoll*3/2))-1 {
		t.Errorf("%d pre-reboot requests in %v with a poll of %v", n, wait, testPoll)
	}
	for i := 1; i < len(at); i++ {
		if d := at[i].Sub(at[i-1]); d < testPoll {
			t.Errorf("requests %d and %d %v apart, less than the poll %v", i-1, i, d, testPoll)
		}
	}
	for _, r := range srv.Requests() {
		if r.ID == "web-02" && (r.Status != http.StatusInternalServerError || r.Kind != "failed_lock") {
			t.Errorf("answer %+v, want 500 failed_lock", r)
		}
	}
	if got := blog.lines("INFO", "FleetLock slots taken; waiting", "kind=failed_lock", `value="all 1 semaphore slots currently locked"`); len(got) != 1 {
		t.Errorf("INFO lines about the taken slots: %q, want one\nlog:\n%s", got, blog)
	}
	if got := blog.lines("WARN"); len(got) != 0 {
		t.Errorf("warnings while the slots were taken: %q", got)
	}
}

// TestFleetlockRefusalsFailPromptly: an unknown group, a request the server cannot
// read and a server that does not speak FleetLock fail Acquire at the first answer,
// with the server's words, as a *FleetlockError.
func TestFleetlockRefusalsFailPromptly(t *testing.T) {
	srv := testfleetlock.Start(t, map[string]uint64{"web": 1})
	notFleetlock := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(notFleetlock.Close)
	for _, tt := range []struct {
		name, base, id, group string
		status                int
		kind, value           string
	}{
		{"unknown group", srv.URL(), "web-01", "web_eu", 400, "unknown_group", `unknown group "web_eu"`},
		{"no id", srv.URL(), "", "web", 400, "invalid_client_identity", "failed to validate client identity: empty client ID"},
		{"not FleetLock", notFleetlock.URL, "web-01", "web", 404, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mark := filepath.Join(t.TempDir(), "slot.json")
			f, _ := newFleetlock(t, tt.base, tt.id)
			f.MarkPath = mark
			before := len(srv.Requests())
			start := time.Now()
			err := f.Acquire(ctxT(t, 30*time.Second), tt.group)
			var fe *FleetlockError
			if !errors.As(err, &fe) || !errors.Is(err, ErrFleetlockRefused) {
				t.Fatalf("Acquire = %v, want a *FleetlockError", err)
			}
			if fe.Status != tt.status || fe.Kind != tt.kind || fe.Value != tt.value {
				t.Errorf("refusal = %d %q %q, want %d %q %q", fe.Status, fe.Kind, fe.Value, tt.status, tt.kind, tt.value)
			}
			if tt.kind != "" && !strings.Contains(err.Error(), tt.value) {
				t.Errorf("error %q does not give the server's words %q", err, tt.value)
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("Acquire took %v to fail", took)
			}
			if n := len(srv.Requests()) - before; tt.base == srv.URL() && n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
			// Nothing is held: the record is gone and Release sends nothing.
			if _, err := os.Stat(mark); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("slot record after a refusal: %v", err)
			}
			n := len(srv.Requests())
			if err := f.Release(ctxT(t, 5*time.Second)); err != nil || len(srv.Requests()) != n {
				t.Errorf("Release after a refusal = %v, %d requests", err, len(srv.Requests())-n)
			}
		})
	}
}

// TestFleetlockServerTrouble: answers the server failed to give are tried again,
// logged with their kind and value; a Retry-After of a year is obeyed only up to MaxWait.
func TestFleetlockServerTrouble(t *testing.T) {
	srv := testfleetlock.Start(t, map[string]uint64{"web": 1})
	var left atomic.Int32
	left.Store(3)
	srv.Intercept(func(r testfleetlock.Request) *testfleetlock.Reply {
		switch left.Add(-1) {
		case 2:
			return &testfleetlock.Reply{Status: 503, Header: http.Header{"Retry-After": {"31536000"}}, Body: "try next year"}
		case 1:
			return &testfleetlock.Reply{Status: 500, Body: `{"kind":"failed_sem_init","value":"failed to initialize semaphore manager: context deadline exceeded"}`}
		case 0:
			return &testfleetlock.Reply{Status: 429, Header: http.Header{"Retry-After": {time.Now().Add(24 * time.Hour).UTC().Format(http.TimeFormat)}}}
		}
		return nil
	})
	f, log := newFleetlock(t, srv.URL(), "web-01")
	start := time.Now()
	if err := f.Acquire(ctxT(t, 30*time.Second), "web"); err != nil {
		t.Fatal(err)
	}
	// Three waits of at most MaxWait each, however long the server asked for.
	if took, most := time.Since(start), 3*f.MaxWait+time.Second; took > most {
		t.Errorf("Acquire took %v, more than %v", took, most)
	}
	if n := len(preReboots(srv, "web-01")); n != 4 {
		t.Errorf("%d pre-reboot requests, want 4", n)
	}
	if got := log.lines("WARN", "FleetLock server failed to answer", "kind=failed_sem_init", "failed to initialize semaphore manager"); len(got) != 1 {
		t.Errorf("WARN lines with the kind: %q\nlog:\n%s", got, log)
	}
	if got := log.lines("WARN", "FleetLock server error", "status=503"); len(got) != 1 {
		t.Errorf("WARN lines of the 503: %q\nlog:\n%s", got, log)
	}
}

// TestFleetlockWaitSchedule: while the slots are taken every wait is in [poll, 1.5
// poll), however long it has lasted; after trouble it grows to MaxWait and no further,
// whatever Retry-After asks.
func TestFleetlockWaitSchedule(t *testing.T) {
	p := fleetlockPolicy{poll: time.Second, maxWait: 15 * time.Second}
	top := func(d time.Duration) time.Duration { return d - 1 }
	zero := func(time.Duration) time.Duration { return 0 }
	var w fleetlockWaiter
	for i := range 10000 { // hours of waiting for a slot
		for _, j := range []func(time.Duration) time.Duration{zero, top, randJitter} {
			if d := w.next(p, slotsTaken, 0, j); d < time.Second || d >= 1500*time.Millisecond {
				t.Fatalf("wait %d for a slot = %v, want in [1s, 1.5s)", i, d)
			}
		}
	}
	var got []time.Duration
	for range 8 {
		got = append(got, w.next(p, serverTrouble, 0, zero))
	}
	want := []time.Duration{1, 2, 4, 8, 15, 15, 15, 15}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("backoff after trouble = %v, want %v seconds", got, want)
		}
	}
	for range 1000 {
		if d := w.next(p, serverTrouble, 0, randJitter); d > p.maxWait {
			t.Fatalf("backoff %v past MaxWait", d)
		}
	}
	if d := w.next(p, slotsTaken, 0, zero); d != time.Second {
		t.Errorf("a slot refused after trouble waits %v, want the poll again", d)
	}
	for ra, want := range map[time.Duration]time.Duration{
		0: time.Second, 3 * time.Second: 3 * time.Second, 365 * 24 * time.Hour: 15 * time.Second,
	} {
		if d := w.next(p, slotsTaken, ra, zero); d != want {
			t.Errorf("Retry-After %v: wait %v, want %v", ra, d, want)
		}
	}
}

// TestFleetlockBackgroundRelease: a release the server does not answer goes on in the
// background until it does; the record stays until then.
func TestFleetlockBackgroundRelease(t *testing.T) {
	srv := testfleetlock.Start(t, map[string]uint64{"web": 1})
	mark := filepath.Join(t.TempDir(), "slot.json")
	f, _ := newFleetlock(t, srv.URL(), "web-01")
	f.MarkPath = mark
	ctx := ctxT(t, 30*time.Second)
	if err := f.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if err := f.Release(ctx); err == nil {
		t.Fatal("Release with the server down succeeded")
	}
	if !f.Releasing() {
		t.Fatal("no release going on in the background")
	}
	if _, err := os.Stat(mark); err != nil {
		t.Fatalf("slot record while the release goes on: %v", err)
	}
	time.Sleep(5 * testPoll)
	if err := srv.Start(); err != nil { // same address; the semaphore was kept
		t.Fatal(err)
	}
	if h := srv.Holders("web"); !slices.Equal(h, []string{"web-01"}) {
		t.Fatalf("holders after the server's restart: %v", h)
	}
	waitFor(t, "the background release", 5*time.Second, func() bool { return !f.Releasing() })
	if h := srv.Holders("web"); len(h) != 0 {
		t.Errorf("holders after the background release: %v", h)
	}
	if _, err := os.Stat(mark); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("slot record after the release: %v", err)
	}
}

// TestFleetlockAcquireOvertakesBackgroundRelease: an Acquire stops the release going on
// in the background, and what it sent last never frees the slot Acquire took.
func TestFleetlockAcquireOvertakesBackgroundRelease(t *testing.T) {
	srv := testfleetlock.Start(t, map[string]uint64{"web": 1})
	f, _ := newFleetlock(t, srv.URL(), "web-01")
	ctx := ctxT(t, 30*time.Second)
	if err := f.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	var down atomic.Bool
	down.Store(true)
	srv.Intercept(func(r testfleetlock.Request) *testfleetlock.Reply {
		if down.Load() && r.Path == testfleetlock.SteadyState {
			return &testfleetlock.Reply{Status: 502}
		}
		return nil
	})
	if err := f.Release(ctx); err == nil {
		t.Fatal("Release answered 502 succeeded")
	}
	down.Store(false)
	if err := f.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * testPoll)
	if f.Releasing() {
		t.Error("the background release goes on after Acquire")
	}
	if h := srv.Holders("web"); !slices.Equal(h, []string{"web-01"}) {
		t.Errorf("holders after Acquire: %v", h)
	}
}

// TestFleetlockRecordFreesAfterRestart: a slot held by a process that was killed is
// given back by the next process's Release (recovery at start), from the record.
func TestFleetlockRecordFreesAfterRestart(t *testing.T) {
	srv := testfleetlock.Start(t, map[string]uint64{"web": 1, "db": 1})
	mark := filepath.Join(t.TempDir(), "slot.json")
	ctx := ctxT(t, 30*time.Second)
	crashed, _ := newFleetlock(t, srv.URL(), "web-01")
	crashed.MarkPath = mark
	if err := crashed.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	// A new process, configured for another server path and group since.
	next, _ := newFleetlock(t, srv.URL()+"/", "web-01")
	next.MarkPath = mark
	if err := next.Check(ctx); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("Check of the new process = %v, want ErrNotHeld", err)
	}
	if err := next.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if h := srv.Holders("web"); len(h) != 0 {
		t.Fatalf("holders after the release at start: %v", h)
	}
	if _, err := os.Stat(mark); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("slot record after the release: %v", err)
	}
	// Taken again, then the process stops before releasing; the next one acquires
	// another group: the slot of the first is given back first.
	if err := next.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	var rec fleetlockSlot
	if b, err := os.ReadFile(mark); err != nil || json.Unmarshal(b, &rec) != nil || rec.Group != "web" || rec.ID != "web-01" {
		t.Fatalf("slot record %+v, %v", rec, err)
	}
	third, _ := newFleetlock(t, srv.URL(), "web-01")
	third.MarkPath = mark
	if err := third.Acquire(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	if w, d := srv.Holders("web"), srv.Holders("db"); len(w) != 0 || !slices.Equal(d, []string{"web-01"}) {
		t.Fatalf("holders web %v db %v, want none and [web-01]", w, d)
	}
}

// TestFleetlockServerRestartWhileHeld: the server is killed between acquire and
// release; its store keeps the slot, and the release after it comes back frees it for
// the waiter.
func TestFleetlockServerRestartWhileHeld(t *testing.T) {
	srv := testfleetlock.Start(t, map[string]uint64{"web": 1})
	a, _ := newFleetlock(t, srv.URL(), "web-01")
	b, blog := newFleetlock(t, srv.URL(), "web-02")
	ctx := ctxT(t, 30*time.Second)
	if err := a.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	got := acquireFleetlockAsync(ctx, b, "web")
	time.Sleep(3 * testPoll)
	srv.Stop()
	time.Sleep(5 * testPoll)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		t.Fatalf("Acquire returned %v while the slot was held", err)
	case <-time.After(5 * testPoll):
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if n := len(blog.lines("WARN", "FleetLock server unreachable")); n != 1 {
		t.Errorf("%d WARN lines about the unreachable server, want 1\n%s", n, blog)
	}
}

// TestFleetlockNeverMoreHoldersThanSlots: 8 contenders on 1 and 2 slots, each taking
// and giving back a slot again and again: never more holders than slots, by the
// server's count and by the contenders' own.
func TestFleetlockNeverMoreHoldersThanSlots(t *testing.T) {
	for _, slots := range []uint64{1, 2} {
		t.Run(fmt.Sprint(slots, " slots"), func(t *testing.T) {
			srv := testfleetlock.Start(t, map[string]uint64{"web": slots})
			ctx := ctxT(t, 60*time.Second)
			var holding, most atomic.Int32
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for i := range 8 {
				f, _ := newFleetlock(t, srv.URL(), fmt.Sprintf("web-%02d", i))
				f.Poll = 5 * time.Millisecond
				wg.Go(func() {
					for range 3 {
						if err := f.Acquire(ctx, "web"); err != nil {
							errs <- err
							return
						}
						n := holding.Add(1)
						for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
						}
						time.Sleep(10 * time.Millisecond)
						holding.Add(-1)
						if err := f.Release(ctx); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if m := srv.MostHolders("web"); m != int(slots) {
				t.Errorf("the server saw %d holders at most, want %d", m, slots)
			}
			if m := most.Load(); m > int32(slots) {
				t.Errorf("%d contenders believed they held at once, more than %d slots", m, slots)
			}
		})
	}
}

func TestCheckFleetlockURLAndGroup(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://fleetlock.example.com": true, "http://10.0.0.5:3333/airlock/": true,
		"": false, "ftp://x": false, "http://": false, "::": false, "http://x/?q=1": false,
		"http://x/?": false, "http://x/#": false, "http://x/#f": false, "https://u:p@x/": false,
	} {
		if err := CheckFleetlockURL(raw); (err == nil) != ok {
			t.Errorf("CheckFleetlockURL(%q) = %v", raw, err)
		}
		if !ok {
			if err := NewFleetlock(raw, "web-01", nil).Acquire(t.Context(), "web"); err == nil {
				t.Errorf("Acquire with base URL %q succeeded", raw)
			}
		}
	}
	for g, ok := range map[string]bool{
		"default": true, "web_eu": true, "db.eu-1": true, "Web:EU/1": true, "été": true,
		"": false, "web eu": false, "web\n": false, "\xff": false, strings.Repeat("g", 256): false,
	} {
		if err := CheckFleetlockGroup(g); (err == nil) != ok {
			t.Errorf("CheckFleetlockGroup(%q) = %v", g, err)
		}
	}
}

func TestFleetlockAnswerOutcome(t *testing.T) {
	for _, tt := range []struct {
		a    fleetlockAnswer
		want outcome
	}{
		{fleetlockAnswer{status: 200}, granted},
		{fleetlockAnswer{status: 500, kind: "failed_lock", value: "all 1 semaphore slots currently locked"}, slotsTaken},
		{fleetlockAnswer{status: 409, kind: "failed_lock_semaphore_full"}, slotsTaken},
		{fleetlockAnswer{status: 409}, slotsTaken},
		{fleetlockAnswer{status: 423, kind: "anything"}, slotsTaken},
		{fleetlockAnswer{err: errors.New("connection refused")}, serverTrouble},
		{fleetlockAnswer{status: 500, kind: "failed_sem_init"}, serverTrouble},
		{fleetlockAnswer{status: 502}, serverTrouble},
		{fleetlockAnswer{status: 429}, serverTrouble},
		{fleetlockAnswer{status: 408}, serverTrouble},
		{fleetlockAnswer{status: 400, kind: "unknown_group"}, refused},
		{fleetlockAnswer{status: 400, kind: "invalid_client_identity"}, refused},
		{fleetlockAnswer{status: 403}, refused},
		{fleetlockAnswer{status: 404}, refused},
		{fleetlockAnswer{status: 302}, refused},
	} {
		if got := tt.a.outcome(); got != tt.want {
			t.Errorf("%+v: outcome %d, want %d", tt.a, got, tt.want)
		}
	}
}

func TestParseFleetlockError(t *testing.T) {
	for _, tc := range []struct {
		body, kind, value, err string
	}{
		{body: `{"kind":"failed_lock","value":"all 1 semaphore slots currently locked"}` + "\n", kind: "failed_lock", value: "all 1 semaphore slots currently locked"},
		{body: ` {"value":"v","kind":"k","extra":[1,2]} ` + "\n", kind: "k", value: "v"},
		{body: `{"kind":"k"}`, kind: "k"},
		{body: `{"kind":"k","value":null}`, kind: "k"},
		{body: `{"kind":"\u00e9t\u00e9","value":"a\nb"}`, kind: "été", value: "a\nb"},
		{body: ``, err: "not a JSON object"},
		{body: `null`, err: "not a JSON object"},
		{body: `[]`, err: "not a JSON object"},
		{body: `"kind"`, err: "not a JSON object"},
		{body: `semaphore full`, err: "not a JSON object"},
		{body: `{"kind":"k"} {}`, err: "data after"},
		{body: `{"value":"v"}`, err: `no "kind"`},
		{body: `{"kind":""}`, err: `"kind" is not`},
		{body: `{"kind":7}`, err: `"kind" is not`},
		{body: `{"kind":"k","value":{"a":1}}`, err: `"value" is not`},
		{body: `{"kind":"k"`, err: "not a JSON object"},
		{body: `{"kind":"k","value":"` + strings.Repeat("x", maxFleetlockBody) + `"}`, err: "more than"},
	} {
		kind, value, err := ParseFleetlockError([]byte(tc.body))
		name := tc.body[:min(len(tc.body), 40)]
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err = %v, want %q", name, err, tc.err)
			}
			continue
		}
		if err != nil || kind != tc.kind || value != tc.value {
			t.Errorf("%q = %q, %q, %v; want %q, %q", name, kind, value, err, tc.kind, tc.value)
		}
	}
}

func FuzzParseFleetlockError(f *testing.F) {
	for _, s := range []string{
		`{"kind":"failed_lock","value":"all 1 semaphore slots currently locked"}`,
		`{"kind":"k"}`, `{"kind":""}`, `{"kind":1}`, `[]`, `null`, `{"kind":"k"} x`, "\xff", `{"kind":"\ud800"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		kind, value, err := ParseFleetlockError(body)
		if err != nil {
			if kind != "" || value != "" {
				t.Fatalf("error %v with kind %q value %q", err, kind, value)
			}
			return
		}
		if kind == "" {
			t.Fatal("no error and no kind")
		}
		// What parses re-encodes to something that parses the same.
		b, err := json.Marshal(map[string]string{"kind": kind, "value": value})
		if err != nil {
			t.Fatal(err)
		}
		k2, v2, err := ParseFleetlockError(b)
		if err != nil || k2 != kind || v2 != value {
			t.Fatalf("round trip of %q: %q %q %v", body, k2, v2, err)
		}
	})
}

// BenchmarkFleetlockHandoff measures the handoff against the airlock-like server: from
// the moment a holder releases (calls Release) to the moment a waiter holds (its Acquire
// returns), 8 contenders each taking the slot once per round and holding it for hold.
// It reports p50, p95 and the largest handoff, and the requests each waiter sent per
// second of waiting. With the default poll of 1 s the holds of 0.5 s and 5 s run in real
// time; "60s" runs with every duration (hold and poll) divided by 20 and the handoffs
// multiplied back, which keeps it under half a minute: the schedule does not depend on
// how long the wait lasted, only on the poll.
//
//	make bench-fleetlock
func BenchmarkFleetlockHandoff(b *testing.B) {
	for _, bc := range []struct {
		slots  uint64
		hold   time.Duration
		scale  int // durations divided by scale
		rounds int
	}{
		{1, 500 * time.Millisecond, 1, 3},
		{1, 5 * time.Second, 1, 1},
		{1, 60 * time.Second, 20, 1},
		{2, 500 * time.Millisecond, 1, 3},
	} {
		name := fmt.Sprintf("slots=%d/hold=%v", bc.slots, bc.hold)
		if bc.scale > 1 {
			name += fmt.Sprintf("/scaled=1:%d", bc.scale)
		}
		b.Run(name, func(b *testing.B) {
			var handoffs []time.Duration
			var requests int
			var waited time.Duration
			for range b.N {
				for range bc.rounds {
					h, n, w := fleetlockRound(b, bc.slots, bc.hold/time.Duration(bc.scale), DefaultFleetlockPoll/time.Duration(bc.scale))
					for _, d := range h {
						handoffs = append(handoffs, d*time.Duration(bc.scale))
					}
					requests += n
					waited += w * time.Duration(bc.scale)
				}
			}
			slices.Sort(handoffs)
			q := func(p float64) float64 {
				return float64(handoffs[min(len(handoffs)-1, int(p*float64(len(handoffs))))].Microseconds()) / 1000
			}
			b.ReportMetric(q(0.50), "p50-ms")
			b.ReportMetric(q(0.95), "p95-ms")
			b.ReportMetric(q(1), "max-ms")
			b.ReportMetric(float64(len(handoffs)), "handoffs")
			b.ReportMetric(float64(requests)/waited.Seconds(), "req/s/waiter")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// fleetlockRound runs 8 contenders that each take a slot once, hold it for hold and
// give it back. It returns the handoffs, and the refused pre-reboot requests and the
// time spent waiting by all contenders.
func fleetlockRound(b *testing.B, slots uint64, hold, poll time.Duration) ([]time.Duration, int, time.Duration) {
	srv := testfleetlock.Start(b, map[string]uint64{"web": slots})
	ctx := ctxT(b, 10*time.Minute)
	var mu sync.Mutex
	var releases []time.Time // not yet taken over
	var handoffs []time.Duration
	var waited time.Duration
	var wg sync.WaitGroup
	for i := range 8 {
		f := NewFleetlock(srv.URL(), fmt.Sprintf("web-%02d", i), nil)
		f.Poll = poll
		wg.Go(func() {
			start := time.Now()
			if err := f.Acquire(ctx, "web"); err != nil {
				b.Error(err)
				return
			}
			now := time.Now()
			mu.Lock()
			waited += now.Sub(start)
			if len(releases) > 0 {
				handoffs = append(handoffs, now.Sub(releases[0]))
				releases = releases[1:]
			}
			mu.Unlock()
			time.Sleep(hold)
			mu.Lock()
			releases = append(releases, time.Now())
			mu.Unlock()
			if err := f.Release(ctx); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
	if m := srv.MostHolders("web"); m > int(slots) {
		b.Fatalf("%d holders at once, more than %d slots", m, slots)
	}
	refused := 0
	for _, r := range srv.Requests() {
		if r.Path == testfleetlock.PreReboot && r.Status != http.StatusOK {
			refused++
		}
	}
	srv.Stop()
	return handoffs, refused, waited
}
