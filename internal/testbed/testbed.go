// Package testbed boots real systemd hosts for tests: systemd-nspawn containers on an
// overlay of the machine's root, each in its own network namespace on a bridge the
// test creates. Everything it starts is stopped and removed by t.Cleanup.
package testbed

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
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

// BootTimeout bounds how long a host may take to reach "running".
var BootTimeout = 90 * time.Second

// Require skips the test unless this machine can boot hosts: root, systemd-nspawn, ip.
// In CI (CI=true) it fails instead: there, a skipped real-systemd test hides a gap.
func Require(t testing.TB) {
	t.Helper()
	if err := available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("testbed: %v (CI must install it: see scripts/deps)", err)
		}
		t.Skipf("testbed: %v", err)
	}
}

func available() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root")
	}
	for _, bin := range []string{"systemd-nspawn", "ip", "nsenter", "mount", "umount"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("needs %s", bin)
		}
	}
	return nil
}

// Network is a bridge with a /24 of private addresses. Its hosts get .11, .12, ...;
// the machine itself (and servers that tests start for the hosts) is .1.
type Network struct {
	Bridge string
	Prefix string // "10.231.N", without the last octet
	id     string
	mu     sync.Mutex
	next   int
}

// NewNetwork creates a bridge and a free 10.231.N.0/24 on it, removed by t.Cleanup.
func NewNetwork(t testing.TB) *Network {
	t.Helper()
	Require(t)
	n, err := newNetwork()
	if n != nil {
		t.Cleanup(n.Close)
	}
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newNetwork() (*Network, error) {
	unlock, err := lockPrefixes()
	if err != nil {
		return nil, err
	}
	defer unlock()
	prefix, err := freePrefix()
	if err != nil {
		return nil, err
	}
	id := randomID(4)
	n := &Network{Bridge: "btb" + id, Prefix: prefix, id: id, next: 11}
	for _, args := range [][]string{
		{"link", "add", n.Bridge, "type", "bridge"},
		{"addr", "add", n.Prefix + ".1/24", "dev", n.Bridge},
		{"link", "set", n.Bridge, "up"},
	} {
		if err := run("ip", args...); err != nil {
			return n, err
		}
	}
	return n, nil
}

// Close removes the bridge. Stop the hosts first.
func (n *Network) Close() { _ = run("ip", "link", "del", n.Bridge) }

// Gateway is the machine's address on the bridge: servers for the hosts listen here.
func (n *Network) Gateway() string { return n.Prefix + ".1" }

// prefixLock is held by the one process of the machine that is picking a prefix and
// claiming it on a new bridge: the packages' tests run at once (go test runs packages
// in parallel, and tests in parallel within one), and two that chose the same free
// prefix before either claimed it would share a subnet.
const prefixLock = "/run/lock/baton-testbed.lock"

func lockPrefixes() (unlock func(), err error) {
	f, err := os.OpenFile(prefixLock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", prefixLock, err)
	}
	return func() { f.Close() }, nil // closing the file releases the lock
}

// freePrefix picks a 10.231.N prefix that no interface of the machine uses.
func freePrefix() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	used := map[string]bool{}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
			ip := ipn.IP.To4()
			used[fmt.Sprintf("%d.%d.%d", ip[0], ip[1], ip[2])] = true
		}
	}
	b := make([]byte, 1)
	for range 64 {
		_, _ = rand.Read(b)
		p := "10.231." + strconv.Itoa(int(b[0])%250+1)
		if !used[p] {
			return p, nil
		}
	}
	return "", errors.New("no free 10.231.N.0/24 prefix")
}

// Bind is a directory or file of the machine made visible inside a host.
type Bind struct {
	Src, Dst string
	Write    bool // read-only unless set
}

// Host is one booted systemd host.
type Host struct {
	Name   string
	IP     string
	Root   string // the host's root directory, as the machine sees it
	Leader int    // PID of the host's init, as the machine sees it

	dir     string
	netns   string
	mounted bool
	nspawn  *exec.Cmd
	exited  chan struct{}
	log     string
}

// Boot starts a host named name on the network with the given binds and waits until
// its systemd reports running; t.Cleanup stops it and removes all it made. It boots
// testhost.target, so the services the machine has enabled do not start inside.
func (n *Network) Boot(t testing.TB, name string, binds ...Bind) *Host {
	t.Helper()
	h, err := n.boot(t.TempDir(), name, binds...)
	if h != nil {
		t.Cleanup(func() {
			if t.Failed() {
				if b, err := os.ReadFile(h.log); err == nil {
					t.Logf("console of %s:\n%s", h.Name, lastLines(string(b), 40))
				}
			}
			h.Close()
		})
	}
	if err != nil {
		t.Fatalf("boot host %s: %v", name, err)
	}
	return h
}

func (n *Network) boot(dir, name string, binds ...Bind) (*Host, error) {
	n.mu.Lock()
	num := n.next
	n.next++
	n.mu.Unlock()
	h := &Host{
		Name: name, IP: fmt.Sprintf("%s.%d", n.Prefix, num), dir: dir,
		Root: filepath.Join(dir, "merged"), log: filepath.Join(dir, "console.log"),
		netns: "btb" + n.id + "-" + name, exited: make(chan struct{}),
	}
	veth := "v" + n.id + strconv.Itoa(num)
	steps := [][]string{
		{"ip", "netns", "add", h.netns},
		{"ip", "link", "add", veth, "type", "veth", "peer", "name", "host0", "netns", h.netns},
		{"ip", "link", "set", veth, "master", n.Bridge, "up"},
		{"ip", "-n", h.netns, "addr", "add", h.IP + "/24", "dev", "host0"},
		{"ip", "-n", h.netns, "link", "set", "host0", "up"},
		{"ip", "-n", h.netns, "link", "set", "lo", "up"},
		{"ip", "-n", h.netns, "route", "add", "default", "via", n.Gateway()},
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return h, err
		}
	}
	for _, d := range []string{"upper", "work", "merged"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return h, err
		}
	}
	opts := fmt.Sprintf("lowerdir=/,upperdir=%s/upper,workdir=%s/work", dir, dir)
	if err := run("mount", "-t", "overlay", "overlay", "-o", opts, h.Root); err != nil {
		return h, err
	}
	h.mounted = true
	writes := map[string]string{
		"etc/systemd/system/testhost.target": "[Unit]\nRequires=basic.target\nAfter=basic.target\nAllowIsolate=yes\n",
		"etc/machine-id":                     randomID(16) + "\n",
		"etc/hostname":                       name + "\n",
	}
	for p, content := range writes {
		if err := os.WriteFile(filepath.Join(h.Root, p), []byte(content), 0o644); err != nil {
			return h, err
		}
	}
	args := []string{"-D", h.Root, "--register=no", "--keep-unit", "--machine=" + name, "-b",
		"--console=passive", "--network-namespace-path=/run/netns/" + h.netns}
	for _, b := range binds {
		flag := "--bind-ro="
		if b.Write {
			flag = "--bind="
		}
		args = append(args, flag+b.Src+":"+b.Dst)
	}
	args = append(args, "--", "--unit=testhost.target")
	logf, err := os.Create(h.log)
	if err != nil {
		return h, err
	}
	h.nspawn = exec.Command("systemd-nspawn", args...)
	h.nspawn.Stdout, h.nspawn.Stderr = logf, logf
	h.nspawn.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := h.nspawn.Start(); err != nil {
		logf.Close()
		h.nspawn = nil
		return h, err
	}
	go func() {
		_ = h.nspawn.Wait()
		logf.Close()
		close(h.exited)
	}()
	if err := h.waitRunning(); err != nil {
		console, _ := os.ReadFile(h.log)
		return h, fmt.Errorf("%w\nconsole:\n%s", err, lastLines(string(console), 40))
	}
	return h, nil
}

func (h *Host) waitRunning() error {
	deadline := time.Now().Add(BootTimeout)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-h.exited:
			return errors.New("systemd-nspawn exited")
		default:
		}
		// The container's init is the child of systemd-nspawn that runs systemd; a
		// short-lived helper child may come first, so look again until it does.
		if h.Leader == 0 || !isSystemd(h.Leader) {
			h.Leader = childOf(h.nspawn.Process.Pid)
		}
		if h.Leader != 0 && isSystemd(h.Leader) {
			out, _ := h.Exec(context.Background(), "systemctl", "is-system-running")
			last = strings.TrimSpace(string(out))
			if last == "running" || last == "degraded" {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("not running after %v (last state %q)", BootTimeout, last)
}

func isSystemd(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return err == nil && strings.TrimSpace(string(b)) == "systemd"
}

// childOf returns the first child of pid, 0 when it has none yet.
func childOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	c, _ := strconv.Atoi(f[0])
	return c
}

// Command returns a command that runs argv inside the host, in all its namespaces.
func (h *Host) Command(ctx context.Context, argv ...string) *exec.Cmd {
	args := append([]string{"-t", strconv.Itoa(h.Leader), "-a", "--"}, argv...)
	return exec.CommandContext(ctx, "nsenter", args...)
}

// Exec runs argv inside the host and returns its combined output.
func (h *Host) Exec(ctx context.Context, argv ...string) ([]byte, error) {
	cmd := h.Command(ctx, argv...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s on %s: %w: %s", strings.Join(argv, " "), h.Name, err, bytes.TrimSpace(out.Bytes()))
	}
	return out.Bytes(), err
}

// MustExec runs argv inside the host and fails the test on error.
func (h *Host) MustExec(t testing.TB, argv ...string) string {
	t.Helper()
	out, err := h.Exec(context.Background(), argv...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// Path is where a path of the host lies as the machine sees it.
func (h *Host) Path(p string) string { return filepath.Join(h.Root, p) }

// Kill stops the host at once, as a power cut would (SIGKILL to the container).
func (h *Host) Kill() {
	if h.nspawn != nil && h.nspawn.Process != nil {
		// The host's init first: SIGKILL to systemd-nspawn alone leaves the container
		// running, orphaned, and the end of its PID namespace's init ends every process
		// in it at once, as a power cut would.
		if h.Leader != 0 {
			_ = syscall.Kill(h.Leader, syscall.SIGKILL)
		}
		_ = h.nspawn.Process.Signal(syscall.SIGKILL)
		<-h.exited
	}
}

// Stop powers the host off (SIGTERM to systemd-nspawn), then kills it after 20s.
func (h *Host) Stop() {
	if h.nspawn == nil || h.nspawn.Process == nil {
		return
	}
	_ = h.nspawn.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.exited:
	case <-time.After(20 * time.Second):
		h.Kill()
	}
}

// Close stops the host and removes its mount and network namespace.
func (h *Host) Close() {
	h.Stop()
	if h.mounted {
		if err := run("umount", h.Root); err != nil {
			_ = run("umount", "-l", h.Root)
		}
		h.mounted = false
	}
	_ = run("ip", "netns", "del", h.netns)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
