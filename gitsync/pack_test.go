package gitsync

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-fleet/baton/internal/testgit"
)

// packOf returns a pack of everything reachable from main in repo, made
// by git pack-objects with extra args.
func packOf(t testing.TB, repo *testgit.Repo, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("git", append([]string{"pack-objects", "--stdout", "--revs", "-q"}, args...)...)
	cmd.Dir, cmd.Env = repo.Bare, repo.Environ()
	cmd.Stdin = strings.NewReader(testgit.Branch + "\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pack, err := cmd.Output()
	if err != nil {
		t.Fatalf("git pack-objects: %v: %s", err, stderr.String())
	}
	return pack
}

// indexWithGit returns the .idx git index-pack writes for pack.
func indexWithGit(t testing.TB, repo *testgit.Repo, pack []byte) []byte {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "x.pack")
	if err := os.WriteFile(p, pack, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("git", "index-pack", "-o", filepath.Join(dir, "x.idx"), p)
	cmd.Dir, cmd.Env = repo.Bare, repo.Environ()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git index-pack: %v: %s", err, out)
	}
	idx, err := os.ReadFile(filepath.Join(dir, "x.idx"))
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// indexWithBaton indexes pack as storePack does, in a directory of its own,
// and checks that it leaves no scratch file there.
func indexWithBaton(t testing.TB, pack []byte, maxFetch int64) ([]byte, error) {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, tmpPrefix+"pack"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(pack); err != nil {
		t.Fatal(err)
	}
	x, sum, err := indexPack(context.Background(), f, dir, maxFetch)
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("indexing left %d files in its directory, want only the pack: %v", len(entries), entries)
	}
	if err != nil {
		return nil, err
	}
	if x.held != 0 || x.scratch != 0 {
		t.Errorf("after indexing, %d bytes are held in memory and %d in scratch files", x.held, x.scratch)
	}
	var idx bytes.Buffer
	if err := x.writeIndex(&idx, sum); err != nil {
		t.Fatal(err)
	}
	return idx.Bytes(), nil
}

// randomText is n bytes of random lines, which git deltifies well when a
// few change and which do not compress.
func randomText(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0))
	var b bytes.Buffer
	for b.Len() < n {
		fmt.Fprintf(&b, "%016x %016x %016x\n", r.Uint64(), r.Uint64(), r.Uint64())
	}
	return b.Bytes()[:n]
}

// TestIndexPackMatchesGit checks the index of packs git made against the
// one git makes of them, byte for byte.
func TestIndexPackMatchesGit(t *testing.T) {
	history := testgit.NewRepo(t)
	for i := range 12 {
		history.CommitFiles("commit", map[string]string{
			"fleet.yaml":                  "apiVersion: baton/v1\n" + strings.Repeat(fmt.Sprintf("# line %d\n", i), 50),
			fmt.Sprintf("s/%d.yaml", i%5): strings.Repeat("version: x\n", 100+i),
		})
	}
	// Large files changed a little each time: deltas on bases over
	// largeObject, held in scratch files, in a chain.
	large := testgit.NewRepo(t)
	text := randomText(1, largeObject*3/2)
	for i := range 3 {
		copy(text[i*1000:], fmt.Sprintf("edit %d", i))
		large.CommitFiles("edit", map[string]string{"big.txt": string(text), "small.txt": fmt.Sprint(i)})
	}
	for _, tc := range []struct {
		name    string
		repo    *testgit.Repo
		args    []string
		maxHeld int64
	}{
		{"ofs deltas", history, []string{"--delta-base-offset"}, maxHeld},
		{"ref deltas", history, nil, maxHeld},
		{"no deltas", history, []string{"--window=0"}, maxHeld},
		{"every base in a scratch file", history, []string{"--delta-base-offset"}, 0},
		{"some bases in scratch files", history, []string{"--delta-base-offset"}, 4 << 10},
		{"large delta bases", large, []string{"--delta-base-offset"}, maxHeld},
		{"large ref deltas", large, nil, maxHeld},
	} {
		t.Run(tc.name, func(t *testing.T) {
			held := maxHeld
			t.Cleanup(func() { maxHeld = held })
			maxHeld = tc.maxHeld
			pack := packOf(t, tc.repo, tc.args...)
			got, err := indexWithBaton(t, pack, DefaultMaxFetch)
			if err != nil {
				t.Fatalf("index: %v", err)
			}
			if want := indexWithGit(t, tc.repo, pack); !bytes.Equal(got, want) {
				t.Fatalf("index of a %d-byte pack: %d bytes differ from git index-pack's %d", len(pack), len(got), len(want))
			}
		})
	}
}

func TestIndexPackRefuses(t *testing.T) {
	repo := testgit.NewRepo(t)
	repo.CommitFiles("one", map[string]string{"a": strings.Repeat("a line\n", 1000)})
	repo.CommitFiles("two", map[string]string{"a": strings.Repeat("a line\n", 1001)})
	pack := packOf(t, repo, "--delta-base-offset")
	flipped := bytes.Clone(pack)
	flipped[len(pack)/2] ^= 0xff

	big := testgit.NewRepo(t)
	big.CommitFiles("big", map[string]string{"big": string(randomText(2, 3<<20))})
	bigPack := packOf(t, big)

	for _, tc := range []struct {
		name     string
		pack     []byte
		maxFetch int64
		want     string
	}{
		{"truncated", pack[:len(pack)/2], DefaultMaxFetch, "malformed pack"},
		{"no objects", pack[:12], DefaultMaxFetch, "malformed pack"},
		{"corrupted", flipped, DefaultMaxFetch, "malformed pack"},
		{"not a pack", []byte("<html>not found</html>"), DefaultMaxFetch, "malformed pack"},
		{"unpacks to too much", bigPack, 64 << 10, "the pack unpacks to more than 2 MiB (32 × repo.maxFetch); refusing it"},
		{"too many objects", pack, 5 * objectBytes, "the pack holds 6 objects, more than 5 (one per 16 bytes of repo.maxFetch); refusing it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := indexWithBaton(t, tc.pack, tc.maxFetch)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("index error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// FuzzIndexPack feeds the indexer packs git made, changed: it must fail
// or succeed cleanly, within its bounds, leaving no file behind.
func FuzzIndexPack(f *testing.F) {
	repo := testgit.NewRepo(f)
	for i := range 5 {
		repo.CommitFiles("commit", map[string]string{"fleet.yaml": strings.Repeat(fmt.Sprintf("line %d\n", i), 20+i)})
	}
	f.Add(packOf(f, repo, "--delta-base-offset"))
	f.Add(packOf(f, repo))
	f.Fuzz(func(t *testing.T, pack []byte) {
		_, _ = indexWithBaton(t, pack, minMaxFetch)
	})
}
