package testproc

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStopEndsTheGroup: Stop of a program started with group ends its children too,
// and waits; a second Stop is harmless.
func TestStopEndsTheGroup(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	// The shell ignores SIGTERM; its child sleep does not: a kill of the shell
	// alone would leave the child, a kill of the group ends both.
	p, err := Start(exec.Command("/bin/sh", "-c", `trap "" TERM; sleep 60 & echo $!; wait; sleep 60`), log, true)
	if err != nil {
		t.Fatal(err)
	}
	var child int
	for deadline := time.Now().Add(5 * time.Second); child == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(log)
		child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if child == 0 || p.PID() == 0 {
		t.Fatalf("child pid %d, pid %d", child, p.PID())
	}
	start := time.Now()
	p.Stop(200 * time.Millisecond)
	select {
	case <-p.Done():
	default:
		t.Fatal("Stop returned before the program exited")
	}
	if !gone(child) {
		t.Errorf("the child %d outlived Stop", child)
	}
	if p.PID() != 0 || time.Since(start) > 5*time.Second {
		t.Errorf("after Stop: pid %d, took %v", p.PID(), time.Since(start))
	}
	p.Stop(time.Second)
	if err := p.Signal(syscall.SIGTERM); err != ErrStopped {
		t.Errorf("Signal after Stop = %v", err)
	}
}

func TestFind(t *testing.T) {
	if got, err := Find("sh", "/nonexistent", "dash"); err != nil || !filepath.IsAbs(got) {
		t.Errorf("Find(sh) = %q, %v", got, err)
	}
	if _, err := Find("no-such-program-here", "/nonexistent", "pkg"); err == nil || err.Error() != "no-such-program-here is not installed (Debian package pkg)" {
		t.Errorf("Find of a missing program = %v", err)
	}
}

// gone reports whether pid has exited (a zombie waiting for its new parent to reap
// it counts as exited), waiting up to a second for it.
func gone(pid int) bool {
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return true
		}
		if _, rest, ok := strings.Cut(string(stat), ") "); ok && strings.HasPrefix(rest, "Z") {
			return true
		}
	}
	return false
}
