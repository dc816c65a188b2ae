package spec

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/baton-fleet/baton/internal/yamldoc"
)

// Wait is one reason why the hosts of a group start a commit only after the hosts of
// another: the group's after:, or a service of the group that requires a service the
// other group runs (its hosts wait, at the gate, until the other's run a version in
// range).
type Wait struct {
	Group string `json:"group"`
	For   string `json:"for"`
	// Because is after: GROUP, or SERVICE VERSION requires SERVICE RANGE.
	Because string `json:"because"`

	pos yamldoc.Pos
}

// Waits lists every Wait between the groups of the repository, in the order of the
// groups, then of their services, then of the services they require.
func (r *Repo) Waits() []Wait {
	runs := map[string][]string{} // service -> the groups that run it
	for _, g := range r.Fleet.Groups {
		for _, s := range g.Services {
			runs[s] = append(runs[s], g.Name)
		}
	}
	var out []Wait
	for _, g := range r.Fleet.Groups {
		for _, a := range g.After {
			out = append(out, Wait{Group: g.Name, For: a, Because: "after: " + a, pos: yamldoc.Pos{File: FleetFile, Line: g.Line}})
		}
		for _, name := range g.Services {
			s, ok := r.Services[name]
			if !ok {
				continue
			}
			for _, dep := range slices.Sorted(maps.Keys(s.Requires)) {
				for _, other := range runs[dep] {
					if other == g.Name {
						continue
					}
					pos := yamldoc.Pos{File: path.Join(ServicesDir, name, ServiceFile)}
					if s.doc != nil {
						pos = s.doc.At("requires", dep)
					}
					because := fmt.Sprintf("%s %s requires %s %s", name, s.Version, dep, strings.TrimSpace(s.Requires[dep]))
					out = append(out, Wait{Group: g.Name, For: other, Because: because, pos: pos})
				}
			}
		}
	}
	return out
}

// Order returns the groups in the order a rollout moves them: in steps, each
// step's groups waiting (Waits) only for groups of earlier steps. When the groups
// wait for each other in a cycle no order exists, and the error names the cycle at
// the line of one of its requirements.
func (r *Repo) Order() ([][]string, error) {
	waits := r.Waits()
	if c := waitCycle(r.Fleet.Groups, waits); c != nil {
		var parts []string
		for _, w := range c {
			parts = append(parts, fmt.Sprintf("group %s waits for group %s (%s)", w.Group, w.For, w.Because))
		}
		at := c[0].pos
		for _, w := range c { // point at a requirement: an after:-only cycle fails in fleet.yaml already
			if !strings.HasPrefix(w.Because, "after: ") {
				at = w.pos
				break
			}
		}
		return nil, yamldoc.Errors{at.Errorf("requires: no order of upgrades exists: %s", strings.Join(parts, "; "))}
	}
	done := map[string]bool{}
	var steps [][]string
	for len(done) < len(r.Fleet.Groups) {
		var step []string
		for _, g := range r.Fleet.Groups {
			if !done[g.Name] && !slices.ContainsFunc(waits, func(w Wait) bool { return w.Group == g.Name && !done[w.For] }) {
				step = append(step, g.Name)
			}
		}
		for _, g := range step {
			done[g] = true
		}
		steps = append(steps, step)
	}
	return steps, nil
}

// waitCycle returns the waits of a cycle among the groups, in order, or nil.
func waitCycle(groups []Group, waits []Wait) []Wait {
	from := map[string][]Wait{}
	for _, w := range waits {
		from[w.Group] = append(from[w.Group], w)
	}
	const (
		unseen = iota
		visiting
		finished
	)
	state := map[string]int{}
	var stack []Wait
	var visit func(string) []Wait
	visit = func(g string) []Wait {
		state[g] = visiting
		for _, w := range from[g] {
			switch state[w.For] {
			case visiting:
				cycle := append(slices.Clone(stack), w)
				i := slices.IndexFunc(cycle, func(x Wait) bool { return x.Group == w.For })
				return cycle[i:]
			case unseen:
				stack = append(stack, w)
				if c := visit(w.For); c != nil {
					return c
				}
				stack = stack[:len(stack)-1]
			}
		}
		state[g] = finished
		return nil
	}
	for _, g := range groups {
		if state[g.Name] == unseen {
			if c := visit(g.Name); c != nil {
				return c
			}
		}
	}
	return nil
}
