package fleet

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/baton-fleet/baton/spec"
)

func run(version string, requires ...string) Run {
	r := Run{Version: version}
	for i := 0; i+1 < len(requires); i += 2 {
		if r.Requires == nil {
			r.Requires = map[string]string{}
		}
		r.Requires[requires[i]] = requires[i+1]
	}
	return r
}

func TestUnmet(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	live := now.Add(-time.Minute)
	stale := now.Add(-StaleAfter - time.Hour)
	apiOld := run("1.5.0", "db", ">=1.0.0 <3.0.0")
	apiNew := run("2.0.0", "db", ">=2.0.0 <3.0.0")
	rec := func(host string, seen time.Time, r map[string]Run) Host {
		return Host{Host: host, Commit: "c1", State: "IDLE", Time: seen, Seen: seen, Runs: r}
	}
	for _, tt := range []struct {
		name  string
		hosts []Host
		host  string
		to    map[string]Run
		want  string
	}{
		{
			name:  "api 2.0.0 waits for db 2.x",
			hosts: []Host{rec("web-01", live, map[string]Run{"api": apiOld}), rec("db-01", live, map[string]Run{"db": run("2.0.0")}), rec("db-02", live, map[string]Run{"db": run("1.9.0")})},
			host:  "web-01", to: map[string]Run{"api": apiNew},
			want: "waiting: api 2.0.0 requires db >=2.0.0 <3.0.0; db-02 runs 1.9.0",
		},
		{
			name:  "api 2.0.0 goes once every db runs 2.x",
			hosts: []Host{rec("web-01", live, map[string]Run{"api": apiOld}), rec("db-01", live, map[string]Run{"db": run("2.0.0")}), rec("db-02", live, map[string]Run{"db": run("2.1.0")})},
			host:  "web-01", to: map[string]Run{"api": apiNew},
		},
		{
			name: "a db host going to 1.9.0 may be serving it: api waits",
			hosts: []Host{rec("web-01", live, map[string]Run{"api": apiOld}),
				{Host: "db-01", Commit: "c1", Target: "c0", State: "SWITCHING", Time: live, Runs: map[string]Run{"db": run("2.0.0")}, Going: map[string]Run{"db": run("1.9.0")}}},
			host: "web-01", to: map[string]Run{"api": apiNew},
			want: "waiting: api 2.0.0 requires db >=2.0.0 <3.0.0; db-01 runs 1.9.0",
		},
		{
			name:  "db 3.0.0 waits while an api host requires db <3.0.0",
			hosts: []Host{rec("db-01", live, map[string]Run{"db": run("2.1.0")}), rec("web-01", live, map[string]Run{"api": apiNew}), rec("web-02", live, map[string]Run{"api": apiOld})},
			host:  "db-01", to: map[string]Run{"db": run("3.0.0")},
			want: "waiting: db 3.0.0 is outside what api 2.0.0 requires db >=2.0.0 <3.0.0; web-01 runs api 2.0.0",
		},
		{
			name:  "db 2.2.0 is in every api's range",
			hosts: []Host{rec("db-01", live, map[string]Run{"db": run("2.1.0")}), rec("web-01", live, map[string]Run{"api": apiNew})},
			host:  "db-01", to: map[string]Run{"db": run("2.2.0")},
		},
		{
			name:  "a stale db host holds nothing back",
			hosts: []Host{rec("web-01", live, map[string]Run{"api": apiOld}), rec("db-01", live, map[string]Run{"db": run("2.0.0")}), rec("db-09", stale, map[string]Run{"db": run("1.0.0")})},
			host:  "web-01", to: map[string]Run{"api": apiNew},
		},
		{
			name:  "a host whose record does not say what it runs holds back a requirement",
			hosts: []Host{rec("web-01", live, map[string]Run{"api": apiOld}), rec("db-01", live, nil)},
			host:  "web-01", to: map[string]Run{"api": apiNew},
			want: "waiting: api 2.0.0 requires db >=2.0.0 <3.0.0; db-01's record does not say what it runs (its baton is older)",
		},
		{
			name:  "nor can a host that may require the service be known to accept it",
			hosts: []Host{rec("db-01", live, map[string]Run{"db": run("2.1.0")}), rec("web-01", live, nil)},
			host:  "db-01", to: map[string]Run{"db": run("3.0.0")},
			want: "waiting: web-01's record does not say what it runs (its baton is older); it may require db, which would run 3.0.0",
		},
		{
			name:  "a service the switch leaves alone is not checked",
			hosts: []Host{rec("web-01", live, map[string]Run{"api": apiNew, "cron": run("1.0.0")}), rec("db-01", live, map[string]Run{"db": run("1.0.0")})},
			host:  "web-01", to: map[string]Run{"api": apiNew, "cron": run("1.1.0")},
		},
		{
			name:  "the host's own services are taken after the switch",
			hosts: []Host{rec("all-01", live, map[string]Run{"api": apiOld, "db": run("1.9.0")})},
			host:  "all-01", to: map[string]Run{"api": apiNew, "db": run("2.0.0")},
		},
		{
			name:  "and what it would run out of range",
			hosts: []Host{rec("all-01", live, map[string]Run{"api": apiOld, "db": run("1.9.0")})},
			host:  "all-01", to: map[string]Run{"api": apiNew, "db": run("1.9.1")},
			want: "waiting: api 2.0.0 requires db >=2.0.0 <3.0.0; all-01 runs 1.9.1",
		},
		{
			name:  "versions that are not semver compare only for equality",
			hosts: []Host{rec("web-01", live, map[string]Run{"api": run("a")}), rec("db-01", live, map[string]Run{"db": run("2024-01-15")})},
			host:  "web-01", to: map[string]Run{"api": run("b", "db", "2024-01-16")},
			want: "waiting: api b requires db 2024-01-16; db-01 runs 2024-01-15",
		},
		{
			name:  "a range in a record that does not parse holds back",
			hosts: []Host{rec("db-01", live, map[string]Run{"db": run("2.1.0")}), rec("web-01", live, map[string]Run{"api": run("9.0.0", "db", ">=2 <")})},
			host:  "db-01", to: map[string]Run{"db": run("2.2.0")},
			want: `waiting: web-01 runs api 9.0.0, whose range for db in its record, ">=2 <", does not parse`,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			snap := &Snapshot{Hosts: map[string]Host{}}
			for _, h := range tt.hosts {
				snap.Hosts[h.Host] = h
			}
			got := ""
			if u := snap.Unmet(tt.host, tt.to, now); u != nil {
				got = u.String()
			}
			if got != tt.want {
				t.Errorf("Unmet = %q\nwant    %q", got, tt.want)
			}
		})
	}
}

func TestContractHoldout(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	rec := func(host string, r map[string]Run, going map[string]Run) Host {
		return Host{Host: host, Commit: "c1", Time: now, Runs: r, Going: going}
	}
	for _, tt := range []struct {
		name  string
		hosts []Host
		want  string
	}{
		{"every host committed 2.0.0", []Host{rec("web-01", map[string]Run{"api": run("2.0.0")}, nil), rec("web-02", map[string]Run{"api": run("2.0.0")}, nil), rec("db-01", map[string]Run{"db": run("1.0.0")}, nil)}, ""},
		{"a later version is no holdout", []Host{rec("web-01", map[string]Run{"api": run("2.0.0")}, nil), rec("web-02", map[string]Run{"api": run("2.1.0")}, nil)}, ""},
		{"the last host still runs 1.9.0", []Host{rec("web-01", map[string]Run{"api": run("2.0.0")}, nil), rec("web-02", map[string]Run{"api": run("1.9.0")}, nil)}, "contract migrations of api 2.0.0 wait: web-02 runs api 1.9.0"},
		{"a host switching has not committed", []Host{rec("web-01", map[string]Run{"api": run("1.9.0")}, map[string]Run{"api": run("2.0.0")})}, "contract migrations of api 2.0.0 wait: web-01 runs api 1.9.0"},
		{"a host going back to an older version", []Host{rec("web-01", map[string]Run{"api": run("2.0.0")}, map[string]Run{"api": run("1.9.0")})}, "contract migrations of api 2.0.0 wait: web-01 runs api 1.9.0"},
		{"a host not seen for long still holds back", []Host{{Host: "web-09", Commit: "c0", Time: now.Add(-48 * time.Hour), Seen: now.Add(-48 * time.Hour), Runs: map[string]Run{"api": run("1.0.0")}}}, "contract migrations of api 2.0.0 wait: web-09 runs api 1.0.0"},
		{"a record that does not say", []Host{rec("web-01", nil, nil)}, "contract migrations of api 2.0.0 wait: web-01's record does not say what it runs (its baton is older)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			snap := &Snapshot{Hosts: map[string]Host{}}
			for _, h := range tt.hosts {
				snap.Hosts[h.Host] = h
			}
			got := ""
			if h := snap.ContractHoldout("api", "2.0.0"); h != nil {
				got = h.String()
			}
			if got != tt.want {
				t.Errorf("ContractHoldout = %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestRunsRecord: a record says "runs" for a host that runs nothing, and leaves it
// out when it does not know; an older record reads as not knowing.
func TestRunsRecord(t *testing.T) {
	for _, tt := range []struct {
		h    Host
		want string
	}{
		{Host{Host: "a", Runs: map[string]Run{}}, `{"host":"a","group":"","commit":"","state":"","time":"0001-01-01T00:00:00Z","runs":{}}`},
		{Host{Host: "a"}, `{"host":"a","group":"","commit":"","state":"","time":"0001-01-01T00:00:00Z"}`},
		{Host{Host: "a", Runs: map[string]Run{"api": run("2.0.0", "db", "^2")}}, `{"host":"a","group":"","commit":"","state":"","time":"0001-01-01T00:00:00Z","runs":{"api":{"version":"2.0.0","requires":{"db":"^2"}}}}`},
	} {
		b, err := json.Marshal(tt.h)
		if err != nil || string(b) != tt.want {
			t.Errorf("Marshal = %s, %v\nwant %s", b, err, tt.want)
		}
		back, err := parseHost("a", b)
		if err != nil || (back.Runs == nil) != (tt.h.Runs == nil) {
			t.Errorf("parseHost(%s) = %+v, %v", b, back, err)
		}
	}
}

func TestRunsOf(t *testing.T) {
	api := &spec.Rendered{Service: spec.Service{Name: "api", Version: "2.0.0", Requires: map[string]string{"db": ">=2.0.0 <3.0.0"}}}
	db := &spec.Rendered{Service: spec.Service{Name: "db", Version: "2.1.0"}}
	got := RunsOf([]*spec.Rendered{api, db})
	want := map[string]Run{"api": run("2.0.0", "db", ">=2.0.0 <3.0.0"), "db": run("2.1.0")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("RunsOf = %+v, want %+v", got, want)
	}
	api.Requires["db"] = "^3"
	if got["api"].Requires["db"] != ">=2.0.0 <3.0.0" {
		t.Error("RunsOf shares the service's requires map")
	}
	if got := RunsOf(nil); got == nil || len(got) != 0 {
		t.Errorf("RunsOf(nil) = %#v, want an empty map", got)
	}
}
