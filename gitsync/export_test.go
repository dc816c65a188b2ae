package gitsync

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-fleet/baton/internal/testgit"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// tree reads dir back as path -> mode and content, directories as mode only.
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			got[filepath.ToSlash(rel)] = info.Mode().String()
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		got[filepath.ToSlash(rel)] = info.Mode().String() + " " + string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestExport(t *testing.T) {
	repo := testgit.NewRepo(t)
	repo.WriteFile("fleet.yaml", "apiVersion: baton/v1\n")
	repo.WriteFile("services/api/service.yaml", "version: \"1.4.3\"\n")
	repo.WriteFile("services/api/api.service", "[Service]\n")
	repo.WriteExecutable("services/api/smoke.sh", "#!/bin/sh\n")
	commit := repo.Commit("tree")
	s := newSyncer(t, Options{URL: repo.FileURL()})
	mustPoll(t, s)

	want := map[string]string{
		"fleet.yaml":                "-rw-r--r-- apiVersion: baton/v1\n",
		"services":                  "drwxr-xr-x",
		"services/api":              "drwxr-xr-x",
		"services/api/service.yaml": "-rw-r--r-- version: \"1.4.3\"\n",
		"services/api/api.service":  "-rw-r--r-- [Service]\n",
		"services/api/smoke.sh":     "-rwxr-xr-x #!/bin/sh\n",
	}
	for _, tc := range []struct {
		name string
		dst  func(t *testing.T) string
	}{
		{"new directory", func(t *testing.T) string { return filepath.Join(t.TempDir(), "rev") }},
		{"empty directory", func(t *testing.T) string { return t.TempDir() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := tc.dst(t)
			if err := s.Export(context.Background(), commit, dst); err != nil {
				t.Fatalf("Export: %v", err)
			}
			got := readTree(t, dst)
			if len(got) != len(want) {
				t.Errorf("exported %d entries, want %d: %v", len(got), len(want), got)
			}
			for p, w := range want {
				if got[p] != w {
					t.Errorf("%s = %q, want %q", p, got[p], w)
				}
			}
		})
	}

	t.Run("non-empty directory", func(t *testing.T) {
		dst := t.TempDir()
		if err := os.WriteFile(filepath.Join(dst, "keep"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := s.Export(context.Background(), commit, dst); err == nil || !strings.Contains(err.Error(), "not empty") {
			t.Fatalf("Export into a non-empty directory: %v", err)
		}
		if got := readTree(t, dst); len(got) != 1 {
			t.Fatalf("Export touched a non-empty directory: %v", got)
		}
	})
	t.Run("unknown commit", func(t *testing.T) {
		if err := s.Export(context.Background(), strings.Repeat("0a", 20), filepath.Join(t.TempDir(), "x")); err == nil {
			t.Fatal("Export of an unknown commit succeeded")
		}
	})
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		dst := filepath.Join(t.TempDir(), "x")
		err := s.Export(ctx, commit, dst)
		if err == nil {
			t.Fatal("Export with a canceled context succeeded")
		}
		if errors.Is(err, ErrBadTree) {
			t.Errorf("a canceled Export says the tree is bad: %v", err)
		}
		if _, err := os.Stat(dst); !os.IsNotExist(err) {
			t.Fatalf("failed Export left %s behind: %v", dst, err)
		}
	})
}

func TestExportRefuses(t *testing.T) {
	tests := []struct {
		name    string
		build   func(r *testgit.Repo)
		wantErr string
	}{
		{"symlink", func(r *testgit.Repo) {
			r.WriteFile("services/api/service.yaml", "version: 1\n")
			r.Symlink("services/api/api.service", "/etc/passwd")
		}, "services/api/api.service: symbolic links are not allowed"},
		{"submodule", func(r *testgit.Repo) {
			r.WriteFile("fleet.yaml", "x\n")
			r.Git("init", "--quiet", "vendor/lib") // an embedded repository is added as a gitlink
			r.Git("-C", "vendor/lib", "commit", "--quiet", "--allow-empty", "-m", "lib")
		}, "vendor/lib: submodules are not allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			repo := testgit.NewRepo(t)
			tc.build(repo)
			commit := repo.Commit(tc.name)
			s := newSyncer(t, Options{URL: repo.FileURL()})
			mustPoll(t, s)
			dst := t.TempDir()
			err := s.Export(context.Background(), commit, dst)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Export error = %v, want one containing %q", err, tc.wantErr)
			}
			if !errors.Is(err, ErrBadTree) {
				t.Errorf("Export error %v is not ErrBadTree: the agent would retry a bad commit", err)
			}
			if got := readTree(t, dst); len(got) != 0 {
				t.Fatalf("failed Export left %v behind", got)
			}
		})
	}
}

func TestExportLimits(t *testing.T) {
	repo := testgit.NewRepo(t)
	commit := repo.CommitFiles("three files", map[string]string{"z": "1234", "d/b": "5678", "d/c": "9"}) // d sorts first
	s := newSyncer(t, Options{URL: repo.FileURL()})
	mustPoll(t, s)

	tests := []struct {
		name     string
		files    int
		bytes    int64
		wantErr  string
		succeeds bool
	}{
		{"at the limits", 3, 9, "", true},
		{"too many files", 2, 1 << 20, "more than 2 files", false},
		{"too many directories", 0, 1 << 20, "more than 0 directories", false},
		{"too many bytes", 10, 8, "more than 8 bytes", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files, bytes := maxExportFiles, maxExportBytes
			t.Cleanup(func() { maxExportFiles, maxExportBytes = files, bytes })
			maxExportFiles, maxExportBytes = tc.files, tc.bytes
			err := s.Export(context.Background(), commit, filepath.Join(t.TempDir(), "x"))
			if tc.succeeds {
				if err != nil {
					t.Fatalf("Export: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Export error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestExportUnsafeNames crafts trees that git itself would not write, with
// names that try to leave the destination.
func TestExportUnsafeNames(t *testing.T) {
	repo := testgit.NewRepo(t)
	repo.Commit("first")
	s := newSyncer(t, Options{URL: repo.FileURL()})
	mustPoll(t, s)
	st := s.repo.Storer

	blob := st.NewEncodedObject()
	blob.SetType(plumbing.BlobObject)
	w, _ := blob.Writer()
	_, _ = w.Write([]byte("owned\n"))
	_ = w.Close()
	blobHash, err := st.SetEncodedObject(blob)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, wantErr string }{
		{"..", "unsafe name"},
		{".", "unsafe name"},
		{"a/../../b", "unsafe name"},
		{"", "empty filename"}, // go-git refuses to decode it
	} {
		name := tc.name
		t.Run(name, func(t *testing.T) {
			tree := &object.Tree{Entries: []object.TreeEntry{{Name: name, Mode: filemode.Regular, Hash: blobHash}}}
			obj := st.NewEncodedObject()
			if err := tree.Encode(obj); err != nil {
				t.Fatal(err)
			}
			treeHash, err := st.SetEncodedObject(obj)
			if err != nil {
				t.Fatal(err)
			}
			commit := &object.Commit{TreeHash: treeHash, Message: "evil"}
			cobj := st.NewEncodedObject()
			if err := commit.Encode(cobj); err != nil {
				t.Fatal(err)
			}
			commitHash, err := st.SetEncodedObject(cobj)
			if err != nil {
				t.Fatal(err)
			}
			parent := t.TempDir()
			dst := filepath.Join(parent, "dst")
			err = s.Export(context.Background(), commitHash.String(), dst)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Export error = %v, want one containing %q", err, tc.wantErr)
			}
			if entries, _ := os.ReadDir(parent); len(entries) != 0 {
				t.Fatalf("Export left %v in %s", entries, parent)
			}
		})
	}
}
