// Package fleet is the fleet-wide state beside the lease: what each host runs, the
// commits that failed in each group (the halt), pauses, promotions and canaries. The
// data types and the rules that read them are pure; Store keeps them in etcd.
package fleet

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/spec"
)

// Host is the record a host keeps of itself.
type Host struct {
	Host   string    `json:"host"`
	Group  string    `json:"group"`
	Commit string    `json:"commit"`           // the last good revision
	Target string    `json:"target,omitempty"` // the revision being applied, "" when idle
	State  string    `json:"state"`            // the transaction state, IDLE when none
	Result string    `json:"result,omitempty"` // the last outcome, for `baton fleet`
	Time   time.Time `json:"time"`             // when the host entered State
	// Seen is when the host's agent last sent its heartbeat (Store.Touch), by its
	// own clock; zero until it sends one after its last record.
	Seen time.Time `json:"seen,omitzero"`
	// Runs is what Commit runs, by service (RunsOf); nil in the record of a baton
	// that does not say, empty for a host that runs no service.
	Runs map[string]Run `json:"runs,omitzero"`
	// Going is what Target runs, while the host is in a transaction toward it:
	// until it commits, either may be serving.
	Going map[string]Run `json:"going,omitzero"`
}

// StaleAfter is how long a host that sends heartbeats may go unseen before the
// fleet takes it for gone: a stale host does not hold back the groups that run
// `after:` its own, and `baton fleet` marks it. Agents send their heartbeat far
// more often (every poll); the horizon is long so that an etcd outage or a host's
// reboot never makes a live host stale, and the clocks of the hosts need not
// agree closely.
const StaleAfter = 24 * time.Hour

// LastSeen is when the host last wrote its record or its heartbeat.
func (h Host) LastSeen() time.Time {
	if h.Seen.After(h.Time) {
		return h.Seen
	}
	return h.Time
}

// Stale reports whether the host has not been seen for StaleAfter at now. Only a
// host that sends heartbeats is judged: the record of an agent that sends none
// (an older one) says nothing of whether it is alive, and is never stale.
func (h Host) Stale(now time.Time) bool {
	return !h.Seen.IsZero() && now.Sub(h.LastSeen()) > StaleAfter
}

// Busy reports whether the record says the host is in a transaction.
func (h Host) Busy() bool { return h.Target != "" || (h.State != "" && h.State != "IDLE") }

// Failure is a commit that failed on a host of a group: the group halts on it.
type Failure struct {
	Commit  string    `json:"commit"`
	Host    string    `json:"host"`
	Reason  string    `json:"reason"`
	Time    time.Time `json:"time"`
	Release string    `json:"release,omitempty"` // for a halt on a release: "<service> <version>"
}

// Release is one service's release as every host of a group renders it: what a group
// halts on besides the commit, so that a later commit that changes something else does
// not carry a release that failed its checks to one more host.
type Release struct {
	Service     string
	Version     string
	Fingerprint string // spec.Service.Fingerprint
}

// key is the release's name under a group's bad/ keys.
func (r Release) key() string { return r.Service + "@" + r.Fingerprint }

// Mark is a pause or a promotion: who asked, when and why.
type Mark struct {
	By     string    `json:"by,omitempty"`
	Reason string    `json:"reason,omitempty"`
	Time   time.Time `json:"time"`
}

// Group is one group's shared state.
type Group struct {
	Name     string              `json:"name"`
	Slots    int                 `json:"slots"`   // maxParallel as stored in etcd
	Holders  []string            `json:"holders"` // hosts with a slot key, oldest first
	Paused   *Mark               `json:"paused,omitempty"`
	Failed   map[string]Failure  `json:"failed,omitempty"`   // by commit
	Bad      map[string]Failure  `json:"bad,omitempty"`      // by release: <service>@<fingerprint>
	Promoted map[string]Mark     `json:"promoted,omitempty"` // by commit
	Canaries map[string][]string `json:"canaries,omitempty"` // by commit: the hosts that took a canary spot
}

// Snapshot is the whole fleet state, read at one etcd revision.
type Snapshot struct {
	Revision int64             `json:"revision"`
	Paused   *Mark             `json:"paused,omitempty"` // every group
	Groups   map[string]*Group `json:"groups"`
	Hosts    map[string]Host   `json:"hosts"`
	// Problems lists the keys that did not parse. Each is skipped, read on the
	// safe side (see Store.Snapshot), and reported here: one bad key stops no gate.
	Problems []Problem `json:"problems,omitempty"`

	revs map[string]keyRev // by key relative to the prefix: for compare-and-delete
	// running is, by host, when this process first saw the host's record name the
	// commit it runs (Host.Commit), on this host's clock: Store.Snapshot sets it from
	// its sightings. The canary pause counts from it, so that no other host's clock
	// enters it (Host.Time is the writer's).
	running map[string]time.Time
}

// sightings remembers when this process first saw each host run the commit its
// record names, on its own clock. A Store keeps one across its snapshots.
type sightings struct {
	mu   sync.Mutex
	seen map[string]sighting // by host
}

type sighting struct {
	commit string
	at     time.Time
}

// see takes in the host records of a snapshot read at now, and returns by host when
// each was first seen running the commit it runs: now for a host new to it, or whose
// commit changed. A host absent from hosts is forgotten, so what it keeps is bounded
// by the fleet; one that comes back is seen anew, later: the safe side.
func (w *sightings) see(hosts map[string]Host, now time.Time) map[string]time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	next := make(map[string]sighting, len(hosts))
	out := make(map[string]time.Time, len(hosts))
	for name, h := range hosts {
		s, ok := w.seen[name]
		if !ok || s.commit != h.Commit {
			s = sighting{commit: h.Commit, at: now}
		}
		next[name], out[name] = s, s.at
	}
	w.seen = next
	return out
}

// Problem is a key of the fleet state that did not parse.
type Problem struct {
	Key string `json:"key"`
	Err string `json:"error"`
}

// keyRev is when a key was created and last changed (etcd revisions).
type keyRev struct{ create, mod int64 }

// group returns the named group's state, empty when nothing is stored for it.
func (s *Snapshot) group(name string) *Group {
	if g, ok := s.Groups[name]; ok {
		return g
	}
	return &Group{Name: name}
}

// haltedOn returns the commits some group is halted on, by the commit or by a release
// that failed in it; a commit may come more than once.
func (s *Snapshot) haltedOn() []string {
	var out []string
	for _, g := range s.Groups {
		out = slices.AppendSeq(out, maps.Keys(g.Failed))
		for _, f := range g.Bad {
			out = append(out, f.Commit)
		}
	}
	return out
}

// hostsOf returns the records of the hosts of group, sorted by name.
func (s *Snapshot) hostsOf(group string) []Host {
	var out []Host
	for _, name := range slices.Sorted(maps.Keys(s.Hosts)) {
		if h := s.Hosts[name]; h.Group == group {
			out = append(out, h)
		}
	}
	return out
}

// Verdict is whether a host may start upgrading to a commit now, and if not, why.
type Verdict struct {
	OK bool
	// Canary is set when the host goes as one of its group's canaries: it must claim
	// its spot (Store.ClaimCanary) before it switches.
	Canary bool
	// Halted is set when the commit failed elsewhere in the group: the host must not
	// start it until a newer commit or `baton retry`; it is not worth waiting for.
	Halted bool
	Why    string
}

// Gate decides whether host, of group g (as the commit being applied defines it),
// may start upgrading to commit. Checked in order: a pause (the fleet's or the
// group's), the halt (the commit failed on another host of the group), `after`
// (every host of each group named there runs the commit), the canaries (the first
// `canary` hosts go, then the group waits for them to commit and for canaryPause, or
// for `baton promote`, which also passes canaries that never commit). A host not
// seen for StaleAfter does not hold back `after`; a stale canary still holds its
// group (it may have died of the release), and the verdict says so.
//
// The canary pause counts from when this host first saw the last of the canaries
// run commit (Snapshot.running), on its own clock, as now is: the canaries' clocks,
// which wrote their records' times, may be off by any amount. A snapshot without
// that sighting (one no Store read) starts the pause at now.
func (s *Snapshot) Gate(g *spec.Group, commit, host string, now time.Time) Verdict {
	st := s.group(g.Name)
	switch {
	case s.Paused != nil:
		return Verdict{Why: "the fleet is paused" + because(s.Paused)}
	case st.Paused != nil:
		return Verdict{Why: fmt.Sprintf("group %s is paused%s", g.Name, because(st.Paused))}
	}
	if f, ok := st.Failed[commit]; ok {
		return Verdict{Halted: true, Why: fmt.Sprintf("commit %s failed on %s (%s); the group is halted until a newer commit or baton retry", commitid.Short(commit), f.Host, f.Reason)}
	}
	for _, a := range g.After {
		for _, h := range s.hostsOf(a) {
			if h.Commit != commit && !h.Stale(now) {
				return Verdict{Why: fmt.Sprintf("waiting for group %s to converge on %s (%s runs %s)", a, commitid.Short(commit), h.Host, commitid.Short(h.Commit))}
			}
		}
	}
	canary := g.Rollout.Canary
	if canary <= 0 {
		return Verdict{OK: true}
	}
	spots := st.Canaries[commit]
	if slices.Contains(spots, host) {
		return Verdict{OK: true, Canary: true}
	}
	if len(spots) < canary {
		return Verdict{OK: true, Canary: true}
	}
	// `baton promote` lets the group past its canaries, whether they committed or
	// not: the operator's word, for a canary that is dead or stuck.
	if _, ok := st.Promoted[commit]; ok {
		return Verdict{OK: true}
	}
	var last time.Time
	for _, c := range spots {
		rec, ok := s.Hosts[c]
		if ok && rec.Commit != commit && rec.Stale(now) {
			return Verdict{Why: fmt.Sprintf("waiting for the canaries of %s to commit; %s has not been seen since %s: baton promote %s, or baton fleet forget %s to free its spot",
				commitid.Short(commit), c, rec.LastSeen().UTC().Format(time.RFC3339), g.Name, c)}
		}
		if !ok || rec.Commit != commit {
			return Verdict{Why: fmt.Sprintf("waiting for the canaries of %s to commit (%s)", commitid.Short(commit), strings.Join(spots, ", "))}
		}
		since, ok := s.running[c]
		if !ok {
			since = now
		}
		if since.After(last) {
			last = since
		}
	}
	pause := g.Rollout.CanaryPause
	if pause.Manual {
		return Verdict{Why: fmt.Sprintf("the canaries run %s; waiting for baton promote %s", commitid.Short(commit), g.Name)}
	}
	if until := last.Add(pause.After); now.Before(until) {
		return Verdict{Why: fmt.Sprintf("the canaries run %s; canary pause until %s", commitid.Short(commit), until.UTC().Format(time.RFC3339))}
	}
	return Verdict{OK: true}
}

func because(m *Mark) string {
	if m.Reason == "" {
		return ""
	}
	return ": " + m.Reason
}

// BadRelease returns the halt of group on one of rels, a release that failed its checks
// on a host of the group in some commit, and whether there is one.
func (s *Snapshot) BadRelease(group string, rels []Release) (Failure, bool) {
	g := s.group(group)
	for _, r := range rels {
		if f, ok := g.Bad[r.key()]; ok {
			return f, true
		}
	}
	return Failure{}, false
}
