package gitsync

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/internal/testgit"
)

func TestPollSeesNewCommits(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			repo := testgit.NewRepo(t)
			first := repo.CommitFiles("first", map[string]string{"fleet.yaml": "apiVersion: baton/v1\n"})
			opts := tr.serve(t, repo)
			s := newSyncer(t, opts)
			if got := s.Head(); got != "" {
				t.Fatalf("Head before the first poll = %q, want empty", got)
			}

			got := mustPoll(t, s)
			want := Update{Commit: first, Previous: "", Changed: true, Fetched: true}
			if got != want {
				t.Fatalf("first poll = %+v, want %+v", got, want)
			}

			got = mustPoll(t, s)
			want = Update{Commit: first, Previous: first}
			if got != want {
				t.Fatalf("poll with no change = %+v, want %+v", got, want)
			}

			second := repo.CommitFiles("second", map[string]string{"services/api/service.yaml": "version: \"1.0\"\n"})
			got = mustPoll(t, s)
			want = Update{Commit: second, Previous: first, Changed: true, Fetched: true}
			if got != want {
				t.Fatalf("poll after a push = %+v, want %+v", got, want)
			}
			if s.Head() != second {
				t.Fatalf("Head = %s, want %s", s.Head(), second)
			}
			if err, _ := s.LastError(); err != nil {
				t.Fatalf("LastError after success = %v", err)
			}
		})
	}
}

func TestPollReopensDir(t *testing.T) {
	repo := testgit.NewRepo(t)
	first := repo.Commit("first")
	opts := Options{URL: repo.FileURL(), Dir: filepath.Join(t.TempDir(), "repo.git")}
	mustPoll(t, newSyncer(t, opts))

	// A restarted agent: the accepted head survives, a poll with nothing
	// new reports no change.
	s := newSyncer(t, opts)
	got := mustPoll(t, s)
	if want := (Update{Commit: first, Previous: first}); got != want {
		t.Fatalf("poll after reopening = %+v, want %+v", got, want)
	}
	second := repo.Commit("second")
	got = mustPoll(t, newSyncer(t, opts))
	if want := (Update{Commit: second, Previous: first, Changed: true, Fetched: true}); got != want {
		t.Fatalf("poll after reopening and a push = %+v, want %+v", got, want)
	}
}

func TestPollNoChangeDownloadsNoObjects(t *testing.T) {
	repo := testgit.NewRepo(t)
	for i := range 20 {
		repo.CommitFiles("commit", map[string]string{"f.txt": strings.Repeat("x", 1000*i)})
	}
	url, served := testgit.ServeHTTP(t, repo)
	s := newSyncer(t, Options{URL: url})
	mustPoll(t, s)
	clone := served.Load()

	served.Store(0)
	u := mustPoll(t, s)
	if u.Fetched || u.Changed {
		t.Fatalf("poll with no change = %+v, want neither Fetched nor Changed", u)
	}
	// Only the ref advertisement: one ref and the capabilities.
	if n := served.Load(); n == 0 || n > 1024 {
		t.Fatalf("poll with no change transferred %d bytes, want a ref advertisement (0 < n <= 1024); the clone took %d", n, clone)
	}
	t.Logf("clone: %d bytes, poll with no change: %d bytes", clone, served.Load())
}

func TestPollHTTPAuth(t *testing.T) {
	repo := testgit.NewRepo(t)
	repo.Commit("first")
	url, _ := testgit.ServeHTTP(t, repo, testgit.WithToken("right-token"))
	tests := []struct {
		name, tokenFile, wantErr string
	}{
		{"wrong token", writeTemp(t, "wrong", "wrong-token-value\n"), "authentication required"},
		{"no token", "", "authentication required"},
		{"empty token file", writeTemp(t, "empty", "\n"), "is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSyncer(t, Options{URL: url, Auth: Auth{TokenFile: tc.tokenFile}})
			_, err := s.Poll(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Poll error = %v, want one containing %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "wrong-token-value") {
				t.Fatalf("error repeats the token: %v", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q spans lines", err)
			}
			if last, at := s.LastError(); last == nil || at.IsZero() {
				t.Fatalf("LastError = %v, %v; want the poll error and its time", last, at)
			}
			if s.Head() != "" {
				t.Fatalf("Head = %q after a failed clone", s.Head())
			}
		})
	}
}

func TestPollSSHHostKey(t *testing.T) {
	repo := testgit.NewRepo(t)
	repo.Commit("first")
	srv := testgit.ServeSSH(t, repo)
	tests := []struct {
		name              string
		key, knownHosts   string
		wantErr, wantErr2 string
	}{
		{"wrong host key", srv.ClientKeyFile, srv.WrongKnownHostsFile, "host key", "does not match"},
		{"unknown host", srv.ClientKeyFile, writeTemp(t, "known_hosts", ""), "host key", "not in known_hosts"},
		{"unauthorized client key", srv.UnauthorizedKeyFile, srv.KnownHostsFile, "unable to authenticate", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSyncer(t, Options{URL: srv.URL, Auth: Auth{SSHKeyFile: tc.key, KnownHostsFile: tc.knownHosts}})
			_, err := s.Poll(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.wantErr2) {
				t.Fatalf("Poll error = %v, want one containing %q and %q", err, tc.wantErr, tc.wantErr2)
			}
			if srv.Served.Load() != 0 {
				t.Fatalf("the server ran git-upload-pack for a refused connection")
			}
		})
	}
}

func TestPollRefusesRewind(t *testing.T) {
	repo := testgit.NewRepo(t)
	a := repo.CommitFiles("a", map[string]string{"v": "a"})
	b := repo.CommitFiles("b", map[string]string{"v": "b"})
	url, _ := testgit.ServeHTTP(t, repo)
	dir := filepath.Join(t.TempDir(), "repo.git")
	s := newSyncer(t, Options{URL: url, Dir: dir})
	mustPoll(t, s)

	refused := func(step string) {
		t.Helper()
		u, err := s.Poll(context.Background())
		if !errors.Is(err, ErrRewound) {
			t.Fatalf("%s: Poll error = %v, want ErrRewound", step, err)
		}
		if s.Head() != b || u.Commit != b || u.Changed {
			t.Fatalf("%s: Head = %s, Update = %+v; want the accepted head %s kept", step, commitid.Short(s.Head()), u, commitid.Short(b))
		}
		for _, want := range []string{"main", commitid.Short(b), "repo.allowRewind"} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("%s: error %q does not mention %q", step, err, want)
			}
		}
	}

	// Reset to an ancestor.
	repo.Rewind(a)
	refused("rewound to an ancestor")

	// Rewritten: a new commit on top of the ancestor, and a fast-forward
	// of it; both are judged against the accepted b, not the refused head.
	repo.Rewind(a)
	c := repo.CommitFiles("c", map[string]string{"v": "c"})
	refused("force-pushed")
	refused("force-pushed, polled again")
	d := repo.CommitFiles("d", map[string]string{"v": "d"})
	refused("fast-forward of the refused head")

	// Back on b's line: accepted.
	repo.Rewind(b)
	e := repo.CommitFiles("e", map[string]string{"v": "e"})
	got := mustPoll(t, s)
	if want := (Update{Commit: e, Previous: b, Changed: true, Fetched: true}); got != want {
		t.Fatalf("poll after a push on the accepted line = %+v, want %+v", got, want)
	}

	// With allowRewind the rewritten history is taken.
	repo.Rewind(d)
	allow := newSyncer(t, Options{URL: url, Dir: dir, AllowRewind: true})
	got = mustPoll(t, allow)
	if got.Commit != d || got.Previous != e || !got.Changed {
		t.Fatalf("poll with AllowRewind = %+v, want %s accepted after %s", got, commitid.Short(d), commitid.Short(e))
	}
	if ok, err := allow.Descends(c, d); !ok || err != nil {
		t.Fatalf("Descends(c, d) = %v, %v; want true", ok, err)
	}
}

func TestPollServerDown(t *testing.T) {
	refusedAddr := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return addr
	}()
	for _, mode := range []testgit.OutageMode{testgit.Unavailable, testgit.HangUp} {
		t.Run(mode.String(), func(t *testing.T) {
			repo := testgit.NewRepo(t)
			first := repo.Commit("first")
			var outage testgit.Outage
			url, _ := testgit.ServeHTTP(t, repo, testgit.WithOutage(&outage))
			s := newSyncer(t, Options{URL: url})
			mustPoll(t, s)

			outage.Set(mode)
			repo.Commit("second")
			u, err := s.Poll(context.Background())
			if err == nil {
				t.Fatalf("Poll while the server is %v succeeded: %+v", mode, u)
			}
			if u.Commit != first || s.Head() != first {
				t.Fatalf("Update = %+v, Head = %s; want %s kept", u, commitid.Short(s.Head()), commitid.Short(first))
			}
			if last, _ := s.LastError(); last == nil {
				t.Fatal("LastError is nil after a failed poll")
			}
			outage.Set(testgit.Up)
			if u := mustPoll(t, s); !u.Changed {
				t.Fatalf("poll after the outage = %+v, want the new commit", u)
			}
			if last, _ := s.LastError(); last != nil {
				t.Fatalf("LastError = %v after a success", last)
			}
		})
	}
	t.Run("connection refused", func(t *testing.T) {
		s := newSyncer(t, Options{URL: "http://" + refusedAddr + "/repo.git"})
		if _, err := s.Poll(context.Background()); err == nil || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("Poll error = %v, want connection refused", err)
		}
	})
}

func TestPollBranch(t *testing.T) {
	repo := testgit.NewRepo(t)
	repo.Commit("first")
	repo.Git("checkout", "--quiet", "-b", "prod")
	prod := repo.Commit("on prod")
	repo.Git("push", "--quiet", "origin", "prod")

	s := newSyncer(t, Options{URL: repo.FileURL(), Branch: "prod"})
	if u := mustPoll(t, s); u.Commit != prod {
		t.Fatalf("poll of branch prod = %+v, want %s", u, commitid.Short(prod))
	}
	missing := newSyncer(t, Options{URL: repo.FileURL(), Branch: "nope"})
	if _, err := missing.Poll(context.Background()); err == nil || !strings.Contains(err.Error(), `branch "nope" not found`) {
		t.Fatalf("poll of a missing branch: %v", err)
	}
}

func TestDescends(t *testing.T) {
	repo := testgit.NewRepo(t)
	a := repo.Commit("a")
	b := repo.Commit("b")
	repo.Git("checkout", "--quiet", "-b", "side", a)
	repo.Git("commit", "--quiet", "--allow-empty", "-m", "side")
	side := repo.Head()
	repo.Git("checkout", "--quiet", "main")
	repo.Git("merge", "--quiet", "--no-ff", "--no-edit", "side")
	merge := repo.Commit("after the merge") // main: a - b - merge(b, side) - this
	s := newSyncer(t, Options{URL: repo.FileURL()})
	mustPoll(t, s)

	tests := []struct {
		ancestor, commit string
		want             bool
	}{
		{a, a, true},
		{a, b, true},
		{b, a, false},
		{a, merge, true},
		{b, merge, true},
		{side, merge, true},
		{side, b, false},
		{b, side, false},
		{merge, a, false},
	}
	for _, tc := range tests {
		got, err := s.Descends(tc.ancestor, tc.commit)
		if err != nil || got != tc.want {
			t.Errorf("Descends(%s, %s) = %v, %v; want %v", commitid.Short(tc.ancestor), commitid.Short(tc.commit), got, err, tc.want)
		}
	}
	if _, err := s.Descends("nothex", a); err == nil {
		t.Error("Descends accepted a malformed hash")
	}
	// An ancestor missing from the clone is not a "no": whether the commit descends
	// from it cannot be told (issue 18: the applied commit gone after a new clone).
	unknown := strings.Repeat("ab", 20)
	if ok, err := s.Descends(unknown, a); ok || !errors.Is(err, ErrUnknownCommit) {
		t.Errorf("Descends(an unknown commit, a) = %v, %v; want ErrUnknownCommit", ok, err)
	} else if want := "check that " + commitid.Short(a) + " descends from " + commitid.Short(unknown) + ": commit " + commitid.Short(unknown) + ": not in the local repository"; err.Error() != want {
		t.Errorf("Descends(an unknown commit, a) = %q, want %q", err, want)
	}
	if _, err := s.Descends(a, unknown); err == nil || errors.Is(err, ErrUnknownCommit) {
		t.Errorf("Descends(a, an unknown commit) = %v; want an error, not ErrUnknownCommit", err)
	}
}

func TestPollRefusesForeignDir(t *testing.T) {
	repo := testgit.NewRepo(t)
	repo.Commit("first")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newSyncer(t, Options{URL: repo.FileURL(), Dir: dir})
	if _, err := s.Poll(context.Background()); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("Poll into a directory holding other files: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("Poll wrote into a foreign directory: %v", entries)
	}
}

func TestPollUnreadableDir(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads every directory")
	}
	repo := testgit.NewRepo(t)
	repo.Commit("first")
	dir := filepath.Join(t.TempDir(), "locked")
	if err := os.Mkdir(dir, 0); err != nil {
		t.Fatal(err)
	}
	s := newSyncer(t, Options{URL: repo.FileURL(), Dir: filepath.Join(dir, "repo.git")})
	if _, err := s.Poll(context.Background()); err == nil {
		t.Fatal("Poll into an unwritable directory succeeded")
	}
}
