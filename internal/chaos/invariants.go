package chaos

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Release is a commit pushed to the fleet repository, with what the test knows of it.
type Release struct {
	Commit  string // full or abbreviated
	Version string // what the demo service answers on /version
	Good    bool   // it passes its checks
}

// HostState is a host's state at the end: its rollback store and its service.
type HostState struct {
	Name        string
	TxnState    string   // the open transaction's state, "" when none
	LastGood    string   // the last good revision
	Served      string   // the version the service answers with, "" when it does not
	Quarantined []string // the commits, among the releases, that the host quarantined
}

// Input is everything the invariants are checked over.
type Input struct {
	MaxParallel int               // the group's slots; 0 means 1
	Journals    map[string]string // host -> its agent's journal
	Since       time.Time         // lines before it are ignored
	Releases    []Release
	Hosts       []HostState
	Halted      []string // commits the group's fleet state records as failed
}

// The invariants, as named in violations.
const (
	MaxParallel   = "max-parallel"   // (a) never more than maxParallel hosts switched at once
	BadSpread     = "bad-spread"     // (b) a release that failed its checks ran on at most one host
	Settled       = "settled"        // (c) every host ends serving a committed version, no transaction open
	GoodPunished  = "good-punished"  // (d) no release that passed its checks is quarantined or halted
	TxnOverwrites = "txn-overwrites" // (c) a transaction never starts while one that switched is open
)

// Violation is one broken promise.
type Violation struct {
	Invariant string
	Detail    string
}

func (v Violation) String() string { return v.Invariant + ": " + v.Detail }

// Check checks the four promises over in and returns every violation, none when all hold.
func Check(in Input) []Violation {
	tl := BuildTimeline(in.Journals, in.Since)
	var out []Violation
	out = append(out, checkParallel(tl.Windows, max(in.MaxParallel, 1))...)
	out = append(out, checkBadSpread(tl.Windows, in.Releases)...)
	out = append(out, checkSettled(in.Hosts, in.Releases)...)
	out = append(out, checkGoodPunished(in)...)
	for _, w := range tl.Windows {
		if w.Outcome == Interrupted {
			out = append(out, Violation{TxnOverwrites, fmt.Sprintf("%s left transaction %s to %s open after switching and started another at %s", w.Host, w.Txn, w.Commit, stamp(w.End))})
		}
	}
	return out
}

// checkParallel sweeps the windows in time order and reports each moment more than
// max hosts are switched at once (once per excess episode).
func checkParallel(ws []Window, limit int) []Violation {
	type edge struct {
		at    time.Time
		delta int
		w     Window
	}
	var edges []edge
	for _, w := range ws {
		edges = append(edges, edge{w.Start, +1, w})
		if !w.End.IsZero() {
			edges = append(edges, edge{w.End, -1, w})
		}
	}
	// Ends before starts at the same instant: a host that released its slot and the
	// next that took it are not at once.
	sort.SliceStable(edges, func(i, j int) bool {
		if !edges[i].at.Equal(edges[j].at) {
			return edges[i].at.Before(edges[j].at)
		}
		return edges[i].delta < edges[j].delta
	})
	var out []Violation
	in := map[string]Window{}
	over := false
	for _, e := range edges {
		key := e.w.Host + "/" + e.w.Txn
		if e.delta > 0 {
			in[key] = e.w
		} else {
			delete(in, key)
		}
		n := hostsIn(in)
		if n > limit && !over {
			var who []string
			for _, w := range in {
				who = append(who, fmt.Sprintf("%s (%s since %s)", w.Host, w.Commit, stamp(w.Start)))
			}
			sort.Strings(who)
			out = append(out, Violation{MaxParallel, fmt.Sprintf("%d hosts switched at %s, limit %d: %s", n, stamp(e.at), limit, strings.Join(who, ", "))})
		}
		over = n > limit
	}
	return out
}

func hostsIn(in map[string]Window) int {
	hosts := map[string]bool{}
	for _, w := range in {
		hosts[w.Host] = true
	}
	return len(hosts)
}

func checkBadSpread(ws []Window, rels []Release) []Violation {
	var out []Violation
	for _, r := range rels {
		if r.Good {
			continue
		}
		hosts := map[string]bool{}
		for _, w := range ws {
			if sameCommit(w.Commit, r.Commit) {
				hosts[w.Host] = true
			}
		}
		if len(hosts) > 1 {
			out = append(out, Violation{BadSpread, fmt.Sprintf("bad release %s (%s) ran on %d hosts: %s", r.Version, short(r.Commit), len(hosts), strings.Join(sortedKeys(hosts), ", "))})
		}
	}
	return out
}

func checkSettled(hosts []HostState, rels []Release) []Violation {
	var out []Violation
	for _, h := range hosts {
		if h.TxnState != "" {
			out = append(out, Violation{Settled, fmt.Sprintf("%s ends with a transaction open in %s", h.Name, h.TxnState)})
		}
		if h.LastGood == "" {
			out = append(out, Violation{Settled, h.Name + " has no committed revision"})
			continue
		}
		want := ""
		for _, r := range rels {
			if sameCommit(h.LastGood, r.Commit) {
				want = r.Version
			}
		}
		switch {
		case h.Served == "":
			out = append(out, Violation{Settled, fmt.Sprintf("%s serves nothing (last good %s)", h.Name, short(h.LastGood))})
		case want != "" && h.Served != want:
			out = append(out, Violation{Settled, fmt.Sprintf("%s serves %s, but its last good revision %s is %s", h.Name, h.Served, short(h.LastGood), want)})
		}
	}
	return out
}

func checkGoodPunished(in Input) []Violation {
	var out []Violation
	for _, r := range in.Releases {
		if !r.Good {
			continue
		}
		for _, h := range in.Hosts {
			for _, q := range h.Quarantined {
				if sameCommit(q, r.Commit) {
					out = append(out, Violation{GoodPunished, fmt.Sprintf("%s quarantined the good release %s (%s)", h.Name, r.Version, short(r.Commit))})
				}
			}
		}
		for _, c := range in.Halted {
			if sameCommit(c, r.Commit) {
				out = append(out, Violation{GoodPunished, fmt.Sprintf("the group is halted on the good release %s (%s)", r.Version, short(r.Commit))})
			}
		}
	}
	return out
}

// sameCommit compares commits of which either may be abbreviated.
func sameCommit(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	return strings.HasPrefix(a, b) || strings.HasPrefix(b, a)
}

func short(c string) string { return c[:min(7, len(c))] }

func stamp(t time.Time) string { return t.Format("15:04:05.000") }

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
