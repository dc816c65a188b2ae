package spec

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/baton-fleet/baton/internal/yamldoc"
)

// Limits on a repository, so that a hostile or broken one cannot exhaust a host.
const (
	MaxServices     = 1000
	MaxUnitFileSize = 1 << 20
)

// File names of the repository layout.
const (
	FleetFile   = "fleet.yaml"
	ServicesDir = "services"
	ServiceFile = "service.yaml"
)

// ErrNoGroup is returned by GroupFor when no group's hosts match the host.
var ErrNoGroup = errors.New("no group's hosts match this host")

// Repo is a parsed and validated fleet repository.
type Repo struct {
	Fleet    *Fleet
	Services map[string]*Service
}

// Load reads and validates the fleet repository at the root of fsys. It checks every
// file, renders every template once with sample values, and returns all problems as a
// yamldoc.Errors, each naming its file (relative to the repository) and line. It is
// LoadWith with no options: every reserved unit name (ReservedUnit) is refused.
func Load(fsys fs.FS) (*Repo, error) {
	return LoadWith(fsys, LoadOptions{})
}

// LoadWith is Load with the allowances of opts.
func LoadWith(fsys fs.FS, opts LoadOptions) (*Repo, error) {
	var errs yamldoc.Errors
	r := &Repo{Services: map[string]*Service{}}

	names, err := serviceDirs(fsys)
	if err != nil {
		errs.AddErr(ServicesDir, err)
	}
	exists := map[string]bool{}
	for _, n := range names {
		exists[n] = true
	}
	data, err := readFile(fsys, FleetFile, yamldoc.MaxSize)
	if err != nil {
		errs.Add(yamldoc.Error{File: FleetFile, Msg: err.Error() + " (is this a fleet repository?)"})
	} else {
		f, ferrs := parseFleet(FleetFile, data, exists)
		errs = append(errs, ferrs...)
		r.Fleet = f
	}
	owner := map[string]string{} // unit -> service
	for _, name := range names {
		dir := path.Join(ServicesDir, name)
		file := path.Join(dir, ServiceFile)
		if err := checkName(name); err != nil {
			errs.Add(yamldoc.Error{File: dir, Msg: fmt.Sprintf("service name: %v", err)})
			continue
		}
		data, err := readFile(fsys, file, yamldoc.MaxSize)
		if err != nil {
			errs.Add(yamldoc.Error{File: file, Msg: err.Error()})
			continue
		}
		unitFile := func(u string) (string, error) {
			b, err := readFile(fsys, path.Join(dir, u), MaxUnitFileSize)
			return string(b), err
		}
		s, serrs := parseService(name, file, data, unitFile, exists, opts)
		errs = append(errs, serrs...)
		if s == nil {
			continue
		}
		r.Services[name] = s
		errs = append(errs, s.claimUnits(owner)...)
	}
	if len(errs) == 0 {
		errs = append(errs, r.renderAll()...)
		errs = append(errs, r.checkRequirements()...)
	}
	if len(errs) == 0 {
		if _, err := r.Order(); err != nil {
			errs.AddErr(FleetFile, err)
		}
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return r, nil
}

// claimUnits records in owner (unit -> service) the units the service installs, the
// names of each color's units for bluegreen, and reports those another service
// already installs.
func (s *Service) claimUnits(owner map[string]string) yamldoc.Errors {
	var errs yamldoc.Errors
	claim := func(i int, u, as string) {
		if other, dup := owner[as]; dup && other != s.Name {
			what := u
			if as != u {
				what = u + " (as " + as + ")"
			}
			errs.Add(s.doc.At("units", i).Errorf("units: %s is also a unit of service %q; a unit belongs to one service", what, other))
		}
		owner[as] = s.Name
	}
	for i, u := range s.Units {
		if !s.BlueGreen() {
			claim(i, u, u)
			continue
		}
		for _, c := range s.Deploy.ColorNames {
			claim(i, u, ColorUnit(u, c))
		}
	}
	return errs
}

// renderAll renders every service once for each group that runs it (once with no
// group when none does), with a sample host, so that template errors surface at
// validation rather than on a host.
func (r *Repo) renderAll() yamldoc.Errors {
	var errs yamldoc.Errors
	for _, name := range slices.Sorted(maps.Keys(r.Services)) {
		s := r.Services[name]
		groups := []string{""}
		for _, g := range r.Fleet.Groups {
			if slices.Contains(g.Services, name) {
				groups = append(groups, g.Name)
			}
		}
		if len(groups) > 1 {
			groups = groups[1:]
		}
		for _, g := range groups {
			v := Vars{Host: "validate-host", Group: g, Revision: strings.Repeat("0", 40), Release: s.ReleaseDir(CanonicalStateDir)}
			if _, err := s.Render(v); err != nil {
				errs.AddErr(path.Join(ServicesDir, name), err)
			}
		}
	}
	return errs
}

// serviceDirs lists the directories under services/, sorted.
func serviceDirs(fsys fs.FS) ([]string, error) {
	entries, err := fs.ReadDir(fsys, ServicesDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	if len(names) > MaxServices {
		return nil, fmt.Errorf("%d service directories; the limit is %d", len(names), MaxServices)
	}
	return names, nil
}

// readFile reads a regular file of at most limit bytes. A symlink is refused: a
// repository's files are its own, not pointers into the host.
func readFile(fsys fs.FS, name string, limit int64) ([]byte, error) {
	info, err := fs.Lstat(fsys, name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("file not found")
	case err != nil:
		return nil, err
	case info.Mode()&fs.ModeSymlink != 0:
		return nil, fmt.Errorf("is a symbolic link; the repository must hold the file itself")
	case !info.Mode().IsRegular():
		return nil, fmt.Errorf("not a regular file")
	case info.Size() > limit:
		return nil, fmt.Errorf("file is %d bytes; the limit is %d", info.Size(), limit)
	}
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(b)) > limit {
		err = fmt.Errorf("file is larger than %d bytes", limit)
	}
	return b, err
}

// GroupFor returns the one group whose hosts match host. A host matched by no group
// gets ErrNoGroup; one matched by two groups is an error naming both.
func (r *Repo) GroupFor(host string) (*Group, error) {
	var found []*Group
	for i := range r.Fleet.Groups {
		if g := &r.Fleet.Groups[i]; g.Matches(host) {
			found = append(found, g)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("%s:%d: host %q: %w", FleetFile, r.Fleet.GroupsLine, host, ErrNoGroup)
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("%s:%d: host %q matches groups %q (line %d) and %q; a host belongs to one group",
		FleetFile, found[1].Line, host, found[0].Name, found[0].Line, found[1].Name)
}

// HostSpec is what one host should run at one revision.
type HostSpec struct {
	Host     string
	Revision string
	Group    *Group
	Services []*Rendered // in the order the group lists them
}

// ForHost resolves the host's group and renders its services for it. stateDir is the
// agent's state directory, where release directories live.
func (r *Repo) ForHost(host, revision, stateDir string) (*HostSpec, error) {
	g, err := r.GroupFor(host)
	if err != nil {
		return nil, err
	}
	hs := &HostSpec{Host: host, Revision: revision, Group: g}
	for _, name := range g.Services {
		s := r.Services[name]
		v := Vars{Host: host, Group: g.Name, Revision: revision, Release: s.ReleaseDir(stateDir)}
		rs, err := s.Render(v)
		if err != nil {
			return nil, fmt.Errorf("render service %s for host %s: %w", name, host, err)
		}
		hs.Services = append(hs.Services, rs)
	}
	return hs, nil
}
