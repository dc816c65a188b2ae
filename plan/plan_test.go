package plan

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-fleet/baton/rollback"
	"github.com/baton-fleet/baton/spec"
)

const rev = "9b8e7d6c5b4a39281706f5e4d3c2b1a098765432"

func desired(t *testing.T) *spec.HostSpec {
	t.Helper()
	r, err := spec.Load(os.DirFS("../examples/fleet"))
	if err != nil {
		t.Fatal(err)
	}
	hs, err := r.ForHost("web-01", rev, "/var/lib/baton")
	if err != nil {
		t.Fatal(err)
	}
	return hs
}

// install writes the host's desired units into a unit dir and returns a record of them,
// as a committed upgrade would leave them.
func install(t *testing.T, hs *spec.HostSpec) (string, *rollback.LastGood) {
	t.Helper()
	dir := t.TempDir()
	lg := &rollback.LastGood{Revision: "3f2a1c", Services: map[string]rollback.ServiceRecord{}}
	for _, s := range hs.Services {
		rec := rollback.ServiceRecord{Version: s.Version, Release: s.ReleaseID}
		for _, u := range s.Units.Names() {
			if err := os.WriteFile(filepath.Join(dir, u), s.Units[u], 0o644); err != nil {
				t.Fatal(err)
			}
			rec.Units = append(rec.Units, u)
		}
		lg.Services[s.Name] = rec
	}
	return dir, lg
}

func summary(p *Plan) string {
	var parts []string
	for _, s := range p.Services {
		parts = append(parts, s.Name+":"+string(s.Change))
	}
	for _, u := range p.Units {
		parts = append(parts, u.Unit+":"+string(u.Change))
	}
	return strings.Join(parts, " ")
}

func TestCompute(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, dir string, lg *rollback.LastGood)
		want   string
	}{
		{"nothing installed", func(t *testing.T, dir string, lg *rollback.LastGood) {
			*lg = rollback.LastGood{}
		}, "api:new api.service:new api.socket:new"},
		{"same", func(*testing.T, string, *rollback.LastGood) {},
			"api:unchanged api.service:unchanged api.socket:unchanged"},
		{"older version installed", func(t *testing.T, dir string, lg *rollback.LastGood) {
			lg.Services["api"] = rollback.ServiceRecord{Version: "1.4.2", Release: "1.4.2-00000000", Units: []string{"api.service", "api.socket"}}
			edit(t, dir, "api.service", "1.4.3", "1.4.2")
		}, "api:changed api.service:changed api.socket:unchanged"},
		{"hand-edited unit file", func(t *testing.T, dir string, lg *rollback.LastGood) {
			edit(t, dir, "api.socket", "127.0.0.1:8080", "0.0.0.0:8080")
		}, "api:changed api.service:unchanged api.socket:changed"},
		{"unit missing on disk", func(t *testing.T, dir string, lg *rollback.LastGood) {
			os.Remove(filepath.Join(dir, "api.socket"))
		}, "api:changed api.service:unchanged api.socket:changed"},
		{"unit dropped from the repository", func(t *testing.T, dir string, lg *rollback.LastGood) {
			rec := lg.Services["api"]
			rec.Units = append(rec.Units, "api-migrate.timer")
			lg.Services["api"] = rec
		}, "api:changed api.service:unchanged api.socket:unchanged api-migrate.timer:removed"},
		{"service dropped from the group", func(t *testing.T, dir string, lg *rollback.LastGood) {
			lg.Services["legacy"] = rollback.ServiceRecord{Version: "0.9", Units: []string{"legacy.service"}}
		}, "api:unchanged legacy:removed api.service:unchanged api.socket:unchanged legacy.service:removed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs := desired(t)
			dir, lg := install(t, hs)
			tt.change(t, dir, lg)
			if lg.Services == nil {
				lg.Services = map[string]rollback.ServiceRecord{}
			}
			p, err := Compute(hs, lg, dir)
			if err != nil {
				t.Fatal(err)
			}
			if got := summary(p); got != tt.want {
				t.Errorf("plan = %s\nwant   %s", got, tt.want)
			}
			if want := strings.Contains(tt.want, ":new") || strings.Contains(tt.want, ":changed") || strings.Contains(tt.want, ":removed"); p.Changed() != want {
				t.Errorf("Changed() = %v, want %v", p.Changed(), want)
			}
		})
	}
}

func edit(t *testing.T, dir, unit, old, new string) {
	t.Helper()
	p := filepath.Join(dir, unit)
	b, err := os.ReadFile(p)
	if err != nil || !strings.Contains(string(b), old) {
		t.Fatalf("%s does not contain %q (%v)", unit, old, err)
	}
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(b), old, new)), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWriteTextShowsDiff(t *testing.T) {
	hs := desired(t)
	dir, lg := install(t, hs)
	edit(t, dir, "api.service", "--listen-fd 3", "--listen-fd 4")
	p, err := Compute(hs, lg, dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := p.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"host web-01 (group web): 3f2a1c -> 9b8e7d6", "~ api.service (api) changed",
		"-ExecStart=/var/lib/baton/releases/api/1.4.3-bb2e6f6cd2d2af14/api --listen-fd 4", "+ExecStart=/var/lib/baton/releases/api/1.4.3-bb2e6f6cd2d2af14/api --listen-fd 3",
		"0 new, 1 changed, 0 removed, 1 unchanged"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text plan lacks %q:\n%s", want, b.String())
		}
	}
}
