// Package spec reads the fleet repository (format v1): it parses, validates and renders it.
package spec

import (
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/baton-fleet/baton/internal/yamldoc"
)

// APIVersion is the only fleet.yaml apiVersion this baton reads.
const APIVersion = "baton/v1"

// Rollout defaults, used when fleet.yaml leaves a knob out.
const (
	DefaultMaxParallel     = 1
	DefaultMinHealthy      = 10 * time.Second
	DefaultHealthyDeadline = 5 * time.Minute
)

// Fleet is fleet.yaml: the policy of the whole fleet.
type Fleet struct {
	APIVersion string  `yaml:"apiVersion" json:"apiVersion"`
	Freeze     bool    `yaml:"freeze" json:"freeze"`
	Groups     []Group `yaml:"groups" json:"groups"`
	// GroupsLine is the line of groups: in fleet.yaml, for errors about them all.
	GroupsLine int `yaml:"-" json:"-"`
}

// Group is a set of hosts, found by name globs, that run the same services.
type Group struct {
	Name     string   `yaml:"name" json:"name"`
	Line     int      `yaml:"-" json:"-"` // of the group in fleet.yaml, for errors
	Hosts    []string `yaml:"hosts" json:"hosts"`
	Services []string `yaml:"services" json:"services"`
	After    []string `yaml:"after" json:"after,omitempty"`
	Rollout  Rollout  `yaml:"rollout" json:"rollout"`
}

// Rollout holds the knobs of how a group upgrades.
type Rollout struct {
	MaxParallel     int              `yaml:"maxParallel" json:"maxParallel"`
	Canary          int              `yaml:"canary" json:"canary"`
	CanaryPause     Pause            `yaml:"canaryPause" json:"canaryPause"`
	MinHealthy      yamldoc.Duration `yaml:"minHealthy" json:"minHealthy"`
	HealthyDeadline yamldoc.Duration `yaml:"healthyDeadline" json:"healthyDeadline"`
	Bake            yamldoc.Duration `yaml:"bake" json:"bake"`
	Gate            *Gate            `yaml:"gate" json:"gate,omitempty"` // holds new upgrades while it says so
}

// Pause is how long a group waits after its canaries: a duration, or Manual (the
// default), which waits for `baton promote`.
type Pause struct {
	Manual bool
	After  time.Duration
}

// UnmarshalYAML reads "manual" or a duration.
func (p *Pause) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && n.Value == "manual" {
		*p = Pause{Manual: true}
		return nil
	}
	d, err := yamldoc.ParseDuration(n.Value)
	if err != nil || n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: canaryPause: expected a duration such as 10m, or manual; got %q", n.Line, n.Value)}}
	}
	*p = Pause{After: d}
	return nil
}

func (p Pause) String() string {
	if p.Manual {
		return "manual"
	}
	return p.After.String()
}

// MarshalText writes p as fleet.yaml does.
func (p Pause) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// Matches reports whether host is one of the group's hosts.
func (g *Group) Matches(host string) bool {
	return slices.ContainsFunc(g.Hosts, func(p string) bool {
		ok, _ := path.Match(p, host)
		return ok
	})
}

// parseFleet decodes fleet.yaml, applies defaults and checks everything that needs no
// other file. services is the set of service directories, to check the names groups use.
func parseFleet(file string, data []byte, services map[string]bool) (*Fleet, yamldoc.Errors) {
	var f Fleet
	var errs yamldoc.Errors
	doc, err := yamldoc.Decode(file, data, &f)
	errs.AddErr(file, err)
	if len(errs) > 0 {
		return nil, errs
	}
	switch {
	case !doc.Has("apiVersion"):
		errs.Add(doc.At().Errorf("apiVersion: required; this baton reads %s", APIVersion))
	case f.APIVersion != APIVersion:
		errs.Add(doc.At("apiVersion").Errorf("apiVersion: unsupported %q; this baton reads %s", f.APIVersion, APIVersion))
	}
	if len(f.Groups) == 0 {
		errs.Add(doc.At("groups").Errorf("groups: at least one group is required"))
	}
	f.GroupsLine = doc.At("groups").Line
	groups := map[string]int{}      // name -> index
	patterns := map[string]string{} // host glob -> group
	for i := range f.Groups {
		g := &f.Groups[i]
		at := func(p ...any) yamldoc.Pos { return doc.At(append([]any{"groups", i}, p...)...) }
		g.Line = at().Line
		if err := checkName(g.Name); err != nil {
			errs.Add(at("name").Errorf("group name: %v", err))
		} else if j, dup := groups[g.Name]; dup {
			errs.Add(at("name").Errorf("group %q is defined twice (also at line %d)", g.Name, doc.At("groups", j, "name").Line))
		} else {
			groups[g.Name] = i
		}
		checkGroupHosts(doc, i, g, patterns, &errs)
		checkGroupServices(doc, i, g, services, &errs)
		errs = append(errs, rolloutDefaults(doc, i, &g.Rollout)...)
		errs = append(errs, checkGate(doc, i, g.Rollout.Gate)...)
	}
	checkAfter(doc, f.Groups, groups, &errs)
	return &f, errs
}

// checkGroupHosts adds to errs what is wrong with the host globs of group i, g:
// none, one that is not a glob of host names, or one already in another group,
// which patterns (host glob -> group) records.
func checkGroupHosts(doc *yamldoc.Doc, i int, g *Group, patterns map[string]string, errs *yamldoc.Errors) {
	at := func(p ...any) yamldoc.Pos { return doc.At(append([]any{"groups", i}, p...)...) }
	if len(g.Hosts) == 0 {
		errs.Add(at("hosts").Errorf("group %q: hosts: at least one host name or glob is required", g.Name))
	}
	for j, p := range g.Hosts {
		if _, err := path.Match(p, ""); err != nil || p == "" || strings.ContainsAny(p, " \t/") {
			errs.Add(at("hosts", j).Errorf("group %q: invalid host glob %q", g.Name, p))
		} else if other, dup := patterns[p]; dup {
			errs.Add(at("hosts", j).Errorf("group %q: host glob %q is also in group %q; a host belongs to one group", g.Name, p, other))
		} else {
			patterns[p] = g.Name
		}
	}
}

// checkGroupServices adds to errs what is wrong with the services of group i,
// g: left out, listed twice, or not among services (those the repository has).
func checkGroupServices(doc *yamldoc.Doc, i int, g *Group, services map[string]bool, errs *yamldoc.Errors) {
	at := func(p ...any) yamldoc.Pos { return doc.At(append([]any{"groups", i}, p...)...) }
	if !doc.Has("groups", i, "services") && g.Services == nil {
		errs.Add(at().Errorf("group %q: services: required (use [] for a group that runs none)", g.Name))
	}
	seen := map[string]bool{}
	for j, s := range g.Services {
		switch {
		case seen[s]:
			errs.Add(at("services", j).Errorf("group %q: service %q is listed twice", g.Name, s))
		case !services[s]:
			errs.Add(at("services", j).Errorf("group %q: unknown service %q: there is no services/%s/service.yaml", g.Name, s, s))
		}
		seen[s] = true
	}
}

// checkAfter adds to errs the groups' after entries that name no group of
// index (name -> index) or their own, and a cycle of groups waiting for each
// other.
func checkAfter(doc *yamldoc.Doc, groups []Group, index map[string]int, errs *yamldoc.Errors) {
	for i, g := range groups {
		for j, a := range g.After {
			switch _, ok := index[a]; {
			case a == g.Name:
				errs.Add(doc.At("groups", i, "after", j).Errorf("group %q: after: a group cannot wait for itself", g.Name))
			case !ok:
				errs.Add(doc.At("groups", i, "after", j).Errorf("group %q: after: unknown group %q", g.Name, a))
			}
		}
	}
	if cycle := afterCycle(groups); cycle != nil {
		errs.Add(doc.At("groups", index[cycle[0]], "after").Errorf("after: groups wait for each other in a cycle: %s", strings.Join(cycle, " -> ")))
	}
}

func rolloutDefaults(doc *yamldoc.Doc, i int, r *Rollout) yamldoc.Errors {
	has := func(k string) bool { return doc.Has("groups", i, "rollout", k) }
	at := func(k string) yamldoc.Pos { return doc.At("groups", i, "rollout", k) }
	var errs yamldoc.Errors
	if !has("maxParallel") {
		r.MaxParallel = DefaultMaxParallel
	} else if r.MaxParallel < 1 {
		errs.Add(at("maxParallel").Errorf("rollout.maxParallel: must be at least 1, got %d", r.MaxParallel))
	}
	if r.Canary < 0 {
		errs.Add(at("canary").Errorf("rollout.canary: must not be negative, got %d", r.Canary))
	}
	if !has("canaryPause") {
		r.CanaryPause = Pause{Manual: true}
	}
	if !has("minHealthy") {
		r.MinHealthy = yamldoc.Duration(DefaultMinHealthy)
	}
	if !has("healthyDeadline") {
		r.HealthyDeadline = yamldoc.Duration(DefaultHealthyDeadline)
	}
	if r.HealthyDeadline <= r.MinHealthy {
		errs.Add(at("healthyDeadline").Errorf("rollout.healthyDeadline (%v) must be longer than minHealthy (%v)", r.HealthyDeadline, r.MinHealthy))
	}
	return errs
}

// afterCycle returns a cycle in the groups' after relation, as names with the first
// repeated at the end, or nil. Unknown names are ignored: they are reported elsewhere.
func afterCycle(groups []Group) []string {
	known := map[string]bool{}
	for _, g := range groups {
		known[g.Name] = true
	}
	var waits []Wait
	for _, g := range groups {
		for _, a := range g.After {
			if known[a] && a != g.Name {
				waits = append(waits, Wait{Group: g.Name, For: a})
			}
		}
	}
	c := waitCycle(groups, waits)
	if c == nil {
		return nil
	}
	var names []string
	for _, w := range c {
		names = append(names, w.Group)
	}
	return append(names, c[0].Group)
}
