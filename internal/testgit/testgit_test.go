package testgit

import (
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// clone runs the git binary's clone of url with extra environment and
// returns the cloned head, or the error.
func clone(t *testing.T, r *Repo, url string, env ...string) (string, error) {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "clone")
	cmd := exec.Command("git", "clone", "--quiet", url, dst)
	cmd.Env = append(r.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", &CommandError{Args: cmd.Args[1:], Err: err, Stderr: string(out)}
	}
	out, err := exec.Command("git", "-C", dst, "rev-parse", "HEAD").Output()
	return strings.TrimSpace(string(out)), err
}

func TestRepo(t *testing.T) {
	r := NewRepo(t)
	r.WriteFile("a/b.txt", "hello\n")
	r.WriteExecutable("run.sh", "#!/bin/sh\n")
	r.Symlink("link", "a/b.txt")
	first := r.Commit("first")
	if got := r.GitBare("rev-parse", Branch); got != first {
		t.Fatalf("bare %s = %s, want the pushed %s", Branch, got, first)
	}
	if got := r.Git("ls-tree", "-r", "--format=%(objectmode) %(path)", "HEAD"); got != "100644 a/b.txt\n120000 link\n100755 run.sh" {
		t.Fatalf("tree = %q", got)
	}
	second := r.CommitFiles("second", map[string]string{"a/b.txt": "bye\n"})
	if second == first {
		t.Fatal("second commit has the first's hash")
	}
	r.Rewind(first)
	if got := r.GitBare("rev-parse", Branch); got != first {
		t.Fatalf("bare %s after Rewind = %s, want %s", Branch, got, first)
	}
	// Same content and message as second, but on a rewound branch at a
	// later time: a different commit.
	again := r.CommitFiles("second", map[string]string{"a/b.txt": "bye\n"})
	if again == second {
		t.Fatal("a commit after a rewind repeats a refused hash")
	}
	if got, err := clone(t, r, r.FileURL()); err != nil || got != again {
		t.Fatalf("clone of FileURL = %s, %v; want %s", got, err, again)
	}
}

func TestFastImport(t *testing.T) {
	r := NewRepo(t)
	stream := "commit refs/heads/main\nmark :1\ncommitter A <a@example.com> 1600000000 +0000\ndata 3\none\n" +
		"M 100644 inline f.txt\ndata 4\nabc\n\n"
	r.FastImport(strings.NewReader(stream))
	if got := r.Git("show", "HEAD:f.txt"); got != "abc" {
		t.Fatalf("f.txt = %q", got)
	}
	if r.Head() != r.GitBare("rev-parse", Branch) {
		t.Fatal("work clone not moved to the imported head")
	}
}

func TestServeHTTP(t *testing.T) {
	r := NewRepo(t)
	head := r.Commit("first")
	var outage Outage
	url, served := ServeHTTP(t, r, WithToken("s3cret"), WithOutage(&outage))
	withToken := strings.Replace(url, "http://", "http://any:s3cret@", 1)
	if got, err := clone(t, r, withToken); err != nil || got != head {
		t.Fatalf("clone with the token = %s, %v; want %s", got, err, head)
	}
	if served.Load() == 0 {
		t.Fatal("no bytes counted")
	}
	if _, err := clone(t, r, strings.Replace(url, "http://", "http://any:wrong@", 1)); err == nil {
		t.Fatal("clone with a wrong token succeeded")
	}

	outage.Set(Unavailable)
	res, err := http.Get(url + "/info/refs?service=git-upload-pack")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status during an outage = %d", res.StatusCode)
	}
	outage.Set(HangUp)
	if _, err := http.Get(url + "/info/refs?service=git-upload-pack"); err == nil {
		t.Fatal("request during a hang-up succeeded")
	}
	outage.Set(Up)
	if got, err := clone(t, r, withToken); err != nil || got != head {
		t.Fatalf("clone after the outage = %s, %v", got, err)
	}
}

func TestServeSSH(t *testing.T) {
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("ssh client not installed")
	}
	r := NewRepo(t)
	head := r.Commit("first")
	srv := ServeSSH(t, r)
	sshCmd := func(key, knownHosts string) string {
		return "GIT_SSH_COMMAND=ssh -F /dev/null -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes" +
			" -o UserKnownHostsFile=" + knownHosts + " -i " + key
	}
	if got, err := clone(t, r, srv.URL, sshCmd(srv.ClientKeyFile, srv.KnownHostsFile)); err != nil || got != head {
		t.Fatalf("clone over ssh = %s, %v; want %s", got, err, head)
	}
	if srv.Served.Load() == 0 {
		t.Fatal("no bytes counted")
	}
	tests := []struct{ name, key, knownHosts, wantErr string }{
		{"wrong host key", srv.ClientKeyFile, srv.WrongKnownHostsFile, "HOST IDENTIFICATION HAS CHANGED"},
		{"unauthorized key", srv.UnauthorizedKeyFile, srv.KnownHostsFile, "Permission denied"},
	}
	for _, tc := range tests {
		_, err := clone(t, r, srv.URL, sshCmd(tc.key, tc.knownHosts))
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: clone error = %v, want one containing %q", tc.name, err, tc.wantErr)
		}
	}
	other := strings.Replace(srv.URL, "/repo.git", "/other.git", 1)
	if _, err := clone(t, r, other, sshCmd(srv.ClientKeyFile, srv.KnownHostsFile)); err == nil {
		t.Error("clone of another path succeeded")
	}
}

func TestShellUnquote(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"'/repo.git'", "/repo.git", true},
		{`'a'\''b'`, "a'b", true},
		{`'a'\!'b'`, "a!b", true},
		{"/repo.git", "", false},
		{"'open", "", false},
	}
	for _, tc := range tests {
		got, ok := shellUnquote(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("shellUnquote(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
