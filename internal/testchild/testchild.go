// Package testchild runs the test binary again as a child process in another role, for tests that kill a real process.
package testchild

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// Child is the test binary running in a role its TestMain picked from the
// environment.
type Child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// Spawn runs the test binary with env added to its environment and no tests
// (-test.run=^$), so that its TestMain runs the role env names, and returns at
// once; ReadLine and Ask talk to it. The child's standard error is the test's. It
// is killed when the test ends, or when this process dies; closing its standard
// input (Stop) is how a role is told to end by itself.
func Spawn(t testing.TB, env ...string) *Child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
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
	c := &Child{cmd: cmd, stdin: stdin, out: bufio.NewReader(out)}
	t.Cleanup(c.Kill)
	return c
}

// Start is Spawn, returning once the child printed its first line, with that line.
func Start(t testing.TB, env ...string) (*Child, string) {
	t.Helper()
	c := Spawn(t, env...)
	line, err := c.ReadLine()
	if err != nil {
		t.Fatalf("child %v: %v", env, err)
	}
	return c, line
}

// ReadLine reads the next line the child printed, its newline included.
func (c *Child) ReadLine() (string, error) { return c.out.ReadString('\n') }

// Ask writes req as a line to the child's standard input and returns the line it
// answers.
func (c *Child) Ask(req string) (string, error) {
	if _, err := fmt.Fprintln(c.stdin, req); err != nil {
		return "", err
	}
	return c.ReadLine()
}

// Pid is the child's process ID.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Stop closes the child's standard input, so that its role ends by itself, and
// kills it if it has not ended within wait.
func (c *Child) Stop(wait time.Duration) {
	c.stdin.Close()
	done := make(chan struct{})
	go func() {
		c.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(wait):
		c.cmd.Process.Kill()
		<-done
	}
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
