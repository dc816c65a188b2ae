package gitsync

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/internal/redact"
	"github.com/baton-fleet/baton/internal/testgit"
)

// TestPollSizeLimits pushes a commit holding a huge file and checks what a
// poll does with it under a small repo.maxFetch: take it without reading it
// whole into memory, or refuse it, keep nothing of it and stay where it
// was; then that a normal commit is fetched fine.
func TestPollSizeLimits(t *testing.T) {
	const leftover = 64 << 10 // what a refused fetch may leave: refs, config; no objects
	tests := []struct {
		name       string
		maxFetch   int64
		size       int64
		compresses bool
		transports []string
		wantErr    string // after "fetch main from <url>: "; "" when the commit is taken
	}{
		{"compressible 100 MB file", 8 << 20, 100 << 20, true, []string{"http"}, ""},
		{"compressible 40 MB file, 1 MiB limit", 1 << 20, 40 << 20, true, []string{"http"},
			"the pack unpacks to more than 32 MiB (32 × repo.maxFetch); refusing it"},
		{"incompressible file over the limit", 4 << 20, 5 << 20, false, []string{"http", "ssh", "file"},
			"the fetch brought more than 4 MiB (repo.maxFetch); refusing it"},
	}
	for _, tc := range tests {
		for _, tr := range transports {
			if !slices.Contains(tc.transports, tr.name) {
				continue
			}
			t.Run(tc.name+"/"+tr.name, func(t *testing.T) {
				repo := testgit.NewRepo(t)
				good := repo.CommitFiles("good", map[string]string{"fleet.yaml": "apiVersion: baton/v1\n"})
				opts := tr.serve(t, repo)
				opts.MaxFetch, opts.Dir = tc.maxFetch, filepath.Join(t.TempDir(), "repo.git")
				s := newSyncer(t, opts)
				mustPoll(t, s)
				before := dirSize(t, opts.Dir)

				writeBigFile(t, filepath.Join(repo.Work, "fleet.yaml"), tc.size, tc.compresses)
				big := repo.Commit("a big fleet.yaml")
				h := startHeapSampler()
				u, err := s.Poll(context.Background())
				peak := h.Stop()
				grown := dirSize(t, opts.Dir) - before
				t.Logf("poll: heap grew by %.1f MiB at most, the repository by %d bytes", float64(peak)/(1<<20), grown)
				if peak > 16<<20 {
					t.Errorf("the heap grew by %d MiB during the poll, want at most 16", peak>>20)
				}

				if tc.wantErr == "" {
					if err != nil || u.Commit != big {
						t.Fatalf("Poll = %+v, %v; want %s taken", u, err, commitid.Short(big))
					}
					if grown > 2<<20 {
						t.Errorf("the repository grew by %d bytes, want a compressed pack of at most 2 MiB", grown)
					}
					next := repo.CommitFiles("small again", map[string]string{"fleet.yaml": "apiVersion: baton/v1\n"})
					if u := mustPoll(t, s); u.Commit != next || !u.Fetched {
						t.Fatalf("poll after a normal commit = %+v, want %s fetched", u, commitid.Short(next))
					}
					return
				}

				want := "fetch main from " + redact.URL(opts.URL) + ": " + tc.wantErr
				refused := func(step string, u Update, err error) {
					t.Helper()
					if err == nil || err.Error() != want {
						t.Fatalf("%s: Poll error:\n got: %v\nwant: %s", step, err, want)
					}
					if s.Head() != good || u.Commit != good || u.Changed {
						t.Fatalf("%s: Head = %s, Update = %+v; want %s kept", step, commitid.Short(s.Head()), u, commitid.Short(good))
					}
					if last, _ := s.LastError(); last == nil || last.Error() != want {
						t.Fatalf("%s: LastError = %v", step, last)
					}
					if grown := dirSize(t, opts.Dir) - before; grown > leftover {
						t.Fatalf("%s: the repository grew by %d bytes, want at most %d", step, grown, leftover)
					}
					entries, _ := os.ReadDir(filepath.Join(opts.Dir, "objects", "pack"))
					for _, e := range entries {
						if strings.HasPrefix(e.Name(), tmpPrefix) {
							t.Fatalf("%s: %s left in objects/pack", step, e.Name())
						}
					}
				}
				refused("the big commit", u, err)
				u, err = s.Poll(context.Background())
				refused("polled again", u, err)

				// A fix on top does not help: the fetch still holds the big file.
				repo.CommitFiles("fix", map[string]string{"fleet.yaml": "apiVersion: baton/v1\n"})
				u, err = s.Poll(context.Background())
				refused("a fix on top", u, err)

				// The big commit taken out of the branch: hosts never took it, so
				// for them the new head simply descends from theirs.
				repo.Rewind(good)
				next := repo.CommitFiles("good again", map[string]string{"fleet.yaml": "apiVersion: baton/v1\n# fixed\n"})
				if u := mustPoll(t, s); u.Commit != next || u.Previous != good || !u.Fetched {
					t.Fatalf("poll after the big commit was removed = %+v, want %s fetched", u, commitid.Short(next))
				}
			})
		}
	}
}

// TestPollRefListingLimit serves more refs than the limit allows over
// http, where the listing counts too.
func TestPollRefListingLimit(t *testing.T) {
	repo := testgit.NewRepo(t)
	head := repo.Commit("first")
	refs := []byte("# pack-refs with: peeled fully-peeled sorted\n")
	for i := range 25000 {
		refs = fmt.Appendf(refs, "%s refs/tags/release-%05d\n", head, i)
	}
	if err := os.WriteFile(filepath.Join(repo.Bare, "packed-refs"), refs, 0o644); err != nil {
		t.Fatal(err)
	}
	url, _ := testgit.ServeHTTP(t, repo)
	s := newSyncer(t, Options{URL: url, MaxFetch: 1 << 20})
	_, err := s.Poll(context.Background())
	want := "list refs of " + url + ": the ref listing brought more than 1 MiB (repo.maxFetch); refusing it"
	if err == nil || err.Error() != want {
		t.Fatalf("Poll error:\n got: %v\nwant: %s", err, want)
	}
	if u := mustPoll(t, newSyncer(t, Options{URL: url, MaxFetch: 4 << 20})); u.Commit != head {
		t.Fatalf("poll with a larger limit = %+v, want %s", u, commitid.Short(head))
	}
}

func TestNewMaxFetch(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo.git")
	s, err := New(Options{URL: "https://git.example.com/fleet.git", Dir: dir}, nil)
	if err != nil || s.opts.MaxFetch != DefaultMaxFetch {
		t.Fatalf("New without MaxFetch: %v, MaxFetch %d; want the default %d", err, s.opts.MaxFetch, DefaultMaxFetch)
	}
	for _, n := range []int64{-1, minMaxFetch - 1, maxMaxFetch + 1} {
		_, err := New(Options{URL: "https://git.example.com/fleet.git", Dir: dir, MaxFetch: n}, nil)
		if err == nil || !strings.Contains(err.Error(), "is not between 1 MiB and 16 GiB") {
			t.Errorf("New with MaxFetch %d: %v", n, err)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 bytes", 1: "1 byte", 1000: "1000 bytes", 1024: "1 KiB", 1536: "1536 bytes",
		3 << 19: "1536 KiB", 64 << 20: "64 MiB", 128 << 20: "128 MiB", 4 << 30: "4 GiB", 1<<30 + 1: "1073741825 bytes",
	} {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
	}
}
