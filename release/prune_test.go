package release

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestPrune(t *testing.T) {
	state := t.TempDir()
	dir := filepath.Join(state, "releases", "api")
	base := time.Now().Add(-time.Hour)
	// Oldest first; "1.0.0-a" is the last good one, kept however old.
	releases := []string{"1.0.0-a", "1.1.0-b", "1.2.0-c", "1.3.0-d", "1.4.0-e", "1.5.0-f"}
	for i, name := range releases {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Join(p, "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(p, "bin", "api"), []byte(name), 0o755)
		os.WriteFile(filepath.Join(p, MarkerFile), nil, 0o644)
		mod := base.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(p, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(dir, ".staging-1.6.0-g-123"), 0o700)
	os.WriteFile(filepath.Join(dir, ".staging-1.6.0-g-456.download"), []byte("half"), 0o600)
	os.WriteFile(filepath.Join(dir, "notes"), []byte("not a release"), 0o644)
	os.MkdirAll(filepath.Join(state, "releases", "other", "0.1-x"), 0o755)

	removed, err := Prune(state, "api", []string{"1.0.0-a", "1.2.0-c"}, 2)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range removed {
		got = append(got, filepath.Base(p))
	}
	slices.Sort(got)
	want := []string{".staging-1.6.0-g-123", ".staging-1.6.0-g-456.download", "1.1.0-b", "1.3.0-d"}
	if !slices.Equal(got, want) {
		t.Errorf("removed %q, want %q", got, want)
	}
	if got, want := names(t, dir), []string{"1.0.0-a", "1.2.0-c", "1.4.0-e", "1.5.0-f", "notes"}; !slices.Equal(got, want) {
		t.Errorf("left %q, want %q", got, want)
	}
	if got := names(t, filepath.Join(state, "releases", "other")); !slices.Equal(got, []string{"0.1-x"}) {
		t.Errorf("another service's releases were touched: %q", got)
	}

	// Again: nothing more to do.
	removed, err = Prune(state, "api", []string{"1.0.0-a", "1.2.0-c"}, 2)
	if err != nil || len(removed) != 0 {
		t.Errorf("second Prune = %q, %v; want nothing", removed, err)
	}
	// Keep only the last good one.
	removed, err = Prune(state, "api", []string{"1.0.0-a"}, 0)
	if err != nil || len(removed) != 3 {
		t.Errorf("Prune(newest 0) = %q, %v; want 3 removed", removed, err)
	}
	if got, want := names(t, dir), []string{"1.0.0-a", "notes"}; !slices.Equal(got, want) {
		t.Errorf("left %q, want %q", got, want)
	}
}

func TestPruneEdges(t *testing.T) {
	state := t.TempDir()
	if removed, err := Prune(state, "never-staged", nil, 2); err != nil || removed != nil {
		t.Errorf("Prune of a service with no releases = %q, %v", removed, err)
	}
	for _, bad := range []string{"", ".", "..", "../x", "a/b", ".hidden"} {
		if _, err := Prune(state, bad, nil, 2); err == nil {
			t.Errorf("Prune(%q) succeeded", bad)
		}
	}
}

func TestPruneServices(t *testing.T) {
	state := t.TempDir()
	root := filepath.Join(state, "releases")
	// .staging-removed-old-*: a service set aside by an earlier PruneServices that a
	// crash interrupted, half removed.
	for _, d := range []string{"api/1.0-a", "worker/2.0-b", "dropped/0.9-c", "failed-first/1.0-d", ".staging-removed-old-x1y2z3w4/1.0-e/bin", ".hidden/kept"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(root, "notes"), []byte("not a service"), 0o644)
	os.WriteFile(filepath.Join(root, ".staging-removed-gone-a1b2c3d4"), []byte("a file"), 0o644)

	removed, err := PruneServices(state, []string{"api", "worker"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range removed {
		got = append(got, filepath.Base(p))
	}
	slices.Sort(got)
	if want := []string{".staging-removed-gone-a1b2c3d4", ".staging-removed-old-x1y2z3w4", "dropped", "failed-first"}; !slices.Equal(got, want) {
		t.Errorf("removed %q, want %q", got, want)
	}
	if got, want := names(t, root), []string{".hidden", "api", "notes", "worker"}; !slices.Equal(got, want) {
		t.Errorf("left %q, want %q", got, want)
	}
	if removed, err := PruneServices(filepath.Join(state, "nothing-here"), nil); err != nil || len(removed) != 0 {
		t.Errorf("PruneServices of a host with no releases = %q, %v", removed, err)
	}
}
