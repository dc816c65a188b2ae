package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeBackend is the agent, as the server sees it.
type fakeBackend struct {
	mu      sync.Mutex
	state   State
	err     error // returned by every call when set
	calls   []string
	blockCh chan struct{} // Rollback waits on it when set
}

func (f *fakeBackend) record(call string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	return f.err
}

func (f *fakeBackend) State(context.Context) (State, error) {
	err := f.record("state")
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state, err
}

func (f *fakeBackend) Sync(context.Context) error { return f.record("sync") }

func (f *fakeBackend) Rollback(ctx context.Context, to string) (RollbackAnswer, error) {
	if f.blockCh != nil {
		select {
		case <-f.blockCh:
		case <-ctx.Done():
			return RollbackAnswer{}, ctx.Err()
		}
	}
	if to == "" {
		to = "1111111"
	}
	return RollbackAnswer{From: "2222222", To: to}, f.record("rollback " + to)
}

func (f *fakeBackend) Retry(_ context.Context, commit string) error {
	return f.record("retry " + commit)
}

func (f *fakeBackend) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// serve starts a server on a socket in a temporary directory, until the test ends.
func serve(t *testing.T, b Backend) (*Server, *Client) {
	t.Helper()
	return serveLog(t, b, quiet())
}

func serveLog(t *testing.T, b Backend, logger *slog.Logger) (*Server, *Client) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "b.sock")
	s, err := NewServer(path, -1, b, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("Serve did not return after its context ended")
		}
	})
	return s, NewClient(path)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestStatusRoundTrip(t *testing.T) {
	for name, st := range map[string]State{"idle": idleState(), "upgrading": upgradingState(), "failed": failedState()} {
		t.Run(name, func(t *testing.T) {
			_, c := serve(t, &fakeBackend{state: st})
			got, err := c.State(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, st) {
				t.Errorf("got  %+v\nwant %+v", got, st)
			}
		})
	}
}

// TestStatusJSON pins the JSON form that scripts read (`baton status --json`).
func TestStatusJSON(t *testing.T) {
	_, c := serve(t, &fakeBackend{state: failedState()})
	resp, err := c.hc.Get("http://baton" + PathStatus)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type %q", ct)
	}
	body, _ := io.ReadAll(resp.Body)
	golden(t, "status-failed.json", body)
}

func TestStatusDefaults(t *testing.T) {
	s, c := serve(t, &fakeBackend{state: State{Host: "web-01"}})
	at := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	s.now = func() time.Time { return at }
	got, err := c.State(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Time.Equal(at) {
		t.Errorf("time %v, want the server's %v", got.Time, at)
	}
	if got.Services == nil || got.Quarantined == nil || got.Events == nil {
		t.Errorf("lists are null, not empty: %+v", got)
	}
}

func TestCommandsReachTheBackend(t *testing.T) {
	b := &fakeBackend{}
	_, c := serve(t, b)
	if err := c.Sync(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if ans, err := c.Rollback(ctx(t), ""); err != nil || ans != (RollbackAnswer{From: "2222222", To: "1111111"}) {
		t.Fatalf("Rollback: %+v, %v", ans, err)
	}
	if ans, err := c.Rollback(ctx(t), "ABCDEF0"); err != nil || ans.To != "abcdef0" {
		t.Fatalf("Rollback to abcdef0: %+v, %v", ans, err)
	}
	if err := c.Retry(ctx(t), "ABCDEF0123"); err != nil {
		t.Fatal(err)
	}
	want := []string{"sync", "rollback 1111111", "rollback abcdef0", "retry abcdef0123"}
	if got := b.got(); !reflect.DeepEqual(got, want) {
		t.Errorf("backend got %q, want %q", got, want)
	}
}

func TestErrorsCarryMessages(t *testing.T) {
	tests := []struct {
		err    error
		status int
		is     error
	}{
		{fmt.Errorf("%w: a transaction is in progress (VERIFYING)", ErrConflict), 409, ErrConflict},
		{fmt.Errorf("commit 1234567: %w", ErrNotFound), 404, ErrNotFound},
		{fmt.Errorf("%w: no last good revision to go back to", ErrInvalid), 400, ErrInvalid},
		{fmt.Errorf("%w: recovering after a crash", ErrNotReady), 503, ErrNotReady},
		{errors.New("read the state directory: disk on fire"), 500, nil},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			_, c := serve(t, &fakeBackend{err: tt.err})
			calls := map[string]func() error{
				"state":    func() error { _, err := c.State(ctx(t)); return err },
				"sync":     func() error { return c.Sync(ctx(t)) },
				"rollback": func() error { _, err := c.Rollback(ctx(t), ""); return err },
				"retry":    func() error { return c.Retry(ctx(t), "1234567") },
			}
			for name, call := range calls {
				err := call()
				var ae *Error
				if !errors.As(err, &ae) {
					t.Fatalf("%s: error %v is not an *Error", name, err)
				}
				if ae.Status != tt.status || ae.Message != tt.err.Error() {
					t.Errorf("%s: got %d %q, want %d %q", name, ae.Status, ae.Message, tt.status, tt.err.Error())
				}
				if tt.is != nil && !errors.Is(err, tt.is) {
					t.Errorf("%s: %v is not %v", name, err, tt.is)
				}
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	b := &fakeBackend{}
	_, c := serve(t, b)
	tests := []struct {
		method, path, body string
		status             int
		msg                string
	}{
		{"GET", "/v1/nope", "", 404, "no endpoint /v1/nope"},
		{"GET", "/", "", 404, "no endpoint /"},
		{"POST", PathStatus, "", 405, "/v1/status takes GET, not POST"},
		{"GET", PathSync, "", 405, "/v1/sync takes POST, not GET"},
		{"DELETE", PathRollback, "", 405, "/v1/rollback takes POST, not DELETE"},
		{"POST", PathRetry, "", 400, "empty request body"},
		{"POST", PathRetry, `{}`, 400, "commit is required"},
		{"POST", PathRetry, `{"commit":"xyz1234"}`, 400, "commit must be hex digits"},
		{"POST", PathRetry, `{"commit":"abc"}`, 400, "commit must be 7 to 64 hex digits"},
		{"POST", PathRetry, `{"commit":"abcdef0","force":true}`, 400, `unknown field "force"`},
		{"POST", PathRetry, `{"commit":"abcdef0"} {}`, 400, "data after the JSON object"},
		{"POST", PathRetry, `["abcdef0"]`, 400, "not a JSON object"},
		{"POST", PathRetry, `{"commit":1234567}`, 400, "cannot unmarshal number"},
		{"POST", PathRetry, `{"commit":"` + strings.Repeat("a", 5000) + `"}`, 413, "over 4096 bytes"},
		{"POST", PathSync, `{"now":true}`, 400, `unknown field "now"`},
		{"POST", PathSync, `null`, 400, "not a JSON object"},
		{"POST", PathRollback, `{`, 400, "unexpected EOF"},
		{"POST", PathRollback, `{"to":"main"}`, 400, "commit must be 7 to 64 hex digits"},
		{"POST", PathRollback, `{"to":"abcdefg"}`, 400, "commit must be hex digits"},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, "http://baton"+tt.path, strings.NewReader(tt.body))
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e errorBody
		if err := json.Unmarshal(data, &e); err != nil {
			t.Errorf("%s %s %.40q: answer is not JSON: %s", tt.method, tt.path, tt.body, data)
		}
		if resp.StatusCode != tt.status || !strings.Contains(e.Error, tt.msg) {
			t.Errorf("%s %s %.40q: got %d %q, want %d %q", tt.method, tt.path, tt.body, resp.StatusCode, e.Error, tt.status, tt.msg)
		}
		if tt.status == 405 && resp.Header.Get("Allow") == "" {
			t.Errorf("%s %s: 405 without Allow", tt.method, tt.path)
		}
	}
	if calls := b.got(); len(calls) != 0 {
		t.Errorf("bad requests reached the backend: %q", calls)
	}
	for _, body := range []string{"", " \n", "{}", " {} "} {
		req, _ := http.NewRequest("POST", "http://baton"+PathSync, strings.NewReader(body))
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Errorf("sync with body %q: %d", body, resp.StatusCode)
		}
	}
}

func TestSocketModeAndGroup(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run", "b.sock") // the directory is created
	gid := os.Getgid()
	s, err := NewServer(path, gid, &fakeBackend{}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Errorf("mode %v, want a socket with 0660", fi.Mode())
	}
	if g := fi.Sys().(*syscall.Stat_t).Gid; int(g) != gid {
		t.Errorf("group %d, want %d", g, gid)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("the directory holds %d entries, want only the socket", len(entries))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still there after Close: %v", err)
	}
}

func TestServeRemovesTheSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.sock")
	s, err := NewServer(path, -1, &fakeBackend{state: State{Host: "web-01"}}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	c, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(c) }()
	if _, err := NewClient(path).State(ctx(t)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still there: %v", err)
	}
	_, err = NewClient(path).State(ctx(t))
	if err == nil || !strings.Contains(err.Error(), "is the agent running?") {
		t.Errorf("a client of a stopped agent: %v", err)
	}
}

func TestServeCancelsRequestsInFlight(t *testing.T) {
	b := &fakeBackend{blockCh: make(chan struct{})}
	path := filepath.Join(t.TempDir(), "b.sock")
	s, err := NewServer(path, -1, b, quiet())
	if err != nil {
		t.Fatal(err)
	}
	c, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(c) }()
	errc := make(chan error, 1)
	go func() { _, err := NewClient(path).Rollback(ctx(t), ""); errc <- err }()
	time.Sleep(50 * time.Millisecond) // let the request start; the test holds either way
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Serve waits for a request that blocks")
	}
	if err := <-errc; err == nil {
		t.Error("the blocked rollback succeeded")
	}
}

func TestStaleSocketRemoved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close() // a crashed agent's socket: there, and nobody answers
	if _, err := os.Lstat(path); err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(path, -1, &fakeBackend{state: State{Host: "web-01"}}, quiet())
	if err != nil {
		t.Fatalf("a stale socket: %v", err)
	}
	s.Close()
}

func TestRefusesPath(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "dir")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{file, sub, link} {
		if _, err := NewServer(p, -1, &fakeBackend{}, quiet()); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("NewServer(%s): %v, want a refusal", filepath.Base(p), err)
		}
	}
	if data, _ := os.ReadFile(file); string(data) != "keep me" {
		t.Errorf("the file changed: %q", data)
	}
	if _, err := NewServer("", -1, &fakeBackend{}, quiet()); err == nil {
		t.Error("an empty path was accepted")
	}
	if _, err := NewServer("/"+strings.Repeat("x", 120), -1, &fakeBackend{}, quiet()); err == nil {
		t.Error("a path too long for a socket was accepted")
	}
}

func TestRefusesWhenAnotherServerAnswers(t *testing.T) {
	s, c := serve(t, &fakeBackend{state: State{Host: "web-01"}})
	if _, err := NewServer(s.Path(), -1, &fakeBackend{}, quiet()); err == nil || !strings.Contains(err.Error(), "another server answers") {
		t.Fatalf("second server: %v", err)
	}
	if st, err := c.State(ctx(t)); err != nil || st.Host != "web-01" {
		t.Fatalf("the first server after the refusal: %v %v", st.Host, err)
	}
}

func TestNoSecretInStatus(t *testing.T) {
	st := idleState()
	st.Fetch.Error = `fetch "https://oauth2:t0ken@git.example.com/ops/fleet.git": authentication required`
	st.LastResult = &Result{Outcome: OutcomeFailed, Message: "download https://releases.example.com/api.tgz?X-Amz-Signature=s1gned&X-Amz-Credential=cr3d: 403",
		Output: "GET http://user:pa55@127.0.0.1:8080/healthz?key=k3y -> 500"}
	st.Quarantined = []Quarantined{{Commit: "abcdef0", Reason: "see https://tok3n@hooks.example.com/x"}}
	st.Rejected = &Rejected{Commit: "abcdef0", Reason: "ssh://git@git.example.com/ops/fleet.git rewound"}
	b := &fakeBackend{state: st, err: nil}
	_, c := serve(t, b)
	got, err := c.State(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(got)
	for _, secret := range []string{"t0ken", "s1gned", "cr3d", "pa55", "k3y", "tok3n"} {
		if bytes.Contains(data, []byte(secret)) {
			t.Errorf("status holds %q: %s", secret, data)
		}
	}
	for _, kept := range []string{"git.example.com/ops/fleet.git", "ssh://git.example.com/ops/fleet.git rewound", "authentication required", "X-Amz-Signature=REDACTED"} {
		if !bytes.Contains(data, []byte(kept)) {
			t.Errorf("status lost %q: %s", kept, data)
		}
	}
	b.mu.Lock()
	b.err = errors.New("fetch https://u:secretpw@git.example.com/x: 401")
	b.mu.Unlock()
	if err := c.Sync(ctx(t)); err == nil || strings.Contains(err.Error(), "secretpw") {
		t.Errorf("error answer: %v", err)
	}
}

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

func TestCommandsAreLoggedWithTheCaller(t *testing.T) {
	var buf syncBuffer
	_, c := serveLog(t, &fakeBackend{}, slog.New(slog.NewTextHandler(&buf, nil)))
	if _, err := c.Rollback(ctx(t), ""); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("uid=%d pid=%d", os.Getuid(), os.Getpid())
	if out := buf.String(); !strings.Contains(out, "endpoint=/v1/rollback") || !strings.Contains(out, want) {
		t.Errorf("log %q does not name the endpoint and %s", out, want)
	}
}
