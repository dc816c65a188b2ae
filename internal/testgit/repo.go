// Package testgit starts real git repositories and servers (file, smart HTTP, SSH) for tests.
package testgit

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Branch is the branch every Repo works on.
const Branch = "main"

// baseTime is the author and committer time of the first commit made by a
// Repo; each later commit is one second younger. Fixed times make hashes
// repeatable and keep two commits made within the same second apart.
const baseTime = 1700000000

// Repo is a bare repository (what the servers serve) and a work clone of it
// (where a test writes files and commits). Every commit is pushed to the
// bare repository at once.
type Repo struct {
	t    testing.TB
	Bare string // the bare repository, named repo.git
	Work string // the work clone
	env  []string

	mu    sync.Mutex
	ticks int
}

// NewRepo makes an empty bare repository and a work clone of it in
// t.TempDir(), using the git binary with no global or system configuration.
// The test is skipped when git is missing.
func NewRepo(t testing.TB) *Repo {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git binary not installed")
	}
	tmp := t.TempDir()
	home := filepath.Join(tmp, "home")
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	r := &Repo{
		t:    t,
		Bare: filepath.Join(tmp, "srv", "repo.git"),
		Work: filepath.Join(tmp, "work"),
		env:  Env(home),
	}
	r.run("", "init", "--quiet", "--bare", "--initial-branch="+Branch, r.Bare)
	r.run("", "clone", "--quiet", r.Bare, r.Work)
	r.run(r.Work, "checkout", "--quiet", "-B", Branch)
	return r
}

// Env is the environment for git commands run by tests: the current one
// without GIT_* variables, plus a HOME of its own, no system configuration,
// no prompts, and a fixed author and committer.
func Env(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GIT_") || strings.HasPrefix(kv, "HOME=") ||
			strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"HOME="+home,
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=Test Author",
		"GIT_AUTHOR_EMAIL=author@example.com",
		"GIT_COMMITTER_NAME=Test Committer",
		"GIT_COMMITTER_EMAIL=committer@example.com",
	)
}

// Environ returns the environment the repository's git commands run with.
func (r *Repo) Environ() []string { return append([]string(nil), r.env...) }

// FileURL is the file:// URL of the bare repository.
func (r *Repo) FileURL() string { return "file://" + filepath.ToSlash(r.Bare) }

// Git runs git with args in the work clone and returns its trimmed output;
// a failure fails the test.
func (r *Repo) Git(args ...string) string {
	r.t.Helper()
	return r.run(r.Work, args...)
}

// GitBare runs git with args in the bare repository.
func (r *Repo) GitBare(args ...string) string {
	r.t.Helper()
	return r.run(r.Bare, args...)
}

func (r *Repo) run(dir string, args ...string) string {
	r.t.Helper()
	out, err := r.output(dir, nil, args...)
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

func (r *Repo) output(dir string, stdin io.Reader, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Stdin = stdin
	r.mu.Lock()
	cmd.Env = append(r.Environ(), r.dateEnv()...)
	r.mu.Unlock()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", &CommandError{Args: args, Err: err, Stderr: stderr.String()}
	}
	return strings.TrimSpace(stdout.String()), nil
}

// dateEnv is the author and committer date of the next command. r.mu is held.
func (r *Repo) dateEnv() []string {
	d := "@" + strconv.Itoa(baseTime+r.ticks) + " +0000"
	return []string{"GIT_AUTHOR_DATE=" + d, "GIT_COMMITTER_DATE=" + d}
}

// CommandError is a git command that failed.
type CommandError struct {
	Args   []string
	Err    error
	Stderr string
}

func (e *CommandError) Error() string {
	return "git " + strings.Join(e.Args, " ") + ": " + e.Err.Error() + ": " + strings.TrimSpace(e.Stderr)
}

func (e *CommandError) Unwrap() error { return e.Err }

// path returns name inside the work clone, creating its parent directories.
func (r *Repo) path(name string) string {
	r.t.Helper()
	p := filepath.Join(r.Work, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		r.t.Fatal(err)
	}
	return p
}

// WriteFile writes a regular file (mode 0644) in the work clone.
func (r *Repo) WriteFile(name, content string) {
	r.t.Helper()
	r.write(name, content, 0o644)
}

// WriteExecutable writes an executable file (mode 0755) in the work clone.
func (r *Repo) WriteExecutable(name, content string) {
	r.t.Helper()
	r.write(name, content, 0o755)
}

func (r *Repo) write(name, content string, mode os.FileMode) {
	r.t.Helper()
	p := r.path(name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		r.t.Fatal(err)
	}
}

// Symlink makes name a symbolic link to target in the work clone.
func (r *Repo) Symlink(name, target string) {
	r.t.Helper()
	p := r.path(name)
	_ = os.Remove(p)
	if err := os.Symlink(target, p); err != nil {
		r.t.Fatal(err)
	}
}

// Remove deletes name (a file or a directory) from the work clone.
func (r *Repo) Remove(name string) {
	r.t.Helper()
	if err := os.RemoveAll(filepath.Join(r.Work, filepath.FromSlash(name))); err != nil {
		r.t.Fatal(err)
	}
}

// Commit stages everything in the work clone, commits it (even when nothing
// changed), pushes it to the bare repository and returns the commit hash.
func (r *Repo) Commit(msg string) string {
	r.t.Helper()
	r.mu.Lock()
	r.ticks++
	r.mu.Unlock()
	r.Git("add", "--all")
	r.Git("commit", "--quiet", "--allow-empty", "--no-verify", "-m", msg)
	r.Git("push", "--quiet", "origin", "HEAD:refs/heads/"+Branch)
	return r.Head()
}

// CommitFiles writes files (path -> content) and commits them.
func (r *Repo) CommitFiles(msg string, files map[string]string) string {
	r.t.Helper()
	for name, content := range files {
		r.WriteFile(name, content)
	}
	return r.Commit(msg)
}

// Head is the commit the work clone is on.
func (r *Repo) Head() string {
	r.t.Helper()
	return r.Git("rev-parse", "HEAD")
}

// Rewind resets the work clone to commit and force-pushes it, as someone
// rewriting the branch would.
func (r *Repo) Rewind(commit string) {
	r.t.Helper()
	r.Git("reset", "--quiet", "--hard", commit)
	r.Git("push", "--quiet", "--force", "origin", "HEAD:refs/heads/"+Branch)
}

// FastImport feeds a git fast-import stream into the bare repository (the
// stream must write refs/heads/main) and moves the work clone to the result.
// It is the fast way to build a large history.
func (r *Repo) FastImport(stream io.Reader) {
	r.t.Helper()
	if _, err := r.output(r.Bare, stream, "fast-import", "--quiet", "--force"); err != nil {
		r.t.Fatal(err)
	}
	r.Git("fetch", "--quiet", "origin")
	r.Git("reset", "--quiet", "--hard", "origin/"+Branch)
}
