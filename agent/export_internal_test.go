package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/baton-fleet/baton/config"
	"github.com/baton-fleet/baton/gitsync"
	"github.com/baton-fleet/baton/internal/testgit"
)

// TestExportRemovesLeftovers: a new export leaves only its own tree under
// revisions/, the .tmp- trees that crashed exports left included.
func TestExportRemovesLeftovers(t *testing.T) {
	repo := testgit.NewRepo(t)
	first := repo.CommitFiles("first", map[string]string{"fleet.yaml": "a: 1\n"})
	a, state := exportAgent(t, repo)
	git := a.git
	ctx := context.Background()
	// An older baton left the directory readable by all: an export closes it.
	if err := os.Mkdir(filepath.Join(state, "revisions"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := a.export(ctx, loopTrees, first); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(state, "revisions")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("revisions/ after an export: %v, %v; want mode 0700", fi.Mode(), err)
	}

	// Crashes in earlier exports, of a commit that will never be exported again.
	root := filepath.Join(state, "revisions")
	stale := ".tmp-" + "dddddddddddddddddddddddddddddddddddddddd"
	if err := os.MkdirAll(filepath.Join(root, stale, "services"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, stale, "services", "half"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	second := repo.CommitFiles("second", map[string]string{"fleet.yaml": "a: 2\n"})
	if _, err := git.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	dir, err := a.export(ctx, loopTrees, second)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "fleet.yaml")); err != nil || string(got) != "a: 2\n" {
		t.Errorf("exported fleet.yaml = %q, %v", got, err)
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if want := []string{second}; !slices.Equal(got, want) {
		t.Errorf("revisions/ holds %q, want %q", got, want)
	}
}

// A commit the host cannot write out is the host's trouble, not bad input: load says
// so (errExport) and the commit is not rejected; a tree that cannot be exported is.
func TestLoadTellsExportTroubleFromBadInput(t *testing.T) {
	repo := testgit.NewRepo(t)
	good := repo.CommitFiles("good", map[string]string{"fleet.yaml": "a: 1\n"})
	a, state := exportAgent(t, repo)
	git := a.git
	ctx := context.Background()
	// The revisions directory cannot be made: a file is in its way.
	if err := os.WriteFile(filepath.Join(state, "revisions"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.load(ctx, good); !errors.Is(err, errExport) {
		t.Fatalf("load with the revisions directory blocked = %v, want errExport", err)
	}
	if err := os.Remove(filepath.Join(state, "revisions")); err != nil {
		t.Fatal(err)
	}
	repo.Symlink("services/api/api.service", "/etc/passwd")
	bad := repo.Commit("a symlink")
	if _, err := git.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	_, _, err := a.load(ctx, bad)
	if err == nil || errors.Is(err, errExport) || !errors.Is(err, gitsync.ErrBadTree) {
		t.Fatalf("load of a tree with a symlink = %v, want ErrBadTree, not errExport", err)
	}
}

// exportAgent is an agent with only what export and load need: a state directory and
// the repository repo, polled once.
func exportAgent(t *testing.T, repo *testgit.Repo) (*Agent, string) {
	t.Helper()
	state := t.TempDir()
	git, err := gitsync.New(gitsync.Options{URL: repo.FileURL(), Dir: filepath.Join(state, "repo.git")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := git.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	return &Agent{cfg: &config.Config{Paths: config.Paths{State: state}}, git: git}, state
}
