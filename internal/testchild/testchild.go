// Package testchild runs the test binary again as a child process in another role, for tests that kill a real process.
package testchild

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// Child is the test binary running in a role its TestMain picked from the
// environment.
type Child struct {
	cmd   *exec.Cmd
	stdin io.Closer
}

// Start runs the test binary with env added to its environment and no tests
// (-test.run=^$), so that its TestMain runs the role env names. It returns once the
// child printed its first line, with that line; the child's standard error is the
// test's. The child is killed when the test ends; closing its standard input (Stop)
// is how a role is told to end by itself.
func Start(t testing.TB, env ...string) (*Child, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &Child{cmd: cmd, stdin: stdin}
	t.Cleanup(c.Kill)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("child %v: %v", env, err)
	}
	return c, line
}

// Kill sends SIGKILL and waits for the child: it gets no chance to clean up, as
// when a host dies. Killing a child that ended is a no-op.
func (c *Child) Kill() {
	if c.cmd.ProcessState != nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGKILL)
	c.stdin.Close()
	c.cmd.Wait()
}
