package gitsync

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testgit"
)

const (
	benchCommits = 10000
	benchFiles   = 5000
	benchDirs    = 50 // benchFiles spread over this many directories
)

func benchPath(i int) string {
	return fmt.Sprintf("services/svc%02d/file%04d.yaml", i%benchDirs, i)
}

func benchContent(file, rev int) string {
	return fmt.Sprintf("name: svc%02d-%04d\nversion: \"1.%d.0\"\nunits: [svc%04d.service]\nchecks:\n  - name: health\n    http: {url: \"http://127.0.0.1:%d/healthz\", status: 200}\n",
		file%benchDirs, file, rev, file, 8000+file)
}

// writeHistory writes a git fast-import stream: a first commit adding
// files files, then commits-1 commits each changing one file.
func writeHistory(w io.Writer, commits, files int) error {
	bw := bufio.NewWriter(w)
	data := func(s string) { fmt.Fprintf(bw, "data %d\n%s\n", len(s), s) }
	for c := 1; c <= commits; c++ {
		fmt.Fprintf(bw, "commit refs/heads/%s\nmark :%d\n", testgit.Branch, c)
		fmt.Fprintf(bw, "committer Bench <bench@example.com> %d +0000\n", 1600000000+c*60)
		data("change " + strconv.Itoa(c))
		if c == 1 {
			for f := range files {
				fmt.Fprintf(bw, "M 100644 inline %s\n", benchPath(f))
				data(benchContent(f, 0))
			}
			continue
		}
		fmt.Fprintf(bw, "from :%d\n", c-1)
		f := (c * 7919) % files
		fmt.Fprintf(bw, "M 100644 inline %s\n", benchPath(f))
		data(benchContent(f, c))
	}
	return bw.Flush()
}

// BenchmarkPoll measures polls over smart HTTP against a repository of
// benchCommits commits and benchFiles files, with the object bytes the
// server sent per poll.
func BenchmarkPoll(b *testing.B) {
	built := time.Now()
	repo := testgit.NewRepo(b)
	var stream bytes.Buffer
	if err := writeHistory(&stream, benchCommits, benchFiles); err != nil {
		b.Fatal(err)
	}
	repo.FastImport(&stream)
	repo.GitBare("repack", "-a", "-d", "-q") // as a served repository would be
	b.Logf("built %d commits and %d files in %v", benchCommits, benchFiles, time.Since(built).Round(time.Millisecond))
	url, served := testgit.ServeHTTP(b, repo)

	b.Run("InitialClone", func(b *testing.B) {
		var bytes int64
		for i := 0; i < b.N; i++ {
			s := quietSyncer(b, filepath.Join(b.TempDir(), "repo.git"), url)
			before := served.Load()
			if u := mustPoll(b, s); !u.Fetched {
				b.Fatalf("clone fetched nothing: %+v", u)
			}
			bytes += served.Load() - before
		}
		b.ReportMetric(float64(bytes)/float64(b.N), "bytes/poll")
	})

	s := quietSyncer(b, filepath.Join(b.TempDir(), "repo.git"), url)
	start, before := time.Now(), served.Load()
	mustPoll(b, s)
	b.Logf("initial clone: %v, %d bytes", time.Since(start).Round(time.Millisecond), served.Load()-before)

	b.Run("NoChange", func(b *testing.B) {
		b.ReportAllocs()
		before := served.Load()
		for i := 0; i < b.N; i++ {
			u, err := s.Poll(context.Background())
			if err != nil || u.Fetched || u.Changed {
				b.Fatalf("poll with no change = %+v, %v", u, err)
			}
		}
		b.ReportMetric(float64(served.Load()-before)/float64(b.N), "bytes/poll")
	})

	rev := 0
	b.Run("OneNewCommit", func(b *testing.B) {
		b.ReportAllocs()
		var bytes int64
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			rev++
			repo.CommitFiles("bench", map[string]string{benchPath(0): benchContent(0, benchCommits+rev)})
			before := served.Load()
			b.StartTimer()
			u, err := s.Poll(context.Background())
			if err != nil || !u.Fetched || !u.Changed {
				b.Fatalf("poll after one commit = %+v, %v", u, err)
			}
			bytes += served.Load() - before
		}
		b.ReportMetric(float64(bytes)/float64(b.N), "bytes/poll")
	})
}

// BenchmarkFetchBig measures the first poll (a clone over smart HTTP) of a
// repository whose one commit holds a 100 MB fleet.yaml, compressible or
// not, with the default fetch limit; and, as the baseline, of one with a
// 4 KB fleet.yaml. It reports in MiB how much the heap grew at most during
// the poll (sampled every millisecond), the heap before it, the process's
// peak RSS (VmHWM, reset just before the poll), what the server sent, and
// what the poll left in the repository directory.
func BenchmarkFetchBig(b *testing.B) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name       string
		size       int64
		compresses bool
	}{
		{"Small", 4 << 10, true},
		{"Compressible", 100 << 20, true},
		{"Incompressible", 100 << 20, false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			repo := testgit.NewRepo(b)
			writeBigFile(b, filepath.Join(repo.Work, "fleet.yaml"), tc.size, tc.compresses)
			repo.Commit("fleet.yaml of " + strconv.FormatInt(tc.size, 10) + " bytes")
			url, served := testgit.ServeHTTP(b, repo)
			var heap, before, rss, sent, disk float64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				dir := filepath.Join(b.TempDir(), "repo.git")
				s := quietSyncer(b, dir, url)
				runtime.GC()
				debug.FreeOSMemory()
				rssErr := resetPeakRSS()
				sentBefore := served.Load()
				h := startHeapSampler()
				b.StartTimer()
				u, err := s.Poll(context.Background())
				b.StopTimer()
				grown := h.Stop()
				if err != nil || !u.Changed {
					b.Fatalf("poll = %+v, %v", u, err)
				}
				heap, before = max(heap, float64(grown)/mib), float64(h.start)/mib
				if hwm, err := peakRSS(); rssErr == nil && err == nil {
					rss = max(rss, float64(hwm)/mib)
				}
				sent = float64(served.Load()-sentBefore) / mib
				disk = float64(dirSize(b, dir)) / mib
				b.StartTimer()
			}
			b.ReportMetric(heap, "peak-heap-MiB")
			b.ReportMetric(before, "heap-before-MiB")
			b.ReportMetric(rss, "peak-RSS-MiB")
			b.ReportMetric(sent, "served-MiB")
			b.ReportMetric(disk, "repo-MiB")
		})
	}
}

// quietSyncer is a Syncer that logs nothing, so that benchmark output
// stays readable.
func quietSyncer(b *testing.B, dir, url string) *Syncer {
	b.Helper()
	s, err := New(Options{URL: url, Dir: dir}, nil)
	if err != nil {
		b.Fatal(err)
	}
	return s
}
