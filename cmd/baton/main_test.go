package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-fleet/baton/internal/golden"
	"github.com/baton-fleet/baton/internal/testetcd"
)

// binary is the baton command built for these tests: they run it as a user would.
var binary string

func TestMain(m *testing.M) {
	// An etcd member the tests start is this binary run again: it runs the member
	// before building anything it would leave behind when it is killed.
	testetcd.RunIfMember()
	flag.Parse()
	dir, err := os.MkdirTemp("", "baton-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "baton")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=1.2.3-test -X main.commit=abcdef0 -X main.date=2026-11-25", "-o", binary, ".")
	build.Stderr = os.Stderr
	code := 1
	if err := build.Run(); err == nil {
		code = testetcd.Main(m) // runs the etcd members the tests start, in child processes
	} else {
		fmt.Fprintln(os.Stderr, "build baton:", err)
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestCLI runs the built binary and compares its exit code, stdout and stderr with
// testdata/golden/<name>.txt (absolute test paths masked as $TESTDATA).
func TestCLI(t *testing.T) {
	testdata, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	const rev = "9b8e7d6c5b4a39281706f5e4d3c2b1a098765432"
	tests := []struct {
		name string
		args []string
	}{
		{"validate-example", []string{"validate", "../../examples/fleet"}},
		{"validate-broken", []string{"validate", "testdata/broken"}},
		{"validate-not-a-dir", []string{"validate", "testdata/nonexistent"}},
		{"plan-fresh-host", []string{"plan", "--repo", "../../examples/fleet", "--host", "db-07", "--state", testdata + "/empty-state", "--revision", rev}},
		{"plan-upgrade", []string{"plan", "--repo", "../../examples/fleet", "--host", "web-01", "--state", testdata + "/state", "--units", testdata + "/units", "--revision", rev}},
		{"plan-upgrade-json", []string{"plan", "--repo", "../../examples/fleet", "--host", "web-01", "--state", testdata + "/state", "--units", testdata + "/units", "--revision", rev, "--json"}},
		{"plan-exit-code", []string{"plan", "--repo", "../../examples/fleet", "--host", "web-01", "--state", testdata + "/state", "--units", testdata + "/units", "--revision", rev, "--exit-code"}},
		{"plan-unknown-host", []string{"plan", "--repo", "../../examples/fleet", "--host", "mail-01", "--revision", rev}},
		{"plan-broken-repo", []string{"plan", "--repo", "testdata/broken", "--host", "web-01"}},
		{"plan-no-host", []string{"plan", "--repo", "../../examples/fleet"}},
		{"plan-fleet", []string{"plan", "--repo", "testdata/requires", "--fleet", "--revision", rev}},
		{"plan-fleet-json", []string{"plan", "--repo", "testdata/requires", "--fleet", "--revision", rev, "--json"}},
		{"plan-fleet-and-host", []string{"plan", "--repo", "testdata/requires", "--fleet", "--host", "web-01"}},
		{"validate-requires", []string{"validate", "testdata/requires"}},
		{"validate-requires-cycle", []string{"validate", "testdata/requires-cycle"}},
		{"version", []string{"version"}},
		{"rollback-no-agent", []string{"rollback", "--socket", testdata + "/no-agent.sock"}},
		{"rollback-bad-commit", []string{"rollback", "--socket", testdata + "/no-agent.sock", "--to", "main"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runBinary(t, tt.args...)
			got := fmt.Sprintf("exit %d\n--- stdout\n%s--- stderr\n%s", code, stdout, stderr)
			got = strings.ReplaceAll(got, testdata, "$TESTDATA")
			got = strings.ReplaceAll(got, goVersion(), "$GOVERSION")
			golden.Check(t, filepath.Join("testdata", "golden", tt.name+".txt"), []byte(got))
		})
	}
}

// runBinary runs the built baton with args and returns its exit code and output.
func runBinary(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errOut.String()
}

func goVersion() string {
	out, _ := exec.Command("go", "env", "GOVERSION").Output()
	return strings.TrimSpace(string(out))
}
