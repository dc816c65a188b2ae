package checks

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/yamldoc"
	"github.com/baton-fleet/baton/spec"
)

func httpCheck(url string, status int, contains string, timeout time.Duration) spec.Check {
	return spec.Check{Name: "health", HTTP: &spec.HTTPCheck{URL: url, Status: status, Contains: contains}, Timeout: yamldoc.Duration(timeout)}
}

func tcpCheck(addr string) spec.Check {
	return spec.Check{Name: "port", TCP: &spec.TCPCheck{Address: addr}, Timeout: yamldoc.Duration(2 * time.Second)}
}

func execCheck(timeout time.Duration, argv ...string) spec.Check {
	return spec.Check{Name: "smoke", Exec: &spec.ExecCheck{Command: argv}, Timeout: yamldoc.Duration(timeout)}
}

// closedAddr is a local address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestProbe(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "all ok") })
	mux.HandleFunc("/down", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "database unreachable", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
	})
	mux.HandleFunc("/hop/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.PathValue("n"))
		if n == 0 {
			fmt.Fprint(w, "arrived ok")
			return
		}
		http.Redirect(w, r, fmt.Sprintf("/hop/%d", n-1), http.StatusFound)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Repeat("x", 64<<10) + "ok"))
	})
	srv := httptest.NewServer(mux)
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
	refused := closedAddr(t)

	tests := []struct {
		name    string
		check   spec.Check
		ok      bool
		err     string // substring of Err
		output  string // substring of Output
		errFull string // Err exactly, when set
	}{
		{name: "http ok", check: httpCheck(srv.URL+"/ok", 200, "ok", 2*time.Second), ok: true, output: "HTTP/1.1 200 OK\nall ok"},
		{name: "http default status", check: httpCheck(srv.URL+"/ok", 0, "", 2*time.Second), ok: true},
		{name: "http wrong status", check: httpCheck(srv.URL+"/down", 200, "", 2*time.Second),
			errFull: "GET " + srv.URL + "/down: status 503, want 200", output: "HTTP/1.1 503 Service Unavailable\ndatabase unreachable"},
		{name: "http missing contains", check: httpCheck(srv.URL+"/ok", 200, "ready", 2*time.Second),
			errFull: "GET " + srv.URL + `/ok: body does not contain "ready"`},
		{name: "http contains beyond 64 KiB", check: httpCheck(srv.URL+"/big", 200, "ok", 2*time.Second), err: `body does not contain "ok"`},
		{name: "http refused", check: httpCheck("http://"+refused+"/", 200, "", 2*time.Second),
			errFull: "GET http://" + refused + "/: connection refused"},
		{name: "http slow", check: httpCheck(srv.URL+"/slow", 200, "", 100*time.Millisecond),
			errFull: "GET " + srv.URL + "/slow: no answer within 100ms"},
		{name: "http 3 redirects followed", check: httpCheck(srv.URL+"/hop/3", 200, "arrived", 2*time.Second), ok: true},
		{name: "http 4th redirect not followed", check: httpCheck(srv.URL+"/hop/4", 200, "", 2*time.Second), err: "status 302, want 200"},
		{name: "tcp ok", check: tcpCheck(l.Addr().String()), ok: true, output: "connected to " + l.Addr().String()},
		{name: "tcp refused", check: tcpCheck(refused), errFull: "connect " + refused + ": connection refused"},
		{name: "exec ok", check: execCheck(5*time.Second, "/bin/sh", "-c", "echo hello"), ok: true, output: "hello\n"},
		{name: "exec by name in the clean PATH", check: execCheck(5*time.Second, "sh", "-c", "exit 0"), ok: true},
		{name: "exec exit 1", check: execCheck(5*time.Second, "/bin/sh", "-c", "echo starting; echo 'smoke: 2 of 5 failed' >&2; exit 1"),
			errFull: "/bin/sh: exit status 1: smoke: 2 of 5 failed", output: "starting\nsmoke: 2 of 5 failed\n"},
		{name: "exec stdin is /dev/null", check: execCheck(5*time.Second, "/bin/sh", "-c", "cat; echo done"), ok: true, output: "done"},
		{name: "exec runs in /", check: execCheck(5*time.Second, "/bin/sh", "-c", "pwd"), ok: true, output: "/\n"},
		{name: "exec timeout", check: execCheck(100*time.Millisecond, "/bin/sh", "-c", "echo waiting; sleep 30"),
			errFull: "/bin/sh: killed after the 100ms timeout: waiting"},
		{name: "exec missing program", check: execCheck(5*time.Second, "/nonexistent/smoke"), err: "/nonexistent/smoke: start:"},
		{name: "no kind", check: spec.Check{Name: "empty"}, err: "none of http, tcp, exec"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Probe(context.Background(), tt.check)
			if tt.errFull != "" {
				tt.err = tt.errFull
			}
			if r.OK != tt.ok || r.OK != (r.Err == "") {
				t.Errorf("OK = %v, Err = %q; want OK %v", r.OK, r.Err, tt.ok)
			}
			if tt.errFull != "" && r.Err != tt.errFull {
				t.Errorf("Err = %q\nwant  %q", r.Err, tt.errFull)
			}
			if !strings.Contains(r.Err, tt.err) {
				t.Errorf("Err = %q, want it to contain %q", r.Err, tt.err)
			}
			if !strings.Contains(r.Output, tt.output) {
				t.Errorf("Output = %q, want it to contain %q", r.Output, tt.output)
			}
			if r.Check != tt.check.Name || r.At.IsZero() {
				t.Errorf("Check = %q, At = %v", r.Check, r.At)
			}
		})
	}
}

func TestProbeCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := Probe(ctx, execCheck(5*time.Second, "/bin/sh", "-c", "sleep 30"))
	if r.OK || r.Err != "/bin/sh: canceled" {
		t.Errorf("got OK %v, Err %q; want /bin/sh: canceled", r.OK, r.Err)
	}
}

// gone reports whether pid has exited: it no longer exists, or is a zombie that
// nobody reaped (as under a PID 1 that does not reap orphans).
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// waitGone waits a while for pid to exit; SIGKILL is delivered asynchronously.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	for range 100 {
		if gone(pid) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	t.Errorf("process %d outlived the check", pid)
}

func readPid(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("the command did not write its child's pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestExecTimeoutKillsProcessGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	// The grandchild keeps the output pipe open, and the shell waits for it.
	script := fmt.Sprintf("sleep 30 & echo $! > %s; wait", pidFile)
	r := Probe(context.Background(), execCheck(300*time.Millisecond, "/bin/sh", "-c", script))
	if r.OK || !strings.Contains(r.Err, "killed after the 300ms timeout") {
		t.Errorf("got OK %v, Err %q; want killed after the timeout", r.OK, r.Err)
	}
	waitGone(t, readPid(t, pidFile))
}

func TestExecKillsWhatTheCommandLeftBehind(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	// The shell exits 0 at once; its child would hold the output pipe for 30s.
	script := fmt.Sprintf("sleep 30 & echo $! > %s; echo started", pidFile)
	r := Probe(context.Background(), execCheck(20*time.Second, "/bin/sh", "-c", script))
	if !r.OK || r.Output != "started\n" {
		t.Errorf("got OK %v, Err %q, Output %q; want OK with output started", r.OK, r.Err, r.Output)
	}
	waitGone(t, readPid(t, pidFile))
}

func TestExecCleanEnvironment(t *testing.T) {
	t.Setenv("BATON_TEST_SECRET", "hunter2")
	r := Probe(context.Background(), execCheck(5*time.Second, "/usr/bin/env"))
	if !r.OK {
		t.Fatalf("env failed: %s", r.Err)
	}
	got := strings.Split(strings.TrimSpace(r.Output), "\n")
	want := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("environment:\n%s\nwant only:\n%s", r.Output, strings.Join(want, "\n"))
	}
}

func TestExecOutputTail(t *testing.T) {
	// 10000 lines of 7 bytes: only the last 4 KiB are kept.
	r := Probe(context.Background(), execCheck(5*time.Second, "/bin/sh", "-c", "i=0; while [ $i -lt 10000 ]; do printf 'l%05d\\n' $i; i=$((i+1)); done; exit 3"))
	if len(r.Output) > maxOutput || !strings.HasSuffix(r.Output, "l09999\n") {
		t.Errorf("Output is %d bytes ending %q; want at most %d ending l09999", len(r.Output), r.Output[max(0, len(r.Output)-20):], maxOutput)
	}
	if r.Err != "/bin/sh: exit status 3: l09999" {
		t.Errorf("Err = %q", r.Err)
	}
}

func TestExecAsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running as another user needs root")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody")
	}
	p := &Prober{User: "nobody"}
	r := p.Probe(context.Background(), execCheck(5*time.Second, "/bin/sh", "-c", "id -u; id -g"))
	if want := u.Uid + "\n" + u.Gid + "\n"; !r.OK || r.Output != want {
		t.Errorf("got OK %v, Err %q, Output %q; want %q", r.OK, r.Err, r.Output, want)
	}

	p = &Prober{User: "no-such-user-baton"}
	r = p.Probe(context.Background(), execCheck(5*time.Second, "/bin/true"))
	if r.OK || !strings.Contains(r.Err, "run as no-such-user-baton") {
		t.Errorf("got OK %v, Err %q; want a lookup error", r.OK, r.Err)
	}
}

// TestExecCheckUser runs checks that name their own user: the check's exec.user
// wins over the Prober's User, and an unknown user fails the check naming it.
func TestExecCheckUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running as another user needs root")
	}
	for _, name := range []string{"nobody", "daemon"} {
		if _, err := user.Lookup(name); err != nil {
			t.Skipf("no user %s", name)
		}
	}
	asUser := func(u string, argv ...string) spec.Check {
		c := execCheck(5*time.Second, argv...)
		c.Exec.User = u
		return c
	}
	for _, tt := range []struct {
		name   string
		prober *Prober
		check  spec.Check
		output string // Output exactly, when OK
		err    string // Err exactly, when not OK
	}{
		{name: "check user", prober: &Prober{},
			check: asUser("nobody", "/bin/sh", "-c", "id -un"), output: "nobody\n"},
		{name: "check user over the prober's", prober: &Prober{User: "daemon"},
			check: asUser("nobody", "/bin/sh", "-c", "id -un"), output: "nobody\n"},
		{name: "prober's user without a check user", prober: &Prober{User: "daemon"},
			check: asUser("", "/bin/sh", "-c", "id -un"), output: "daemon\n"},
		{name: "test in the command", prober: &Prober{},
			check: asUser("nobody", "/bin/sh", "-c", `test "$(id -un)" = nobody && test "$(id -u)" != 0`), output: ""},
		{name: "unknown user", prober: &Prober{},
			check: asUser("no-such-user-baton", "/bin/true"),
			err:   "/bin/true: run as no-such-user-baton: user: unknown user no-such-user-baton"},
		{name: "unknown check user over a known prober user", prober: &Prober{User: "nobody"},
			check: asUser("no-such-user-baton", "/bin/true"),
			err:   "/bin/true: run as no-such-user-baton: user: unknown user no-such-user-baton"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.prober.User
			r := tt.prober.Probe(context.Background(), tt.check)
			if tt.prober.User != before {
				t.Errorf("Probe changed the Prober's User from %q to %q", before, tt.prober.User)
			}
			if tt.err == "" {
				if !r.OK || r.Output != tt.output {
					t.Errorf("got OK %v, Err %q, Output %q; want OK with output %q", r.OK, r.Err, r.Output, tt.output)
				}
				return
			}
			if r.OK || r.Err != tt.err {
				t.Errorf("got OK %v, Err %q; want Err %q", r.OK, r.Err, tt.err)
			}
			if r.Output != tt.err {
				t.Errorf("Output = %q, want the error %q: the command never ran", r.Output, tt.err)
			}
		})
	}
}

// An exec.user is refused at start when the agent is not root, and the error
// says as whom it was to run.
func TestExecCheckUserNotRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root may run as any user")
	}
	c := execCheck(5*time.Second, "/bin/true")
	c.Exec.User = "nobody"
	if _, err := user.Lookup("nobody"); err != nil {
		t.Skip("no user nobody")
	}
	r := Probe(context.Background(), c)
	if r.OK || !strings.Contains(r.Err, "/bin/true: start as nobody: ") {
		t.Errorf("got OK %v, Err %q; want a start error naming nobody", r.OK, r.Err)
	}
}

func readPidMaybe(file string) (int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
