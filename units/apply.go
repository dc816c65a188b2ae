package units

import (
	"context"
	"fmt"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/baton-fleet/baton/spec"
)

// Change is one switch of a host's unit files, applied by Systemd.Apply.
type Change struct {
	Install map[string][]byte // name -> content
	Remove  []string
	Restart []string // .service units to restart (started if not running); never a .socket
	Start   []string // units to start if not active (e.g. new sockets, timers)
}

// Apply makes the change, in this order, and stops at the first error, which names
// the unit and the step:
//
//  1. check everything first: every name, no .socket in Restart, no unit both removed
//     and installed or (re)started, every removed unit owned, and no installed unit
//     that is not owned and exists already, in d or anywhere else systemd loads it
//     from (a vendor unit in /usr/lib would be overridden), nor an instance of a
//     template that exists there and is not owned;
//  2. remove: stop (triggers such as sockets and timers before the rest; for a
//     template, every loaded instance), reset failed, disable, delete the file;
//  3. install the files (atomically, sorted by name);
//  4. re-enable them (disable, then enable: a changed [Install] section leaves no
//     stale symlink behind), before the reload, as enablement is only files; a
//     template (x@.service) is left alone: systemd refuses to enable one without a
//     DefaultInstance, and its instances are started by name or by a socket;
//  5. daemon-reload, once, when anything was installed or removed;
//  6. start every installed .socket and every .socket in Start (a socket is never
//     restarted: its listeners keep their queued connections), then restart the units
//     in Restart, then start the other units in Start, each after clearing its failed
//     state and start rate limit, so that a unit that failed in a bad release can be
//     brought back.
//
// owned reports whether baton recorded a unit as its own. Apply is idempotent: after
// a crash, applying the same change again completes it.
func (s *Systemd) Apply(ctx context.Context, d Dir, c Change, owned func(string) bool) error {
	installs := slices.Sorted(maps.Keys(c.Install))
	removes := removeOrder(c.Remove)
	if err := s.check(ctx, d, c, installs, owned); err != nil {
		return err
	}
	for _, u := range removes {
		if err := s.remove(ctx, d, u); err != nil {
			return err
		}
	}
	for _, u := range installs {
		if err := d.Install(u, c.Install[u], owned(u)); err != nil {
			return err
		}
	}
	for _, u := range installs {
		if isTemplate(u) {
			continue
		}
		if err := s.Disable(ctx, u); err != nil {
			return err
		}
		if err := s.Enable(ctx, u); err != nil {
			return err
		}
	}
	if len(installs)+len(removes) > 0 {
		if err := s.Reload(ctx); err != nil {
			return err
		}
	}
	var sockets, others []string
	for _, u := range append(slices.Clone(installs), c.Start...) {
		if isSocket(u) && !isTemplate(u) && !slices.Contains(sockets, u) {
			sockets = append(sockets, u)
		}
	}
	for _, u := range c.Start {
		if !isSocket(u) {
			others = append(others, u)
		}
	}
	for _, u := range sockets {
		if err := s.resetAndRun(ctx, u, s.Start); err != nil {
			return err
		}
	}
	for _, u := range c.Restart {
		if err := s.resetAndRun(ctx, u, s.Restart); err != nil {
			return err
		}
	}
	for _, u := range others {
		if err := s.resetAndRun(ctx, u, s.Start); err != nil {
			return err
		}
	}
	return nil
}

func (s *Systemd) resetAndRun(ctx context.Context, unit string, run func(context.Context, string) error) error {
	if err := s.ResetFailed(ctx, unit); err != nil {
		return err
	}
	return run(ctx, unit)
}

// check refuses a change before any of it is made (step 1 of Apply).
func (s *Systemd) check(ctx context.Context, d Dir, c Change, installs []string, owned func(string) bool) error {
	for _, list := range [][]string{installs, c.Remove, c.Restart, c.Start} {
		for _, u := range list {
			if err := spec.CheckUnitName(u); err != nil {
				return fmt.Errorf("apply: %w", err)
			}
		}
	}
	for _, u := range c.Restart {
		if isSocket(u) {
			return fmt.Errorf("apply: restart %s: a socket unit is started, never restarted", u)
		}
	}
	for _, u := range c.Remove {
		switch {
		case hasKey(c.Install, u):
			return fmt.Errorf("apply: %s is both installed and removed", u)
		case slices.Contains(c.Restart, u) || slices.Contains(c.Start, u):
			return fmt.Errorf("apply: %s is both removed and (re)started", u)
		case !owned(u):
			return fmt.Errorf("remove unit %s: %w", u, ErrNotOwned)
		}
	}
	for _, u := range installs {
		own := owned(u)
		p, err := d.checkInstall(u, own)
		if err != nil {
			return err
		}
		if !own {
			if err := s.checkUnclaimed(ctx, d, u, p, owned); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkUnclaimed refuses to install unit at p when a unit file of that name exists in
// any directory systemd loads units from (a vendor unit, a runtime or transient one,
// a mask): the new file would override it or be overridden. For an instance
// (x@i.service) it refuses as well when its template x@.service exists there and is
// not baton's own in d: systemd loads the instance from the template, and lists only
// the template's name, so the instance's file would take over a unit of someone else.
func (s *Systemd) checkUnclaimed(ctx context.Context, d Dir, unit, p string, owned func(string) bool) error {
	c, err := s.get(ctx)
	if err != nil {
		return fmt.Errorf("install unit %s: %w", unit, err)
	}
	patterns := []string{unit}
	tmpl := templateOf(unit)
	if tmpl != "" {
		patterns = append(patterns, tmpl)
	}
	files, err := c.ListUnitFilesByPatternsContext(ctx, nil, patterns)
	if err != nil {
		return fmt.Errorf("install unit %s: list unit files: %w", unit, err)
	}
	for _, f := range files {
		switch base := filepath.Base(f.Path); {
		case base == unit && filepath.Clean(f.Path) != filepath.Clean(p):
			return fmt.Errorf("install unit %s: %s (%s) defines it already: %w", unit, f.Path, f.Type, ErrNotOwned)
		case base == tmpl && tmpl != "" && !(filepath.Clean(f.Path) == filepath.Join(d.Path, tmpl) && owned(tmpl)):
			return fmt.Errorf("install unit %s: it is an instance of %s (%s), and would override it: %w", unit, f.Path, f.Type, ErrNotOwned)
		}
	}
	return nil
}

// remove stops, disables and deletes one unit (step 2 of Apply). Each step is
// skipped when already done, so a removal interrupted by a crash completes.
func (s *Systemd) remove(ctx context.Context, d Dir, u string) error {
	stop := []string{u}
	if isTemplate(u) {
		var err error
		if stop, err = s.instances(ctx, u); err != nil {
			return err
		}
	}
	for _, unit := range stop {
		if err := s.Stop(ctx, unit); err != nil {
			return err
		}
		if err := s.ResetFailed(ctx, unit); err != nil {
			return err
		}
	}
	exists, err := d.Exists(u)
	if err != nil {
		return err
	}
	if exists {
		if err := s.Disable(ctx, u); err != nil {
			return err
		}
	}
	return d.Remove(u)
}

// instances returns the loaded instances of template (x@.service: x@*.service).
func (s *Systemd) instances(ctx context.Context, template string) ([]string, error) {
	c, err := s.get(ctx)
	if err != nil {
		return nil, fmt.Errorf("list instances of %s: %w", template, err)
	}
	ext := path.Ext(template)
	list, err := c.ListUnitsByPatternsContext(ctx, nil, []string{strings.TrimSuffix(template, ext) + "*" + ext})
	if err != nil {
		return nil, fmt.Errorf("list instances of %s: %w", template, err)
	}
	names := make([]string, 0, len(list))
	for _, st := range list {
		names = append(names, st.Name)
	}
	return names, nil
}

// isTemplate reports whether unit is a template such as x@.service.
func isTemplate(unit string) bool {
	return strings.HasSuffix(strings.TrimSuffix(unit, path.Ext(unit)), "@")
}

// removeOrder puts units that trigger others (sockets, timers, paths, automounts)
// first, so that stopping a service is not undone by its socket activating it again.
func removeOrder(units []string) []string {
	triggers := func(u string) bool {
		switch path.Ext(u) {
		case ".socket", ".timer", ".path", ".automount":
			return true
		}
		return false
	}
	out := slices.Clone(units)
	slices.SortStableFunc(out, func(a, b string) int {
		switch ta, tb := triggers(a), triggers(b); {
		case ta && !tb:
			return -1
		case tb && !ta:
			return 1
		}
		return 0
	})
	return out
}

func hasKey(m map[string][]byte, k string) bool {
	_, ok := m[k]
	return ok
}
