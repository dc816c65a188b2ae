package spec

import (
	"regexp"
	"slices"
	"time"

	"github.com/baton-fleet/baton/internal/yamldoc"
)

// Phases of a migration.
const (
	// PhaseExpand runs before any host switches the service to its version.
	PhaseExpand = "expand"
	// PhaseContract runs once no host runs a version of the service older than its own.
	PhaseContract = "contract"
)

// DefaultMigrationTimeout bounds a migration, and its backup, when it sets no timeout.
const DefaultMigrationTimeout = 10 * time.Minute

var migrationIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Migration is one data migration of a service, run once for the whole fleet from
// the ledger in etcd (package migrate). Its command and backup are templates over
// MigrationVars: what a migration runs must not depend on the host that runs it.
type Migration struct {
	ID         string           `yaml:"id" json:"id"`
	Phase      string           `yaml:"phase" json:"phase"`
	Command    []string         `yaml:"command" json:"command"`         // templates
	Backup     []string         `yaml:"backup" json:"backup,omitempty"` // templates; runs first, must succeed
	Timeout    yamldoc.Duration `yaml:"timeout" json:"timeout"`         // of the backup and of the command, each
	User       string           `yaml:"user" json:"user,omitempty"`     // as for exec checks
	Rerunnable bool             `yaml:"rerunnable" json:"rerunnable"`   // safe to run again after an interruption

	// Canonical is, once rendered, the command as written: rendered with each value of
	// the release standing for itself ({{ .Release }} stays {{ .Release }}). It is the
	// same on every host, whatever its state directory, and in every later release
	// that keeps the migration, for the ledger's checksum of the command: an edit
	// changes it, a new release directory does not.
	Canonical []string `yaml:"-" json:"-"`
}

// CanonicalStateDir is the agent's default state directory: the release directories
// a repository is checked with (baton validate) are under it.
const CanonicalStateDir = "/var/lib/baton"

// releaseItself are the values of MigrationVars that differ between releases of a
// service, each standing for itself: what Migration.Canonical is rendered with.
var releaseItself = MigrationVars{Version: "{{ .Version }}", Revision: "{{ .Revision }}", Release: "{{ .Release }}"}

// MigrationVars are the values a migration's command and backup see: those of the
// release, none of the host's.
type MigrationVars struct {
	Version  string // the service's version
	Service  string // the service's name
	Revision string // the fleet repository commit
	Release  string // absolute path of this version's release directory
}

// checkMigrations checks the migrations: list of one service.
func (s *Service) checkMigrations(doc *yamldoc.Doc) yamldoc.Errors {
	var errs yamldoc.Errors
	ids := map[string]int{}
	for i := range s.Migrations {
		m := &s.Migrations[i]
		at := func(p ...any) yamldoc.Pos { return doc.At(append([]any{"migrations", i}, p...)...) }
		switch j, dup := ids[m.ID]; {
		case !doc.Has("migrations", i, "id"):
			errs.Add(at().Errorf("migrations: id: required: a name unique in the service and never reused, such as 0007-orders-status"))
		case !migrationIDRE.MatchString(m.ID):
			errs.Add(at("id").Errorf("migrations: id: %q: use letters, digits and ._-, starting with a letter or digit, at most 128", m.ID))
		case dup:
			errs.Add(at("id").Errorf("migrations: id %q is used twice (also at line %d); an id names one migration for good", m.ID, doc.At("migrations", j, "id").Line))
		default:
			ids[m.ID] = i
		}
		if !slices.Contains([]string{PhaseExpand, PhaseContract}, m.Phase) {
			errs.Add(at("phase").Errorf("migrations: %s: phase: %q is not one of expand (before any host switches), contract (once no host runs an older version)", m.ID, m.Phase))
		}
		if err := checkCommand(m.Command); err != nil {
			errs.Add(at("command").Errorf("migrations: %s: command: %v", m.ID, err))
		}
		if m.Backup != nil || doc.Has("migrations", i, "backup") {
			if err := checkCommand(m.Backup); err != nil {
				errs.Add(at("backup").Errorf("migrations: %s: backup: %v", m.ID, err))
			}
		}
		if !doc.Has("migrations", i, "timeout") {
			m.Timeout = yamldoc.Duration(DefaultMigrationTimeout)
		} else if m.Timeout <= 0 {
			errs.Add(at("timeout").Errorf("migrations: %s: timeout: must be longer than 0", m.ID))
		}
		if m.User != "" || doc.Has("migrations", i, "user") {
			if err := checkUser(m.User); err != nil {
				errs.Add(at("user").Errorf("migrations: %s: user: %v", m.ID, err))
			}
		}
	}
	return errs
}

// Phase returns the migrations of the phase, in file order.
func (s *Service) Phase(phase string) []Migration {
	var out []Migration
	for _, m := range s.Migrations {
		if m.Phase == phase {
			out = append(out, m)
		}
	}
	return out
}

// renderMigrations renders the command and backup of each migration with the
// release's values of v.
func renderMigrations(s *Service, v Vars, errs *yamldoc.Errors) []Migration {
	if len(s.Migrations) == 0 {
		return nil
	}
	mv := MigrationVars{Version: v.Version, Service: v.Service, Revision: v.Revision, Release: v.Release}
	ren := &renderer{vars: mv, doc: s.doc, errs: errs}
	itself := releaseItself
	itself.Service = v.Service
	canon := &renderer{vars: itself, doc: s.doc, errs: &yamldoc.Errors{}} // its errors are ren's
	out := slices.Clone(s.Migrations)
	for i := range out {
		m := &out[i]
		m.Canonical = canon.argv(m.Command, "migrations", i, "command")
		m.Command = ren.argv(m.Command, "migrations", i, "command")
		if m.Backup != nil {
			m.Backup = ren.argv(m.Backup, "migrations", i, "backup")
		}
	}
	return out
}
