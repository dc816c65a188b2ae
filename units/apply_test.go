package units

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestRemoveOrder(t *testing.T) {
	got := removeOrder([]string{"a.service", "a.socket", "b.service", "b.timer", "c.path", "c.target"})
	want := []string{"a.socket", "b.timer", "c.path", "a.service", "b.service", "c.target"}
	if !slices.Equal(got, want) {
		t.Errorf("removeOrder = %q, want %q", got, want)
	}
}

// ownedSet is the record of the units baton owns, as the caller of Apply keeps it.
type ownedSet map[string]bool

func (o ownedSet) owns(u string) bool { return o[u] }

func wantsLink(target, unit string) string {
	return filepath.Join(sysDir.Path, target+".wants", unit)
}

func exists(t *testing.T, p string) bool {
	t.Helper()
	_, err := os.Lstat(p)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

func TestApply(t *testing.T) {
	s := connect(t)
	ctx := context.Background()
	old, a := unitName(t, "old.service"), unitName(t, "a.service")
	timer, timed := unitName(t, "b.timer"), unitName(t, "b.service")
	forget(t, s, old, a, timer, timed)
	owned := ownedSet{}
	wantedBy := func(target string) string { return "[Install]\nWantedBy=" + target + "\n" }

	// a unit baton installed earlier, enabled and running
	if err := s.Apply(ctx, sysDir, Change{Install: map[string][]byte{old: []byte(sleeper + wantedBy("multi-user.target"))}, Restart: []string{old}}, owned.owns); err != nil {
		t.Fatal(err)
	}
	owned[old] = true
	wantState(t, status(t, s, old), "active", "running")
	if !exists(t, wantsLink("multi-user.target", old)) {
		t.Fatalf("%s not enabled", old)
	}

	// the switch: a service to restart, a timer to start with the service it triggers,
	// and the old unit dropped from the repository
	change := Change{
		Install: map[string][]byte{
			a:     []byte(sleeper + wantedBy("multi-user.target")),
			timer: []byte("[Timer]\nOnActiveSec=1h\n" + wantedBy("timers.target")),
			timed: []byte("[Service]\nType=oneshot\nExecStart=/bin/true\n"),
		},
		Remove:  []string{old},
		Restart: []string{a},
		Start:   []string{timer},
	}
	if err := s.Apply(ctx, sysDir, change, owned.owns); err != nil {
		t.Fatal(err)
	}
	owned[a], owned[timer], owned[timed] = true, true, true
	checkSwitched := func() {
		t.Helper()
		if st := status(t, s, old); st.LoadState != "not-found" || st.ActiveState != "inactive" {
			t.Errorf("removed unit: %+v, want not-found and inactive", st)
		}
		if exists(t, filepath.Join(sysDir.Path, old)) || exists(t, wantsLink("multi-user.target", old)) {
			t.Errorf("removed unit %s: its file or its wants link is still there", old)
		}
		wantState(t, status(t, s, a), "active", "running")
		wantState(t, status(t, s, timer), "active", "waiting")
		wantState(t, status(t, s, timed), "inactive", "dead")
		if !exists(t, wantsLink("multi-user.target", a)) || !exists(t, wantsLink("timers.target", timer)) {
			t.Errorf("installed units not enabled")
		}
	}
	checkSwitched()
	before := status(t, s, a)

	// applying the same change again (a resumed transaction) completes without error
	if err := s.Apply(ctx, sysDir, change, owned.owns); err != nil {
		t.Fatalf("Apply again: %v", err)
	}
	checkSwitched()

	// an upgrade that moves the unit to another target leaves no stale wants link
	upgraded := strings.Replace(sleeper, "sleeper", "sleeper v2", 1) + wantedBy("timers.target")
	if err := s.Apply(ctx, sysDir, Change{Install: map[string][]byte{a: []byte(upgraded)}, Restart: []string{a}}, owned.owns); err != nil {
		t.Fatal(err)
	}
	after := status(t, s, a)
	wantState(t, after, "active", "running")
	if after.MainPID == before.MainPID || after.MainPID == 0 {
		t.Errorf("main PID %d after the upgrade, was %d: want a new one", after.MainPID, before.MainPID)
	}
	if got, _ := sysDir.Read(a); string(got) != upgraded {
		t.Errorf("unit file after the upgrade: %q", got)
	}
	if exists(t, wantsLink("multi-user.target", a)) || !exists(t, wantsLink("timers.target", a)) {
		t.Errorf("after moving %s to timers.target: multi-user link %v, timers link %v", a,
			exists(t, wantsLink("multi-user.target", a)), exists(t, wantsLink("timers.target", a)))
	}
}

func TestApplyRefuses(t *testing.T) {
	s := connect(t)
	ctx := context.Background()
	foreign, fresh, mine := unitName(t, "foreign.service"), unitName(t, "fresh.service"), unitName(t, "mine.service")
	forget(t, s, foreign, fresh, mine)
	if err := os.WriteFile(filepath.Join(sysDir.Path, foreign), []byte(sleeper), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := sysDir.Install(mine, []byte(sleeper), false); err != nil {
		t.Fatal(err)
	}
	owned := ownedSet{mine: true}
	const vendor = "systemd-tmpfiles-clean.timer" // shipped in /usr/lib/systemd/system
	// an instance of a template shipped in /usr/lib/systemd/system
	vendorInstance := "getty@" + strings.TrimSuffix(unitName(t, "tty"), "-tty") + ".service"
	masked := unitName(t, "masked.service")
	mask := filepath.Join("/run/systemd/system", masked)
	if err := os.MkdirAll(filepath.Dir(mask), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/null", mask); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(mask) })

	tests := []struct {
		name    string
		change  Change
		want    string
		notOwns bool
	}{
		{"overwrite a foreign file", Change{Install: map[string][]byte{fresh: []byte(sleeper), foreign: []byte("x")}}, foreign, true},
		{"override a vendor unit", Change{Install: map[string][]byte{fresh: []byte(sleeper), vendor: []byte("x")}}, "/lib/systemd/system/" + vendor, true},
		{"override an instance of a vendor template", Change{Install: map[string][]byte{fresh: []byte(sleeper), vendorInstance: []byte(sleeper)}}, "instance of /lib/systemd/system/getty@.service", true},
		{"install a unit masked at runtime", Change{Install: map[string][]byte{masked: []byte(sleeper)}}, mask + " (masked-runtime)", true},
		{"remove a foreign unit", Change{Install: map[string][]byte{fresh: []byte(sleeper)}, Remove: []string{foreign}}, foreign, true},
		{"restart a socket", Change{Install: map[string][]byte{fresh: []byte(sleeper)}, Restart: []string{unitName(t, "x.socket")}}, "never restarted", false},
		{"restart a removed unit", Change{Remove: []string{mine}, Restart: []string{mine}}, "both removed and (re)started", false},
		{"install and remove", Change{Install: map[string][]byte{mine: []byte(sleeper)}, Remove: []string{mine}}, "both installed and removed", false},
		{"bad name", Change{Install: map[string][]byte{fresh: []byte(sleeper)}, Start: []string{"../x.service"}}, "invalid unit name", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Apply(ctx, sysDir, tt.change, owned.owns)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Apply = %v, want an error containing %q", err, tt.want)
			}
			t.Log(err)
			if got := errors.Is(err, ErrNotOwned); got != tt.notOwns {
				t.Errorf("errors.Is(%v, ErrNotOwned) = %v, want %v", err, got, tt.notOwns)
			}
			// nothing was touched
			if exists(t, filepath.Join(sysDir.Path, fresh)) || exists(t, filepath.Join(sysDir.Path, vendor)) || exists(t, filepath.Join(sysDir.Path, masked)) || exists(t, filepath.Join(sysDir.Path, vendorInstance)) {
				t.Errorf("a refused change installed a file")
			}
			if got, _ := os.ReadFile(filepath.Join(sysDir.Path, foreign)); string(got) != sleeper {
				t.Errorf("a refused change touched %s: %q", foreign, got)
			}
			if !exists(t, filepath.Join(sysDir.Path, mine)) {
				t.Errorf("a refused change removed %s", mine)
			}
		})
	}
}

// TestApplyKeepsSocket upgrades a socket-activated service: the socket is started
// once and never restarted, while the service behind it is.
func TestApplyKeepsSocket(t *testing.T) {
	s := connect(t)
	ctx := context.Background()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	socket, socketText, service, serviceText := socketPair(t, "api", addr)
	forget(t, s, socket, service)
	owned := ownedSet{}

	first := Change{Install: map[string][]byte{socket: []byte(socketText), service: []byte(serviceText)}, Restart: []string{service}}
	if err := s.Apply(ctx, sysDir, first, owned.owns); err != nil {
		t.Fatal(err)
	}
	owned[socket], owned[service] = true, true
	sock := status(t, s, socket)
	wantState(t, sock, "active", "running") // the service holds the socket
	v1 := status(t, s, service)
	if got := askPID(t, addr); got != v1.MainPID {
		t.Errorf("answer from PID %d, want the service's %d", got, v1.MainPID)
	}

	second := Change{Install: map[string][]byte{
		socket:  []byte(socketText),
		service: []byte(strings.Replace(serviceText, "[Service]\n", "[Service]\nEnvironment=VERSION=2\n", 1)),
	}, Restart: []string{service}}
	if err := s.Apply(ctx, sysDir, second, owned.owns); err != nil {
		t.Fatal(err)
	}
	v2 := status(t, s, service)
	if v2.MainPID == v1.MainPID || v2.ActiveState != "active" {
		t.Errorf("service after the upgrade: %+v, was PID %d: want active with a new PID", v2, v1.MainPID)
	}
	if got := askPID(t, addr); got != v2.MainPID {
		t.Errorf("answer from PID %d, want the new service's %d", got, v2.MainPID)
	}
	if after := status(t, s, socket); after.ActiveState != "active" || !after.ActiveEnter.Equal(sock.ActiveEnter) {
		t.Errorf("socket after the upgrade: %+v, was %+v: want it active all along", after, sock)
	}
}

// TestApplyRemovesAcceptSocket installs and removes an Accept=yes socket with its
// template: the template is not enabled (systemd refuses a template without
// DefaultInstance), and removing it stops the instance serving a connection.
func TestApplyRemovesAcceptSocket(t *testing.T) {
	s := connect(t)
	ctx := context.Background()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	socket, template := unitName(t, "echo.socket"), unitName(t, "echo@.service")
	forget(t, s, socket, template)
	owned := ownedSet{}
	install := Change{Install: map[string][]byte{
		socket:   []byte("[Socket]\nListenStream=" + addr + "\nAccept=yes\n[Install]\nWantedBy=sockets.target\n"),
		template: []byte("[Service]\nExecStart=/bin/cat\nStandardInput=socket\n[Install]\nWantedBy=multi-user.target\n"),
	}}
	if err := s.Apply(ctx, sysDir, install, owned.owns); err != nil {
		t.Fatal(err)
	}
	owned[socket], owned[template] = true, true
	wantState(t, status(t, s, socket), "active", "listening")
	if !exists(t, wantsLink("sockets.target", socket)) {
		t.Errorf("%s not enabled", socket)
	}

	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if _, err := c.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := r.ReadString('\n'); err != nil || line != "hello\n" {
		t.Fatalf("echo = %q, %v", line, err)
	}
	instances, err := s.instances(ctx, template)
	if err != nil || len(instances) != 1 {
		t.Fatalf("instances of %s: %q, %v; want the one serving the connection", template, instances, err)
	}
	wantState(t, status(t, s, instances[0]), "active", "running")

	if err := s.Apply(ctx, sysDir, Change{Remove: []string{template, socket}}, owned.owns); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadString('\n'); err == nil {
		t.Error("the connection is still served after its template was removed")
	}
	for _, u := range []string{socket, instances[0]} {
		if st := status(t, s, u); st.ActiveState != "inactive" {
			t.Errorf("after removal: %+v, want inactive", st)
		}
	}
	if exists(t, filepath.Join(sysDir.Path, socket)) || exists(t, filepath.Join(sysDir.Path, template)) || exists(t, wantsLink("sockets.target", socket)) {
		t.Error("a file or link of the removed units is left")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections", addr)
	}
}

// TestApplyRecoversFromStartLimit: a unit of a bad release that crashed until its
// start rate limit was hit can be restarted and replaced by Apply, where a bare
// Restart is refused.
func TestApplyRecoversFromStartLimit(t *testing.T) {
	s := connect(t)
	ctx := context.Background()
	u := unitName(t, "crashy.service")
	forget(t, s, u)
	owned := ownedSet{}
	limits := "[Unit]\nStartLimitIntervalSec=1h\nStartLimitBurst=2\n"
	bad := Change{Install: map[string][]byte{u: []byte(limits + "[Service]\nExecStart=/bin/false\nRestart=always\nRestartSec=10ms\n")}, Restart: []string{u}}
	_ = s.Apply(ctx, sysDir, bad, owned.owns) // the job may end done or failed: the crashes come after
	owned[u] = true
	deadline := time.Now().Add(10 * time.Second)
	for status(t, s, u).ActiveState != "failed" { // once the limit stops the restarts
		if time.Now().After(deadline) {
			t.Fatalf("the start limit is not hit: %+v", status(t, s, u))
		}
		time.Sleep(50 * time.Millisecond)
	}
	var je *JobError
	if err := s.Restart(ctx, u); !errors.As(err, &je) {
		t.Fatalf("Restart after the start limit = %v, want a *JobError", err)
	}
	t.Logf("restart after the start limit: %v", je)
	// Apply clears the limit before it restarts, even with no file to install (in
	// systemd 252 a daemon-reload happens to clear it too)
	if err := s.Apply(ctx, sysDir, Change{Restart: []string{u}}, owned.owns); err != nil {
		t.Fatalf("Apply with a restart only, after the start limit: %v", err)
	}

	good := Change{Install: map[string][]byte{u: []byte(limits + sleeper[strings.Index(sleeper, "[Service]"):])}, Restart: []string{u}}
	if err := s.Apply(ctx, sysDir, good, owned.owns); err != nil {
		t.Fatal(err)
	}
	wantState(t, status(t, s, u), "active", "running")
}
