package gitsync

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/baton-fleet/baton/internal/testgit"
)

// transport is one way of reaching a test repository.
type remoteKind struct {
	name  string
	serve func(t *testing.T, repo *testgit.Repo) Options // URL and Auth set
}

var transports = []remoteKind{
	{"file", func(t *testing.T, repo *testgit.Repo) Options {
		return Options{URL: repo.FileURL()}
	}},
	{"http", func(t *testing.T, repo *testgit.Repo) Options {
		url, _ := testgit.ServeHTTP(t, repo, testgit.WithToken("s3cret-token"))
		return Options{URL: url, Auth: Auth{TokenFile: writeTemp(t, "token", "s3cret-token\n")}}
	}},
	{"ssh", func(t *testing.T, repo *testgit.Repo) Options {
		srv := testgit.ServeSSH(t, repo)
		return Options{URL: srv.URL, Auth: Auth{SSHKeyFile: srv.ClientKeyFile, KnownHostsFile: srv.KnownHostsFile}}
	}},
}

func writeTemp(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newSyncer fills Dir when empty and fails the test on a New error.
func newSyncer(t testing.TB, opts Options) *Syncer {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = filepath.Join(t.TempDir(), "repo.git")
	}
	s, err := New(opts, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func mustPoll(t testing.TB, s *Syncer) Update {
	t.Helper()
	u, err := s.Poll(context.Background())
	if err != nil {
		t.Fatalf("Poll: %v", err)
	}
	return u
}

// recorder is a slog handler that keeps the records for assertions.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}

// count returns how many records have level and message.
func (r *recorder) count(level slog.Level, msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range r.records {
		if rec.Level == level && rec.Message == msg {
			n++
		}
	}
	return n
}

func (r *recorder) snapshot() []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]slog.Record(nil), r.records...)
}
