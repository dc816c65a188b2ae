package core

import (
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/fleet"
	"github.com/baton-fleet/baton/internal/yamldoc"
	"github.com/baton-fleet/baton/spec"
)

func TestStranded(t *testing.T) {
	const c, other = "cccccccccccccccccccccccccccccccccccccccc", "dddddddddddddddddddddddddddddddddddddddd"
	host := func(name, group, target, state string) fleet.Host {
		return fleet.Host{Host: name, Group: group, Commit: "b", Target: target, State: state}
	}
	snap := func(hs ...fleet.Host) *fleet.Snapshot {
		s := &fleet.Snapshot{Hosts: map[string]fleet.Host{}}
		for _, h := range hs {
			s.Hosts[h.Host] = h
		}
		return s
	}
	tests := []struct {
		name string
		snap *fleet.Snapshot
		line []string
		want string // the stranded hosts
	}{
		{"no one else", snap(host("h1", "web", c, "SWITCHING")), nil, ""},
		{"switched to it and silent", snap(host("h2", "web", c, "SWITCHING")), nil, "h2"},
		{"switched to it, waiting in line again", snap(host("h2", "web", c, "SWITCHING")), []string{"h3"}, "h2"},
		{"switched to it and still holds its slot", snap(host("h2", "web", c, "SWITCHING")), []string{"h2"}, ""},
		{"only leased, never switched", snap(host("h2", "web", c, "LEASED")), nil, ""},
		{"finished", snap(host("h2", "web", "", "IDLE")), nil, ""},
		{"another commit: still out of service", snap(host("h2", "web", other, "SWITCHING")), nil, "h2"},
		{"another group", snap(host("h2", "db", c, "SWITCHING")), nil, ""},
		{"two, in order", snap(host("h3", "web", c, "SWITCHING"), host("h2", "web", c, "SWITCHING")), nil, "h2, h3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var names []string
			for _, h := range Stranded(tt.snap, tt.line, "web", "h1") {
				names = append(names, h.Host)
			}
			if got := strings.Join(names, ", "); got != tt.want {
				t.Errorf("stranded = %q, want %q", got, tt.want)
			}
		})
	}
}

// A host silent since its switch holds the group for the time a live host needs to
// reach its verdict and revert, measured on this host's clock; then the rollout goes on.
// The wait is for one switch: a host that switches again, and is silent again, holds
// the group again, whether or not it was seen finishing in between.
func TestSilentHostsHoldTheGroupForAWhile(t *testing.T) {
	g := &spec.Group{Name: "web"}
	g.Rollout.HealthyDeadline = yamldoc.Duration(30 * time.Second)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	horizon := 30*time.Second + RevertDeadline
	switched := func(host string, at time.Duration) []fleet.Host {
		return []fleet.Host{{Host: host, Group: "web", Target: "c1", State: "SWITCHING", Time: t0.Add(at)}}
	}
	type sight struct {
		stranded []fleet.Host
		at       time.Duration // since t0, on this host's clock
		wait     bool
	}
	tests := []struct {
		name   string
		sights []sight
	}{
		{"no silent host", []sight{{nil, 0, false}}},
		{"first sight of a silent host", []sight{{switched("h2", 0), 0, true}}},
		{"until the horizon", []sight{{switched("h2", 0), 0, true}, {switched("h2", 0), horizon - time.Second, true}, {switched("h2", 0), horizon, false}}},
		{"counted from the first sight, not the switch", []sight{{switched("h2", 0), time.Hour, true}, {switched("h2", 0), time.Hour + horizon, false}}},
		{"another silent host starts its own wait", []sight{{switched("h2", 0), 0, true}, {switched("h2", 0), horizon, false}, {switched("h3", 0), horizon, true}}},
		{"a new switch of the same host, seen finishing in between", []sight{
			{switched("h2", 0), 0, true}, {switched("h2", 0), horizon, false}, {nil, horizon + time.Minute, false},
			{switched("h2", horizon+2*time.Minute), horizon + 2*time.Minute, true}}},
		{"a new switch of the same host, not seen finishing", []sight{
			{switched("h2", 0), 0, true}, {switched("h2", 0), horizon, false},
			{switched("h2", horizon+2*time.Minute), horizon + 3*time.Minute, true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Silence
			for i, si := range tt.sights {
				v := s.Wait(si.stranded, g, "c1", t0.Add(si.at))
				if v.OK == si.wait {
					t.Fatalf("sight %d at %v: %+v, want wait=%v", i, si.at, v, si.wait)
				}
				if si.wait && !strings.Contains(v.Why, si.stranded[0].Host) {
					t.Fatalf("sight %d: %q does not name %s", i, v.Why, si.stranded[0].Host)
				}
			}
		})
	}
}

func TestHostTroublesBackOff(t *testing.T) {
	var tr Backoff
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if w := tr.Waiting("c1", now); w != "" {
		t.Fatalf("waiting before any trouble = %q", w)
	}
	var waits []time.Duration
	for range 8 {
		waits = append(waits, tr.Add("c1", now, "could not stage: disk full"))
	}
	if waits[0] != FirstRetry || waits[1] != 2*FirstRetry || waits[7] != MaxRetry {
		t.Errorf("backoff = %v, want doubling from %v up to %v", waits, FirstRetry, MaxRetry)
	}
	if w := tr.Waiting("c1", now.Add(time.Minute)); !strings.Contains(w, "disk full") || !strings.Contains(w, "attempt 8") {
		t.Errorf("waiting = %q, want the reason and the attempt", w)
	}
	if w := tr.Waiting("c1", now.Add(MaxRetry)); w != "" {
		t.Errorf("waiting once the backoff passed = %q", w)
	}
	if w := tr.Waiting("c2", now); w != "" {
		t.Errorf("a newer commit waits: %q", w)
	}
	if d := tr.Add("c2", now, "x"); d != FirstRetry {
		t.Errorf("a newer commit's first backoff = %v, want %v", d, FirstRetry)
	}
	tr.Clear()
	if w := tr.Waiting("c2", now); w != "" {
		t.Errorf("waiting after clear = %q", w)
	}
}
