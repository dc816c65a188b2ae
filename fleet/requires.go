package fleet

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/baton-fleet/baton/spec"
)

// Run is one service as a host runs it: its version, and the ranges of the other
// services' versions that version requires (its service.yaml's requires:).
type Run struct {
	Version  string            `json:"version"`
	Requires map[string]string `json:"requires,omitempty"`
}

// RunsOf is what a host running services runs, for its record (Host.Runs, Host.Going):
// never nil, so that a host that runs no service says so.
func RunsOf(services []*spec.Rendered) map[string]Run {
	out := make(map[string]Run, len(services))
	for _, s := range services {
		out[s.Name] = Run{Version: s.Version, Requires: maps.Clone(s.Requires)}
	}
	return out
}

// Unmet is a requirement between services that a host's switch would break, as the
// fleet's records show it: the host waits until it holds.
type Unmet struct {
	// Service at Version requires Requires in Range (unknown when Unknown and
	// Provides are both set).
	Service, Version, Requires, Range string
	// Host runs Runs, a version of Requires outside Range.
	Host, Runs string
	// Provides is set when the switching host would run Requires at Runs, out of
	// the range that Host's Service requires: the requirement is Host's.
	Provides bool
	// Unknown is set when Host's record does not say what it runs (an older baton).
	Unknown bool
	// BadRange is set when Range, read from Host's record, does not parse.
	BadRange bool
}

func (u Unmet) String() string {
	need := fmt.Sprintf("%s %s requires %s %s", u.Service, u.Version, u.Requires, u.Range)
	switch {
	case u.Unknown && u.Provides:
		return fmt.Sprintf("waiting: %s's record does not say what it runs (its baton is older); it may require %s, which would run %s", u.Host, u.Requires, u.Runs)
	case u.Unknown:
		return fmt.Sprintf("waiting: %s; %s's record does not say what it runs (its baton is older)", need, u.Host)
	case u.BadRange:
		return fmt.Sprintf("waiting: %s runs %s %s, whose range for %s in its record, %q, does not parse", u.Host, u.Service, u.Version, u.Requires, u.Range)
	case u.Provides:
		return fmt.Sprintf("waiting: %s %s is outside what %s; %s runs %s %s", u.Requires, u.Runs, need, u.Host, u.Service, u.Version)
	}
	return fmt.Sprintf("waiting: %s; %s runs %s", need, u.Host, u.Runs)
}

// Unmet decides whether host may switch to the services of to (RunsOf its target),
// given what the records of the fleet say every host runs. It returns nil when the
// switch breaks no requirement, and otherwise the first it would break, hosts taken
// by name:
//   - each service the switch changes requires what runs: every host that runs a
//     service it requires (host itself after the switch, the others as their
//     records say, both what they run and what they are going to) runs a version
//     in range;
//   - what runs requires each service the switch changes: every other host that
//     runs a service requiring it accepts the version the switch brings.
//
// A host not seen for StaleAfter holds nothing back, as with after:. A host whose
// record does not say what it runs (an older baton) holds back every switch that
// has a requirement to check: it may run anything.
func (s *Snapshot) Unmet(host string, to map[string]Run, now time.Time) *Unmet {
	c := &check{host: host, hosts: s.sortedHosts(), now: now, ranges: map[string]rangeOrErr{}, admits: map[[2]string]bool{}}
	from := s.Hosts[host].Runs
	for _, name := range slices.Sorted(maps.Keys(to)) {
		run := to[name]
		if old, ok := from[name]; from != nil && ok && old.Version == run.Version && maps.Equal(old.Requires, run.Requires) {
			continue // unchanged by this switch
		}
		if u := c.unmetBy(name, run, to); u != nil {
			return u
		}
		if u := c.unmetOf(name, run.Version); u != nil {
			return u
		}
	}
	return nil
}

// check is one decision of Unmet: the records by host name, and each range parsed once.
type check struct {
	host   string
	hosts  []Host
	now    time.Time
	ranges map[string]rangeOrErr
	admits map[[2]string]bool // by range and version
}

type rangeOrErr struct {
	r   spec.Range
	err error
}

func (c *check) parse(text string) (spec.Range, error) {
	re, ok := c.ranges[text]
	if !ok {
		re.r, re.err = spec.ParseRange(text)
		c.ranges[text] = re
	}
	return re.r, re.err
}

// admit reports whether rng admits version, each pair decided once: a fleet runs few
// versions.
func (c *check) admit(rng spec.Range, version string) bool {
	k := [2]string{rng.Text, version}
	ok, seen := c.admits[k]
	if !seen {
		ok = rng.Admits(version)
		c.admits[k] = ok
	}
	return ok
}

// unmetBy checks what service at run requires against what the fleet runs.
func (c *check) unmetBy(service string, run Run, to map[string]Run) *Unmet {
	host, now := c.host, c.now
	for _, dep := range slices.Sorted(maps.Keys(run.Requires)) {
		rng, err := c.parse(run.Requires[dep])
		if err != nil { // refused by spec.Load: to does not come from a loaded repository
			return &Unmet{Service: service, Version: run.Version, Requires: dep, Range: run.Requires[dep], Host: host, BadRange: true}
		}
		for _, h := range c.hosts {
			u := Unmet{Service: service, Version: run.Version, Requires: dep, Range: run.Requires[dep], Host: h.Host}
			var versions []string
			switch {
			case h.Host == host:
				if r, ok := to[dep]; ok {
					versions = []string{r.Version}
				}
			case h.Stale(now):
				continue
			case h.Runs == nil:
				u.Unknown = true
				return &u
			default:
				versions = runningVersions(h, dep)
			}
			for _, v := range versions {
				if !c.admit(rng, v) {
					u.Runs = v
					return &u
				}
			}
		}
	}
	return nil
}

// unmetOf checks what the other hosts run that requires service against version.
func (c *check) unmetOf(service, version string) *Unmet {
	for _, h := range c.hosts {
		if h.Host == c.host || h.Stale(c.now) {
			continue
		}
		if h.Runs == nil {
			return &Unmet{Requires: service, Host: h.Host, Runs: version, Provides: true, Unknown: true}
		}
		for _, runs := range []map[string]Run{h.Runs, h.Going} {
			for _, name := range slices.Sorted(maps.Keys(runs)) {
				want, ok := runs[name].Requires[service]
				if !ok {
					continue
				}
				rng, err := c.parse(want)
				if err != nil || !c.admit(rng, version) {
					return &Unmet{Service: name, Version: runs[name].Version, Requires: service, Range: want, Host: h.Host, Runs: version, Provides: true, BadRange: err != nil}
				}
			}
		}
	}
	return nil
}

// runningVersions are the versions of service that h may be serving: what its
// last good commit runs and, in a transaction, what its target runs.
func runningVersions(h Host, service string) []string {
	var out []string
	for _, runs := range []map[string]Run{h.Runs, h.Going} {
		if r, ok := runs[service]; ok && !slices.Contains(out, r.Version) {
			out = append(out, r.Version)
		}
	}
	return out
}

// sortedHosts returns the records of every host, by name.
func (s *Snapshot) sortedHosts() []Host {
	out := make([]Host, 0, len(s.Hosts))
	for _, name := range slices.Sorted(maps.Keys(s.Hosts)) {
		out = append(out, s.Hosts[name])
	}
	return out
}

// Holdout is a host that still runs a version of a service older than the one
// whose contract migrations wait for it.
type Holdout struct {
	Service, Version string // the release whose contract migrations wait
	Host, Runs       string // Runs is "" when Host's record does not say
}

func (h Holdout) String() string {
	if h.Runs == "" {
		return fmt.Sprintf("contract migrations of %s %s wait: %s's record does not say what it runs (its baton is older)", h.Service, h.Version, h.Host)
	}
	return fmt.Sprintf("contract migrations of %s %s wait: %s runs %s %s", h.Service, h.Version, h.Host, h.Service, h.Runs)
}

// ContractHoldout decides whether the contract migrations of service at version may
// run: once no host runs a version of it older than version (spec.Older), neither as
// what it committed nor as what it is going to. It returns nil then, and otherwise
// the first host, by name, that holds them back. Unlike a wait on requirements, a
// host not seen for StaleAfter still holds them back: a contract migration drops
// what older versions read, and a host that comes back must not find it gone. Such
// a host is let go with baton fleet forget.
func (s *Snapshot) ContractHoldout(service, version string) *Holdout {
	for _, h := range s.sortedHosts() {
		if h.Runs == nil {
			return &Holdout{Service: service, Version: version, Host: h.Host}
		}
		for _, v := range runningVersions(h, service) {
			if spec.Older(v, version) {
				return &Holdout{Service: service, Version: version, Host: h.Host, Runs: v}
			}
		}
	}
	return nil
}
