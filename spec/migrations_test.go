package spec

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/baton-fleet/baton/internal/yamldoc"
)

// migrationsRepo is a repository whose api service has the migrations: list given.
func migrationsRepo(migrations string) fstest.MapFS {
	return fstest.MapFS{
		"fleet.yaml":                {Data: []byte("apiVersion: baton/v1\ngroups: [{name: web, hosts: [\"web-*\"], services: [api]}]\n")},
		"services/api/service.yaml": {Data: []byte("version: \"2.0.0\"\nunits: [api.service]\nmigrations:\n" + migrations)},
		"services/api/api.service":  {Data: []byte("[Service]\nExecStart={{ .Release }}/api\n")},
	}
}

// FuzzMigrations feeds arbitrary migrations: lists to Load. A list it refuses is
// refused in service.yaml; one it takes holds only what the runner may rely
// on: ids valid and unique, a known phase, a timeout, and, rendered on two hosts with
// other state directories and in another release, absolute programs and one canonical
// command (the ledger's checksum) for each migration.
func FuzzMigrations(f *testing.F) {
	for _, seed := range []string{
		"  - {id: 0007-orders-status, phase: expand, command: [\"{{ .Release }}/api\", migrate, up, \"7\"]}\n",
		"  - id: \"8\"\n    phase: contract\n    command: [/usr/bin/psql, -c, \"DROP TABLE t\"]\n    backup: [/usr/local/bin/db-backup, \"{{ .Revision }}\"]\n    timeout: 1m\n    user: api\n    rerunnable: true\n",
		"  - {id: a, phase: expand, command: [\"{{ .Release }}/{{ .Version }}\"]}\n  - {id: a, phase: shrink, command: []}\n",
		"  - {id: x, phase: expand, command: [\"{{ .Host }}\"]}\n",
		"  - {id: \"../8\", phase: contract, command: [/bin/true], timeout: 0s, user: Api}\n",
		"  - {id: y, phase: expand, command: [\"{{ if .Release }}/bin/{{ end }}sh\"], rerunnable: maybe}\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, migrations string) {
		r, err := Load(migrationsRepo(migrations))
		if err != nil {
			var list yamldoc.Errors
			if !errors.As(err, &list) {
				t.Fatalf("Load error is %T: %v", err, err)
			}
			for _, e := range list {
				// Every error has its line, but an alias bomb's: it is the whole document's.
				if e.File != "services/api/service.yaml" || (e.Line < 1 && !strings.Contains(e.Msg, "alias bomb")) {
					t.Fatalf("error not in service.yaml: %v", e)
				}
			}
			return
		}
		api := r.Services["api"]
		ids := map[string]bool{}
		for _, m := range api.Migrations {
			if !migrationIDRE.MatchString(m.ID) || ids[m.ID] || !slices.Contains([]string{PhaseExpand, PhaseContract}, m.Phase) || m.Timeout <= 0 || len(m.Command) == 0 {
				t.Fatalf("Load took a migration the runner cannot rely on: %+v", m)
			}
			ids[m.ID] = true
		}
		render := func(version, stateDir string) []Migration {
			s := *api
			s.Version = version
			rs, err := s.Render(Vars{Host: "web-1", Group: "web", Revision: version, Release: s.ReleaseDir(stateDir)})
			if err != nil {
				return nil // a template that fails at run time is reported there
			}
			return rs.Migrations
		}
		a, b, c := render("2.0.0", "/var/lib/baton"), render("2.0.0", "/srv/baton"), render("2.1.0", "/var/lib/baton")
		if a == nil || b == nil || c == nil {
			return
		}
		for i := range a {
			for _, m := range []Migration{a[i], b[i], c[i]} {
				if !filepath.IsAbs(m.Command[0]) {
					t.Fatalf("rendered migration %s runs %q, not an absolute path", m.ID, m.Command[0])
				}
			}
			if strings.Join(a[i].Canonical, "\x00") != strings.Join(b[i].Canonical, "\x00") || strings.Join(a[i].Canonical, "\x00") != strings.Join(c[i].Canonical, "\x00") {
				t.Fatalf("migration %s has canonical commands %q, %q and %q on other hosts and releases", a[i].ID, a[i].Canonical, b[i].Canonical, c[i].Canonical)
			}
		}
	})
}
