package main

// These tests run the built binary, as baton's tests and demo do.

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestOKServes(t *testing.T) {
	t.Parallel()
	bin := buildDemo(t, "1.0.0", modeOK)
	p := startDemo(t, bin)
	p.waitServing()
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		path       string
		wantStatus int
		wantBody   string
	}{
		{"/healthz", http.StatusOK, "ok\n"},
		{"/version", http.StatusOK, "1.0.0\n"},
		{"/", http.StatusOK, "hello from " + host + " version 1.0.0\n"},
		{"/nope", http.StatusNotFound, "404 page not found\n"},
	}
	for _, tt := range tests {
		resp, body := p.get(tt.path)
		if resp.StatusCode != tt.wantStatus || body != tt.wantBody {
			t.Errorf("GET %s = %d %q, want %d %q", tt.path, resp.StatusCode, body, tt.wantStatus, tt.wantBody)
		}
		if got := resp.Header.Get("X-Demo-Version"); got != "1.0.0" {
			t.Errorf("GET %s: X-Demo-Version = %q, want 1.0.0", tt.path, got)
		}
	}
	for range 20 {
		p.get("/")
	}

	p.signal(syscall.SIGTERM)
	if code := p.exitCode(); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0", code)
	}
	// One line per start and stop, none per request.
	logs := p.stderr.String()
	if n := strings.Count(logs, "\n"); n > 6 {
		t.Errorf("%d log lines after 24 requests, want at most 6:\n%s", n, logs)
	}
	for _, want := range []string{"msg=starting", "msg=serving", "msg=stopping", "msg=stopped"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
}

func TestFailHealth(t *testing.T) {
	t.Parallel()
	bin := buildDemo(t, "2.0.0", modeFailHealth)
	p := startDemo(t, bin)
	p.waitServing()

	tests := []struct {
		path       string
		wantStatus int
		wantBody   string
	}{
		{"/healthz", http.StatusServiceUnavailable, "unhealthy\n"},
		{"/version", http.StatusOK, "2.0.0\n"},
		{"/", http.StatusOK, ""},
	}
	for _, tt := range tests {
		resp, body := p.get(tt.path)
		if resp.StatusCode != tt.wantStatus || !strings.HasPrefix(body, tt.wantBody) {
			t.Errorf("GET %s = %d %q, want %d %q", tt.path, resp.StatusCode, body, tt.wantStatus, tt.wantBody)
		}
		if got := resp.Header.Get("X-Demo-Version"); got != "2.0.0" {
			t.Errorf("GET %s: X-Demo-Version = %q, want 2.0.0", tt.path, got)
		}
	}
}

func TestFlagsOverrideBuild(t *testing.T) {
	t.Parallel()
	bin := buildDemo(t, "2.0.0", modeFailHealth)
	p := startDemo(t, bin, "--version", "2.0.1", "--mode", modeOK)
	p.waitServing()
	if resp, body := p.get("/healthz"); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz = %d %q, want 200", resp.StatusCode, body)
	}
	if _, body := p.get("/version"); body != "2.0.1\n" {
		t.Errorf("GET /version = %q, want %q", body, "2.0.1\n")
	}
}

func TestCrashAfter(t *testing.T) {
	t.Parallel()
	bin := buildDemo(t, "3.0.0", modeCrashAfter, "crashAfter=1s")
	p := startDemo(t, bin)
	p.waitServing()
	// The health check passes at first: the crash comes later.
	if resp, body := p.get("/healthz"); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz before the crash = %d %q, want 200", resp.StatusCode, body)
	}
	if code := p.exitCode(); code == 0 {
		t.Fatal("exit code 0, want non-zero")
	}
	if logs := p.stderr.String(); !strings.Contains(logs, "crash") {
		t.Errorf("logs do not say it crashed:\n%s", logs)
	}
}

func TestExitMode(t *testing.T) {
	t.Parallel()
	bin := buildDemo(t, "4.0.0", modeExit)
	ns := listenNotify(t)
	cmd := exec.Command(bin, "--listen", freeAddr(t))
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+ns.path)
	p := start(t, cmd, "")
	if code := p.exitCode(); code != 2 {
		t.Fatalf("exit code = %d, want 2", code)
	}
	if logs := p.stderr.String(); !strings.Contains(logs, "refuses to start") {
		t.Errorf("logs do not say why it exits:\n%s", logs)
	}
	if msgs := ns.drain(); len(msgs) > 0 {
		t.Errorf("sd_notify messages %q, want none", msgs)
	}
	if logs := p.stderr.String(); strings.Contains(logs, "msg=serving") {
		t.Errorf("it served:\n%s", logs)
	}
}

func TestSIGTERMCompletesInFlightRequest(t *testing.T) {
	t.Parallel()
	bin := buildDemo(t, "1.0.0", modeOK)
	ns := listenNotify(t)
	addr := freeAddr(t)
	cmd := exec.Command(bin, "--listen", addr, "--request-delay", "1s")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+ns.path)
	p := start(t, cmd, addr)
	p.waitServing()
	if msg := ns.next(t); !strings.Contains(msg, "READY=1") {
		t.Fatalf("first sd_notify message %q, want READY=1", msg)
	}

	type result struct {
		status int
		body   string
		at     time.Time
		err    error
	}
	wrote := make(chan struct{})
	res := make(chan result, 1)
	go func() {
		trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { close(wrote) }}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), "GET", "http://"+addr+"/", nil)
		if err != nil {
			res <- result{err: err}
			return
		}
		resp, body, err := do(req)
		if err != nil {
			res <- result{err: err}
			return
		}
		res <- result{status: resp.StatusCode, body: body, at: time.Now()}
	}()
	select {
	case <-wrote:
	case r := <-res:
		t.Fatalf("request ended before it was written: %+v", r)
	case <-time.After(startTimeout):
		t.Fatal("request not written")
	}
	time.Sleep(300 * time.Millisecond) // let the server read it; it is now in its 1s delay
	signaled := time.Now()
	p.signal(syscall.SIGTERM)

	r := <-res
	if r.err != nil {
		t.Fatalf("in-flight request failed: %v", r.err)
	}
	if r.status != http.StatusOK || !strings.HasPrefix(r.body, "hello from ") {
		t.Errorf("in-flight request = %d %q, want 200 hello", r.status, r.body)
	}
	if !r.at.After(signaled) {
		t.Errorf("response came before SIGTERM; the test proved nothing")
	}
	if code := p.exitCode(); code != 0 {
		t.Fatalf("exit code = %d, want 0", code)
	}
	if msg := ns.next(t); !strings.Contains(msg, "STOPPING=1") {
		t.Errorf("sd_notify after SIGTERM %q, want STOPPING=1", msg)
	}
}

func TestSlowStart(t *testing.T) {
	t.Parallel()
	const delay = 700 * time.Millisecond
	bin := buildDemo(t, "5.0.0", modeSlowStart)
	ns := listenNotify(t)
	addr := freeAddr(t)
	cmd := exec.Command(bin, "--listen", addr, "--start-delay", delay.String())
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+ns.path)
	started := time.Now()
	p := start(t, cmd, addr)
	p.waitServing()
	if waited := time.Since(started); waited < delay {
		t.Errorf("serving after %s, want at least %s", waited, delay)
	}
	var msgs []string
	for range 2 {
		msgs = append(msgs, ns.next(t))
	}
	if !strings.Contains(msgs[0], "STATUS=starting") || !strings.Contains(msgs[1], "READY=1") {
		t.Errorf("sd_notify messages %q, want STATUS=starting then READY=1", msgs)
	}
}

func TestSlowStartStopsOnSIGTERM(t *testing.T) {
	t.Parallel()
	bin := buildDemo(t, "5.0.0", modeSlowStart)
	ns := listenNotify(t)
	cmd := exec.Command(bin, "--listen", freeAddr(t), "--start-delay", "1h")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+ns.path)
	p := start(t, cmd, "")
	if msg := ns.next(t); !strings.Contains(msg, "STATUS=starting") {
		t.Fatalf("sd_notify message %q, want STATUS=starting", msg)
	}
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(); code != 0 {
		t.Fatalf("exit code = %d, want 0", code)
	}
}

func TestSocketActivation(t *testing.T) {
	t.Parallel()
	bin := buildDemo(t, "1.0.0", modeOK)

	t.Run("passed fd", func(t *testing.T) {
		l, f := activationSocket(t)
		p := startActivated(t, bin, l, f)
		// Only the child holds the socket now.
		f.Close()
		l.Close()
		p.waitServing()
		if _, body := p.get("/version"); body != "1.0.0\n" {
			t.Errorf("GET /version = %q, want 1.0.0", body)
		}
		if logs := p.stderr.String(); !strings.Contains(logs, "socket_activated=true") {
			t.Errorf("logs do not say it was socket-activated:\n%s", logs)
		}
		p.signal(syscall.SIGTERM)
		if code := p.exitCode(); code != 0 {
			t.Fatalf("exit code = %d, want 0", code)
		}
	})

	// While the socket outlives the service, as a .socket unit does, a
	// connection made between two versions waits for the next one instead
	// of being refused.
	t.Run("restart keeps connections", func(t *testing.T) {
		l, f := activationSocket(t)
		v1 := startActivated(t, bin, l, f)
		v1.waitServing()
		v1.signal(syscall.SIGTERM)
		if code := v1.exitCode(); code != 0 {
			t.Fatalf("v1 exit code = %d, want 0", code)
		}

		type result struct {
			version string
			err     error
		}
		res := make(chan result, 1)
		go func() {
			resp, _, err := get("http://" + v1.addr + "/")
			if err != nil {
				res <- result{err: err}
				return
			}
			res <- result{version: resp.Header.Get("X-Demo-Version")}
		}()
		time.Sleep(100 * time.Millisecond) // the request waits in the socket's queue

		v2 := startActivated(t, buildDemo(t, "2.0.0", modeOK), l, f)
		r := <-res
		if r.err != nil {
			t.Fatalf("request during the restart failed: %v", r.err)
		}
		if r.version != "2.0.0" {
			t.Errorf("request during the restart served by version %q, want 2.0.0", r.version)
		}
		v2.signal(syscall.SIGTERM)
		if code := v2.exitCode(); code != 0 {
			t.Fatalf("v2 exit code = %d, want 0", code)
		}
	})

	t.Run("systemd-socket-activate", func(t *testing.T) {
		activate, err := exec.LookPath("systemd-socket-activate")
		if err != nil {
			t.Skipf("systemd-socket-activate not installed: %v", err)
		}
		addr := freeAddr(t)
		// It listens, and execs the demo in its own pid on the first connection.
		cmd := exec.Command(activate, "-l", addr, bin, "--listen", heldAddr(t))
		p := start(t, cmd, addr)
		p.waitServing()
		resp, body := p.get("/")
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "version 1.0.0") {
			t.Errorf("GET / = %d %q, want 200 version 1.0.0", resp.StatusCode, body)
		}
		if logs := p.stderr.String(); !strings.Contains(logs, "socket_activated=true") {
			t.Errorf("logs do not say it was socket-activated:\n%s", logs)
		}
		p.signal(syscall.SIGTERM)
		if code := p.exitCode(); code != 0 {
			t.Fatalf("exit code = %d, want 0", code)
		}
	})
}

// activationSocket returns a listening socket on a free 127.0.0.1 port and a
// file of it to pass to a child; both are closed at cleanup.
func activationSocket(t *testing.T) (*net.TCPListener, *os.File) {
	t.Helper()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return l, f
}

// startActivated starts bin socket-activated on f, a file of l, through the test binary
// (see reexecActivated) so that LISTEN_PID names the demo's own pid. Its
// --listen names a port held by the test: were it used, the demo would fail.
func startActivated(t *testing.T, bin string, l net.Listener, f *os.File) *proc {
	t.Helper()
	addr := l.Addr().String()
	cmd := exec.Command(os.Args[0], "--listen", heldAddr(t))
	cmd.Env = append(os.Environ(), reexecEnv+"="+bin)
	cmd.ExtraFiles = []*os.File{f}
	return start(t, cmd, addr)
}

// heldAddr returns a 127.0.0.1 address on which the test listens until cleanup.
func heldAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().String()
}

func do(req *http.Request) (*http.Response, string, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

// notifySocket receives sd_notify messages, as systemd does on $NOTIFY_SOCKET.
type notifySocket struct {
	path string
	conn *net.UnixConn
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	// A short directory: unix socket paths are limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "demo-notify-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &notifySocket{path: path, conn: conn}
}

// next returns the next message, failing the test if none comes in time.
func (n *notifySocket) next(t *testing.T) string {
	t.Helper()
	msg, err := n.read(startTimeout)
	if err != nil {
		t.Fatalf("no sd_notify message: %v", err)
	}
	return msg
}

// drain returns the messages already received.
func (n *notifySocket) drain() []string {
	var msgs []string
	for {
		msg, err := n.read(10 * time.Millisecond)
		if err != nil {
			return msgs
		}
		msgs = append(msgs, msg)
	}
}

func (n *notifySocket) read(timeout time.Duration) (string, error) {
	if err := n.conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}
	buf := make([]byte, 4096)
	k, _, err := n.conn.ReadFromUnix(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "", errors.New("timed out")
	}
	return string(buf[:k]), err
}
