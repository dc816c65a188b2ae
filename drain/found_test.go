package drain

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testhaproxy"
)

// setState sets server of lb's backend web as an operator would.
func setState(t *testing.T, lb *testhaproxy.HAProxy, server, state string) {
	t.Helper()
	if out, err := lb.Command("set server web/" + server + " state " + state); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("set %s %s: %v %q", server, state, err, out)
	}
}

// wantState fails the test unless the server's settable admin state is want.
func wantState(t *testing.T, h *HAProxy, when, want string) {
	t.Helper()
	if got := settable(mustState(t, h).Admin); got != want {
		t.Errorf("%s: %s is %s, want %s", when, h.name(), got, want)
	}
}

// restarted is a drainer of the same server as h, as the next run of the agent
// builds it after a crash: it shares only the state directory.
func restarted(h *HAProxy) *HAProxy {
	return &HAProxy{Addr: h.Addr, Backend: h.Backend, Server: h.Server, Timeout: h.Timeout, Poll: h.Poll, StateDir: h.StateDir}
}

// TestUndrainRestoresTheStateFound: a server an operator had put in maint stays
// in maint after the upgrade, one in drain goes back to drain, a ready one goes
// back into rotation; also when the Undrain is another process's, after a crash
// between Drain and Undrain. A second Undrain changes nothing.
func TestUndrainRestoresTheStateFound(t *testing.T) {
	testhaproxy.Require(t)
	a, b := startBackend(t, "a"), startBackend(t, "b")
	lb := startLB(t, false, a, b)
	for _, found := range []string{"maint", "drain", "ready"} {
		t.Run(found, func(t *testing.T) {
			h := drainer(lb, "a", nil)
			h.StateDir = t.TempDir()
			setState(t, lb, "a", found)
			if err := h.Drain(context.Background()); err != nil {
				t.Fatal(err)
			}
			wantState(t, h, "after Drain", "maint")
			if err := restarted(h).Undrain(context.Background()); err != nil {
				t.Fatal(err)
			}
			wantState(t, h, "after Undrain", found)

			// The operator changes it since: a second Undrain leaves it be.
			setState(t, lb, "a", "maint")
			if err := restarted(h).Undrain(context.Background()); err != nil {
				t.Fatal(err)
			}
			wantState(t, h, "after a second Undrain", "maint")
			setState(t, lb, "a", "ready")
		})
	}
}

// TestDrainNeverUndone: an upgrade that drained and never undrained (a crash, and
// the loop guard gave up) leaves the server in maint; the next upgrade's Drain
// must take that maint for baton's own, not the operator's, and its Undrain puts
// the server back in rotation. Once restored, a maint an operator sets afterwards
// is the operator's again.
func TestDrainNeverUndone(t *testing.T) {
	testhaproxy.Require(t)
	a, b := startBackend(t, "a"), startBackend(t, "b")
	lb := startLB(t, false, a, b)
	h := drainer(lb, "a", nil)
	h.StateDir = t.TempDir()
	ctx := context.Background()

	if err := h.Drain(ctx); err != nil { // found ready; never undrained
		t.Fatal(err)
	}
	next := restarted(h)
	if err := next.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if err := next.Undrain(ctx); err != nil {
		t.Fatal(err)
	}
	wantState(t, h, "after the next upgrade", "ready")

	setState(t, lb, "a", "maint") // the operator's, now
	if err := h.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if err := restarted(h).Undrain(ctx); err != nil {
		t.Fatal(err)
	}
	wantState(t, h, "after an upgrade of a server the operator put in maint", "maint")
}

// TestDrainFailedRestoresTheStateFound: a Drain that fails puts a server found in
// drain back in drain, and the Undrain the agent calls after a failed Drain does
// not then set it ready.
func TestDrainFailedRestoresTheStateFound(t *testing.T) {
	testhaproxy.Require(t)
	a, b := startBackend(t, "a"), startBackend(t, "b")
	lb := startLB(t, false, a, b)
	h := drainer(lb, "a", nil)
	h.StateDir = t.TempDir()

	back := onlyTo(t, lb, "a", a, b)
	held := holdRequests(lb, 1, 2*time.Second)
	waitFor(t, 5*time.Second, "a request held on a", func() bool { return a.inflight.Load() == 1 })
	back()
	setState(t, lb, "a", "drain")

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := h.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain = %v, want a deadline error", err)
	}
	wantState(t, h, "after a failed Drain", "drain")
	if err := h.Undrain(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantState(t, h, "after the Undrain that follows a failed Drain", "drain")
	if r := <-held; r.err != nil {
		t.Errorf("held request: %v", r.err)
	}
}

// TestUndrainUnreadableRecord: a record that does not say what to restore fails
// Undrain, naming the file, and changes nothing; the next Drain records afresh.
func TestUndrainUnreadableRecord(t *testing.T) {
	testhaproxy.Require(t)
	a, b := startBackend(t, "a"), startBackend(t, "b")
	lb := startLB(t, false, a, b)
	h := drainer(lb, "a", nil)
	h.StateDir = t.TempDir()
	if err := os.WriteFile(h.foundPath(), []byte(`{"state":"up"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	setState(t, lb, "a", "maint")
	err := h.Undrain(context.Background())
	if err == nil || !strings.Contains(err.Error(), h.foundPath()) || !strings.Contains(err.Error(), `"up"`) {
		t.Fatalf("Undrain = %v, want an error naming the record and its state", err)
	}
	wantState(t, h, "after a failed Undrain", "maint")
	if err := h.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := h.Undrain(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantState(t, h, "after Drain and Undrain", "maint")
}

func TestParseFound(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{in: `{"state":"maint"}`, want: "maint"},
		{in: `{"addr":"/run/haproxy.sock","backend":"web","server":"a","state":"drain","time":"2026-01-02T03:04:05Z","restored":true}` + "\n", want: "drain"},
		{in: `{"state":"ready","future":1}`, want: "ready"},
		{in: ``, err: "unexpected end of JSON input"},
		{in: `{}`, err: `state "" is not ready, drain or maint`},
		{in: `{"state":"MAINT"}`, err: `state "MAINT" is not`},
		{in: `{"state":3}`, err: "cannot unmarshal number"},
		{in: `{"state":"maint"`, err: "unexpected end"},
		{in: `{"state":"maint","time":"yesterday"}`, err: "cannot parse"},
		{in: `[]`, err: "cannot unmarshal array"},
		{in: "\x00", err: "invalid character"},
	}
	for _, tt := range tests {
		f, err := parseFound([]byte(tt.in))
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("parseFound(%q): %v", tt.in, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("parseFound(%q) = %+v, %v; want an error containing %q", tt.in, f, err, tt.err)
		case err == nil && f.State != tt.want:
			t.Errorf("parseFound(%q).State = %q, want %q", tt.in, f.State, tt.want)
		}
	}
}

func FuzzParseFound(f *testing.F) {
	f.Add([]byte(`{"addr":"/run/haproxy.sock","backend":"web","server":"a","state":"drain","time":"2026-01-02T03:04:05Z"}`))
	f.Add([]byte(`{"state":"maint","restored":true}`))
	f.Add([]byte(`{"state":""}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := parseFound(data)
		if err != nil {
			return
		}
		if r.State != "ready" && r.State != "drain" && r.State != "maint" {
			t.Fatalf("parseFound accepted state %q", r.State)
		}
	})
}

func TestSettable(t *testing.T) {
	tests := []struct {
		a    AdminState
		want string
	}{
		{0, "ready"},
		{AdminForcedMaint, "maint"},
		{AdminForcedMaint | AdminConfigMaint, "maint"},
		{AdminForcedDrain, "drain"},
		{AdminForcedMaint | AdminForcedDrain, "maint"},
		{AdminInheritedMaint, "ready"}, // the tracked server's, not ours to set
		{AdminInheritedDrain, "ready"},
		{AdminResolutionMaint | AdminFQDNFromAPI, "ready"},
	}
	for _, tt := range tests {
		if got := settable(tt.a); got != tt.want {
			t.Errorf("settable(%#x) = %s, want %s", uint8(tt.a), got, tt.want)
		}
	}
}
