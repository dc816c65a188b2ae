// Package testproc runs, for tests, the programs of Debian packages they need (HAProxy, Prometheus): it finds them, starts them with their output in a log file, and ends them by their PID.
package testproc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Find returns the program name found in PATH, else debianPath where its Debian
// package puts it; the error names the package.
func Find(name, debianPath, pkg string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if _, err := os.Stat(debianPath); err == nil {
		return debianPath, nil
	}
	return "", fmt.Errorf("%s is not installed (Debian package %s)", name, pkg)
}

// Require returns what Find does, or skips the test; in CI (CI=true) it fails
// instead: CI installs every package the tests need (scripts/deps). who prefixes the
// message.
func Require(t testing.TB, who, name, debianPath, pkg string) string {
	t.Helper()
	bin, err := Find(name, debianPath, pkg)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s: %v (CI must install it)", who, err)
		}
		t.Skipf("%s: %v", who, err)
	}
	return bin
}

// Proc is a started program.
type Proc struct {
	mu    sync.Mutex
	cmd   *exec.Cmd // nil once stopped
	done  chan struct{}
	group bool
}

// ErrStopped is the error of Signal on a stopped program.
var ErrStopped = errors.New("the program was stopped")

// Start starts cmd with its output appended to logFile, killed if the test process
// dies first. With group, it runs in a process group of its own, and Stop ends the
// whole group (a master and its workers).
func Start(cmd *exec.Cmd, logFile string, group bool) (*Proc, error) {
	logf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: group, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	p := &Proc{cmd: cmd, done: make(chan struct{}), group: group}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// Done is closed when the program has exited and was reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// PID is the program's process id, 0 once stopped.
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Signal sends sig to the program (not its group).
func (p *Proc) Signal(sig os.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return ErrStopped
	}
	return p.cmd.Process.Signal(sig)
}

// Stop ends the program by its PID (its group's, when started with group): SIGTERM,
// then SIGKILL after grace; it waits until it has exited. Stopping twice is harmless.
func (p *Proc) Stop(grace time.Duration) {
	if p == nil {
		return
	}
	p.mu.Lock()
	cmd := p.cmd
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	pid := cmd.Process.Pid
	if p.group {
		pid = -pid
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(pid, syscall.SIGKILL)
		<-p.done
	}
}

// Tail is the last n bytes of b: the end of a log, for a test's failure message.
func Tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
