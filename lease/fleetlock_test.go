package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// fleetlockServer is a FleetLock server written from the protocol: POST
// /v1/pre-reboot and /v1/steady-state with the header "fleet-lock-protocol: true" and
// the body {"client_params":{"id":..,"group":..}}; 200 on success, otherwise an error
// body {"kind":..,"value":..}. It has slots per group, and two ways of answering what
// servers answer differently.
type fleetlockServer struct {
	slots         int
	fullStatus    int // when the semaphore is full: 409 or 423
	notHeldUnlock int // steady-state from a client that holds nothing: 200 or 423

	mu       sync.Mutex
	holders  map[string]map[string]bool // group -> ids
	failNext int                        // answer 500 to this many requests first
	calls    []string
}

func (s *fleetlockServer) fail(w http.ResponseWriter, status int, kind, value string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"kind": kind, "value": value})
}

func (s *fleetlockServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, r.Method+" "+r.URL.Path)
	if s.failNext > 0 {
		s.failNext--
		http.Error(w, "overloaded", http.StatusInternalServerError)
		return
	}
	if r.Method != http.MethodPost {
		s.fail(w, http.StatusMethodNotAllowed, "bad_method", r.Method)
		return
	}
	if r.Header.Get("fleet-lock-protocol") != "true" {
		s.fail(w, http.StatusBadRequest, "missing_header", "fleet-lock-protocol")
		return
	}
	var body struct {
		ClientParams *struct {
			ID    string `json:"id"`
			Group string `json:"group"`
		} `json:"client_params"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.ClientParams == nil || body.ClientParams.ID == "" || body.ClientParams.Group == "" {
		s.fail(w, http.StatusBadRequest, "bad_request", fmt.Sprint("malformed client parameters: ", err))
		return
	}
	id, group := body.ClientParams.ID, body.ClientParams.Group
	if s.holders[group] == nil {
		s.holders[group] = map[string]bool{}
	}
	held := s.holders[group]
	switch r.URL.Path {
	case "/v1/pre-reboot":
		if !held[id] && len(held) >= s.slots {
			s.fail(w, s.fullStatus, "failed_lock", "semaphore currently full")
			return
		}
		held[id] = true
	case "/v1/steady-state":
		if !held[id] && s.notHeldUnlock != http.StatusOK {
			s.fail(w, s.notHeldUnlock, "failed_unlock", "semaphore not held by "+id)
			return
		}
		delete(held, id)
	default:
		http.NotFound(w, r)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *fleetlockServer) holding(group string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id := range s.holders[group] {
		ids = append(ids, id)
	}
	return ids
}

// startFleetlock serves s under /fleetlock/ and returns the server's base URL.
func startFleetlock(t *testing.T, s *fleetlockServer) string {
	t.Helper()
	s.holders = map[string]map[string]bool{}
	mux := http.NewServeMux()
	mux.Handle("/fleetlock/", http.StripPrefix("/fleetlock", s))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL + "/fleetlock"
}

func quickClient() *retryablehttp.Client {
	c := retryablehttp.NewClient()
	c.Logger = nil
	c.RetryMax = 3
	c.RetryWaitMin, c.RetryWaitMax = time.Millisecond, 10*time.Millisecond
	return c
}

func newFleetlock(base, id string) *Fleetlock {
	f := NewFleetlock(base, id, quickClient())
	f.MinWait, f.MaxWait = 10*time.Millisecond, 50*time.Millisecond
	f.Logger = testLogger().With("host", id)
	return f
}

func TestFleetlockAcquireWaitRelease(t *testing.T) {
	for _, v := range []struct {
		name                string
		fullStatus, notHeld int
		slash               string
	}{
		{"409, unlock-not-held 200, no slash", http.StatusConflict, http.StatusOK, ""},
		{"409, unlock-not-held 200, slash", http.StatusConflict, http.StatusOK, "/"},
		{"423 locked, no slash", http.StatusLocked, http.StatusLocked, ""},
		{"423 locked, slash", http.StatusLocked, http.StatusLocked, "/"},
	} {
		t.Run(v.name, func(t *testing.T) {
			srv := &fleetlockServer{slots: 1, fullStatus: v.fullStatus, notHeldUnlock: v.notHeld}
			base := startFleetlock(t, srv) + v.slash
			a, b := newFleetlock(base, "web-01"), newFleetlock(base, "web-02")
			ctx := ctxT(t, 30*time.Second)

			if err := a.Check(ctx); !errors.Is(err, ErrNotHeld) {
				t.Fatalf("Check before Acquire = %v, want ErrNotHeld", err)
			}
			if err := a.Release(ctx); err != nil {
				t.Fatalf("Release before Acquire: %v", err)
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
			short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			err := b.Acquire(short, "web")
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Acquire of a full semaphore = %v, want to wait until the deadline", err)
			}
			if err := b.Check(ctx); !errors.Is(err, ErrNotHeld) {
				t.Fatalf("Check after a refused Acquire = %v, want ErrNotHeld", err)
			}
			// A release by a host that does not hold: fine with either server.
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
			if h := srv.holding("web"); len(h) != 1 || h[0] != "web-02" {
				t.Fatalf("server says %v hold, want [web-02]", h)
			}
			if err := a.Release(ctx); err != nil {
				t.Fatalf("second Release: %v", err)
			}
			if err := a.Check(ctx); !errors.Is(err, ErrNotHeld) {
				t.Fatalf("Check after Release = %v, want ErrNotHeld", err)
			}
			for _, c := range srv.calls {
				if !strings.HasPrefix(c, "POST /v1/") {
					t.Fatalf("request %q; base %q was not joined right", c, base)
				}
			}
		})
	}
}

func acquireFleetlockAsync(ctx context.Context, f *Fleetlock, group string) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f.Acquire(ctx, group) }()
	return ch
}

func TestFleetlockRidesOutServerErrors(t *testing.T) {
	srv := &fleetlockServer{slots: 1, fullStatus: http.StatusConflict, notHeldUnlock: http.StatusOK}
	base := startFleetlock(t, srv)
	srv.failNext = 6 // more than one request's retries
	f := newFleetlock(base, "web-01")
	ctx := ctxT(t, 30*time.Second)
	if err := f.Acquire(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if h := srv.holding(FleetlockDefaultGroup); len(h) != 1 {
		t.Fatalf("holders of the default group: %v", h)
	}
}

func TestFleetlockRefusesWhatIsNotAFleetlockServer(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	ctx := ctxT(t, 10*time.Second)
	if err := newFleetlock(srv.URL, "web-01").Acquire(ctx, "web"); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Fatalf("Acquire against a 404 server = %v, want an HTTP 404 error", err)
	}
	for _, base := range []string{"", "ftp://x", "http://", "http://x/?q=1", "::"} {
		if err := newFleetlock(base, "web-01").Acquire(ctx, "web"); err == nil {
			t.Errorf("Acquire with base URL %q succeeded", base)
		}
	}
}

func TestParseFleetlockError(t *testing.T) {
	for _, tc := range []struct {
		body, kind, value, err string
	}{
		{body: `{"kind":"failed_lock","value":"semaphore currently full"}`, kind: "failed_lock", value: "semaphore currently full"},
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
		`{"kind":"failed_lock","value":"semaphore currently full"}`,
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
