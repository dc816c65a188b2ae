package packagetest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// The packages are built once per test process, by the Makefile as a user runs it,
// into a temporary directory per version.
var (
	buildMu  sync.Mutex
	built    = map[string]*Packages{}
	failed   = map[string]string{} // tag -> why its build failed: not tried again
	buildDir string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// Packages is the output of one `make packages`.
type Packages struct {
	Tag     string // what VERSION said: the output of git describe
	Version string // the package version made of it
	Dir     string // DIST
	Stage   string // completions, man pages, and a baton built for this machine
}

// Deb is the .deb for a Go architecture.
func (p *Packages) Deb(arch string) string {
	return filepath.Join(p.Dir, fmt.Sprintf("baton_%s_%s.deb", p.Version, arch))
}

// RPM is the .rpm for a Go architecture.
func (p *Packages) RPM(arch string) string {
	return filepath.Join(p.Dir, fmt.Sprintf("baton-%s.%s.rpm", p.Version, rpmArch(arch)))
}

// Baton is a baton binary of this version that runs on this machine.
func (p *Packages) Baton() string { return filepath.Join(p.Stage, "baton") }

func rpmArch(goarch string) string {
	switch goarch {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	}
	return goarch
}

// otherArch is the packaged architecture that is not this machine's: the cross build.
func otherArch() string {
	if runtime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

// requireTools skips the test unless the named programs are installed; in CI, where
// scripts/deps installs them, it fails instead.
func requireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("needs %s (CI must install it: see scripts/deps)", tool)
			}
			t.Skipf("needs %s", tool)
		}
	}
}

// crossTag is the version built for both architectures: this machine's, and the other
// one by cross-compiling. The other versions are built for this machine only.
const crossTag = "v1.0.0"

// build runs `make packages VERSION=tag PKG_ARCHS=...`, once per tag in a process.
func build(t testing.TB, tag string) *Packages {
	t.Helper()
	requireTools(t, "make", "go", "git", "gzip")
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[tag]; ok {
		return p
	}
	if why, ok := failed[tag]; ok {
		t.Fatal(why)
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "baton-packagetest-")
		if err != nil {
			t.Fatal(err)
		}
		buildDir = d
	}
	archs := runtime.GOARCH
	if tag == crossTag {
		archs += " " + otherArch()
	}
	root := moduleRoot(t)
	p := &Packages{Tag: tag, Dir: filepath.Join(buildDir, tag)}
	p.Stage = filepath.Join(p.Dir, "stage")
	cmd := exec.Command("make", "--no-print-directory", "-C", root, "packages",
		"VERSION="+tag, "PKG_ARCHS="+archs, "DIST="+p.Dir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		failed[tag] = fmt.Sprintf("make packages VERSION=%s: %v\n%s", tag, err, out.String())
		t.Fatal(failed[tag])
	}
	v, err := exec.Command("sh", filepath.Join(root, "packaging", "pkgversion"), tag).Output()
	if err != nil {
		t.Fatalf("pkgversion %s: %v", tag, err)
	}
	p.Version = strings.TrimSpace(string(v))
	for _, f := range []string{p.Deb(runtime.GOARCH), p.RPM(runtime.GOARCH)} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("make packages VERSION=%s made no %s:\n%s", tag, filepath.Base(f), out.String())
		}
	}
	built[tag] = p
	return p
}

// moduleRoot is the directory of go.mod, above this package's.
func moduleRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s", wd)
		}
	}
}

// run runs a command on this machine and returns its standard output; a failure
// fails the test.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}
