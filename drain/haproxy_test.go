package drain

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testhaproxy"
)

// The tests below run a real HAProxy (testhaproxy) in front of test backends.

// syncBuffer is a bytes.Buffer that a logger and the test may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startLB starts HAProxy with backend "web" holding the backends as servers
// named after them, health-checked every 200 ms when check is set, and waits
// until HAProxy takes them all as up.
func startLB(t *testing.T, check bool, backends ...*backend) *testhaproxy.HAProxy {
	t.Helper()
	var servers []testhaproxy.Server
	for _, b := range backends {
		servers = append(servers, testhaproxy.Server{Name: b.name, Addr: b.addr, Check: check})
	}
	lb := testhaproxy.Start(t, testhaproxy.Config{Servers: servers})
	for _, b := range backends {
		h := drainer(lb, b.name, nil)
		waitFor(t, 10*time.Second, b.name+" up", func() bool {
			st, err := h.State(context.Background())
			return err == nil && st.Oper == OperRunning && st.Admin == 0
		})
	}
	return lb
}

// drainer is an HAProxy drainer of server in lb's backend web, over the unix
// socket, polling every 20 ms, with a 10 s timeout.
func drainer(lb *testhaproxy.HAProxy, server string, log *syncBuffer) *HAProxy {
	h := &HAProxy{Addr: lb.AdminSocket, Backend: "web", Server: server, Timeout: 10 * time.Second, Poll: 20 * time.Millisecond}
	if log != nil {
		h.Logger = slog.New(slog.NewTextHandler(log, nil))
	}
	return h
}

func mustState(t *testing.T, h *HAProxy) ServerState {
	t.Helper()
	st, err := h.State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// heldResult is how a held request ended: its error (nil for a 200) and when.
type heldResult struct {
	err error
	end time.Time
}

// holdRequests sends n requests through lb that each hold their server for hold.

func holdRequests(lb *testhaproxy.HAProxy, n int, hold time.Duration) <-chan heldResult {
	ch := make(chan heldResult, n)
	url := lb.URL + "/?hold=" + itoa(hold.Milliseconds())
	for range n {
		go func() {
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
			err := get(context.Background(), c, url)
			ch <- heldResult{err, time.Now()}
		}()
	}
	return ch
}

// onlyTo makes the next requests reach only server: the others go to maint
// until the returned function puts them back.
func onlyTo(t *testing.T, lb *testhaproxy.HAProxy, server string, all ...*backend) func() {
	t.Helper()
	set := func(state string) {
		for _, b := range all {
			if b.name == server {
				continue
			}
			if out, err := lb.Command("set server web/" + b.name + " state " + state); err != nil || strings.TrimSpace(out) != "" {
				t.Fatalf("set %s %s: %v %q", b.name, state, err, out)
			}
		}
	}
	set("maint")
	return func() { set("ready") }
}

// TestRestartUnderLoad restarts server a while a load runs through HAProxy, once
// drained (Drain, restart, Undrain) and once not, and counts failed requests.
func TestRestartUnderLoad(t *testing.T) {
	testhaproxy.Require(t)
	const (
		clients = 8
		total   = 20000 // bounds the load with the deadline and the stop
		hold    = 20 * time.Millisecond
		down    = 4 * time.Second // how long the "restart" takes: the service listens again after that
	)
	run := func(t *testing.T, drained bool) (res loadResult, arrivedInMaint int64) {
		a, b := startBackend(t, "a"), startBackend(t, "b")
		lb := startLB(t, true, a, b)
		log := &syncBuffer{}
		h := drainer(lb, "a", log)
		ld := startLoad(lb.URL+"/?hold="+itoa(hold.Milliseconds()), clients, total, 60*time.Second)
		defer ld.wait(true)
		waitFor(t, 10*time.Second, "load on both servers", func() bool { return a.hits.Load() >= 20 && b.hits.Load() >= 20 })
		ctx := context.Background()
		if drained {
			if err := h.Drain(ctx); err != nil {
				t.Fatal(err)
			}
			st := mustState(t, h)
			if st.Admin.String() != "maint" || st.Sessions != 0 {
				t.Errorf("after Drain: %+v, want maint with 0 sessions", st)
			}
			t.Logf("drain: %s", strings.TrimSpace(log.String()))
		} else {
			waitFor(t, 5*time.Second, "requests in flight on a", func() bool { return a.inflight.Load() > 0 })
		}
		inMaint := a.arrived.Load()
		a.restart(t, down)
		if drained {
			arrivedInMaint = a.arrived.Load() - inMaint
			if err := h.Undrain(ctx); err != nil {
				t.Fatal(err)
			}
		}
		back := a.hits.Load()
		waitFor(t, 10*time.Second, "a back in rotation", func() bool { return a.hits.Load() >= back+50 })
		res = ld.wait(true)
		t.Logf("%d ok, %d failed in %s, slowest %s (a: %d, b: %d); first failures: %q",
			res.OK, res.Failed, res.Took.Round(time.Millisecond), res.Slowest.Round(time.Millisecond),
			a.hits.Load(), b.hits.Load(), res.Errors)
		return res, arrivedInMaint
	}
	var drained, undrained loadResult
	t.Run("drained", func(t *testing.T) {
		var inMaint int64
		drained, inMaint = run(t, true)
		if drained.Failed != 0 {
			t.Errorf("%d of %d requests failed across a drained restart: %q", drained.Failed, drained.OK+drained.Failed, drained.Errors)
		}
		if inMaint != 0 {
			t.Errorf("%d requests reached a while it was in maint", inMaint)
		}
	})
	t.Run("undrained", func(t *testing.T) {
		undrained, _ = run(t, false)
		// The restart cuts the requests in flight on a, and HAProxy sends
		// requests to a until its checks fail: clients must notice, by a
		// failure or by a request that waits out HAProxy's retries. Otherwise
		// this test proves nothing about the drained one.
		if undrained.Failed == 0 && undrained.Slowest < time.Second {
			t.Errorf("clients noticed nothing of an undrained restart with requests in flight")
		}
	})
	t.Logf("restart of 1 of 2 servers (down %s) under %d clients, %s per request: drained: %d of %d failed, slowest %s; undrained: %d of %d failed, slowest %s",
		down, clients, hold,
		drained.Failed, drained.OK+drained.Failed, drained.Slowest.Round(time.Millisecond),
		undrained.Failed, undrained.OK+undrained.Failed, undrained.Slowest.Round(time.Millisecond))
}

func TestDrainWaitsForRequestsInFlight(t *testing.T) {
	testhaproxy.Require(t)
	a, b := startBackend(t, "a"), startBackend(t, "b")
	lb := startLB(t, false, a, b)
	h := drainer(lb, "a", nil)

	back := onlyTo(t, lb, "a", a, b)
	const hold = 1500 * time.Millisecond
	held := holdRequests(lb, 3, hold)
	waitFor(t, 5*time.Second, "3 requests held on a", func() bool { return a.inflight.Load() == 3 })
	back()

	start := time.Now()
	drained := make(chan error, 1)
	go func() { drained <- h.Drain(context.Background()) }()

	// While a drains, new requests go to b only.
	waitFor(t, 5*time.Second, "a in drain", func() bool { return mustState(t, h).Admin.Drain() })
	if st := mustState(t, h); st.Sessions != 3 {
		t.Errorf("sessions on a while draining = %d, want 3", st.Sessions)
	}
	arrived := a.arrived.Load()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	for range 5 {
		if err := get(context.Background(), c, lb.URL+"/"); err != nil {
			t.Errorf("request while a drains: %v", err)
		}
	}
	if n := a.arrived.Load() - arrived; n != 0 {
		t.Errorf("%d new requests reached a while it drained", n)
	}

	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	returned := time.Now()
	for range 3 {
		r := <-held
		if r.err != nil {
			t.Errorf("held request: %v", r.err)
		}
		if r.end.After(returned) {
			t.Errorf("Drain returned %s before a held request ended", r.end.Sub(returned))
		}
	}
	if took := returned.Sub(start); took < hold/2 {
		t.Errorf("Drain took %s, but requests were held for %s", took, hold)
	}
	if st := mustState(t, h); st.Admin.String() != "maint" || st.Sessions != 0 || st.Status != "MAINT" {
		t.Errorf("after Drain: %+v, want maint with 0 sessions", st)
	}
	if err := h.Undrain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := mustState(t, h); st.Admin != 0 || st.Status != "no check" {
		t.Errorf("after Undrain: %+v, want ready", st)
	}
}

// After Timeout, Drain sets maint with the session still open and returns nil;
// HAProxy does not cut the session: the restart would.
func TestDrainTimeout(t *testing.T) {
	testhaproxy.Require(t)
	a, b := startBackend(t, "a"), startBackend(t, "b")
	lb := startLB(t, false, a, b)
	log := &syncBuffer{}
	h := drainer(lb, "a", log)
	h.Timeout = 300 * time.Millisecond

	back := onlyTo(t, lb, "a", a, b)
	held := holdRequests(lb, 1, 3*time.Second)
	waitFor(t, 5*time.Second, "a request held on a", func() bool { return a.inflight.Load() == 1 })
	back()

	start := time.Now()
	if err := h.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < h.Timeout || took > 2*time.Second {
		t.Errorf("Drain took %s with a %s timeout", took, h.Timeout)
	}
	if st := mustState(t, h); st.Admin.String() != "maint" || st.Sessions != 1 {
		t.Errorf("after Drain: %+v, want maint with the 1 held session", st)
	}
	if l := log.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, "drain timeout") || !strings.Contains(l, "sessions=1") {
		t.Errorf("log does not warn of the open session:\n%s", l)
	}
	if r := <-held; r.err != nil {
		t.Errorf("held request: %v (maint should not cut it)", r.err)
	}
	if err := h.Undrain(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestDrainCanceledRestores(t *testing.T) {
	testhaproxy.Require(t)
	a, b := startBackend(t, "a"), startBackend(t, "b")
	lb := startLB(t, false, a, b)
	h := drainer(lb, "a", nil)

	back := onlyTo(t, lb, "a", a, b)
	held := holdRequests(lb, 1, 2*time.Second)
	waitFor(t, 5*time.Second, "a request held on a", func() bool { return a.inflight.Load() == 1 })
	back()

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := h.Drain(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "drain web/a") {
		t.Fatalf("err = %v, want a deadline error naming web/a", err)
	}
	if st := mustState(t, h); st.Admin != 0 {
		t.Errorf("after a canceled Drain: %+v, want ready again", st)
	}
	if r := <-held; r.err != nil {
		t.Errorf("held request: %v", r.err)
	}
}

func TestDrainUnknownServerOrBackend(t *testing.T) {
	testhaproxy.Require(t)
	a, b := startBackend(t, "a"), startBackend(t, "b")
	lb := startLB(t, true, a, b)
	before, err := lb.Command("show servers state web")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		backend, server      string
		drainErr, undrainErr []string
	}{
		{"web", "nope",
			[]string{"drain web/nope", `HAProxy has no server "nope" in backend web (it has a, b)`},
			[]string{"undrain web/nope", "set server web/nope state ready", `HAProxy answered "No such server."`}},
		{"nope", "a",
			[]string{"drain nope/a", "show servers state nope", `HAProxy answered "Can't find backend."`},
			[]string{"undrain nope/a", `HAProxy answered "No such backend."`}},
	}
	for _, tt := range tests {
		h := &HAProxy{Addr: lb.AdminSocket, Backend: tt.backend, Server: tt.server}
		for _, c := range []struct {
			name string
			f    func(context.Context) error
			want []string
		}{{"Drain", h.Drain, tt.drainErr}, {"Undrain", h.Undrain, tt.undrainErr}} {
			err := c.f(context.Background())
			if err == nil {
				t.Errorf("%s of %s/%s succeeded", c.name, tt.backend, tt.server)
				continue
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s of %s/%s: error %q does not contain %q", c.name, tt.backend, tt.server, err, w)
				}
			}
		}
		if _, err := h.State(context.Background()); err == nil {
			t.Errorf("State of %s/%s succeeded", tt.backend, tt.server)
		}
	}
	after, err := lb.Command("show servers state web")
	if err != nil {
		t.Fatal(err)
	}
	// nothing changed: the admin and operational states of a and b are as before
	if got, want := states(t, after), states(t, before); got != want {
		t.Errorf("server states changed:\n%s\nwant\n%s", got, want)
	}
}

func states(t *testing.T, answer string) string {
	t.Helper()
	rows, err := parseServersState(answer)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, r := range rows {
		b.WriteString(r.Backend + "/" + r.Server + " admin=" + r.Admin.String() + " oper=" + r.Oper.String() + "\n")
	}
	return b.String()
}

func TestAPIOverUnixSocketAndTCP(t *testing.T) {
	testhaproxy.Require(t)
	a, b := startBackend(t, "a"), startBackend(t, "b")
	lb := startLB(t, true, a, b)
	t.Logf("%s", lb.Version())
	for _, addr := range []string{lb.AdminSocket, lb.AdminTCP} {
		h := &HAProxy{Addr: addr, Backend: "web", Server: "b", Poll: 20 * time.Millisecond}
		if err := h.Drain(context.Background()); err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		if st := mustState(t, h); st.Admin.String() != "maint" || st.Status != "MAINT" {
			t.Errorf("%s: after Drain: %+v", addr, st)
		}
		if err := h.Undrain(context.Background()); err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		// leaving maint, a checked server is taken as up at once
		if st := mustState(t, h); st.Admin != 0 || st.Oper != OperRunning || !strings.HasPrefix(st.Status, "UP") {
			t.Errorf("%s: after Undrain: %+v", addr, st)
		}
	}
}

func TestUndrainWithoutDrain(t *testing.T) {
	testhaproxy.Require(t)
	a, b := startBackend(t, "a"), startBackend(t, "b")
	lb := startLB(t, true, a, b)
	h := drainer(lb, "a", nil)
	for range 2 {
		if err := h.Undrain(context.Background()); err != nil {
			t.Fatal(err)
		}
		if st := mustState(t, h); st.Admin != 0 || st.Oper != OperRunning {
			t.Errorf("after Undrain: %+v", st)
		}
	}
}

// A server already in maint (an operator's, or a run that crashed) does not pass
// through drain, which would let sticky sessions back in: it stays in maint.
func TestDrainAlreadyInMaint(t *testing.T) {
	testhaproxy.Require(t)
	a, b := startBackend(t, "a"), startBackend(t, "b")
	lb := startLB(t, false, a, b)
	log := &syncBuffer{}
	h := drainer(lb, "a", log)
	if out, err := lb.Command("set server web/a state maint"); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("set maint: %v %q", err, out)
	}
	if err := h.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := mustState(t, h); st.Admin != AdminForcedMaint {
		t.Errorf("after Drain: %+v, want maint", st)
	}
	if !strings.Contains(log.String(), "already in maint") {
		t.Errorf("log:\n%s", log)
	}
}
