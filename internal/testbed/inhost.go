package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// envHost is set, to the host's name, in a test binary that Main runs inside a host.
const envHost = "BATON_TESTBED_HOST"

// InHost reports whether this process is a test binary that Main runs inside a host.
func InHost() bool { return os.Getenv(envHost) != "" }

// RequireSystemd skips the test unless it runs inside a testbed host (see Main), where
// systemd is PID 1 and the test may change it at will. In CI it fails instead.
func RequireSystemd(t testing.TB) {
	t.Helper()
	if InHost() {
		return
	}
	reason := "not inside a testbed host"
	if err := available(); err != nil {
		reason = err.Error()
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("testbed: needs a systemd host: %s", reason)
	}
	t.Skipf("testbed: needs a systemd host: %s", reason)
}

// Main runs a package's tests inside a freshly booted host when this machine can boot
// one, and on the machine itself otherwise (where RequireSystemd skips). Use it as
//
//	func TestMain(m *testing.M) { os.Exit(testbed.Main(m)) }
//
// Inside, the test binary and the module's source are bound read-only at their own
// paths, the working directory is the package's, and the host has the network.
func Main(m *testing.M) int {
	if InHost() || available() != nil {
		return m.Run()
	}
	code, err := runInHost()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbed:", err)
		return 1
	}
	return code
}

func runInHost() (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	wd, err := os.Getwd()
	if err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp("", "testbed-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	n, err := newNetwork()
	if n != nil {
		defer n.Close()
	}
	if err != nil {
		return 0, err
	}
	binds := []Bind{{Src: exe, Dst: exe}, {Src: moduleRoot(wd), Dst: moduleRoot(wd)}}
	h, err := n.boot(dir, "pkgtest", binds...)
	if h != nil {
		defer h.Close()
	}
	if err != nil {
		return 0, err
	}
	args := append([]string{"-t", strconv.Itoa(h.Leader), "-a", "--wd=" + wd, "--", exe}, os.Args[1:]...)
	cmd := exec.Command("nsenter", args...)
	cmd.Env = append(os.Environ(), envHost+"="+h.Name, "BATON_TESTBED_IP="+h.IP, "BATON_TESTBED_GATEWAY="+n.Gateway())
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), nil
	}
	return 0, err
}

// moduleRoot is the nearest directory above dir that holds a go.mod.
func moduleRoot(dir string) string {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}
