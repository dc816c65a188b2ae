package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestMan runs `baton man DIR` on the built binary: one page per visible command, the
// version and build date in the header, nothing that changes from one run to the next.
func TestMan(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command(binary, "man", dir).CombinedOutput(); err != nil {
		t.Fatalf("baton man: %v\n%s", err, out)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var pages []string
	for _, e := range entries {
		pages = append(pages, e.Name())
	}
	for _, want := range []string{"baton.1", "baton-agent.1", "baton-validate.1", "baton-validate-config.1", "baton-plan.1", "baton-version.1", "baton-completion-bash.1"} {
		if !slices.Contains(pages, want) {
			t.Errorf("no %s among %v", want, pages)
		}
	}
	if slices.Contains(pages, "baton-man.1") || slices.Contains(pages, "baton-help.1") {
		t.Errorf("pages %v include the hidden man command or help", pages)
	}

	root, err := os.ReadFile(filepath.Join(dir, "baton.1"))
	if err != nil {
		t.Fatal(err)
	}
	// TestMain stamps version 1.2.3-test and date 2026-11-25 into the binary.
	if want := `.TH "BATON" "1" "Nov 2026" "baton 1.2.3-test" "baton manual"`; !strings.Contains(string(root), want) {
		t.Errorf("baton.1 has no header %s:\n%s", want, firstLines(root))
	}
	if !strings.Contains(string(root), `\fBbaton-agent(1)\fP`) {
		t.Errorf("baton.1 does not refer to baton-agent(1):\n%s", root)
	}
	agent, err := os.ReadFile(filepath.Join(dir, "baton-agent.1"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(agent), "/etc/baton/agent.yaml") {
		t.Errorf("baton-agent.1 does not give the default --config:\n%s", agent)
	}

	// A second run writes the same bytes: the pages do not depend on the day.
	again := t.TempDir()
	if out, err := exec.Command(binary, "man", again).CombinedOutput(); err != nil {
		t.Fatalf("baton man: %v\n%s", err, out)
	}
	for _, p := range pages {
		a, _ := os.ReadFile(filepath.Join(dir, p))
		b, _ := os.ReadFile(filepath.Join(again, p))
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two runs", p)
		}
		if bytes.Contains(a, []byte("Auto generated")) {
			t.Errorf("%s carries the auto-generated tag", p)
		}
	}
}

func TestManHidden(t *testing.T) {
	out, err := exec.Command(binary, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("baton --help: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "\n  man ") {
		t.Errorf("baton --help lists the man command:\n%s", out)
	}
}

func TestManNotADirectory(t *testing.T) {
	var stdout, stderr bytes.Buffer
	missing := filepath.Join(t.TempDir(), "missing")
	code := run(t.Context(), []string{"man", missing}, &stdout, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "is not a directory") {
		t.Errorf("baton man %s: exit %d, stderr %q; want 2 and \"is not a directory\"", missing, code, stderr.String())
	}
	if code := run(t.Context(), []string{"man"}, &stdout, &stderr); code != 2 {
		t.Errorf("baton man without DIR: exit %d, want 2", code)
	}
}

func firstLines(b []byte) string {
	lines := strings.SplitN(string(b), "\n", 6)
	return strings.Join(lines[:min(5, len(lines))], "\n")
}
