package checks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Environment of every command run by Exec: these variables and nothing else.
const (
	execPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	execLang = "C.UTF-8"
)

// drainAfterExit bounds how long Exec keeps reading output once the command's
// process group is dead: only a process that left the group (setsid) can hold
// the output pipe open longer.
const drainAfterExit = time.Second

// Exec runs argv for an exec check or a hook and returns the tail of its combined
// stdout and stderr (at most 4 KiB). The command runs:
//   - with only PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
//     and LANG=C.UTF-8 in its environment, stdin /dev/null and working directory
//     /; a program named without a slash is looked up in that PATH;
//   - as p.User when set (a user name, looked up when the command starts);
//   - killed (SIGKILL) when the process that runs it dies, if p.DieWithAgent;
//   - in a process group of its own, which is killed whole (SIGKILL) when timeout
//     (which must be positive) passes or ctx ends, and also once the command has exited, so that nothing it
//     started outlives it.
//
// The error says how the command failed: exit status, killed at the timeout, or
// could not start; with the last line of output when there is one. When the
// command could not start (its user unknown, its program missing...), the output
// is the error's message, so that a failed check shows why.
func (p *Prober) Exec(ctx context.Context, argv []string, timeout time.Duration) (string, error) {
	if len(argv) == 0 {
		return "", errors.New("exec: no command")
	}
	notStarted := func(format string, a ...any) (string, error) {
		err := fmt.Errorf("%s: %s", argv[0], fmt.Sprintf(format, a...))
		return err.Error(), err
	}
	prog, err := lookPath(argv[0])
	if err != nil {
		return notStarted("%v", err)
	}
	attr := &syscall.SysProcAttr{Setpgid: true}
	if p.DieWithAgent {
		// The kernel sends the signal when the thread that started the command
		// ends, not the process (go.dev/issue/27505): this goroutine keeps its
		// thread, so that no other can lock it and end it, until the command is over.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		attr.Pdeathsig = syscall.SIGKILL
	}
	start := "start"
	if p.User != "" {
		if attr.Credential, err = credential(p.User); err != nil {
			return notStarted("%v", err)
		}
		start = "start as " + p.User
	}
	r, w, err := os.Pipe()
	if err != nil {
		return notStarted("%v", err)
	}
	defer r.Close()

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := command(prog, argv, w, attr)
	err = cmd.Start()
	w.Close()
	if err != nil {
		return notStarted("%s: %v", start, err)
	}

	out := make(chan []byte, 1)
	go func() { out <- readTail(r, maxOutput) }()
	killed := waitOrKill(ctx, cmd.Process.Pid)
	waitErr := cmd.Wait()
	r.SetReadDeadline(time.Now().Add(drainAfterExit))
	output := printable(<-out)

	err = runError(ctx, argv[0], timeout, waitErr, killed)
	if err == nil {
		return output, nil
	}
	if l := lastLine(output); l != "" {
		err = fmt.Errorf("%w: %s", err, l)
	}
	return output, err
}

// command makes the command that runs prog as argv in the environment that Exec
// promises, its stdout and stderr going to out.
func command(prog string, argv []string, out *os.File, attr *syscall.SysProcAttr) *exec.Cmd {
	cmd := exec.Command(prog, argv[1:]...)
	cmd.Args[0] = argv[0]
	cmd.Env = []string{"PATH=" + execPath, "LANG=" + execLang}
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = out, out // an *os.File: the child writes to it directly
	cmd.SysProcAttr = attr
	return cmd
}

// waitOrKill waits until the started command, the leader of process group pid,
// has exited, killing its group if ctx ends first, and reports whether it did;
// then it kills whatever the command left behind in the group. The leader is
// not reaped.
func waitOrKill(ctx context.Context, pid int) (killed bool) {
	exited := make(chan struct{})
	go func() { waitExited(pid); close(exited) }()

	// Every kill happens while the leader has exited at most, not been reaped: it
	// still holds the group's id then, so the id cannot name another group.
	select {
	case <-exited:
	case <-ctx.Done():
		select {
		case <-exited: // it exited on its own meanwhile
		default:
			killed = true
			killGroup(pid)
			<-exited
		}
	}
	killGroup(pid) // whatever the command left behind
	return killed
}

// runError says how a command that ran failed, from what Wait returned and
// whether waitOrKill killed it; nil when it exited with status 0 on its own.
func runError(ctx context.Context, name string, timeout time.Duration, waitErr error, killed bool) error {
	switch {
	case waitErr == nil && !killed:
		return nil
	case killed && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("%s: killed after the %s timeout", name, timeout)
	case killed:
		return fmt.Errorf("%s: canceled", name)
	}
	return fmt.Errorf("%s: %v", name, waitErr)
}

// lookPath finds a program named without a slash in the PATH that Exec sets, not
// in the agent's own.
func lookPath(name string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range filepath.SplitList(execPath) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("not found in %s", execPath)
}

// credential looks up the uid, gid and groups of a user name.
func credential(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("run as %s: %v", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("run as %s: %v", name, err)
	}
	c := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("run as %s: groups: %v", name, err)
	}
	for _, id := range ids {
		g, err := strconv.ParseUint(id, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("run as %s: group %q: %v", name, id, err)
		}
		c.Groups = append(c.Groups, uint32(g))
	}
	return c, nil
}

// killGroup sends SIGKILL to the process group pgid. A group already gone is
// fine, and no other failure is possible for root or the group's owner.
func killGroup(pgid int) {
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// waitExited waits until the child pid has exited, without reaping it.
func waitExited(pid int) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return
		}
	}
}

// readTail reads r to its end (or read deadline) and returns the last n bytes.
func readTail(r io.Reader, n int) []byte {
	buf := make([]byte, 0, 2*n)
	chunk := make([]byte, 32<<10)
	for {
		k, err := r.Read(chunk)
		buf = append(buf, chunk[:k]...)
		if len(buf) > 2*n {
			buf = append(buf[:0], buf[len(buf)-n:]...)
		}
		if err != nil {
			return tail(buf, n)
		}
	}
}
