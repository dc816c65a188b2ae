package fleet

import (
	"errors"
	"maps"
	"slices"
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
		{"after: a host not seen for StaleAfter does not hold back", Snapshot{Hosts: map[string]Host{
			"db-1": {Host: "db-1", Group: "db", Commit: c, Time: now},
			"db-2": {Host: "db-2", Group: "db", Commit: old, Time: now.Add(-48 * time.Hour), Seen: now.Add(-StaleAfter - time.Minute)}}},
			web(0, manual, "db"), "web-1", Verdict{OK: true}},
		{"after: a host that sends no heartbeat is never stale", Snapshot{Hosts: map[string]Host{
			"db-2": {Host: "db-2", Group: "db", Commit: old, Time: now.Add(-30 * 24 * time.Hour)}}},
			web(0, manual, "db"), "web-1", Verdict{Why: "waiting for group db to converge on c0ffee0 (db-2 runs 0ld0000)"}},
		{"after: an idle host with a fresh heartbeat holds back", Snapshot{Hosts: map[string]Host{
			"db-2": {Host: "db-2", Group: "db", Commit: old, Time: now.Add(-30 * 24 * time.Hour), Seen: now.Add(-time.Minute)}}},
			web(0, manual, "db"), "web-1", Verdict{Why: "waiting for group db to converge on c0ffee0 (db-2 runs 0ld0000)"}},
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
		{"promote passes a canary that never committed", Snapshot{Groups: map[string]*Group{"web": {Canaries: map[string][]string{c: {"web-1"}}, Promoted: map[string]Mark{c: {}}}},
			Hosts: map[string]Host{"web-1": {Host: "web-1", Group: "web", Commit: old, Target: c, State: "SWITCHING", Time: now}}},
			web(1, manual), "web-2", Verdict{OK: true}},
		{"a stale canary holds its group, and the verdict says how to go on", Snapshot{Groups: map[string]*Group{"web": {Canaries: map[string][]string{c: {"web-1"}}}},
			Hosts: map[string]Host{"web-1": {Host: "web-1", Group: "web", Commit: old, Target: c, State: "SWITCHING", Time: now.Add(-26 * time.Hour), Seen: now.Add(-25 * time.Hour)}}},
			web(1, spec.Pause{After: time.Minute}), "web-2",
			Verdict{Why: "waiting for the canaries of c0ffee0 to commit; web-1 has not been seen since 2026-11-24T11:00:00Z: baton promote web, or baton fleet forget web-1 to free its spot"}},
		{"timed pause not over", Snapshot{Groups: map[string]*Group{"web": {Canaries: map[string][]string{c: {"web-1"}}}},
			Hosts:   map[string]Host{"web-1": {Host: "web-1", Group: "web", Commit: c, Time: now.Add(-5 * time.Minute)}},
			running: map[string]time.Time{"web-1": now.Add(-5 * time.Minute)}},
			web(1, spec.Pause{After: 10 * time.Minute}), "web-2", Verdict{Why: "the canaries run c0ffee0; canary pause until 2026-11-25T12:05:00Z"}},
		{"timed pause over", Snapshot{Groups: map[string]*Group{"web": {Canaries: map[string][]string{c: {"web-1"}}}},
			Hosts:   map[string]Host{"web-1": {Host: "web-1", Group: "web", Commit: c, Time: now.Add(-11 * time.Minute)}},
			running: map[string]time.Time{"web-1": now.Add(-11 * time.Minute)}},
			web(1, spec.Pause{After: 10 * time.Minute}), "web-2", Verdict{OK: true}},
		// The canaries' clocks differ from this host's: their records' times say
		// nothing of how long they have run the commit.
		{"a canary's clock an hour behind does not cut the pause short", Snapshot{Groups: map[string]*Group{"web": {Canaries: map[string][]string{c: {"web-1"}}}},
			Hosts:   map[string]Host{"web-1": {Host: "web-1", Group: "web", Commit: c, Time: now.Add(-time.Hour)}},
			running: map[string]time.Time{"web-1": now.Add(-2 * time.Minute)}},
			web(1, spec.Pause{After: 10 * time.Minute}), "web-2", Verdict{Why: "the canaries run c0ffee0; canary pause until 2026-11-25T12:08:00Z"}},
		{"a canary's clock a day ahead does not stretch the pause", Snapshot{Groups: map[string]*Group{"web": {Canaries: map[string][]string{c: {"web-1", "web-3"}}}},
			Hosts: map[string]Host{
				"web-1": {Host: "web-1", Group: "web", Commit: c, Time: now.Add(24 * time.Hour)},
				"web-3": {Host: "web-3", Group: "web", Commit: c, Time: now.Add(-3 * time.Hour)}},
			running: map[string]time.Time{"web-1": now.Add(-11 * time.Minute), "web-3": now.Add(-15 * time.Minute)}},
			web(2, spec.Pause{After: 10 * time.Minute}), "web-2", Verdict{OK: true}},
		{"the pause counts from the last canary seen running the commit", Snapshot{Groups: map[string]*Group{"web": {Canaries: map[string][]string{c: {"web-1", "web-3"}}}},
			Hosts: map[string]Host{
				"web-1": {Host: "web-1", Group: "web", Commit: c, Time: now.Add(-time.Hour)},
				"web-3": {Host: "web-3", Group: "web", Commit: c, Time: now.Add(-time.Hour)}},
			running: map[string]time.Time{"web-1": now.Add(-time.Hour), "web-3": now.Add(-time.Minute)}},
			web(2, spec.Pause{After: 10 * time.Minute}), "web-2", Verdict{Why: "the canaries run c0ffee0; canary pause until 2026-11-25T12:09:00Z"}},
		{"not seen by a Store: the pause starts now", Snapshot{Groups: map[string]*Group{"web": {Canaries: map[string][]string{c: {"web-1"}}}},
			Hosts: map[string]Host{"web-1": {Host: "web-1", Group: "web", Commit: c, Time: now.Add(-time.Hour)}}},
			web(1, spec.Pause{After: 10 * time.Minute}), "web-2", Verdict{Why: "the canaries run c0ffee0; canary pause until 2026-11-25T12:10:00Z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.snap.Gate(tt.group, c, tt.host, now); got != tt.want {
				t.Errorf("Gate = %+v\n want %+v", got, tt.want)
			}
		})
	}
}

func TestSuperseded(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	// git history: a -> b -> c -> d; x is on no path to d
	order := map[string]int{"a": 1, "b": 2, "c": 3, "d": 4}
	descends := func(anc, commit string) (bool, error) {
		i, ok1 := order[anc]
		j, ok2 := order[commit]
		return ok1 && ok2 && i < j, nil
	}
	host := func(name, commit, target string, seen time.Time) Host {
		state := "IDLE"
		if target != "" {
			state = "SWITCHING"
		}
		return Host{Host: name, Group: "web", Commit: commit, Target: target, State: state, Time: seen, Seen: seen}
	}
	snap := func(hosts ...Host) *Snapshot {
		s := &Snapshot{
			Groups: map[string]*Group{"web": {
				Name:     "web",
				Failed:   map[string]Failure{"b": {}, "c": {}, "x": {}, "d": {}},
				Canaries: map[string][]string{"a": {"web-1"}, "b": {"web-1"}, "c": {"web-2"}},
				Promoted: map[string]Mark{"a": {}, "c": {}},
			}},
			Hosts: map[string]Host{},
			revs: map[string]keyRev{
				"groups/web/canaries/a": {create: 10}, "groups/web/canaries/b": {create: 20}, "groups/web/canaries/c": {create: 30},
				"groups/web/promoted/a": {create: 11}, "groups/web/promoted/c": {create: 31},
			},
		}
		for _, h := range hosts {
			s.Hosts[h.Host] = h
		}
		return s
	}
	tests := []struct {
		name     string
		snap     *Snapshot
		descends func(string, string) (bool, error)
		want     []string
	}{
		{"converged on d: halts of its ancestors go; marks no host uses go, less the newest",
			snap(host("web-1", "d", "", now), host("web-2", "d", "", now)), descends,
			[]string{"groups/web/failed/b", "groups/web/failed/c", "groups/web/canaries/a", "groups/web/canaries/b", "groups/web/promoted/a"}},
		{"a host still on b keeps every halt, and b's canaries",
			snap(host("web-1", "d", "", now), host("web-2", "b", "", now)), descends,
			[]string{"groups/web/canaries/a", "groups/web/promoted/a"}},
		{"a host in a transaction keeps every halt",
			snap(host("web-1", "d", "", now), host("web-2", "c", "d", now)), descends,
			[]string{"groups/web/canaries/a", "groups/web/canaries/b", "groups/web/promoted/a"}},
		{"a stale host on b does not keep the halts",
			snap(host("web-1", "d", "", now), host("web-2", "b", "", now.Add(-StaleAfter-time.Hour))), descends,
			[]string{"groups/web/failed/b", "groups/web/failed/c", "groups/web/canaries/a", "groups/web/promoted/a"}},
		{"converged on b: the halt on c, newer, stays",
			snap(host("web-1", "b", "", now)), descends,
			[]string{"groups/web/canaries/a", "groups/web/promoted/a"}},
		{"without git order no halt is pruned",
			snap(host("web-1", "d", "", now)), nil,
			[]string{"groups/web/canaries/a", "groups/web/canaries/b", "groups/web/promoted/a"}},
		{"git errors count as no",
			snap(host("web-1", "d", "", now)), func(string, string) (bool, error) { return true, errors.New("object not found") },
			[]string{"groups/web/canaries/a", "groups/web/canaries/b", "groups/web/promoted/a"}},
		{"no hosts: nothing is known of the halts",
			snap(), descends,
			[]string{"groups/web/canaries/a", "groups/web/canaries/b", "groups/web/promoted/a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.snap.Superseded(now, tt.descends); !slices.Equal(got, tt.want) {
				t.Errorf("Superseded =\n %q\nwant\n %q", got, tt.want)
			}
		})
	}
}

func TestSightings(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	const a, b = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	var w sightings
	// Record times from clocks far off this host's: they play no part.
	hosts := map[string]Host{
		"web-1": {Host: "web-1", Commit: a, Time: t0.Add(48 * time.Hour)},
		"web-2": {Host: "web-2", Commit: a, Time: t0.Add(-48 * time.Hour)},
	}
	steps := []struct {
		name  string
		now   time.Time
		hosts map[string]Host
		want  map[string]time.Time
	}{
		{"first read", t0, hosts, map[string]time.Time{"web-1": t0, "web-2": t0}},
		{"same commits: first sight kept, heartbeats or not", t0.Add(time.Minute), map[string]Host{
			"web-1": {Host: "web-1", Commit: a, Time: t0.Add(49 * time.Hour), Seen: t0.Add(50 * time.Hour)},
			"web-2": hosts["web-2"],
		}, map[string]time.Time{"web-1": t0, "web-2": t0}},
		{"web-2 runs another commit; web-3 appears", t0.Add(2 * time.Minute), map[string]Host{
			"web-1": hosts["web-1"],
			"web-2": {Host: "web-2", Commit: b},
			"web-3": {Host: "web-3", Commit: b},
		}, map[string]time.Time{"web-1": t0, "web-2": t0.Add(2 * time.Minute), "web-3": t0.Add(2 * time.Minute)}},
		{"web-1 gone", t0.Add(3 * time.Minute), map[string]Host{"web-2": {Host: "web-2", Commit: b}},
			map[string]time.Time{"web-2": t0.Add(2 * time.Minute)}},
		{"web-1 back: seen anew", t0.Add(4 * time.Minute), map[string]Host{"web-1": hosts["web-1"], "web-2": {Host: "web-2", Commit: b}},
			map[string]time.Time{"web-1": t0.Add(4 * time.Minute), "web-2": t0.Add(2 * time.Minute)}},
	}
	for _, st := range steps {
		if got := w.see(st.hosts, st.now); !maps.Equal(got, st.want) {
			t.Errorf("%s: see = %v, want %v", st.name, got, st.want)
		}
	}
}
