package events

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// receiver records what a webhook receives; answer decides each response.
type receiver struct {
	t      *testing.T
	secret []byte
	answer func(n int) int // status for the n-th request (from 1); nil: 200

	mu       sync.Mutex
	requests int
	events   []Event
	bodies   map[string]int // delivery id -> requests carrying it
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		rc.t.Errorf("read body: %v", err)
		return
	}
	rc.mu.Lock()
	rc.requests++
	n := rc.requests
	if rc.bodies == nil {
		rc.bodies = map[string]int{}
	}
	rc.bodies[r.Header.Get(HeaderDelivery)]++
	rc.mu.Unlock()
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		rc.t.Errorf("got %s with content type %q", r.Method, r.Header.Get("Content-Type"))
	}
	if rc.secret != nil && !VerifySignature(rc.secret, body, r.Header.Get(HeaderSignature)) {
		rc.t.Errorf("bad signature %q for %s", r.Header.Get(HeaderSignature), body)
	}
	if rc.secret == nil && r.Header.Get(HeaderSignature) != "" {
		rc.t.Errorf("signature %q without a secret", r.Header.Get(HeaderSignature))
	}
	status := http.StatusOK
	if rc.answer != nil {
		status = rc.answer(n)
	}
	if status == http.StatusOK {
		var e Event
		if err := json.Unmarshal(body, &e); err != nil {
			rc.t.Errorf("decode %s: %v", body, err)
		}
		if got := r.Header.Get(HeaderEvent); got != e.Type {
			rc.t.Errorf("%s header %q, event type %q", HeaderEvent, got, e.Type)
		}
		rc.mu.Lock()
		rc.events = append(rc.events, e)
		rc.mu.Unlock()
	}
	w.WriteHeader(status)
}

func (rc *receiver) got() ([]Event, int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]Event(nil), rc.events...), rc.requests
}

// waitFor polls cond until it holds; the bound is generous, for a loaded machine.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// start runs s until the test ends.
func start(t *testing.T, s *Sender) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	waitFor(t, "Run to start", s.running)
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("Run did not return after its context ended")
		}
	})
}

func fast() []Option {
	return []Option{WithBackoff(time.Millisecond, 10*time.Millisecond), WithTimeout(5 * time.Second)}
}

func TestSenderDeliversEveryEventOnceSigned(t *testing.T) {
	secret := []byte("s3cret")
	signed := &receiver{t: t, secret: secret}
	plain := &receiver{t: t}
	srvSigned, srvPlain := httptest.NewServer(signed), httptest.NewServer(plain)
	defer srvSigned.Close()
	defer srvPlain.Close()

	var results sync.Map
	s := NewSender([]Webhook{{URL: srvSigned.URL + "/hook", Secret: secret}, {URL: srvPlain.URL}}, quiet(),
		append(fast(), WithResult(func(r string) {
			n, _ := results.LoadOrStore(r, new(atomic.Int64))
			n.(*atomic.Int64).Add(1)
		}))...)
	const n = 50
	for i := range n / 2 { // some before Run...
		s.Publish(Event{Type: Types[i%len(Types)], Host: "web-01", Message: fmt.Sprint(i)})
	}
	start(t, s)
	for i := n / 2; i < n; i++ { // ...and some after
		s.Publish(Event{Type: Types[i%len(Types)], Host: "web-01", Message: fmt.Sprint(i)})
	}
	for _, rc := range []*receiver{signed, plain} {
		waitFor(t, "every event", func() bool { e, _ := rc.got(); return len(e) == n })
		evs, reqs := rc.got()
		if reqs != n {
			t.Errorf("%d requests for %d events", reqs, n)
		}
		for i, e := range evs {
			if e.Message != fmt.Sprint(i) || e.Type != Types[i%len(Types)] {
				t.Errorf("event %d: got %q %q", i, e.Type, e.Message)
			}
		}
		for id, k := range rc.bodies {
			if k != 1 || len(id) != 16 {
				t.Errorf("delivery %q seen %d times", id, k)
			}
		}
	}
	// The receiver has them all; the sender counts each once the answer is read.
	waitFor(t, "the counts", func() bool {
		st := s.Stats()
		return st[0].Sent == n && st[1].Sent == n
	})
	for i, st := range s.Stats() {
		if st.Sent != n || st.Failed != 0 || st.Dropped != 0 || st.Queued != 0 {
			t.Errorf("hook %d stats: %+v", i, st)
		}
	}
	if v, _ := results.Load(ResultSent); v.(*atomic.Int64).Load() != 2*n {
		t.Errorf("result callback counted %d sent, want %d", v.(*atomic.Int64).Load(), 2*n)
	}
}

func TestSenderRetriesServerErrors(t *testing.T) {
	rc := &receiver{t: t, answer: func(n int) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	s := NewSender([]Webhook{{URL: srv.URL}}, quiet(), fast()...)
	start(t, s)
	s.Publish(Event{Type: RevertDone, Host: "web-01"})
	waitFor(t, "the event", func() bool { e, _ := rc.got(); return len(e) == 1 })
	_, reqs := rc.got()
	if reqs != 3 {
		t.Errorf("%d requests, want 3 (two 500s, then 200)", reqs)
	}
	if len(rc.bodies) != 1 {
		t.Errorf("retries used %d delivery ids, want 1", len(rc.bodies))
	}
	waitFor(t, "the count", func() bool { return s.Stats()[0].Sent == 1 })
	if st := s.Stats()[0]; st.Failed != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestSenderGivesUp(t *testing.T) {
	tests := []struct {
		name   string
		status int
		want   int // requests
	}{
		{"server error: bounded retries", http.StatusBadGateway, 3},
		{"client error: no retry", http.StatusBadRequest, 1},
		{"redirect: not followed", http.StatusFound, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := &receiver{t: t, answer: func(int) int { return tt.status }}
			srv := httptest.NewServer(rc)
			defer srv.Close()
			s := NewSender([]Webhook{{URL: srv.URL}}, quiet(), append(fast(), WithAttempts(3))...)
			start(t, s)
			s.Publish(Event{Type: RolloutHalted, Host: "web-01"})
			waitFor(t, "the failure", func() bool { return s.Stats()[0].Failed == 1 })
			if _, reqs := rc.got(); reqs != tt.want {
				t.Errorf("%d requests, want %d", reqs, tt.want)
			}
		})
	}
}

// deadURL returns a loopback URL where nothing listens.
func deadURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr + "/hook"
}

func TestPublishNeverBlocks(t *testing.T) {
	hang := make(chan struct{})
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer hanging.Close()
	defer close(hang)

	tests := []struct {
		name string
		url  string
	}{
		{"receiver down", deadURL(t)},
		{"receiver hangs", hanging.URL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const queue, n = 16, 1000
			s := NewSender([]Webhook{{URL: tt.url}}, quiet(), WithQueueSize(queue),
				WithTimeout(30*time.Second), WithBackoff(time.Second, time.Second), WithFlushTimeout(50*time.Millisecond))
			start(t, s)
			began := time.Now()
			for i := range n {
				s.Publish(Event{Type: DriftFound, Host: "web-01", Message: fmt.Sprint(i)})
			}
			if took := time.Since(began); took > 5*time.Second {
				t.Fatalf("%d Publish calls took %v", n, took)
			}
			st := s.Stats()[0]
			// At most one event is out of the queue, being tried; the rest are dropped.
			if st.Queued > queue || st.Dropped < n-queue-1 {
				t.Errorf("stats %+v: want at most %d queued and at least %d dropped", st, queue, n-queue-1)
			}
			closed := make(chan struct{})
			go func() { s.Close(); close(closed) }()
			select {
			case <-closed:
			case <-time.After(20 * time.Second):
				t.Fatal("Close did not return while the receiver hangs")
			}
			st = s.Stats()[0]
			if st.Sent+st.Failed+st.Dropped != n || st.Sent != 0 {
				t.Errorf("after Close: %+v, want the %d events failed or dropped", st, n)
			}
		})
	}
}

func TestSenderFlushesOnStop(t *testing.T) {
	rc := &receiver{t: t}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	s := NewSender([]Webhook{{URL: srv.URL}}, quiet(), append(fast(), WithFlushTimeout(10*time.Second))...)
	for i := range 5 {
		s.Publish(Event{Type: UpgradeSucceeded, Host: "web-01", Message: fmt.Sprint(i)})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the agent is already stopping
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if e, _ := rc.got(); len(e) != 5 {
		t.Fatalf("flushed %d events, want 5", len(e))
	}
	s.Close()
	s.Publish(Event{Type: UpgradeSucceeded, Host: "web-01"})
	if st := s.Stats()[0]; st.Dropped != 1 || st.Queued != 0 {
		t.Errorf("publish after Close: %+v, want 1 dropped", st)
	}
	if err := s.Run(context.Background()); err == nil {
		t.Error("a second Run did not fail")
	}
}

func TestCloseWithoutRun(t *testing.T) {
	s := NewSender([]Webhook{{URL: "http://127.0.0.1:1/"}}, quiet())
	for range 3 {
		s.Publish(Event{Type: DriftFound})
	}
	s.Close()
	s.Close()
	if st := s.Stats()[0]; st.Queued != 0 || st.Dropped != 3 {
		t.Errorf("Close without Run: %+v, want the 3 events dropped", st)
	}
	if err := s.Run(context.Background()); err != nil {
		t.Fatalf("Run after Close: %v", err)
	}
	NewSender(nil, quiet()).Publish(Event{Type: DriftFound}) // no hooks: nothing to do
}

func TestNoSecretInLogs(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rc := &receiver{t: t, secret: []byte("hmac-key"), answer: func(int) int { return http.StatusServiceUnavailable }}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	secretURL := strings.Replace(srv.URL, "http://", "http://user:pa55word@", 1) + "/services/T0KEN1/B0KEN2?token=qu3ry"
	dead := strings.Replace(deadURL(t), "/hook", "/hook/SECRETPATH?key=k3y", 1)
	s := NewSender([]Webhook{{URL: secretURL, Secret: []byte("hmac-key")}, {URL: dead}, {URL: "http://[::1"}}, logger,
		append(fast(), WithAttempts(2))...)
	start(t, s)
	s.Publish(Event{Type: UpgradeFailed, Host: "web-01"})
	waitFor(t, "the failures", func() bool {
		st := s.Stats()
		return st[0].Failed == 1 && st[1].Failed == 1 && st[2].Failed == 1
	})
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	for _, secret := range []string{"pa55word", "user", "T0KEN1", "B0KEN2", "qu3ry", "SECRETPATH", "k3y", "hmac-key", "token="} {
		if strings.Contains(out, secret) {
			t.Errorf("log holds %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "send webhook event") {
		t.Errorf("failures not logged:\n%s", out)
	}
	for _, st := range s.Stats() {
		if strings.Contains(st.URL, "pa55word") || strings.Contains(st.URL, "T0KEN1") {
			t.Errorf("stats name the URL: %s", st.URL)
		}
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestSignature(t *testing.T) {
	// A known answer: printf '{"type":"x"}' | openssl dgst -sha256 -hmac key
	got := Sign([]byte("key"), []byte(`{"type":"x"}`))
	if want := "sha256=32fa32ceb41b3da6e557a5d8cd65326161ef059119e8f8d59025ca0fbbfdafe8"; got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
	if !VerifySignature([]byte("key"), []byte(`{"type":"x"}`), got) {
		t.Fatal("a signature does not verify")
	}
	if VerifySignature([]byte("other"), []byte(`{"type":"x"}`), got) || VerifySignature([]byte("key"), []byte(`{"type":"y"}`), got) {
		t.Fatal("a wrong key or body verifies")
	}
}
