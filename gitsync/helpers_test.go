package gitsync

import (
	"bufio"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

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

// writeBigFile writes size bytes to name: YAML comment lines when
// compressible (zlib makes a few hundred KB of 100 MB), random bytes when
// not. Either way it runs at disk speed.
func writeBigFile(t testing.TB, name string, size int64, compressible bool) {
	t.Helper()
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if compressible {
		w.WriteString("apiVersion: baton/v1\n")
		line := "# " + strings.Repeat("padding ", 12) + "\n"
		for n := int64(len("apiVersion: baton/v1\n")); n < size; n += int64(len(line)) {
			w.WriteString(line[:min(int64(len(line)), size-n)])
		}
	} else {
		src := rand.NewChaCha8([32]byte{1})
		buf := make([]byte, 1<<20)
		for n := int64(0); n < size; n += int64(len(buf)) {
			src.Read(buf)
			w.Write(buf[:min(int64(len(buf)), size-n)])
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// dirSize is the total size of the regular files under dir.
func dirSize(t testing.TB, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// heapSampler records the largest heap (bytes in heap objects, live or not
// yet swept) seen while it runs, sampling every millisecond.
type heapSampler struct {
	stop        chan struct{}
	wg          sync.WaitGroup
	start, peak uint64
}

const heapMetric = "/memory/classes/heap/objects:bytes"

func heapNow() uint64 {
	s := []metrics.Sample{{Name: heapMetric}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func startHeapSampler() *heapSampler {
	h := &heapSampler{stop: make(chan struct{}), start: heapNow()}
	h.peak = h.start
	h.wg.Go(func() {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-t.C:
				h.peak = max(h.peak, heapNow())
			}
		}
	})
	return h
}

// Stop ends the sampling and returns how much the heap grew at most.
func (h *heapSampler) Stop() uint64 {
	close(h.stop)
	h.wg.Wait()
	return max(h.peak, heapNow()) - h.start
}

// resetPeakRSS resets the process's VmHWM to its current RSS (Linux 4.0+).
func resetPeakRSS() error {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// peakRSS returns VmHWM of /proc/self/status, in bytes.
func peakRSS() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM in /proc/self/status")
}
