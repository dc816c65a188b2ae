package units

import (
	"os"
	"path/filepath"
	"testing"
)

// TestTaken lays out a host under a root: its own unit directory, a vendor
// directory, a runtime one, and asks which names are taken and by which file.
func TestTaken(t *testing.T) {
	root := t.TempDir()
	d := Dir{Path: filepath.Join(root, "etc/systemd/system")}
	files := map[string]string{
		"etc/systemd/system/foreign.service":         "x",
		"etc/systemd/system/mine.service":            "x",
		"etc/systemd/system/app@.service":            "x", // baton's template
		"etc/systemd/system/local@.service":          "x", // someone else's template
		"usr/lib/systemd/system/postgresql@.service": "x",
		"lib/systemd/system/wg-quick@.service":       "x",
		"usr/lib/systemd/system/cron.service":        "x",
		"run/systemd/system/runtime@.socket":         "x",
	}
	for name, data := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mask := filepath.Join(root, "etc/systemd/system/masked.service")
	if err := os.Symlink("/dev/null", mask); err != nil {
		t.Fatal(err)
	}
	owned := func(n string) bool { return n == "mine.service" || n == "app@.service" || n == "owned@x.service" }
	in := func(p string) string { return filepath.Join(root, p) }

	tests := []struct {
		name, want string
	}{
		{"new.service", ""},
		{"mine.service", ""},
		{"foreign.service", in("etc/systemd/system/foreign.service")},
		{"masked.service", mask},
		{"cron.service", in("usr/lib/systemd/system/cron.service")},
		{"postgresql@15-main.service", in("usr/lib/systemd/system/postgresql@.service")},
		{"wg-quick@wg0.service", in("lib/systemd/system/wg-quick@.service")},
		{"local@x.service", in("etc/systemd/system/local@.service")},
		{"runtime@1.socket", in("run/systemd/system/runtime@.socket")},
		{"runtime@1.service", ""}, // another type: another template
		{"app@main.service", ""},  // an instance of baton's own template
		{"owned@x.service", ""},   // baton installed the instance itself
		{"postgresql@.service", in("usr/lib/systemd/system/postgresql@.service")},
	}
	for _, tt := range tests {
		got, err := d.Taken(tt.name, owned)
		if err != nil {
			t.Errorf("Taken(%s): %v", tt.name, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Taken(%s) = %q, want %q", tt.name, got, tt.want)
		}
	}
	if _, err := d.Taken("../x.service", owned); err == nil {
		t.Errorf("Taken(../x.service): no error")
	}
}

// TestTakenOutsideAHostRoot: a unit directory that is not <root>/etc/systemd/system
// is the only directory looked at.
func TestTakenOutsideAHostRoot(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x@.service"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	d := Dir{Path: dir}
	none := func(string) bool { return false }
	if got, err := d.Taken("x@1.service", none); err != nil || got != filepath.Join(dir, "x@.service") {
		t.Errorf("Taken(x@1.service) = %q, %v", got, err)
	}
	if got, err := d.Taken("y.service", none); err != nil || got != "" {
		t.Errorf("Taken(y.service) = %q, %v", got, err)
	}
}
