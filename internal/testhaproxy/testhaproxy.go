// Package testhaproxy runs a real HAProxy for tests, with a config the test describes.
package testhaproxy

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/baton-fleet/baton/internal/testproc"
)

// Defaults of Config.
const (
	DefaultBackend    = "web"
	DefaultBind       = "127.0.0.1:0"
	DefaultCheckInter = 200 * time.Millisecond
)

// StartTimeout bounds how long HAProxy may take to accept on its frontend and API.
var StartTimeout = 15 * time.Second

// Config describes the HAProxy to run: one HTTP frontend and one backend.
type Config struct {
	// Backend names the backend; default DefaultBackend.
	Backend string
	// Servers are the backend's servers, in order.
	Servers []Server
	// Bind is the frontend's address; a port of 0 picks a free one. Default
	// DefaultBind; a fleet on a test bridge binds the bridge's address.
	Bind string
	// AdminTCP is the address of the TCP runtime API, level admin; a port of 0
	// picks a free one. Default 127.0.0.1:0.
	AdminTCP string
	// BackendLines are added to the backend verbatim, one directive each, such as
	// "option redispatch" or "balance leastconn". Default: roundrobin, no redispatch.
	BackendLines []string
	// TimeoutServer is HAProxy's "timeout server" (and "timeout client"); default 30s.
	TimeoutServer time.Duration
	// Cookie, when set, makes sessions sticky: the backend's "cookie" directive
	// with these arguments, such as "SRV insert indirect nocache"; each server's
	// Cookie is its value.
	Cookie string
}

// Server is one server line of the backend.
type Server struct {
	Name string // HAProxy's server name: letters, digits, '-', '_', '.', ':'
	Addr string // host:port; any address HAProxy can reach
	// Check enables health checks: "check inter <CheckInter> fall 2 rise 2".
	Check bool
	// CheckInter is the check interval; default DefaultCheckInter.
	CheckInter time.Duration
	// Cookie is the value of Config.Cookie's cookie that sticks a client to
	// this server; default its Name when Config.Cookie is set.
	Cookie string
}

// HAProxy is a running haproxy -W (master-worker) process owned by one test.
type HAProxy struct {
	URL         string // http://<frontend address>
	Frontend    string // the frontend's host:port
	AdminSocket string // absolute path of the unix runtime API socket, level admin
	AdminTCP    string // host:port of the TCP runtime API, level admin
	ConfigFile  string // the haproxy.cfg written
	LogFile     string // HAProxy's stderr

	cfg  Config
	dir  string
	bin  string
	mu   sync.Mutex
	proc *testproc.Proc // the master, in a process group with its worker
}

// Binary is the haproxy binary Start runs: found in PATH, else /usr/sbin/haproxy.
func Binary() (string, error) { return testproc.Find("haproxy", "/usr/sbin/haproxy", "haproxy") }

// Require skips the test when haproxy is missing; in CI (CI=true) it fails instead.
func Require(t testing.TB) string {
	t.Helper()
	return testproc.Require(t, "testhaproxy", "haproxy", "/usr/sbin/haproxy", "haproxy")
}

// Start writes a haproxy.cfg for cfg in a temporary directory, starts HAProxy in the
// foreground as a child process and waits until its frontend and runtime API
// accept. t.Cleanup stops it (SIGTERM to its process group, then SIGKILL) and waits
// for it to exit. It skips the test when haproxy is missing (fails in CI).
func Start(t testing.TB, cfg Config) *HAProxy {
	t.Helper()
	bin := Require(t)
	if cfg.Backend == "" {
		cfg.Backend = DefaultBackend
	}
	if cfg.Bind == "" {
		cfg.Bind = DefaultBind
	}
	if cfg.AdminTCP == "" {
		cfg.AdminTCP = "127.0.0.1:0"
	}
	if cfg.TimeoutServer <= 0 {
		cfg.TimeoutServer = 30 * time.Second
	}
	dir := t.TempDir()
	h := &HAProxy{
		AdminSocket: filepath.Join(dir, "admin.sock"),
		ConfigFile:  filepath.Join(dir, "haproxy.cfg"),
		LogFile:     filepath.Join(dir, "haproxy.log"),
		dir:         dir,
		bin:         bin,
	}
	t.Cleanup(func() {
		h.stop()
		if t.Failed() {
			if b, err := os.ReadFile(h.LogFile); err == nil && len(b) > 0 {
				t.Logf("haproxy log:\n%s", testproc.Tail(b, 4096))
			}
		}
	})
	// A free port found by listening and closing can be taken by another process
	// before HAProxy binds it: try a few times.
	var err error
	for range 3 {
		h.cfg = cfg
		if err = h.start(); err == nil {
			return h
		}
		h.stop()
	}
	t.Fatalf("testhaproxy: %v", err)
	return nil
}

func (h *HAProxy) start() error {
	var err error
	if h.Frontend, err = freeAddr(h.cfg.Bind); err != nil {
		return fmt.Errorf("frontend address: %w", err)
	}
	if h.AdminTCP, err = freeAddr(h.cfg.AdminTCP); err != nil {
		return fmt.Errorf("admin address: %w", err)
	}
	h.URL = "http://" + h.Frontend
	if err := h.writeConfig(); err != nil {
		return err
	}
	if out, err := exec.Command(h.bin, "-c", "-q", "-f", h.ConfigFile).CombinedOutput(); err != nil {
		return fmt.Errorf("config check: %v: %s", err, out)
	}
	cmd := exec.Command(h.bin, "-W", "-db", "-f", h.ConfigFile)
	cmd.Dir = h.dir
	// Its own process group, so that stop reaches the worker too.
	proc, err := testproc.Start(cmd, h.LogFile, true)
	if err != nil {
		return err
	}
	done := proc.Done()
	h.mu.Lock()
	h.proc = proc
	h.mu.Unlock()

	deadline := time.Now().Add(StartTimeout)
	for _, addr := range []struct{ network, addr string }{
		{"tcp", h.Frontend}, {"tcp", h.AdminTCP}, {"unix", h.AdminSocket},
	} {
		for {
			c, err := net.DialTimeout(addr.network, addr.addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-done:
				b, _ := os.ReadFile(h.LogFile)
				return fmt.Errorf("haproxy exited: %s", testproc.Tail(b, 2048))
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("haproxy does not accept on %s after %s", addr.addr, StartTimeout)
			}
		}
	}
	return nil
}

// stop ends the master and its worker and waits for them: SIGTERM to the process
// group, SIGKILL after 5 s.
func (h *HAProxy) stop() {
	h.mu.Lock()
	proc := h.proc
	h.proc = nil
	h.mu.Unlock()
	// The worker shares the group, so it has the signal too; it also exits when
	// its master is gone.
	proc.Stop(5 * time.Second)
}

// Reload rewrites the config with cfg's servers and backend lines (the addresses,
// sockets and backend name stay) and makes the master load it (SIGUSR2), then waits
// until the runtime API answers from the new worker. Server states set over the
// API are lost, as in any HAProxy reload without a state file.
func (h *HAProxy) Reload(t testing.TB, cfg Config) {
	t.Helper()
	oldPid, err := h.workerPid()
	if err != nil {
		t.Fatalf("testhaproxy: reload: %v", err)
	}
	h.cfg.Servers, h.cfg.BackendLines = cfg.Servers, cfg.BackendLines
	if err := h.writeConfig(); err != nil {
		t.Fatalf("testhaproxy: reload: %v", err)
	}
	h.mu.Lock()
	proc := h.proc
	h.mu.Unlock()
	if proc == nil {
		t.Fatal("testhaproxy: reload: haproxy is not running")
	}
	// The master may not handle SIGUSR2 yet right after it started (its
	// listeners accept before it is in its loop): signal again until a new
	// worker answers.
	deadline := time.Now().Add(StartTimeout)
	for {
		if err := proc.Signal(syscall.SIGUSR2); err != nil {
			t.Fatalf("testhaproxy: reload: %v", err)
		}
		resend := time.Now().Add(time.Second)
		for time.Now().Before(resend) {
			pid, err := h.workerPid()
			if err == nil && pid != oldPid {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("testhaproxy: reload: no new worker after %s (last: pid %d, %v)", StartTimeout, pid, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// Command sends one command to the unix runtime API and returns the answer. It is
// for tests that check what the code under test did.
func (h *HAProxy) Command(cmd string) (string, error) {
	c, err := net.DialTimeout("unix", h.AdminSocket, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(cmd + "\n")); err != nil {
		return "", err
	}
	var buf bytes.Buffer
	_, err = buf.ReadFrom(c)
	return buf.String(), err
}

// Version is the output's first line of haproxy -v, such as
// "HAProxy version 2.6.12-1+deb12u4 2023/12/15 - https://haproxy.org/".
func (h *HAProxy) Version() string {
	out, _ := exec.Command(h.bin, "-v").Output()
	first, _, _ := strings.Cut(string(out), "\n")
	return first
}

func (h *HAProxy) workerPid() (int, error) {
	out, err := h.Command("show info")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(out, "\n") {
		if v, ok := strings.CutPrefix(line, "Pid: "); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("show info: no Pid in %q", testproc.Tail([]byte(out), 200))
}

var cfgTemplate = template.Must(template.New("haproxy.cfg").Funcs(template.FuncMap{
	"ms": func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + "ms" },
}).Parse(`# written by testhaproxy
global
    stats socket {{ .H.AdminSocket }} mode 600 level admin
    stats socket {{ .H.AdminTCP }} level admin
    stats timeout 10s
    hard-stop-after 10s

defaults
    mode http
    timeout connect 2s
    timeout client {{ ms .C.TimeoutServer }}
    timeout server {{ ms .C.TimeoutServer }}
    timeout queue 5s
    timeout http-request 10s

frontend fe
    bind {{ .H.Frontend }}
    default_backend {{ .C.Backend }}

backend {{ .C.Backend }}
    balance roundrobin
{{- if .C.Cookie }}
    cookie {{ .C.Cookie }}
{{- end }}
{{- range .C.BackendLines }}
    {{ . }}
{{- end }}
{{- range .C.Servers }}
    server {{ .Name }} {{ .Addr }}{{ if .Check }} check inter {{ ms .CheckInter }} fall 2 rise 2{{ end }}{{ if .Cookie }} cookie {{ .Cookie }}{{ end }}
{{- end }}
`))

func (h *HAProxy) writeConfig() error {
	cfg := h.cfg
	cfg.Servers = append([]Server(nil), cfg.Servers...)
	for i := range cfg.Servers {
		s := &cfg.Servers[i]
		if s.CheckInter <= 0 {
			s.CheckInter = DefaultCheckInter
		}
		if cfg.Cookie != "" && s.Cookie == "" {
			s.Cookie = s.Name
		}
		if s.Name == "" || strings.ContainsAny(s.Name, " \t\n#/") || strings.ContainsAny(s.Addr+s.Cookie, " \t\n#") {
			return fmt.Errorf("server %q at %q: bad name, address or cookie", s.Name, s.Addr)
		}
	}
	for _, l := range append(slices.Clone(cfg.BackendLines), cfg.Cookie) {
		if strings.Contains(l, "\n") {
			return fmt.Errorf("backend line %q holds a newline", l)
		}
	}
	var b bytes.Buffer
	if err := cfgTemplate.Execute(&b, struct {
		H *HAProxy
		C Config
	}{h, cfg}); err != nil {
		return err
	}
	return os.WriteFile(h.ConfigFile, b.Bytes(), 0o600)
}

// freeAddr turns host:0 into host:<a port free now>; other addresses stay.
func freeAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if port != "0" {
		return addr, nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
