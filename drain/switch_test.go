package drain

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testhaproxy"
)

// The tests below run a real HAProxy with cookie persistence in front of two
// colors, blue and green, each a test HTTP server answering its name.

// startColors starts blue and green and an HAProxy whose backend web holds them as
// servers of the same names, health-checked, sticky by the cookie SRV; blue takes
// the traffic and green is in maint, as the idle color of a bluegreen service.
func startColors(t testing.TB) (lb *testhaproxy.HAProxy, blue, green *backend) {
	t.Helper()
	blue, green = startBackend(t, "blue"), startBackend(t, "green")
	lb = testhaproxy.Start(t, testhaproxy.Config{Cookie: "SRV insert indirect nocache", Servers: []testhaproxy.Server{
		{Name: "blue", Addr: blue.addr, Check: true},
		{Name: "green", Addr: green.addr, Check: true},
	}})
	ctx := context.Background()
	if err := color(lb, "green").SetState(ctx, StateMaint); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "blue up", func() bool {
		c, err := color(lb, "blue").Counters(ctx)
		return err == nil && c.Oper == OperRunning
	})
	return lb, blue, green
}

// color is the drainer of one color's server, polling every 20 ms.
func color(lb *testhaproxy.HAProxy, name string) *HAProxy {
	return &HAProxy{Addr: lb.AdminSocket, Backend: "web", Server: name, Poll: 20 * time.Millisecond, UpTimeout: 2 * time.Second}
}

// wantAdmin fails the test unless each server is in its state: name, state, ...
func wantAdmin(t testing.TB, lb *testhaproxy.HAProxy, nameState ...string) {
	t.Helper()
	for i := 0; i < len(nameState); i += 2 {
		c, err := color(lb, nameState[i]).Counters(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Admin.String(); got != nameState[i+1] {
			t.Errorf("%s is %s, want %s", nameState[i], got, nameState[i+1])
		}
	}
}

// session is a client that keeps HAProxy's cookie, as a logged-in browser does.
type session struct {
	c   *http.Client
	url string
}

func newSession(lb *testhaproxy.HAProxy) *session {
	jar, _ := cookiejar.New(nil)
	return &session{c: &http.Client{Jar: jar, Timeout: 10 * time.Second}, url: lb.URL}
}

// get sends one request (holding its server for hold) and returns which color
// answered.
func (s *session) get(t testing.TB, hold time.Duration) string {
	resp, err := s.c.Get(s.url + "/?hold=" + itoa(hold.Milliseconds()))
	if err != nil {
		t.Error(err)
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return string(b)
}

// stickToBlueAndSwitch starts a session on blue, then switches from blue to green.
func stickToBlueAndSwitch(t *testing.T, lb *testhaproxy.HAProxy) *session {
	t.Helper()
	s := newSession(lb)
	if got := s.get(t, 0); got != "blue" {
		t.Fatalf("first session on %q, want blue", got)
	}
	if err := Switch(context.Background(), color(lb, "blue"), color(lb, "green")); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSwitchAndBackUnderLoad switches from blue to green and back while clients
// without cookies send a steady load through HAProxy: not one request fails, new
// requests go to the color switched to, and the color switched away from gets none
// once its requests in flight ended.
func TestSwitchAndBackUnderLoad(t *testing.T) {
	testhaproxy.Require(t)
	lb, blue, green := startColors(t)
	ld := startLoad(lb.URL+"/?hold=5", 8, 200000, 60*time.Second)
	defer ld.wait(true)
	waitFor(t, 10*time.Second, "load on blue", func() bool { return blue.hits.Load() >= 100 })
	ctx := context.Background()

	if err := Switch(ctx, color(lb, "blue"), color(lb, "green")); err != nil {
		t.Fatal(err)
	}
	wantAdmin(t, lb, "green", StateReady, "blue", StateDrain)
	idle, err := color(lb, "blue").WaitIdle(ctx, 300*time.Millisecond, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !idle.Idle || idle.Sessions != 0 {
		t.Errorf("blue after the switch: %+v, want idle: no client sticks to it", idle)
	}
	settled := blue.arrived.Load()
	waitFor(t, 10*time.Second, "load on green", func() bool { return green.hits.Load() >= 100 })
	if late := blue.arrived.Load() - settled; late != 0 {
		t.Errorf("%d new requests reached blue after it drained", late)
	}

	start := time.Now()
	if err := SwitchBack(ctx, color(lb, "green"), color(lb, "blue")); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	wantAdmin(t, lb, "blue", StateReady, "green", StateMaint)
	waitFor(t, 5*time.Second, "green's requests in flight", func() bool { return green.inflight.Load() == 0 })
	back, greenAfter := blue.hits.Load(), green.arrived.Load()
	waitFor(t, 10*time.Second, "load on blue again", func() bool { return blue.hits.Load() >= back+100 })
	if late := green.arrived.Load() - greenAfter; late != 0 {
		t.Errorf("%d requests reached green in maint after the switch back", late)
	}
	res := ld.wait(true)
	if res.Failed != 0 {
		t.Errorf("%d of %d requests failed across a switch and a switch back: %q", res.Failed, res.OK+res.Failed, res.Errors)
	}
	t.Logf("%d requests, %d failed; blue %d, green %d; switch back took %s", res.OK+res.Failed, res.Failed, blue.hits.Load(), green.hits.Load(), took.Round(time.Microsecond))
}

// TestStickySessionStaysOnTheDrainingColor: after a switch, a client whose cookie
// names blue keeps reaching blue, a new client lands on green, and WaitIdle returns
// only once the sticky client has stopped for the idle time; then blue in maint
// sends that client to green without a failure.
func TestStickySessionStaysOnTheDrainingColor(t *testing.T) {
	testhaproxy.Require(t)
	lb, _, green := startColors(t)
	ctx := context.Background()
	old := stickToBlueAndSwitch(t, lb)
	for range 3 {
		if got := old.get(t, 0); got != "blue" {
			t.Errorf("sticky session moved to %q during the drain", got)
		}
	}
	fresh := newSession(lb)
	for range 3 {
		if got := fresh.get(t, 0); got != "green" {
			t.Errorf("new session on %q, want green", got)
		}
	}

	const active, idle = 1200 * time.Millisecond, 400 * time.Millisecond
	var sent atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for end := time.Now().Add(active); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			if got := old.get(t, 0); got != "blue" {
				t.Errorf("sticky session moved to %q during the drain", got)
			}
			sent.Add(1)
		}
	}()
	res, err := color(lb, "blue").WaitIdle(ctx, idle, 20*time.Second)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	// The first sticky request may be counted before WaitIdle's first reading.
	if !res.Idle || res.Took < active || res.Served < sent.Load()-1 {
		t.Errorf("WaitIdle = %+v with %d sticky requests over %s: want idle, after at least %s, having served them", res, sent.Load(), active, active)
	}
	if err := color(lb, "blue").SetState(ctx, StateMaint); err != nil {
		t.Fatal(err)
	}
	before := green.hits.Load()
	if got := old.get(t, 0); got != "green" {
		t.Errorf("with blue in maint, the old session reached %q, want green", got)
	}
	if green.hits.Load() != before+1 {
		t.Errorf("green answered %d requests, want 1", green.hits.Load()-before)
	}
	t.Logf("sticky session: %d requests to draining blue; WaitIdle %+v", sent.Load(), res)
}

// TestWaitIdleBound: a sticky client that never stops, and one request longer
// than the bound, keep blue busy: WaitIdle returns at the bound, not idle, with
// the session the bound cuts.
func TestWaitIdleBound(t *testing.T) {
	testhaproxy.Require(t)
	lb, blue, _ := startColors(t)
	ctx := context.Background()
	long := stickToBlueAndSwitch(t, lb)
	held := make(chan string, 1)
	go func() { held <- long.get(t, 3*time.Second) }()
	waitFor(t, 5*time.Second, "the long request on blue", func() bool { return blue.inflight.Load() == 1 })
	const bound = time.Second
	res, err := color(lb, "blue").WaitIdle(ctx, 500*time.Millisecond, bound)
	if err != nil {
		t.Fatal(err)
	}
	if res.Idle || res.Sessions != 1 || res.Took < bound || res.Took > bound+time.Second {
		t.Errorf("WaitIdle = %+v, want the bound (%s) with 1 session left", res, bound)
	}
	if got := <-held; got != "blue" {
		t.Errorf("long request answered by %q", got)
	}
}

// TestSwitchTwice: a switch or a switch back run again, as after a crash, ends in
// the same states.
func TestSwitchTwice(t *testing.T) {
	testhaproxy.Require(t)
	lb, _, _ := startColors(t)
	ctx := context.Background()
	blue, green := color(lb, "blue"), color(lb, "green")
	for range 2 {
		if err := Switch(ctx, blue, green); err != nil {
			t.Fatal(err)
		}
		wantAdmin(t, lb, "green", StateReady, "blue", StateDrain)
	}
	for range 2 {
		if err := SwitchBack(ctx, green, blue); err != nil {
			t.Fatal(err)
		}
		wantAdmin(t, lb, "blue", StateReady, "green", StateMaint)
	}
}

// TestSwitchToAServerThatIsDown: when the color switched to does not come up in
// HAProxy, it goes back to maint and the other keeps the traffic.
func TestSwitchToAServerThatIsDown(t *testing.T) {
	testhaproxy.Require(t)
	lb, _, green := startColors(t)
	green.stop()
	ctx := context.Background()
	waitFor(t, 10*time.Second, "green down", func() bool {
		c, err := color(lb, "green").Counters(ctx)
		return err == nil && c.Oper == OperStopped
	})
	err := Switch(ctx, color(lb, "blue"), color(lb, "green"))
	if err == nil || !strings.Contains(err.Error(), "not up after") || !strings.Contains(err.Error(), "blue still takes the traffic") {
		t.Errorf("Switch to a server that is down: %v", err)
	}
	wantAdmin(t, lb, "blue", StateReady, "green", StateMaint)
	if got := newSession(lb).get(t, 0); got != "blue" {
		t.Errorf("after the failed switch, answer from %q", got)
	}
}

func TestSwitchRefusesBeforeSending(t *testing.T) {
	a := &HAProxy{Addr: "/nonexistent/admin.sock", Backend: "web", Server: "blue"}
	for _, tt := range []struct {
		to   *HAProxy
		want string
	}{
		{&HAProxy{Addr: a.Addr, Backend: "web", Server: "blue"}, "to itself"},
		{&HAProxy{Addr: a.Addr, Backend: "api", Server: "green"}, "not two servers of one backend"},
		{&HAProxy{Addr: "127.0.0.1:1", Backend: "web", Server: "green"}, "not two servers of one backend"},
		{&HAProxy{Addr: a.Addr, Backend: "web", Server: "green;x"}, "HAProxy names hold only"},
	} {
		if err := Switch(context.Background(), a, tt.to); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Switch(%s, %s) = %v, want %q", a.name(), tt.to.name(), err, tt.want)
		}
	}
	if err := a.SetState(context.Background(), "down"); err == nil || !strings.Contains(err.Error(), "not one of ready, drain, maint") {
		t.Errorf("SetState(down) = %v", err)
	}
}

// TestIdleWatch follows readings of a server's counters, a poll apart, and
// checks how long it has been idle after each.
func TestIdleWatch(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	for _, tt := range []struct {
		name  string
		first Counters
		later []Counters      // one every 100 ms after the first
		want  []time.Duration // idleFor after the first and after each later reading
	}{
		{
			name:  "idle for 3 s already",
			first: Counters{Total: 5, LastSess: 3 * time.Second},
			later: []Counters{{Total: 5, LastSess: 3 * time.Second}},
			want:  []time.Duration{3 * time.Second, 3100 * time.Millisecond},
		},
		{
			name:  "never had a session",
			first: Counters{LastSess: -1},
			later: []Counters{{LastSess: -1}, {LastSess: -1}},
			want:  []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond},
		},
		{
			name:  "a current session, then none",
			first: Counters{Sessions: 1, Total: 1, LastSess: 0},
			later: []Counters{{Total: 1}, {Total: 1}},
			want:  []time.Duration{0, 0, 100 * time.Millisecond},
		},
		{
			name:  "a session begun and ended between two readings",
			first: Counters{Total: 7, LastSess: 9 * time.Second},
			later: []Counters{{Total: 8}, {Total: 8}, {Total: 8}},
			want:  []time.Duration{9 * time.Second, 0, 0, 100 * time.Millisecond},
		},
		{
			name:  "a queued request is not idle",
			first: Counters{Queued: 1, LastSess: 5 * time.Second},
			later: []Counters{{Queued: 1}, {}},
			want:  []time.Duration{0, 0, 0},
		},
	} {
		var w idleWatch
		w.start(tt.first, at(0))
		got := []time.Duration{w.idleFor(at(0))}
		for i, c := range tt.later {
			now := at(100 * (i + 1))
			w.see(c, now)
			got = append(got, w.idleFor(now))
		}
		if len(got) != len(tt.want) {
			t.Fatalf("%s: %d readings, %d wanted", tt.name, len(got), len(tt.want))
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("%s: idle %v, want %v", tt.name, got, tt.want)
				break
			}
		}
	}
}

// BenchmarkSwitchBack measures a switch back (the old color ready, the new one
// maint) against a real HAProxy, as a revert does it.
func BenchmarkSwitchBack(b *testing.B) {
	testhaproxy.Require(b)
	lb, _, _ := startColors(b)
	ctx := context.Background()
	blue, green := color(lb, "blue"), color(lb, "green")
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		if err := Switch(ctx, blue, green); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		if err := SwitchBack(ctx, green, blue); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/switchback")
}

func TestCountersUp(t *testing.T) {
	for _, tt := range []struct {
		c    Counters
		want bool
	}{
		{Counters{Oper: OperRunning, Check: "L7OK"}, true},
		{Counters{Oper: OperRunning, Check: "* L4OK"}, true}, // a check running, the last one passed
		{Counters{Oper: OperRunning}, true},                  // not health-checked
		{Counters{Oper: OperStarting, Check: "L4OK"}, true},
		{Counters{Oper: OperRunning, Check: "INI"}, false}, // left maint, not checked yet
		{Counters{Oper: OperRunning, Check: "* INI"}, false},
		{Counters{Oper: OperStopped, Check: "L4CON"}, false},
		{Counters{Oper: OperStopped}, false},
	} {
		if got := tt.c.Up(); got != tt.want {
			t.Errorf("%+v: Up() = %v, want %v", tt.c, got, tt.want)
		}
	}
}
