package core

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/baton-fleet/baton/fleet"
	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/rollback"
	"github.com/baton-fleet/baton/spec"
)

// RevertDeadline is how long the last good revision has to be healthy again after a
// revert.
const RevertDeadline = time.Minute

// Move is what a host asks the gate for: to start upgrading to Commit, which changes
// Releases and makes it run Going.
type Move struct {
	Commit   string
	Host     string
	Releases []fleet.Release
	Going    map[string]fleet.Run // what the host runs once it commits; nil: nothing to check
}

// Gate decides whether a host of group g may start mv now: the fleet's own gate
// (pauses, halts, after, canaries: fleet.Snapshot.Gate), a halt on one of its
// releases, the requirements between services across the fleet (fleet.Snapshot.Unmet:
// a wait, not a halt), and hosts stranded mid-switch (see Stranded and Silence).
// holding lists the hosts that hold a slot of the group's lease.
func Gate(snap *fleet.Snapshot, g *spec.Group, mv Move, holding []string, silence *Silence, now time.Time) fleet.Verdict {
	v := snap.Gate(g, mv.Commit, mv.Host, now)
	if !v.OK {
		return v
	}
	if f, bad := snap.BadRelease(g.Name, mv.Releases); bad {
		return fleet.Verdict{Halted: true, Why: fmt.Sprintf("release %s failed on %s in commit %s (%s); the group is halted on it until a commit changes it, or baton retry %s",
			f.Release, f.Host, commitid.ShortOrNone(f.Commit), f.Reason, commitid.ShortOrNone(f.Commit))}
	}
	if mv.Going != nil {
		if u := snap.Unmet(mv.Host, mv.Going, now); u != nil {
			return fleet.Verdict{Why: u.String()}
		}
	}
	if w := silence.Wait(Stranded(snap, holding, g.Name, mv.Host), g, mv.Commit, now); !w.OK {
		return w
	}
	return v
}

// Stranded returns the records, by host name, of the other hosts of group that
// switched and neither finished nor hold a slot any more: cut off or stopped between
// their switch and their verdict. Whether their release failed its checks there is
// not known, and a halt may be on its way; and whatever commit they switched to, they
// may still be out of service, counted against the group's maxParallel. (Keyed by the
// commit at first, this let a host start a newer commit while one stranded on an
// older one was still switching: the fleet simulation found it.)
func Stranded(snap *fleet.Snapshot, holding []string, group, self string) []fleet.Host {
	var hosts []fleet.Host
	for _, h := range snap.Hosts {
		if h.Host != self && h.Group == group && h.Target != "" && h.State == string(rollback.Switching) && !slices.Contains(holding, h.Host) {
			hosts = append(hosts, h)
		}
	}
	slices.SortFunc(hosts, func(a, b fleet.Host) int { return strings.Compare(a.Host, b.Host) })
	return hosts
}

// Silence decides what hosts stranded on a commit mean for this host: the group waits
// for them (the safe side: their halt may be on its way) for as long as a live host
// needs to reach its verdict and revert, the group's healthyDeadline and a revert's,
// counted on this host's clock from when it first saw them silent. A host that stays
// silent longer is dead or cut off for good, and the rollout goes on without it
// rather than wait for an operator. A wait is for one switch of each host, told by
// the time its SWITCHING record was written: a host that switches again and falls
// silent again starts a new wait. (Keyed by the hosts' names alone, a wait that had
// run out on a record left over from an earlier switch let the group pass a host that
// had just switched again: the fleet simulation found it.) The zero value is ready;
// only one goroutine may use it.
type Silence struct {
	since map[string]time.Time // one wait at a time, by commit and switches
}

// Wait is the verdict on hosts, stranded on commit (their records, as Stranded
// returns them), at now.
func (s *Silence) Wait(hosts []fleet.Host, g *spec.Group, commit string, now time.Time) fleet.Verdict {
	if len(hosts) == 0 {
		return fleet.Verdict{OK: true}
	}
	key, names := commit, make([]string, len(hosts))
	for i, h := range hosts {
		key += " " + h.Host + "@" + h.Time.UTC().Format(time.RFC3339Nano)
		names[i] = h.Host
	}
	since, ok := s.since[key]
	if !ok {
		since = now
		s.since = map[string]time.Time{key: now}
	}
	until := since.Add(g.Rollout.HealthyDeadline.D() + RevertDeadline)
	if now.Before(until) {
		return fleet.Verdict{Why: fmt.Sprintf("waiting until %s for %s: switched (to %s or an earlier commit) and silent since (its verdict is unknown; a halt may be on its way)",
			until.UTC().Format(time.TimeOnly), strings.Join(names, ", "), commitid.ShortOrNone(commit))}
	}
	return fleet.Verdict{OK: true}
}
