package plan

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-fleet/baton/rollback"
	"github.com/baton-fleet/baton/spec"
)

// A bluegreen service's plan compares the active color's unit files with what runs,
// and says which color a new release starts in: the idle one, the first on a first
// install.
func TestBlueGreenPlanNamesTheColor(t *testing.T) {
	r, err := spec.Load(os.DirFS("../spec/testdata/bluegreen"))
	if err != nil {
		t.Fatal(err)
	}
	hs, err := r.ForHost("web-01", rev, "/var/lib/baton")
	if err != nil {
		t.Fatal(err)
	}
	var shop *spec.Rendered
	for _, s := range hs.Services {
		if s.Name == "shop" {
			shop = s
		}
	}
	first, err := Compute(hs, &rollback.LastGood{}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got := colorOf(first, "shop"); got != shop.Colors[0].Name {
		t.Errorf("a first install starts in %q, want %q", got, shop.Colors[0].Name)
	}

	// The host runs the same release on the first color: nothing to change.
	active := shop.Colors[0]
	dir := t.TempDir()
	rec := rollback.ServiceRecord{Version: shop.Version, Release: shop.ReleaseID, Color: active.Name}
	for _, u := range active.Units.Names() {
		if err := os.WriteFile(filepath.Join(dir, u), active.Units[u], 0o644); err != nil {
			t.Fatal(err)
		}
		rec.Units = append(rec.Units, u)
	}
	lg := &rollback.LastGood{Revision: "3f2a1c", Services: map[string]rollback.ServiceRecord{"shop": rec}}
	same, err := Compute(hs, lg, dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := colorOf(same, "shop"); got != "" || summary(same) == "" {
		t.Errorf("the same release: color %q, want none (unchanged)", got)
	}

	// An older release runs on the first color: the new one starts in the other.
	rec.Version, rec.Release = "0.9.0", "0.9.0-x"
	lg.Services["shop"] = rec
	next, err := Compute(hs, lg, dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := colorOf(next, "shop"); got != shop.Colors[1].Name {
		t.Errorf("an upgrade starts in %q, want the idle %q", got, shop.Colors[1].Name)
	}
	var b strings.Builder
	if err := next.WriteText(&b); err != nil || !strings.Contains(b.String(), "(starts in "+shop.Colors[1].Name+")") {
		t.Errorf("the plan does not say which color the release starts in:\n%s", b.String())
	}
}

func colorOf(p *Plan, service string) string {
	for _, s := range p.Services {
		if s.Name == service {
			return s.Color
		}
	}
	return ""
}
