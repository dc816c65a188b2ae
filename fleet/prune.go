package fleet

import (
	"cmp"
	"maps"
	"slices"
	"time"
)

// Superseded returns the keys (relative to the prefix) of the records that no
// gate will read again, oldest first. descends(ancestor, commit) says whether
// commit descends from ancestor in the fleet repository; an error counts as no.
//
//   - A halt on commit c of group g is superseded once every host of g that is not
//     stale runs one commit X, idle, and X descends from c: the group moved past c,
//     and a host applies only the head of the branch, which is X or newer. (Only a
//     rewind of the branch back to c would start c again.) Without descends, or
//     while the group is not converged, no halt is superseded: from the fleet state
//     alone an older commit cannot be told from a newer one, and a halt must never
//     be lost while its commit may still be the head.
//   - The canary spots and the promotion of a commit c of g are superseded when no
//     host of g runs or targets c, and c is not the group's newest claim (resp.
//     promotion) in etcd's order: a rollout that is starting (claimed, not yet
//     recorded) or a promotion given ahead of the rollout is never taken for old.
func (s *Snapshot) Superseded(now time.Time, descends func(ancestor, commit string) (bool, error)) []string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(s.Groups)) {
		g := s.Groups[name]
		out = append(out, s.supersededHalts(g, now, descends)...)
		used := map[string]bool{}
		for _, h := range s.Hosts {
			if h.Group == name {
				used[h.Commit], used[h.Target] = true, true
			}
		}
		out = append(out, s.supersededMarks(name, "canaries", slices.Collect(maps.Keys(g.Canaries)), used)...)
		out = append(out, s.supersededMarks(name, "promoted", slices.Collect(maps.Keys(g.Promoted)), used)...)
	}
	return out
}

func (s *Snapshot) supersededHalts(g *Group, now time.Time, descends func(ancestor, commit string) (bool, error)) []string {
	if descends == nil || len(g.Failed) == 0 {
		return nil
	}
	converged := ""
	for _, h := range s.hostsOf(g.Name) {
		if h.Stale(now) {
			continue
		}
		if h.Busy() || h.Commit == "" || (converged != "" && h.Commit != converged) {
			return nil
		}
		converged = h.Commit
	}
	if converged == "" {
		return nil
	}
	var out []string
	for _, c := range slices.Sorted(maps.Keys(g.Failed)) {
		if c == converged {
			continue
		}
		if ok, err := descends(c, converged); err == nil && ok {
			out = append(out, "groups/"+g.Name+"/failed/"+c)
		}
	}
	return out
}

// supersededMarks returns the keys of kind (canaries or promoted) of group whose
// commit no host uses, less the newest.
func (s *Snapshot) supersededMarks(group, kind string, commits []string, used map[string]bool) []string {
	key := func(c string) string { return "groups/" + group + "/" + kind + "/" + c }
	slices.SortFunc(commits, func(a, b string) int {
		return cmp.Compare(s.revs[key(a)].create, s.revs[key(b)].create)
	})
	var out []string
	for i, c := range commits {
		if i < len(commits)-1 && !used[c] {
			out = append(out, key(c))
		}
	}
	return out
}
