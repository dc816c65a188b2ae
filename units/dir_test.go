package units

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// testDir is a unit directory inside a temp dir, beside a file that is not baton's.
type testDir struct {
	Dir
	root    string // the temp dir; Dir.Path is root/system
	outside string // root/outside.service, a file a symlink may point to
}

func newTestDir(t *testing.T) testDir {
	t.Helper()
	root := t.TempDir()
	td := testDir{Dir: Dir{Path: filepath.Join(root, "system")}, root: root, outside: filepath.Join(root, "outside.service")}
	if err := os.Mkdir(td.Path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(td.outside, []byte("not baton's"), 0o644); err != nil {
		t.Fatal(err)
	}
	return td
}

// listing returns every entry under the temp dir, with a suffix telling its kind.
func (td testDir) listing(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(td.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil || p == td.root {
			return err
		}
		rel, _ := filepath.Rel(td.root, p)
		switch {
		case e.Type()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			rel += " -> " + target
		case e.IsDir():
			rel += "/"
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (td testDir) write(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(td.Path, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (td testDir) symlink(t *testing.T, name string) {
	t.Helper()
	if err := os.Symlink(td.outside, filepath.Join(td.Path, name)); err != nil {
		t.Fatal(err)
	}
}

func (td testDir) mkdir(t *testing.T, name string) {
	t.Helper()
	if err := os.Mkdir(filepath.Join(td.Path, name), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestInstall(t *testing.T) {
	const newContent = "[Service]\nExecStart=/bin/true\n"
	tests := []struct {
		name    string
		unit    string
		owned   bool
		setup   func(*testing.T, testDir)
		wantErr string // "" for success
		notOwn  bool   // the error must match ErrNotOwned
	}{
		{name: "new file, not owned yet", unit: "api.service"},
		{name: "new file, owned", unit: "api.service", owned: true},
		{name: "overwrite owned", unit: "api.service", owned: true,
			setup: func(t *testing.T, td testDir) { td.write(t, "api.service", "old") }},
		{name: "refuse foreign", unit: "api.service",
			setup:   func(t *testing.T, td testDir) { td.write(t, "api.service", "theirs") },
			wantErr: "baton does not own it", notOwn: true},
		{name: "refuse symlink, owned", unit: "api.service", owned: true,
			setup: func(t *testing.T, td testDir) { td.symlink(t, "api.service") }, wantErr: "not a regular file"},
		{name: "refuse symlink, not owned", unit: "api.service",
			setup: func(t *testing.T, td testDir) { td.symlink(t, "api.service") }, wantErr: "not a regular file"},
		{name: "refuse a directory in the way", unit: "api.service", owned: true,
			setup: func(t *testing.T, td testDir) { td.mkdir(t, "api.service") }, wantErr: "not a regular file"},
		{name: "refuse parent dir", unit: "../x.service", owned: true, wantErr: "invalid unit name"},
		{name: "refuse slash", unit: "a/b.service", owned: true,
			setup: func(t *testing.T, td testDir) { td.mkdir(t, "a") }, wantErr: "invalid unit name"},
		{name: "refuse unknown suffix", unit: "x.conf", owned: true, wantErr: "invalid unit name"},
		{name: "refuse empty name", unit: "", owned: true, wantErr: "empty unit name"},
		{name: "refuse dot file", unit: ".service", owned: true, wantErr: "invalid unit name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			td := newTestDir(t)
			if tt.setup != nil {
				tt.setup(t, td)
			}
			before := td.listing(t)
			var oldContent []byte
			if tt.wantErr != "" && tt.unit != "" && !strings.Contains(tt.unit, "/") {
				oldContent, _ = os.ReadFile(filepath.Join(td.Path, tt.unit)) // through a symlink: the target
			}
			err := td.Install(tt.unit, []byte(newContent), tt.owned)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Install = %v, want an error containing %q", err, tt.wantErr)
				}
				if got := errors.Is(err, ErrNotOwned); got != tt.notOwn {
					t.Errorf("errors.Is(err, ErrNotOwned) = %v, want %v", got, tt.notOwn)
				}
				if tt.notOwn && !strings.Contains(err.Error(), filepath.Join(td.Path, tt.unit)) {
					t.Errorf("error %q does not name the path", err)
				}
				if after := td.listing(t); !slices.Equal(after, before) {
					t.Errorf("refused Install changed the tree:\n got %q\nwant %q", after, before)
				}
				if oldContent != nil {
					if got, _ := os.ReadFile(filepath.Join(td.Path, tt.unit)); string(got) != string(oldContent) {
						t.Errorf("refused Install changed the file: %q, was %q", got, oldContent)
					}
				}
				if got, _ := os.ReadFile(td.outside); string(got) != "not baton's" {
					t.Errorf("the file outside was changed: %q", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Install = %v", err)
			}
			p := filepath.Join(td.Path, tt.unit)
			got, err := os.ReadFile(p)
			if err != nil || string(got) != newContent {
				t.Errorf("file = %q, %v; want %q", got, err, newContent)
			}
			info, err := os.Lstat(p)
			if err != nil || info.Mode() != 0o644 {
				t.Errorf("mode = %v, %v; want -rw-r--r--", info.Mode(), err)
			}
			want := []string{"outside.service", "system/", "system/" + tt.unit}
			if after := td.listing(t); !slices.Equal(after, want) {
				t.Errorf("tree after Install = %q, want %q (no temp files)", after, want)
			}
		})
	}
}

func TestRead(t *testing.T) {
	td := newTestDir(t)
	td.write(t, "a.service", "A")
	td.symlink(t, "link.service")
	td.mkdir(t, "dir.service")
	if got, err := td.Read("a.service"); err != nil || string(got) != "A" {
		t.Errorf("Read(a.service) = %q, %v; want A", got, err)
	}
	if _, err := td.Read("missing.service"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read(missing.service) = %v, want fs.ErrNotExist", err)
	}
	for _, name := range []string{"link.service", "dir.service", "../outside.service", "x.conf"} {
		if got, err := td.Read(name); err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Read(%s) = %q, %v; want a refusal", name, got, err)
		}
	}
}

func TestRemove(t *testing.T) {
	td := newTestDir(t)
	td.write(t, "a.service", "A")
	td.symlink(t, "link.service")
	td.mkdir(t, "dir.service")
	if err := td.Remove("a.service"); err != nil {
		t.Errorf("Remove(a.service) = %v", err)
	}
	if err := td.Remove("missing.service"); err != nil {
		t.Errorf("Remove(missing.service) = %v, want nil", err)
	}
	for _, name := range []string{"link.service", "dir.service", "../outside.service", "a/b.service", "x.conf"} {
		if err := td.Remove(name); err == nil {
			t.Errorf("Remove(%s) = nil, want a refusal", name)
		}
	}
	want := []string{"outside.service", "system/", "system/dir.service/", "system/link.service -> " + td.outside}
	if got := td.listing(t); !slices.Equal(got, want) {
		t.Errorf("tree after Remove = %q, want %q", got, want)
	}
}

func TestExists(t *testing.T) {
	td := newTestDir(t)
	td.write(t, "a.service", "A")
	td.symlink(t, "link.service")
	for name, want := range map[string]bool{"a.service": true, "link.service": true, "missing.service": false} {
		if got, err := td.Exists(name); err != nil || got != want {
			t.Errorf("Exists(%s) = %v, %v; want %v", name, got, err, want)
		}
	}
	if _, err := td.Exists("../outside.service"); err == nil {
		t.Error("Exists(../outside.service) = nil error, want a refusal")
	}
}
