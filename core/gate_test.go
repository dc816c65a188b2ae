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
			if got := strings.Join(Stranded(tt.snap, tt.line, "web", "h1"), ", "); got != tt.want {
				t.Errorf("stranded = %q, want %q", got, tt.want)
			}
		})
	}
}

// A host silent since its switch holds the group for the time a live host needs to
// reach its verdict and revert, measured on this host's clock; then the rollout goes on.
func TestSilentHostsHoldTheGroupForAWhile(t *testing.T) {
	var f Silence
	g := &spec.Group{Name: "web"}
	g.Rollout.HealthyDeadline = yamldoc.Duration(30 * time.Second)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if v := f.Wait(nil, g, "c1", now); !v.OK {
		t.Fatalf("no silent host: %+v", v)
	}
	if v := f.Wait([]string{"h2"}, g, "c1", now); v.OK || !strings.Contains(v.Why, "h2") {
		t.Fatalf("first sight of a silent host: %+v, want a wait naming it", v)
	}
	horizon := 30*time.Second + RevertDeadline
	if v := f.Wait([]string{"h2"}, g, "c1", now.Add(horizon-time.Second)); v.OK {
		t.Fatalf("before the horizon: %+v, want a wait", v)
	}
	if v := f.Wait([]string{"h2"}, g, "c1", now.Add(horizon)); !v.OK {
		t.Fatalf("after the horizon: %+v, want OK", v)
	}
	if v := f.Wait([]string{"h3"}, g, "c1", now.Add(horizon)); v.OK {
		t.Fatalf("another silent host starts its own wait: %+v", v)
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
