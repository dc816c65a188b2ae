package plan

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/spec"
)

// FleetPlan is the order in which a rollout of a repository moves the fleet's
// groups, and the mixed-version states it passes through on the way.
type FleetPlan struct {
	Revision string      `json:"revision"`
	Steps    []FleetStep `json:"steps"`
	// Final is every service at the repository's version: the state once every
	// group has moved.
	Final map[string]string `json:"final"`
}

// FleetStep is a set of groups that move together, once the groups of the steps
// before have moved.
type FleetStep struct {
	Groups []string    `json:"groups"`
	Waits  []spec.Wait `json:"waits,omitempty"` // why these groups wait for earlier ones
	// Running is, while the step's groups move, the versions of each service that
	// may be running across the fleet: the old ones ("old": what runs now), the
	// repository's, or both.
	Running map[string][]string `json:"running"`
	// Expand lists the services whose expand migrations run before the step's
	// first host switches; Contract those whose contract migrations run once the
	// step is done (their last group moved).
	Expand   []string `json:"expand,omitempty"`
	Contract []string `json:"contract,omitempty"`
}

// Old stands for the version of a service that runs before the rollout.
const Old = "old"

// Fleet plans the rollout of repository r, at revision, across its groups.
func Fleet(r *spec.Repo, revision string) (*FleetPlan, error) {
	steps, err := r.Order()
	if err != nil {
		return nil, err
	}
	first, last := map[string]int{}, map[string]int{}
	for i, step := range steps {
		for _, g := range r.Fleet.Groups {
			if !slices.Contains(step, g.Name) {
				continue
			}
			for _, s := range g.Services {
				if _, ok := first[s]; !ok {
					first[s] = i
				}
				last[s] = i
			}
		}
	}
	p := &FleetPlan{Revision: revision, Final: map[string]string{}}
	for s := range first {
		p.Final[s] = r.Services[s].Version
	}
	waits := r.Waits()
	for i, step := range steps {
		fs := FleetStep{Groups: step, Running: map[string][]string{}}
		for _, w := range waits {
			if slices.Contains(step, w.Group) {
				fs.Waits = append(fs.Waits, w)
			}
		}
		for _, s := range slices.Sorted(maps.Keys(first)) {
			v := r.Services[s].Version
			switch {
			case i < first[s]:
				fs.Running[s] = []string{Old}
			case i > last[s]:
				fs.Running[s] = []string{v}
			default:
				fs.Running[s] = []string{Old, v}
			}
			if i == first[s] && len(r.Services[s].Phase(spec.PhaseExpand)) > 0 {
				fs.Expand = append(fs.Expand, s)
			}
			if i == last[s] && len(r.Services[s].Phase(spec.PhaseContract)) > 0 {
				fs.Contract = append(fs.Contract, s)
			}
		}
		p.Steps = append(p.Steps, fs)
	}
	return p, nil
}

// WriteText writes the fleet plan for a person.
func (p *FleetPlan) WriteText(w io.Writer, r *spec.Repo) error {
	var b strings.Builder
	fmt.Fprintf(&b, "rollout of %s in %d step(s); a service shown as old+V runs both while its groups move\n", commitid.Short(p.Revision), len(p.Steps))
	for i, s := range p.Steps {
		fmt.Fprintf(&b, "\nstep %d: group %s\n", i+1, strings.Join(s.Groups, ", group "))
		for _, wt := range s.Waits {
			fmt.Fprintf(&b, "  after group %s: %s\n", wt.For, wt.Because)
		}
		for _, svc := range s.Expand {
			fmt.Fprintf(&b, "  before its first switch: expand migrations of %s: %s\n", svc, migrationIDs(r.Services[svc].Phase(spec.PhaseExpand)))
		}
		var running []string
		for _, svc := range slices.Sorted(maps.Keys(s.Running)) {
			running = append(running, svc+" "+strings.Join(s.Running[svc], "+"))
		}
		fmt.Fprintf(&b, "  running meanwhile: %s\n", strings.Join(running, ", "))
		for _, svc := range s.Contract {
			fmt.Fprintf(&b, "  once it is done: contract migrations of %s: %s\n", svc, migrationIDs(r.Services[svc].Phase(spec.PhaseContract)))
		}
	}
	var final []string
	for _, svc := range slices.Sorted(maps.Keys(p.Final)) {
		final = append(final, svc+" "+p.Final[svc])
	}
	fmt.Fprintf(&b, "\nthen: %s\n", strings.Join(final, ", "))
	_, err := io.WriteString(w, b.String())
	return err
}

func migrationIDs(ms []spec.Migration) string {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	return strings.Join(ids, ", ")
}
