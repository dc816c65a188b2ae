package gitsync

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/internal/testgit"
)

// packUse is what objects/pack holds: files, their bytes, and the disk
// blocks they take.
type packUse struct {
	packs        int
	bytes, disk  int64
	files, temps int
}

func packUsage(t testing.TB, repoDir string) packUse {
	t.Helper()
	dir := filepath.Join(repoDir, "objects", "pack")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var u packUse
	for _, e := range entries {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(dir, e.Name()), &st); err != nil {
			t.Fatal(err)
		}
		u.files++
		u.bytes += st.Size
		u.disk += st.Blocks * 512
		if strings.HasSuffix(e.Name(), ".pack") {
			u.packs++
		}
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			u.temps++
		}
	}
	return u
}

// exportFile exports commit and returns the content of name in it.
func exportFile(t testing.TB, s *Syncer, commit, name string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "tree")
	if err := s.Export(context.Background(), commit, dst); err != nil {
		t.Fatalf("Export %s: %v", commitid.Short(commit), err)
	}
	b, err := os.ReadFile(filepath.Join(dst, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestCompactAfterManySmallFetches: a clone that fetched one commit at a time
// holds no more than maxPacks packs, far fewer bytes and disk blocks than one
// that was never compacted, and still polls and exports every commit,
// before and after it is opened again.
func TestCompactAfterManySmallFetches(t *testing.T) {
	repo := testgit.NewRepo(t)
	first := repo.CommitFiles("first", map[string]string{
		"fleet.yaml":     "apiVersion: baton/v1\n",
		"files/big.conf": string(randomText(1, 64<<10)),
	})
	s := newSyncer(t, Options{URL: repo.FileURL()})
	never := newSyncer(t, Options{URL: repo.FileURL()})
	never.maxPacks = math.MaxInt
	mustPoll(t, s)
	mustPoll(t, never)

	const fetches = 100
	commits := []string{first}
	for i := range fetches {
		c := repo.CommitFiles(fmt.Sprint("bump ", i), map[string]string{
			"services/api/service.yaml": fmt.Sprintf("version: \"1.%d\"\n", i),
			"files/small.conf":          strings.Repeat(fmt.Sprintf("line %d\n", i), 20),
		})
		commits = append(commits, c)
		if u := mustPoll(t, s); !u.Fetched || u.Commit != c {
			t.Fatalf("poll %d = %+v", i, u)
		}
		mustPoll(t, never)
		if u := packUsage(t, s.opts.Dir); u.packs > s.maxPacks || u.temps != 0 {
			t.Fatalf("after fetch %d: %+v, want at most %d packs and no temporary file", i, u, s.maxPacks)
		}
	}
	got, was := packUsage(t, s.opts.Dir), packUsage(t, never.opts.Dir)
	t.Logf("after %d small fetches: never compacted %d packs, %d bytes, %d KiB on disk; compacted %d packs, %d bytes, %d KiB on disk",
		fetches, was.packs, was.bytes, was.disk>>10, got.packs, got.bytes, got.disk>>10)
	if was.packs != fetches+1 || got.packs >= was.packs || got.bytes >= was.bytes || got.disk >= was.disk {
		t.Errorf("compacted %+v, never compacted %+v: want fewer packs, bytes and blocks", got, was)
	}

	check := func(s *Syncer) {
		t.Helper()
		for _, i := range []int{0, 1, fetches / 2, fetches} {
			want := "apiVersion: baton/v1\n"
			name := "fleet.yaml"
			if i > 0 {
				name, want = "services/api/service.yaml", fmt.Sprintf("version: \"1.%d\"\n", i-1)
			}
			if got := exportFile(t, s, commits[i], name); got != want {
				t.Errorf("%s of commit %d = %q, want %q", name, i, got, want)
			}
		}
		if ok, err := s.Descends(first, commits[fetches]); !ok || err != nil {
			t.Errorf("Descends(first, head) = %v, %v", ok, err)
		}
	}
	check(s)
	last := repo.CommitFiles("after", map[string]string{"fleet.yaml": "apiVersion: baton/v1\n# after\n"})
	if u := mustPoll(t, s); u.Commit != last {
		t.Fatalf("poll after compaction = %+v", u)
	}
	commits = append(commits[:fetches+1], last)
	check(s)
	again := newSyncer(t, Options{URL: repo.FileURL(), Dir: s.opts.Dir})
	if u := mustPoll(t, again); u.Commit != last || u.Fetched {
		t.Fatalf("poll of the compacted clone opened again = %+v", u)
	}
	check(again)
}

// TestCompactAfterCrash: what a crash at each point of a compaction leaves is
// a usable clone, and the next compaction tidies it.
func TestCompactAfterCrash(t *testing.T) {
	repo := testgit.NewRepo(t)
	s := newSyncer(t, Options{URL: repo.FileURL()})
	s.maxPacks = math.MaxInt
	var commits []string
	for i := range 10 {
		commits = append(commits, repo.CommitFiles(fmt.Sprint("c", i), map[string]string{"fleet.yaml": fmt.Sprintf("n: %d\n", i)}))
		mustPoll(t, s)
	}
	dir := filepath.Join(s.opts.Dir, "objects", "pack")
	packs, _, err := listPacks(dir)
	if err != nil || len(packs) != 10 {
		t.Fatalf("listPacks = %d packs, %v", len(packs), err)
	}
	// A crash right after the merged pack was installed, before the packs it
	// merged were removed: every object is in two packs.
	if _, err := mergePacks(context.Background(), dir, packs, DefaultMaxFetch); err != nil {
		t.Fatal(err)
	}
	// A crash while writing a pack, and one between the index and its pack.
	if err := os.WriteFile(filepath.Join(dir, tmpPrefix+"pack_123"), []byte("PACK half"), 0o644); err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(dir, "pack-"+strings.Repeat("ab", 20)+".idx")
	if err := os.WriteFile(orphan, []byte("an index whose pack never arrived"), 0o444); err != nil {
		t.Fatal(err)
	}
	opened := newSyncer(t, Options{URL: repo.FileURL(), Dir: s.opts.Dir})
	mustPoll(t, opened)
	for i, c := range commits {
		if got, want := exportFile(t, opened, c, "fleet.yaml"), fmt.Sprintf("n: %d\n", i); got != want {
			t.Errorf("after the crash, fleet.yaml of commit %d = %q, want %q", i, got, want)
		}
	}

	opened.maxPacks = 2
	commits = append(commits, repo.CommitFiles("c10", map[string]string{"fleet.yaml": "n: 10\n"}))
	mustPoll(t, opened)
	u := packUsage(t, s.opts.Dir)
	if u.packs > 2 || u.temps != 0 || u.files != 2*u.packs {
		t.Errorf("after the next compaction: %+v, want at most 2 packs with their indexes and nothing else", u)
	}
	names, _ := os.ReadDir(dir)
	if slices.ContainsFunc(names, func(e os.DirEntry) bool { return filepath.Join(dir, e.Name()) == orphan }) {
		t.Error("the index without a pack is still there")
	}
	for i, c := range commits {
		if got, want := exportFile(t, opened, c, "fleet.yaml"), fmt.Sprintf("n: %d\n", i); got != want {
			t.Errorf("after the compaction, fleet.yaml of commit %d = %q, want %q", i, got, want)
		}
	}
}

func TestToMerge(t *testing.T) {
	pf := func(sizes ...int64) []packFile {
		var out []packFile
		for i, n := range sizes {
			var p packFile
			p.hash[0], p.size = byte(i), n
			out = append(out, p)
		}
		return out
	}
	sizesOf := func(ps []packFile) []int64 {
		var out []int64
		for _, p := range ps {
			out = append(out, p.size)
		}
		return out
	}
	tests := []struct {
		name  string
		packs []packFile
		limit int
		want  []int64
	}{
		{"few packs", pf(1, 1, 1), 3, nil},
		{"the clone's large pack stays", pf(1000, 10, 10, 10, 10), 3, []int64{10, 10, 10, 10}},
		{"a large pack that the rest come near is merged too", pf(100, 40, 10, 10), 3, []int64{100, 40, 10, 10}},
		{"geometric: each kept pack outweighs all below it twice", pf(1000, 200, 1, 1, 1, 1), 3, []int64{1, 1, 1, 1}},
		{"only large packs: nothing to gain", pf(1000, 300, 90, 20), 3, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sizesOf(toMerge(tt.packs, tt.limit)); !slices.Equal(got, tt.want) {
				t.Errorf("toMerge = %v, want %v", got, tt.want)
			}
		})
	}
}
