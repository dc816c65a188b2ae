package spec

import (
	"strings"
	"testing"

	"golang.org/x/tools/txtar"
)

func TestParseRangeBad(t *testing.T) {
	for _, tt := range []struct{ in, err string }{
		{"", "empty; write a semver range such as >=2.0.0 <3.0.0"},
		{"   ", "empty; write a semver range such as >=2.0.0 <3.0.0"},
		{">=2.0.0 <", `">=2.0.0 <" is neither a semver range (such as >=2.0.0 <3.0.0, ^1.4, ~2.1.0) nor one version`},
		{"abc def", `"abc def" is neither a semver range (such as >=2.0.0 <3.0.0, ^1.4, ~2.1.0) nor one version`},
		{">= v", `">= v" is neither a semver range (such as >=2.0.0 <3.0.0, ^1.4, ~2.1.0) nor one version`},
		{strings.Repeat("1", MaxRangeLen+1), "longer than 256 characters"},
	} {
		_, err := ParseRange(tt.in)
		if err == nil || err.Error() != tt.err {
			t.Errorf("ParseRange(%q) error = %v, want %s", tt.in, err, tt.err)
		}
	}
}

func TestRangeAdmits(t *testing.T) {
	for _, tt := range []struct {
		rng, version string
		want         bool
	}{
		{">=2.0.0 <3.0.0", "2.0.0", true},
		{">=2.0.0 <3.0.0", "2.9.17", true},
		{">=2.0.0 <3.0.0", "1.9.0", false},
		{">=2.0.0 <3.0.0", "3.0.0", false},
		{">=2.0.0 <3.0.0", "2.1.0-rc1", false}, // a prerelease only when the range names one
		{">=2.1.0-rc0 <3.0.0", "2.1.0-rc1", true},
		{"^1.4", "1.9.9", true},
		{"^1.4", "2.0.0", false},
		{"~2.1.0", "2.1.5", true},
		{"~2.1.0", "2.2.0", false},
		{"1.2.3", "1.2.3", true},
		{"=1.2.3", "1.2.4", false},
		{">=1.0.0", "1.2.3+build.7", true},
		// Versions that are not semver compare only for equality.
		{">=1.0.0", "v1.2.3", false},
		{">=1.0.0", "1.2", false},
		{">=2024.0.0", "2024-01-15", false},
		{"2024-01-15", "2024-01-15", true},
		{"=2024-01-15", "2024-01-15", true},
		{"2024-01-15", "2024-01-16", false},
		{"v1.2", "v1.2", true},
		{"v1.2", "1.2.0", false},
	} {
		r, err := ParseRange(tt.rng)
		if err != nil {
			t.Fatalf("ParseRange(%q): %v", tt.rng, err)
		}
		if got := r.Admits(tt.version); got != tt.want {
			t.Errorf("%q admits %q = %v, want %v", tt.rng, tt.version, got, tt.want)
		}
	}
}

func TestOlder(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{"1.9.0", "2.0.0", true},
		{"2.0.0", "2.0.0", false},
		{"2.0.1", "2.0.0", false},
		{"2.0.0-rc1", "2.0.0", true},
		{"1.10.0", "1.9.0", false},
		{"2024-01-15", "2024-01-15", false},
		{"2024-01-15", "2024-01-16", true}, // not semver: any other version may be older
		{"2024-01-16", "2024-01-15", true},
		{"1.0.0", "build-7", true},
	} {
		if got := Older(tt.a, tt.b); got != tt.want {
			t.Errorf("Older(%s, %s) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

// loadTxtar loads a repository written as a txtar archive.
func loadTxtar(t *testing.T, archive string) *Repo {
	t.Helper()
	r, err := Load(txtarFS(txtar.Parse([]byte(archive))))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return r
}

const unitText = "[Service]\nExecStart={{ .Release }}/run\n"

// threeTiers is a repository where web requires api and api requires db, each in
// its own group, and a fourth group runs after web.
var threeTiers = `
-- fleet.yaml --
apiVersion: baton/v1
groups:
  - {name: edge, hosts: ["edge-*"], services: [], after: [web]}
  - {name: web, hosts: ["web-*"], services: [web]}
  - {name: app, hosts: ["app-*"], services: [api]}
  - {name: data, hosts: ["db-*"], services: [db]}
-- services/web/service.yaml --
version: "3.1.0"
units: [web.service]
requires: {api: ">=2.0.0"}
-- services/web/web.service --
` + unitText + `-- services/api/service.yaml --
version: "2.0.0"
units: [api.service]
requires: {db: ">=2.0.0 <3.0.0"}
migrations:
  - id: 0007-orders-status
    phase: expand
    command: ["{{ .Release }}/api", "migrate", "up", "7"]
    backup: ["/usr/local/bin/db-backup", "{{ .Revision }}", "{{ .Service }}-{{ .Version }}"]
    user: api
  - id: 0008-drop-old-status
    phase: contract
    command: ["{{ .Release }}/api", "migrate", "up", "8"]
    timeout: 30s
    rerunnable: true
-- services/api/api.service --
` + unitText + `-- services/db/service.yaml --
version: "2.1.0"
units: [db.service]
-- services/db/db.service --
` + unitText

func TestOrder(t *testing.T) {
	r := loadTxtar(t, threeTiers)
	steps, err := r.Order()
	if err != nil {
		t.Fatal(err)
	}
	got := ""
	for _, s := range steps {
		got += "[" + strings.Join(s, " ") + "]"
	}
	if want := "[data][app][web][edge]"; got != want {
		t.Errorf("Order = %s, want %s", got, want)
	}
	var waits []string
	for _, w := range r.Waits() {
		waits = append(waits, w.Group+"<-"+w.For+": "+w.Because)
	}
	want := "edge<-web: after: web|web<-app: web 3.1.0 requires api >=2.0.0|app<-data: api 2.0.0 requires db >=2.0.0 <3.0.0"
	if g := strings.Join(waits, "|"); g != want {
		t.Errorf("Waits = %s\nwant %s", g, want)
	}
}

// TestOrderSameGroup: a service that requires another of its own group makes no
// wait between groups (docs/repository-format.md: its range must admit the old
// version the group's other hosts still run).
func TestOrderSameGroup(t *testing.T) {
	r := loadTxtar(t, strings.Replace(threeTiers, "services: [api]", "services: [api, db]", 1))
	if _, err := r.Order(); err != nil {
		t.Fatal(err)
	}
}

func TestRenderMigrations(t *testing.T) {
	r := loadTxtar(t, threeTiers)
	api := r.Services["api"]
	rs, err := api.Render(Vars{Host: "app-1", Group: "app", Revision: "abc", Release: "/var/lib/baton/releases/api/2.0.0-x"})
	if err != nil {
		t.Fatal(err)
	}
	m := rs.Migrations
	if len(m) != 2 {
		t.Fatalf("rendered %d migrations, want 2", len(m))
	}
	if got, want := strings.Join(m[0].Command, " "), "/var/lib/baton/releases/api/2.0.0-x/api migrate up 7"; got != want {
		t.Errorf("command = %s, want %s", got, want)
	}
	if got, want := strings.Join(m[0].Backup, " "), "/usr/local/bin/db-backup abc api-2.0.0"; got != want {
		t.Errorf("backup = %s, want %s", got, want)
	}
	if m[0].Timeout.D() != DefaultMigrationTimeout || m[1].Timeout.D().String() != "30s" || m[0].User != "api" || m[0].Rerunnable || !m[1].Rerunnable {
		t.Errorf("fields: %+v", m)
	}
	if got, want := m[0].Canonical[0], "{{ .Release }}/api"; got != want {
		t.Errorf("canonical command = %s, want %s", got, want)
	}
	// The same migration in the next release, whose release directory differs, is
	// the one that ran; an edit is not.
	next := loadTxtar(t, strings.Replace(threeTiers, `version: "2.0.0"`, `version: "2.1.0"`, 1)).Services["api"]
	if next.Version != "2.1.0" {
		t.Fatalf("the next release is %s", next.Version)
	}
	nr, err := next.Render(Vars{Host: "app-1", Group: "app", Revision: "def", Release: "/var/lib/baton/releases/api/2.1.0-y"})
	if err != nil {
		t.Fatal(err)
	}
	if n := nr.Migrations[0]; strings.Join(n.Canonical, " ") != strings.Join(m[0].Canonical, " ") || n.Command[0] == m[0].Command[0] {
		t.Errorf("the next release: canonical %q and %q, commands %q and %q", n.Canonical, m[0].Canonical, n.Command, m[0].Command)
	}
	edited, err := loadTxtar(t, strings.Replace(threeTiers, `"migrate", "up", "7"`, `"migrate", "up", "8"`, 1)).Services["api"].Render(Vars{Release: "/var/lib/baton/releases/api/2.0.0-x"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(edited.Migrations[0].Canonical, " ") == strings.Join(m[0].Canonical, " ") {
		t.Error("an edited migration has the canonical command of the one that ran")
	}
	other, err := api.Render(Vars{Host: "app-2", Group: "app", Revision: "abc", Release: "/srv/baton/releases/api/2.0.0-x"})
	if err != nil {
		t.Fatal(err)
	}
	if o := other.Migrations[0]; strings.Join(o.Canonical, " ") != strings.Join(m[0].Canonical, " ") || o.Command[0] == m[0].Command[0] {
		t.Errorf("hosts with other state directories: canonical %q and %q, commands %q and %q", o.Canonical, m[0].Canonical, o.Command, m[0].Command)
	}
	if got := api.Migrations[0].Command[0]; got != "{{ .Release }}/api" {
		t.Errorf("Render changed the service's template: %s", got)
	}
	if e, c := api.Phase(PhaseExpand), api.Phase(PhaseContract); len(e) != 1 || e[0].ID != "0007-orders-status" || len(c) != 1 || c[0].ID != "0008-drop-old-status" {
		t.Errorf("Phase: expand %+v, contract %+v", e, c)
	}
}

// TestFingerprintCoversRequiresAndMigrations: a change to either makes another release.
func TestFingerprintCoversRequiresAndMigrations(t *testing.T) {
	base := loadTxtar(t, threeTiers).Services["api"].Fingerprint()
	for name, edit := range map[string][2]string{
		"range":     {`db: ">=2.0.0 <3.0.0"`, `db: ">=2.1.0 <3.0.0"`},
		"command":   {`"migrate", "up", "7"`, `"migrate", "up", "07"`},
		"phase":     {"phase: contract", "phase: expand"},
		"rerun":     {"rerunnable: true", "rerunnable: false"},
		"migration": {"  - id: 0008-drop-old-status", "  - id: 0009-drop-old-status"},
	} {
		if !strings.Contains(threeTiers, edit[0]) {
			t.Fatalf("%s: %q is not in the repository", name, edit[0])
		}
		fp := loadTxtar(t, strings.Replace(threeTiers, edit[0], edit[1], 1)).Services["api"].Fingerprint()
		if fp == base {
			t.Errorf("%s: the fingerprint did not change", name)
		}
	}
}

// FuzzParseRange: a range either parses or is refused, never panics; one that parses
// admits nothing it then refuses on a second reading.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{">=2.0.0 <3.0.0", "^1.4", "~2.1.0", "2024-01-15", "=v1.2", ">= 1.2.3-rc.1 || <0.1", "1.0.0 - 2.0.0", "*", "x"} {
		f.Add(s, "2.0.0")
	}
	f.Fuzz(func(t *testing.T, rng, version string) {
		r, err := ParseRange(rng)
		if err != nil {
			return
		}
		r2, err := ParseRange(r.Text)
		if err != nil {
			t.Fatalf("ParseRange(%q) parsed, its Text %q did not: %v", rng, r.Text, err)
		}
		if r.Admits(version) != r2.Admits(version) {
			t.Fatalf("%q and its Text %q disagree on %q", rng, r.Text, version)
		}
		if !IsSemver(version) && r.Admits(version) && strings.TrimSpace(strings.TrimPrefix(r.Text, "=")) != version {
			t.Fatalf("%q admits %q, which is not semver and not the range's one version", rng, version)
		}
	})
}
