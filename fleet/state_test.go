package fleet

import (
	"testing"
	"time"

	"github.com/baton-fleet/baton/spec"
)

func TestGate(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	const c, old = "c0ffee0000000000000000000000000000000000", "0ld0000000000000000000000000000000000000"
	web := func(canary int, pause spec.Pause, after ...string) *spec.Group {
		return &spec.Group{Name: "web", After: after, Rollout: spec.Rollout{MaxParallel: 2, Canary: canary, CanaryPause: pause}}
	}
	manual := spec.Pause{Manual: true}
	tests := []struct {
		name  string
		snap  Snapshot
		group *spec.Group
		host  string
		want  Verdict
	}{
		{"nothing stored", Snapshot{}, web(0, manual), "web-1", Verdict{OK: true}},
		{"fleet paused", Snapshot{Paused: &Mark{Reason: "incident 42"}}, web(0, manual), "web-1",
			Verdict{Why: "the fleet is paused: incident 42"}},
		{"group paused", Snapshot{Groups: map[string]*Group{"web": {Paused: &Mark{}}}}, web(0, manual), "web-1",
			Verdict{Why: "group web is paused"}},
		{"halted on the commit", Snapshot{Groups: map[string]*Group{"web": {Failed: map[string]Failure{c: {Host: "web-1", Reason: "verify: check health failed"}}}}},
			web(0, manual), "web-2",
			Verdict{Halted: true, Why: "commit c0ffee0 failed on web-1 (verify: check health failed); the group is halted until a newer commit or baton retry"}},
		{"an older failure does not halt", Snapshot{Groups: map[string]*Group{"web": {Failed: map[string]Failure{old: {Host: "web-1"}}}}},
			web(0, manual), "web-2", Verdict{OK: true}},
		{"after: not converged", Snapshot{Hosts: map[string]Host{"db-1": {Host: "db-1", Group: "db", Commit: c}, "db-2": {Host: "db-2", Group: "db", Commit: old}}},
			web(0, manual, "db"), "web-1", Verdict{Why: "waiting for group db to converge on c0ffee0 (db-2 runs 0ld0000)"}},
		{"after: converged", Snapshot{Hosts: map[string]Host{"db-1": {Host: "db-1", Group: "db", Commit: c}}},
			web(0, manual, "db"), "web-1", Verdict{OK: true}},
		{"first canary", Snapshot{}, web(1, manual), "web-1", Verdict{OK: true, Canary: true}},
		{"a canary resumes its spot", Snapshot{Groups: map[string]*Group{"web": {Canaries: map[string][]string{c: {"web-1"}}}}},
			web(1, manual), "web-1", Verdict{OK: true, Canary: true}},
		{"canaries still upgrading", Snapshot{Groups: map[string]*Group{"web": {Canaries: map[string][]string{c: {"web-1"}}}},
			Hosts: map[string]Host{"web-1": {Host: "web-1", Group: "web", Commit: old, Target: c}}},
			web(1, manual), "web-2", Verdict{Why: "waiting for the canaries of c0ffee0 to commit (web-1)"}},
		{"manual pause waits for promote", Snapshot{Groups: map[string]*Group{"web": {Canaries: map[string][]string{c: {"web-1"}}}},
			Hosts: map[string]Host{"web-1": {Host: "web-1", Group: "web", Commit: c, Time: now}}},
			web(1, manual), "web-2", Verdict{Why: "the canaries run c0ffee0; waiting for baton promote web"}},
		{"promoted", Snapshot{Groups: map[string]*Group{"web": {Canaries: map[string][]string{c: {"web-1"}}, Promoted: map[string]Mark{c: {}}}},
			Hosts: map[string]Host{"web-1": {Host: "web-1", Group: "web", Commit: c, Time: now}}},
			web(1, manual), "web-2", Verdict{OK: true}},
		{"timed pause not over", Snapshot{Groups: map[string]*Group{"web": {Canaries: map[string][]string{c: {"web-1"}}}},
			Hosts: map[string]Host{"web-1": {Host: "web-1", Group: "web", Commit: c, Time: now.Add(-5 * time.Minute)}}},
			web(1, spec.Pause{After: 10 * time.Minute}), "web-2", Verdict{Why: "the canaries run c0ffee0; canary pause until 2026-11-25T12:05:00Z"}},
		{"timed pause over", Snapshot{Groups: map[string]*Group{"web": {Canaries: map[string][]string{c: {"web-1"}}}},
			Hosts: map[string]Host{"web-1": {Host: "web-1", Group: "web", Commit: c, Time: now.Add(-11 * time.Minute)}}},
			web(1, spec.Pause{After: 10 * time.Minute}), "web-2", Verdict{OK: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.snap.Gate(tt.group, c, tt.host, now); got != tt.want {
				t.Errorf("Gate = %+v\n want %+v", got, tt.want)
			}
		})
	}
}
