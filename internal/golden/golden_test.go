package golden

import (
	"os"
	"path/filepath"
	"testing"
)

// recorder is a testing.TB that records failures instead of failing.
type recorder struct {
	testing.TB
	failed bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Errorf(string, ...any) { r.failed = true }
func (r *recorder) Fatalf(string, ...any) { r.failed = true }

func TestCheck(t *testing.T) {
	if Update() {
		t.Skip("-update rewrites instead of comparing")
	}
	file := filepath.Join(t.TempDir(), "x.golden")
	if err := os.WriteFile(file, []byte("same\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for got, fail := range map[string]bool{"same\n": false, "other\n": true, "same": true} {
		r := &recorder{TB: t}
		Check(r, file, []byte(got))
		if r.failed != fail {
			t.Errorf("Check(%q) failed = %v, want %v", got, r.failed, fail)
		}
	}
	r := &recorder{TB: t}
	Check(r, filepath.Join(t.TempDir(), "missing"), []byte("x"))
	if !r.failed {
		t.Error("Check against a missing file passed")
	}
}
