package units

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testbed"
)

// helperEnv makes the test binary, started by systemd as a unit's ExecStart, serve as
// a socket-activated server instead of running tests.
const helperEnv = "BATON_UNITS_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "pid-server":
		os.Exit(pidServer())
	case "hold-memory":
		os.Exit(holdMemory())
	}
	os.Exit(testbed.Main(m))
}

// pidServer accepts on the listening socket systemd passes as fd 3 (Accept=no) and
// answers every connection with its own PID.
func pidServer() int {
	l, err := net.FileListener(os.NewFile(3, "socket"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "pid server:", err)
		return 1
	}
	for {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "pid server:", err)
			return 1
		}
		fmt.Fprintf(c, "%d\n", os.Getpid())
		c.Close()
	}
}

// heldMemory is what holdMemory allocates and keeps.
const heldMemory = 64 << 20

// holdMemory allocates heldMemory, writes every page of it so that the kernel
// backs it, and sleeps.
func holdMemory() int {
	b := make([]byte, heldMemory)
	for i := range b {
		b[i] = byte(i)
	}
	for {
		time.Sleep(time.Hour)
		b[0]++ // keep b alive
	}
}

// sysDir is the unit directory of the testbed host.
var sysDir = Dir{Path: "/etc/systemd/system"}

// connect skips the test outside a testbed host and connects to its systemd.
func connect(t *testing.T) *Systemd {
	t.Helper()
	testbed.RequireSystemd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// unitName is a unit name of this test's own: t-<test name>-<suffix>.
func unitName(t *testing.T, suffix string) string {
	n := strings.ToLower(t.Name())
	n = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, n)
	return "t-" + n + "-" + suffix
}

// forget stops, disables and removes units when the test ends, whatever it did.
func forget(t *testing.T, s *Systemd, units ...string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, u := range removeOrder(units) {
			if err := s.remove(ctx, sysDir, u); err != nil {
				t.Logf("cleanup: %v", err)
			}
		}
		if err := s.Reload(ctx); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
}

// install writes units (name, content, name, content, ...) as new files, reloads
// systemd, and has them removed when the test ends.
func install(t *testing.T, s *Systemd, nameContent ...string) {
	t.Helper()
	for i := 0; i < len(nameContent); i += 2 {
		forget(t, s, nameContent[i])
		if err := sysDir.Install(nameContent[i], []byte(nameContent[i+1]), false); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func status(t *testing.T, s *Systemd, unit string) Status {
	t.Helper()
	st, err := s.Status(context.Background(), unit)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func wantState(t *testing.T, st Status, active, sub string) {
	t.Helper()
	if st.ActiveState != active || st.SubState != sub {
		t.Errorf("%s: %s/%s, want %s/%s (%+v)", st.Unit, st.ActiveState, st.SubState, active, sub, st)
	}
}

const sleeper = "[Unit]\nDescription=baton test sleeper\n[Service]\nExecStart=/bin/sleep infinity\n"

func TestStartStatusRestartStop(t *testing.T) {
	s := connect(t)
	ctx := context.Background()
	u := unitName(t, "app.service")
	install(t, s, u, sleeper)

	if err := s.Start(ctx, u); err != nil {
		t.Fatal(err)
	}
	st := status(t, s, u)
	wantState(t, st, "active", "running")
	if st.LoadState != "loaded" || st.Result != "success" || st.MainPID == 0 || st.NRestarts != 0 {
		t.Errorf("after start: %+v, want loaded, success, a main PID, no restarts", st)
	}
	if since := time.Since(st.ActiveEnter); since < 0 || since > time.Minute {
		t.Errorf("ActiveEnter = %v, want just now", st.ActiveEnter)
	}
	if err := s.Start(ctx, u); err != nil {
		t.Errorf("start of an active unit: %v, want nil", err)
	}
	if again := status(t, s, u); again.MainPID != st.MainPID {
		t.Errorf("start of an active unit changed its main PID %d -> %d", st.MainPID, again.MainPID)
	}

	if err := s.Restart(ctx, u); err != nil {
		t.Fatal(err)
	}
	after := status(t, s, u)
	wantState(t, after, "active", "running")
	if after.MainPID == 0 || after.MainPID == st.MainPID {
		t.Errorf("main PID %d after restart, was %d: want a new one", after.MainPID, st.MainPID)
	}
	if !after.ActiveEnter.After(st.ActiveEnter) {
		t.Errorf("ActiveEnter %v after restart, was %v", after.ActiveEnter, st.ActiveEnter)
	}

	if err := s.Stop(ctx, u); err != nil {
		t.Fatal(err)
	}
	stopped := status(t, s, u)
	wantState(t, stopped, "inactive", "dead")
	if stopped.MainPID != 0 {
		t.Errorf("main PID %d after stop, want 0", stopped.MainPID)
	}
	if err := s.Stop(ctx, u); err != nil {
		t.Errorf("stop of a stopped unit: %v", err)
	}
}

// memoryAccounted reports whether systemd on this host can account memory: a
// cgroup v2 tree with the memory controller, or a cgroup v1 memory hierarchy that
// systemd manages (it holds system.slice). A host in a container on cgroup v1
// has neither: systemd then knows no unit's memory.
func memoryAccounted() bool {
	if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return slices.Contains(strings.Fields(string(b)), "memory")
	}
	_, err := os.Stat("/sys/fs/cgroup/memory/system.slice")
	return err == nil
}

// TestMemoryCurrent reads the memory of a service that holds 64 MiB: at least
// that while it runs where systemd accounts memory, unknown (not an error) where
// it cannot; unknown once it stopped, or for a unit never loaded.
func TestMemoryCurrent(t *testing.T) {
	s := connect(t)
	ctx := context.Background()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	u := unitName(t, "mem.service")
	install(t, s, u, fmt.Sprintf("[Service]\nEnvironment=%s=hold-memory\nExecStart=%s\nMemoryAccounting=yes\n", helperEnv, exe))
	if err := s.Start(ctx, u); err != nil {
		t.Fatal(err)
	}
	accounted := memoryAccounted()
	var got uint64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b, known, err := s.MemoryCurrent(ctx, u)
		if err != nil || known != accounted {
			t.Fatalf("MemoryCurrent(%s) = %d, %v, %v; want known=%v (this host accounts memory: %v)", u, b, known, err, accounted, accounted)
		}
		if got = b; got >= heldMemory || !accounted { // the helper writes its pages after it started
			break
		}
	}
	if accounted && (got < heldMemory || got > 4*heldMemory) {
		t.Errorf("MemoryCurrent = %d MiB, want at least the %d MiB held", got>>20, heldMemory>>20)
	}
	if err := s.Stop(ctx, u); err != nil {
		t.Fatal(err)
	}
	if b, known, err := s.MemoryCurrent(ctx, u); err != nil || known {
		t.Errorf("MemoryCurrent of a stopped service = %d, %v, %v; want unknown", b, known, err)
	}
	if b, known, err := s.MemoryCurrent(ctx, unitName(t, "none.service")); err != nil || known {
		t.Errorf("MemoryCurrent of a unit never loaded = %d, %v, %v; want unknown", b, known, err)
	}
	if _, _, err := s.MemoryCurrent(ctx, unitName(t, "x.socket")); err == nil {
		t.Errorf("MemoryCurrent of a socket: no error")
	}
	t.Logf("memory accounted on this host: %v; a service holding %d MiB: MemoryCurrent %d MiB", accounted, heldMemory>>20, got>>20)
}

func TestStatusAndStopOfUnknownUnit(t *testing.T) {
	s := connect(t)
	u := unitName(t, "none.service")
	st := status(t, s, u)
	if st.LoadState != "not-found" || st.ActiveState != "inactive" {
		t.Errorf("status of a unit without a file: %+v, want not-found, inactive", st)
	}
	if err := s.Stop(context.Background(), u); err != nil {
		t.Errorf("stop of a unit without a file: %v, want nil", err)
	}
	if err := s.ResetFailed(context.Background(), u); err != nil {
		t.Errorf("reset-failed of a unit without a file: %v, want nil", err)
	}
	var je *JobError
	if err := s.Start(context.Background(), u); err == nil || errors.As(err, &je) {
		t.Errorf("start of a unit without a file: %v, want an error from systemd", err)
	}
}

func TestFailingStart(t *testing.T) {
	s := connect(t)
	ctx := context.Background()
	u := unitName(t, "broken.service")
	install(t, s, u, "[Service]\nType=exec\nExecStart=/nonexistent/baton-test-binary\n")

	for _, op := range []string{"start", "restart"} {
		var err error
		if op == "start" {
			err = s.Start(ctx, u)
		} else {
			err = s.Restart(ctx, u)
		}
		var je *JobError
		if !errors.As(err, &je) {
			t.Fatalf("%s: %v, want a *JobError", op, err)
		}
		if je.Unit != u || je.Op != op || je.Result != "failed" {
			t.Errorf("%s: %+v, want unit %s, op %s, result failed", op, je, u, op)
		}
		want := fmt.Sprintf("%s %s: job failed (failed/failed, result exit-code)", op, u)
		if err.Error() != want {
			t.Errorf("%s: error %q, want %q", op, err, want)
		}
		st := status(t, s, u)
		wantState(t, st, "failed", "failed")
		if st.Result != "exit-code" {
			t.Errorf("%s: %+v, want result exit-code", op, st)
		}
	}
	if err := s.ResetFailed(ctx, u); err != nil {
		t.Fatal(err)
	}
	wantState(t, status(t, s, u), "inactive", "dead")
}

func TestEnableDisable(t *testing.T) {
	s := connect(t)
	ctx := context.Background()
	withInstall := unitName(t, "wanted.service")
	without := unitName(t, "plain.service")
	install(t, s,
		withInstall, sleeper+"[Install]\nWantedBy=multi-user.target\n",
		without, sleeper)
	link := filepath.Join(sysDir.Path, "multi-user.target.wants", withInstall)

	if err := s.Enable(ctx, withInstall, without); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(link); err != nil || target != filepath.Join(sysDir.Path, withInstall) {
		t.Errorf("after Enable: link %s -> %q, %v; want it to point to the unit file", link, target, err)
	}
	if err := s.Enable(ctx, withInstall); err != nil {
		t.Errorf("Enable of an enabled unit: %v", err)
	}
	if err := s.Disable(ctx, withInstall, without); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(link); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Disable: %s still there (%v)", link, err)
	}
	if err := s.Disable(ctx, withInstall); err != nil {
		t.Errorf("Disable of a disabled unit: %v", err)
	}

	// An Alias= link that exists and points elsewhere is not replaced (force=false).
	// Note that systemd creates .wants/.requires links with force whatever the caller
	// asks: only aliases are protected.
	aliased := unitName(t, "aliased.service")
	alias := unitName(t, "alias.service")
	other := unitName(t, "other.service")
	install(t, s, aliased, sleeper+"[Install]\nAlias="+alias+"\n", other, sleeper)
	aliasLink := filepath.Join(sysDir.Path, alias)
	if err := os.Symlink(filepath.Join(sysDir.Path, other), aliasLink); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(aliasLink) })
	err := s.Enable(ctx, aliased)
	if err == nil || !strings.Contains(err.Error(), aliased) {
		t.Errorf("Enable over a foreign alias link: %v, want an error naming the unit", err)
	}
	if target, _ := os.Readlink(aliasLink); target != filepath.Join(sysDir.Path, other) {
		t.Errorf("Enable replaced a foreign alias link: now -> %q", target)
	}
	t.Logf("enable over a foreign alias link: %v", err)
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// askPID connects to addr and returns the PID that the pid server answers with.
func askPID(t *testing.T, addr string) uint32 {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read from %s: %v", addr, err)
	}
	pid, err := strconv.ParseUint(strings.TrimSpace(line), 10, 32)
	if err != nil {
		t.Fatalf("answer from %s: %q", addr, line)
	}
	return uint32(pid)
}

// socketPair returns a .socket listening on addr and the .service it activates: the
// test binary as a pid server.
func socketPair(t *testing.T, base, addr string) (socket, socketText, service, serviceText string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	socket, service = unitName(t, base+".socket"), unitName(t, base+".service")
	socketText = "[Socket]\nListenStream=" + addr + "\n"
	serviceText = fmt.Sprintf("[Unit]\nRequires=%s\nAfter=%s\n[Service]\nEnvironment=%s=pid-server\nExecStart=%s\n",
		socket, socket, helperEnv, exe)
	return
}

func TestRestartSocketActivated(t *testing.T) {
	s := connect(t)
	ctx := context.Background()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	socket, socketText, service, serviceText := socketPair(t, "x", addr)
	install(t, s, socket, socketText, service, serviceText)

	if err := s.Start(ctx, socket); err != nil {
		t.Fatal(err)
	}
	sock := status(t, s, socket)
	wantState(t, sock, "active", "listening")
	wantState(t, status(t, s, service), "inactive", "dead")

	// the first connection activates the service
	first := askPID(t, addr)
	if st := status(t, s, service); st.MainPID != first || st.ActiveState != "active" {
		t.Errorf("after the first connection: %+v, want active with main PID %d", st, first)
	}
	if err := s.Restart(ctx, service); err != nil {
		t.Fatal(err)
	}
	restarted := status(t, s, service)
	wantState(t, restarted, "active", "running")
	if restarted.MainPID == first {
		t.Errorf("main PID %d unchanged by restart", first)
	}
	if got := askPID(t, addr); got != restarted.MainPID {
		t.Errorf("answer from PID %d after restart, want %d", got, restarted.MainPID)
	}

	// with the service stopped, a connection still gets through: the socket starts it
	if err := s.Stop(ctx, service); err != nil {
		t.Fatal(err)
	}
	if got := askPID(t, addr); got == restarted.MainPID || got == first {
		t.Errorf("answer from an old PID %d after stop", got)
	}

	// a socket is never restarted, and the refused restart left it alone
	err := s.Restart(ctx, socket)
	if err == nil || !strings.Contains(err.Error(), socket) {
		t.Errorf("Restart(%s) = %v, want a refusal naming it", socket, err)
	}
	after := status(t, s, socket)
	if after.ActiveState != "active" || !after.ActiveEnter.Equal(sock.ActiveEnter) {
		t.Errorf("socket %+v after the service restarts, was %+v: want it active since then", after, sock)
	}
}

func TestWaitHonoursContext(t *testing.T) {
	s := connect(t)
	u := unitName(t, "slow.service")
	install(t, s, u, "[Service]\nExecStartPre=/bin/sleep 60\nExecStart=/bin/sleep infinity\n")

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	began := time.Now()
	err := s.Start(ctx, u)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start = %v, want the context's deadline", err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("Start returned %v after the deadline", took)
	}
	wantState(t, status(t, s, u), "activating", "start-pre")

	// the abandoned job ends (stop replaces it); the connection must still serve jobs.
	// A unit stopped while in ExecStartPre ends failed (result signal) in systemd 252.
	if err := s.Stop(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	if st := status(t, s, u); st.ActiveState != "inactive" && st.ActiveState != "failed" {
		t.Errorf("after stop: %+v, want inactive or failed", st)
	}
	if err := s.ResetFailed(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	wantState(t, status(t, s, u), "inactive", "dead")
	cancelled, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	if err := s.Start(cancelled, u); !errors.Is(err, context.Canceled) {
		t.Errorf("Start with a cancelled context = %v, want context.Canceled", err)
	}
}

func TestConnectionOutlivesItsContext(t *testing.T) {
	testbed.RequireSystemd(t)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cancel()
	time.Sleep(100 * time.Millisecond)
	if _, err := s.Status(context.Background(), "basic.target"); err != nil {
		t.Errorf("Status after the context of Connect ended: %v", err)
	}
}

// TestReconnectAfterReexec: a daemon-reexec (a systemd upgrade does one) closes every
// connection to systemd; the next calls connect again.
func TestReconnectAfterReexec(t *testing.T) {
	s := connect(t)
	first, _ := s.get(context.Background())
	if out, err := exec.Command("systemctl", "daemon-reexec").CombinedOutput(); err != nil {
		t.Fatalf("daemon-reexec: %v: %s", err, out)
	}
	// The first call may fail on the dead socket; the next dials again (systemd may
	// take a moment to listen anew).
	var err error
	for range 10 {
		if _, err = s.Status(context.Background(), "basic.target"); err == nil {
			break
		}
		t.Logf("status after daemon-reexec: %v", err)
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("no connection after daemon-reexec: %v", err)
	}
	if now, _ := s.get(context.Background()); now == first {
		t.Error("the connection survived daemon-reexec: the reconnect path went untested")
	}
	u := unitName(t, "after.service")
	install(t, s, u, sleeper)
	if err := s.Start(context.Background(), u); err != nil {
		t.Errorf("start after daemon-reexec: %v", err)
	}
}
