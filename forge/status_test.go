package forge

import (
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/fleet"
	"github.com/baton-fleet/baton/spec"
)

const (
	commitA = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
	commitB = "b1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
)

func hostsOn(group string, commits ...string) map[string]fleet.Host {
	m := map[string]fleet.Host{}
	for i, c := range commits {
		name := group + "-" + string(rune('1'+i))
		m[name] = fleet.Host{Host: name, Group: group, Commit: c, State: "IDLE"}
	}
	return m
}

func merge(ms ...map[string]fleet.Host) map[string]fleet.Host {
	out := map[string]fleet.Host{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// now is the time the statuses are computed at; hosts are seen then unless stale.
var now = time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)

// stale marks hosts as last seen before fleet.StaleAfter.
func stale(hs map[string]fleet.Host) map[string]fleet.Host {
	for k, h := range hs {
		h.Seen = now.Add(-2 * fleet.StaleAfter)
		hs[k] = h
	}
	return hs
}

func TestCompute(t *testing.T) {
	api := Rollout{Group: spec.Group{Name: "api"}, Releases: []string{"api 2.0.0"}}
	canary := Rollout{Group: spec.Group{Name: "web", Rollout: spec.Rollout{Canary: 1, CanaryPause: spec.Pause{Manual: true}}}, Releases: []string{"web 1.1.0"}}
	after := Rollout{Group: spec.Group{Name: "api", After: []string{"db"}}, Releases: []string{"api 2.0.0"}}
	db := Rollout{Group: spec.Group{Name: "db"}, Releases: []string{"db 16"}}
	timed := Rollout{Group: spec.Group{Name: "web", Rollout: spec.Rollout{Canary: 2, CanaryPause: spec.Pause{After: 10 * time.Minute}}}, Releases: []string{"web 1.1.0"}}
	for _, tt := range []struct {
		name     string
		rollouts []Rollout
		snap     fleet.Snapshot
		want     []Status
	}{
		{"rolling", []Rollout{api}, fleet.Snapshot{Hosts: hostsOn("api", commitA, commitA, commitB, commitB, commitB)},
			[]Status{{"baton/api", "api", Pending, "2/5 hosts on api 2.0.0", true}}},
		{"converged", []Rollout{api}, fleet.Snapshot{Hosts: hostsOn("api", commitA, commitA)},
			[]Status{{"baton/api", "api", Success, "2/2 hosts on api 2.0.0", true}}},
		{"canary waits for promote", []Rollout{canary}, fleet.Snapshot{Hosts: hostsOn("web", commitA, commitB, commitB)},
			[]Status{{"baton/web", "web", Pending, "1/3 hosts on web 1.1.0, canary waiting for promote", true}}},
		{"canary promoted", []Rollout{canary}, fleet.Snapshot{Hosts: hostsOn("web", commitA, commitB, commitB),
			Groups: map[string]*fleet.Group{"web": {Promoted: map[string]fleet.Mark{commitA: {By: "ops"}}}}},
			[]Status{{"baton/web", "web", Pending, "1/3 hosts on web 1.1.0", true}}},
		{"canary pause", []Rollout{timed}, fleet.Snapshot{Hosts: hostsOn("web", commitA, commitA, commitB)},
			[]Status{{"baton/web", "web", Pending, "2/3 hosts on web 1.1.0, canary pause 10m0s", true}}},
		{"no canary yet", []Rollout{canary}, fleet.Snapshot{Hosts: hostsOn("web", commitB, commitB)},
			[]Status{{"baton/web", "web", Pending, "0/2 hosts on web 1.1.0", false}}},
		{"halted", []Rollout{api}, fleet.Snapshot{Hosts: hostsOn("api", commitB, commitB),
			Groups: map[string]*fleet.Group{"api": {Failed: map[string]fleet.Failure{commitA: {Host: "api-1", Reason: "verify: check health failed 3 times in a row"}}}}},
			[]Status{{"baton/api", "api", Failure, "halted: failed on api-1: verify: check health failed 3 times in a row (0/2 hosts on api 2.0.0)", false}}},
		{"halted on the release", []Rollout{api}, fleet.Snapshot{Hosts: hostsOn("api", commitB),
			Groups: map[string]*fleet.Group{"api": {Bad: map[string]fleet.Failure{"api@x": {Host: "api-9", Reason: "verify: port", Release: "api 2.0.0"}}}}},
			[]Status{{"baton/api", "api", Failure, "halted: release api 2.0.0 failed on api-9: verify: port (0/1 hosts on api 2.0.0)", false}}},
		{"paused", []Rollout{api}, fleet.Snapshot{Hosts: hostsOn("api", commitB),
			Groups: map[string]*fleet.Group{"api": {Paused: &fleet.Mark{Reason: "incident 42"}}}},
			[]Status{{"baton/api", "api", Pending, "0/1 hosts on api 2.0.0, paused (incident 42)", false}}},
		{"fleet paused", []Rollout{api}, fleet.Snapshot{Hosts: hostsOn("api", commitB), Paused: &fleet.Mark{}},
			[]Status{{"baton/api", "api", Pending, "0/1 hosts on api 2.0.0, the fleet is paused", false}}},
		{"after a group", []Rollout{after, db}, fleet.Snapshot{Hosts: merge(hostsOn("api", commitB, commitB), hostsOn("db", commitA, commitB))},
			[]Status{{"baton/api", "api", Pending, "0/2 hosts on api 2.0.0, waiting for db", false}, {"baton/db", "db", Pending, "1/2 hosts on db 16", true}}},
		{"after a group whose straggler is stale", []Rollout{after}, fleet.Snapshot{Hosts: merge(hostsOn("api", commitB), stale(hostsOn("db", commitB)))},
			[]Status{{"baton/api", "api", Pending, "0/1 hosts on api 2.0.0", false}}},
		{"two groups, one without hosts", []Rollout{canary, api}, fleet.Snapshot{Hosts: merge(hostsOn("api", commitA))},
			[]Status{{"baton/api", "api", Success, "1/1 hosts on api 2.0.0", true}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := Compute(commitA, tt.rollouts, &tt.snap, now)
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("got  %+v\nwant %+v", got[i], tt.want[i])
				}
			}
		})
	}
}

func TestDescriptionBounded(t *testing.T) {
	snap := fleet.Snapshot{Hosts: hostsOn("api", commitB), Groups: map[string]*fleet.Group{"api": {
		Failed: map[string]fleet.Failure{commitA: {Host: "api-1", Reason: "check\nsmoke said: " + strings.Repeat("é", 300)}}}}}
	got := Compute(commitA, []Rollout{{Group: spec.Group{Name: "api"}}}, &snap, now)
	d := got[0].Description
	if n := len([]rune(d)); n != MaxDescription || !strings.HasSuffix(d, "…") || strings.Contains(d, "\n") {
		t.Errorf("description of %d characters: %q", n, d)
	}
}
