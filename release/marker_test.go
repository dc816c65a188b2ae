package release

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/baton-fleet/baton/spec"
)

// A complete release directory is reused only for the release its marker names: one
// built for other artifacts under the same id (the id keeps only a prefix of the
// digest) is neither reused nor replaced.
func TestStageChecksMarkerBeforeReuse(t *testing.T) {
	good, evil := []byte("good build"), []byte("another build")
	srv := newServer(t, map[string][]byte{"/good": good, "/evil": evil})
	state := t.TempDir()
	s := &Stager{StateDir: state, Client: fastClient(), AllowInsecure: loopback}

	first := rendered(state, spec.Artifact{URL: srv.URL + "/evil", SHA256: sum(evil), Name: "api"})
	dir, err := s.Stage(context.Background(), first)
	if err != nil {
		t.Fatal(err)
	}
	// The same version with other artifacts finds the first's directory under its own
	// name, as a collision of the digest prefix in the id would make it.
	second := rendered(state, spec.Artifact{URL: srv.URL + "/good", SHA256: sum(good), Name: "api"})
	if err := os.Rename(dir, second.Vars.Release); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stage(context.Background(), second); !errors.Is(err, ErrOtherRelease) {
		t.Fatalf("Stage over another release's directory = %v, want ErrOtherRelease", err)
	}
	if b, _ := os.ReadFile(filepath.Join(second.Vars.Release, "api")); string(b) != string(evil) {
		t.Errorf("the other release's file was replaced: %q", b)
	}
	if n := srv.count("/good"); n != 0 {
		t.Errorf("downloaded /good %d times", n)
	}
	if err := os.Rename(second.Vars.Release, dir); err != nil {
		t.Fatal(err)
	}

	// The release it was built for still reuses it, with no download.
	if _, err := s.Stage(context.Background(), first); err != nil {
		t.Errorf("restage: %v", err)
	}
	if n := srv.count("/evil"); n != 1 {
		t.Errorf("downloaded /evil %d times, want once", n)
	}

	// A marker written by an older baton reads the same.
	want := "service api\nversion 1.0.0\nrelease " + first.ReleaseID + "\nartifact " + sum(evil) + " unpack=none name=api\n"
	if got := marker(first, first.ReleaseID); got != want {
		t.Errorf("marker:\n%s\nwant:\n%s", got, want)
	}
}
