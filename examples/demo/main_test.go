package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// reexecEnv, when set, makes the test binary exec the demo binary it names with
// LISTEN_PID set to its own pid: a socket activator without systemd.
const reexecEnv = "DEMO_TEST_REEXEC"

// Bounds on how long the tests wait for the demo processes.
const (
	startTimeout = 15 * time.Second
	exitTimeout  = 15 * time.Second
)

// binDir holds the demo binaries built by buildDemo.
var binDir string

func TestMain(m *testing.M) {
	if bin := os.Getenv(reexecEnv); bin != "" {
		reexecActivated(bin)
	}
	dir, err := os.MkdirTemp("", "demo-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// reexecActivated replaces this process with the demo binary bin, passing it
// fd 3 (set up by startActivated) as systemd would: LISTEN_FDS=1 and
// LISTEN_PID equal to the pid, which exec keeps.
func reexecActivated(bin string) {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, reexecEnv+"=") {
			env = append(env, kv)
		}
	}
	env = append(env, "LISTEN_FDS=1", "LISTEN_FDNAMES=http", "LISTEN_PID="+strconv.Itoa(os.Getpid()))
	err := syscall.Exec(bin, append([]string{bin}, os.Args[1:]...), env)
	fmt.Fprintf(os.Stderr, "exec %s: %v\n", bin, err)
	os.Exit(127)
}

type build struct {
	once sync.Once
	path string
	err  error
}

var (
	buildsMu sync.Mutex
	builds   = map[string]*build{}
)

// buildDemo returns the path of the demo binary built with -X main.version and
// -X main.mode, plus each extra "name=value" as -X main.name=value. Each
// combination is built once per test run.
func buildDemo(t *testing.T, version, mode string, extra ...string) string {
	t.Helper()
	xs := append([]string{"version=" + version, "mode=" + mode}, extra...)
	key := strings.Join(xs, " ")

	buildsMu.Lock()
	b, ok := builds[key]
	if !ok {
		b = &build{path: filepath.Join(binDir, fmt.Sprintf("demo-%d", len(builds)))}
		builds[key] = b
	}
	buildsMu.Unlock()

	b.once.Do(func() {
		var ldflags []string
		for _, x := range xs {
			ldflags = append(ldflags, "-X main."+x)
		}
		cmd := exec.Command("go", "build", "-o", b.path, "-ldflags", strings.Join(ldflags, " "), ".")
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build (%s): %v\n%s", key, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// proc is a started demo process.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	addr   string        // where it serves
	stderr *syncBuffer   // its logs
	done   chan struct{} // closed when it has exited
	err    error         // from Wait, set before done closes
}

// startDemo starts bin on a free 127.0.0.1 port and kills it at cleanup.
func startDemo(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(bin, append([]string{"--listen", addr}, args...)...)
	return start(t, cmd, addr)
}

// start starts cmd, which will serve on addr, and kills it at cleanup.
func start(t *testing.T, cmd *exec.Cmd, addr string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: cmd, addr: addr, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", filepath.Base(cmd.Path), p.stderr)
		}
	})
	return p
}

// freeAddr returns a 127.0.0.1 address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitServing polls /healthz until the process answers with any status.
func (p *proc) waitServing() {
	p.t.Helper()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := client.Get("http://" + p.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			return
		}
		select {
		case <-p.done:
			p.t.Fatalf("exited before serving: %v\nstderr:\n%s", p.err, p.stderr)
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("not serving on %s after %s: %v", p.addr, startTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// get fetches path and returns the response with its body read.
func (p *proc) get(path string) (*http.Response, string) {
	p.t.Helper()
	resp, body, err := get("http://" + p.addr + path)
	if err != nil {
		p.t.Fatal(err)
	}
	return resp, body
}

func get(url string) (*http.Response, string, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", fmt.Errorf("read %s: %w", url, err)
	}
	return resp, string(body), nil
}

func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// exitCode waits for the process to exit and returns its exit code.
func (p *proc) exitCode() int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(exitTimeout):
		p.t.Fatalf("still running after %s", exitTimeout)
	}
	if p.err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) {
		p.t.Fatalf("wait: %v", p.err)
	}
	if ee.ExitCode() < 0 {
		p.t.Fatalf("killed: %v", p.err)
	}
	return ee.ExitCode()
}

// syncBuffer is a bytes.Buffer safe to write from exec's copying goroutine
// while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
