// Package forge reports the rollout of each commit to the forge as commit statuses, one per group: GitHub, Gitea/Forgejo and GitLab.
package forge

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/baton-fleet/baton/fleet"
	"github.com/baton-fleet/baton/spec"
)

// State is a commit status's state, in GitHub's and Gitea's words; GitLab's are
// mapped when posted.
type State string

// The states a group's status takes.
const (
	Pending State = "pending" // the group is rolling the commit out, or waits
	Success State = "success" // every host of the group runs the commit
	Failure State = "failure" // the group halted on the commit
)

// Status is one group's status on a commit.
type Status struct {
	Context     string // baton/<group>
	Group       string
	State       State
	Description string // at most MaxDescription characters
	// Started: a host of the group runs the commit. GitLab tells a rollout that
	// has not reached a host ("pending") from one under way ("running").
	Started bool
}

// MaxDescription is the longest description posted: GitHub's limit, the
// strictest of the three forges (GitLab takes 255, app/models/commit_status.rb;
// Gitea keeps it as text).
const MaxDescription = 140

// ContextPrefix starts every status's context: baton/<group>.
const ContextPrefix = "baton/"

// Rollout is what Compute needs of one group at the commit: the group as the
// commit's fleet.yaml defines it, and the releases it runs there ("api 2.0.0"),
// named in the description.
type Rollout struct {
	Group    spec.Group
	Releases []string
}

// Compute is the status of each group on commit, from the fleet state. It is pure:
// the same state gives the same statuses, so a caller posts only the changes.
//
//   - failure when the group halted on the commit, or on one of its releases: which
//     host, and why (the check and its reason, as the host recorded them);
//   - success when every host of the group runs the commit;
//   - pending otherwise, with the progress ("2/5 hosts on api 2.0.0") and what the
//     group waits for: a pause, the groups it comes after, a promote after its
//     canaries, a canary pause.
//
// A group without hosts in the fleet state has no status. now only tells which
// hosts of the groups waited for are stale: the gate does not wait for those.
func Compute(commit string, rollouts []Rollout, snap *fleet.Snapshot, now time.Time) []Status {
	var out []Status
	for _, r := range rollouts {
		hosts := 0
		done := 0
		for _, h := range snap.Hosts {
			if h.Group == r.Group.Name {
				hosts++
				if h.Commit == commit {
					done++
				}
			}
		}
		if hosts == 0 {
			continue
		}
		g := snap.Groups[r.Group.Name]
		st := Status{Context: ContextPrefix + r.Group.Name, Group: r.Group.Name, Started: done > 0}
		progress := fmt.Sprintf("%d/%d hosts on %s", done, hosts, releases(r.Releases))
		switch f, halted := haltOf(g, commit, r.Releases); {
		case halted:
			st.State, st.Description = Failure, fmt.Sprintf("halted: %s on %s: %s (%s)", subject(f), f.Host, f.Reason, progress)
		case done == hosts:
			st.State, st.Description = Success, progress
		default:
			st.State, st.Description = Pending, progress+waitsFor(r.Group, g, snap, commit, done, hosts, now)
		}
		st.Description = bound(st.Description)
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Context, b.Context) })
	return out
}

func releases(rs []string) string {
	if len(rs) == 0 {
		return "the commit"
	}
	return strings.Join(rs, ", ")
}

// haltOf is the halt of group g on commit, or on one of its releases.
func haltOf(g *fleet.Group, commit string, rels []string) (fleet.Failure, bool) {
	if g == nil {
		return fleet.Failure{}, false
	}
	if f, ok := g.Failed[commit]; ok {
		return f, true
	}
	keys := make([]string, 0, len(g.Bad))
	for k := range g.Bad {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if f := g.Bad[k]; f.Release != "" && slices.Contains(rels, f.Release) {
			return f, true
		}
	}
	return fleet.Failure{}, false
}

func subject(f fleet.Failure) string {
	if f.Release != "" {
		return "release " + f.Release + " failed"
	}
	return "failed"
}

// waitsFor says what a pending group waits for, "" when it just rolls on.
func waitsFor(sg spec.Group, g *fleet.Group, snap *fleet.Snapshot, commit string, done, hosts int, now time.Time) string {
	var why []string
	switch {
	case snap.Paused != nil:
		why = append(why, "the fleet is paused"+reason(snap.Paused))
	case g != nil && g.Paused != nil:
		why = append(why, "paused"+reason(g.Paused))
	}
	if done == 0 {
		if behind := behind(sg.After, snap, commit, now); len(behind) > 0 {
			why = append(why, "waiting for "+strings.Join(behind, ", "))
		}
	}
	canary := sg.Rollout.Canary
	promoted := false
	if g != nil {
		_, promoted = g.Promoted[commit]
	}
	if canary > 0 && !promoted && done >= min(canary, hosts) && done < hosts {
		if sg.Rollout.CanaryPause.Manual {
			why = append(why, "canary waiting for promote")
		} else {
			why = append(why, fmt.Sprintf("canary pause %v", sg.Rollout.CanaryPause.After))
		}
	}
	if len(why) == 0 {
		return ""
	}
	return ", " + strings.Join(why, ", ")
}

// behind is the groups of after that do not run commit yet, as fleet.Gate judges
// them: a host not seen for fleet.StaleAfter holds back none.
func behind(after []string, snap *fleet.Snapshot, commit string, now time.Time) []string {
	var out []string
	for _, a := range after {
		for _, h := range snap.Hosts {
			if h.Group == a && h.Commit != commit && !h.Stale(now) {
				out = append(out, a)
				break
			}
		}
	}
	return out
}

func reason(m *fleet.Mark) string {
	if m.Reason == "" {
		return ""
	}
	return " (" + m.Reason + ")"
}

// bound cuts s to MaxDescription characters, ending it with "…" when cut, and
// puts every control character as a space.
func bound(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if utf8.RuneCountInString(s) <= MaxDescription {
		return s
	}
	r := []rune(s)
	return string(r[:MaxDescription-1]) + "…"
}

// RejectedContext is the context of the status of a commit the agents refuse as
// bad input: it concerns the whole repository, not one group.
const RejectedContext = "baton"

// Rejected is the status of a commit that does not load: the first problem, which
// every agent refuses it for (the rest are in the journal and `baton validate`).
func Rejected(why string) Status {
	first, _, _ := strings.Cut(why, "\n")
	return Status{Context: RejectedContext, State: Failure, Description: bound("rejected: " + first)}
}
