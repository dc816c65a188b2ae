package api

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/events"
	goldenfile "github.com/baton-fleet/baton/internal/golden"
)

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	goldenfile.Check(t, filepath.Join("testdata", name), got)
}

var (
	now     = time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)
	commitA = "1a2b3c4d5e6f708192a3b4c5d6e7f80910a1b2c3"
	commitB = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432"
)

func ago(d time.Duration) time.Time { return now.Add(-d) }

func services(version, target string) []ServiceState {
	return []ServiceState{
		{Name: "api", Version: version, Target: target, Units: []UnitState{
			{Name: "api.service", Active: "active", Sub: "running"},
			{Name: "api.socket", Active: "active", Sub: "listening"},
		}},
		{Name: "worker", Version: "2.0.1", Units: []UnitState{
			{Name: "worker.service", Active: "active", Sub: "running", Drift: true},
			{Name: "worker-gc.timer", Active: "active", Sub: "waiting"},
		}},
	}
}

func idleState() State {
	return State{
		Host: "web-01", Group: "web", Tracked: commitA, Applied: commitA, Phase: "idle at 1a2b3c4",
		Services:    services("1.4.2", ""),
		LastResult:  &Result{Outcome: OutcomeUpgraded, From: commitB, To: commitA, Time: ago(2 * time.Hour), Message: "api 1.4.1 -> 1.4.2, healthy in 12s"},
		Quarantined: []Quarantined{},
		Lease:       LeaseState{Backend: "etcd"},
		Fetch:       FetchState{Time: ago(12 * time.Second), LastSuccess: ago(12 * time.Second)},
		Events: []events.Event{
			{Time: ago(2*time.Hour + time.Minute), Type: events.UpgradeStarted, Host: "web-01", Group: "web", Commit: commitA, Service: "api", Message: "1.4.1 -> 1.4.2"},
			{Time: ago(2 * time.Hour), Type: events.UpgradeSucceeded, Host: "web-01", Group: "web", Commit: commitA, Service: "api", Message: "1.4.2 healthy after 12s"},
			{Time: ago(5 * time.Minute), Type: events.DriftFound, Host: "web-01", Group: "web", Service: "worker", Message: "drop-in worker.service.d/override.conf added"},
		},
		Version: "0.9.0",
		Time:    now,
	}
}

func upgradingState() State {
	s := idleState()
	s.Tracked = commitB
	s.Phase = "upgrading 1a2b3c4 -> 9f8e7d6: verifying 5/10 s, 2/3 checks passing"
	s.Services = services("1.4.2", "1.4.3")
	s.Txn = &TxnState{ID: "3f2a1b9c", From: commitA, To: commitB, State: "VERIFYING", Since: ago(5 * time.Second),
		Started: ago(40 * time.Second), Attempts: 1, Services: []string{"api"}}
	s.Lease = LeaseState{Backend: "etcd", Held: true, Since: ago(20 * time.Second)}
	s.Events = append(s.Events, events.Event{Time: ago(40 * time.Second), Type: events.UpgradeStarted, Host: "web-01", Group: "web", Commit: commitB, Service: "api", Message: "1.4.2 -> 1.4.3"})
	return s
}

// blueGreenState is a host moving a bluegreen service from its blue color to green.
func blueGreenState() State {
	s := upgradingState()
	s.Services[0].Color, s.Services[0].TargetColor = "blue", "green"
	s.Services[0].Units = []UnitState{{Name: "api@blue.service", Active: "active", Sub: "running"}, {Name: "api@green.service", Active: "active", Sub: "running"}}
	s.Services[0].Colors = []ColorState{{Name: "green", Version: "1.4.3", State: ColorActive}, {Name: "blue", Version: "1.4.2", State: ColorDraining}}
	return s
}

func failedState() State {
	s := idleState()
	s.Tracked = commitB
	s.Phase = "idle at 1a2b3c4"
	var out strings.Builder
	for i := 1; i <= 15; i++ {
		fmt.Fprintf(&out, "attempt %d: GET http://127.0.0.1:8080/healthz: 500 Internal Server Error\n", i)
	}
	out.WriteString("body: {\"status\":\"degraded\",\"db\":\"timeout\"}\t\x1b[31mred\x1b[0m \u202eevil\n\n")
	s.LastResult = &Result{Outcome: OutcomeReverted, From: commitA, To: commitB, Time: ago(3 * time.Minute),
		Message: "check health failed 3 times in a row; reverted to 1a2b3c4", Step: "verify", Check: "health", Output: out.String()}
	s.Quarantined = []Quarantined{{Commit: commitB, Reason: "check health failed on web-01", Time: ago(3 * time.Minute)}}
	s.Fetch = FetchState{Time: ago(4 * time.Second), LastSuccess: ago(15 * time.Minute),
		Error: "fetch https://git.example.com/ops/fleet.git: dial tcp 10.0.0.5:443: i/o timeout"}
	s.Events = append(s.Events,
		events.Event{Time: ago(4 * time.Minute), Type: events.UpgradeStarted, Host: "web-01", Commit: commitB, Service: "api", Message: "1.4.2 -> 1.4.3"},
		events.Event{Time: ago(3 * time.Minute), Type: events.UpgradeFailed, Host: "web-01", Commit: commitB, Service: "api", Message: "check health failed"},
		events.Event{Time: ago(3 * time.Minute), Type: events.RevertDone, Host: "web-01", Commit: commitA, Service: "api", Message: "1.4.2 healthy again"},
		events.Event{Time: ago(3 * time.Minute), Type: events.RolloutHalted, Host: "web-01", Commit: commitB, Message: "9f8e7d6 quarantined for group web"},
	)
	return s
}

func TestWriteTable(t *testing.T) {
	rejected := idleState()
	rejected.Tracked = commitB
	rejected.Rejected = &Rejected{Commit: commitB, Reason: "services/api/service.yaml:7: artifacts[0].sha256: required\nfleet.yaml:3: groups[0].name: \"Web\" does not match [a-z0-9][a-z0-9-]*", Time: ago(time.Minute)}
	rejected.LastResult = &Result{Outcome: OutcomeRejected, To: commitB, Time: ago(time.Minute), Message: "commit 9f8e7d6 is invalid; keeping 1a2b3c4"}
	fresh := State{Host: "db-03", Phase: "starting", Lease: LeaseState{Backend: "local"}, Version: "0.9.0"}
	fetcher := idleState()
	fetcher.Fetch.Shared = &SharedHead{Fetcher: "web-01", Self: true, Head: commitA, Heard: ago(12 * time.Second)}
	follower := idleState()
	follower.Fetch.Shared = &SharedHead{Fetcher: "web-02", Head: commitA, Heard: ago(3 * time.Minute), Stale: true}
	refused := idleState()
	refused.Fetch.Shared = &SharedHead{Fetcher: "web-02", Head: commitA, Heard: ago(20 * time.Second),
		Failed: "the git server answered 429 Too Many Requests and asked to wait 1m0s: list refs of https://git.example.com/ops/fleet.git: ..."}
	unheard := idleState()
	unheard.Fetch.Shared = &SharedHead{Stale: true}

	tests := []struct {
		name  string
		state State
		color bool
	}{
		{"idle", idleState(), false},
		{"upgrading", upgradingState(), false},
		{"failed", failedState(), false},
		{"rejected", rejected, false},
		{"fresh", fresh, false},
		{"bluegreen", blueGreenState(), false},
		{"shared-fetcher", fetcher, false},
		{"shared-stale", follower, false},
		{"shared-refused", refused, false},
		{"shared-unheard", unheard, false},
		{"shared-stale-color", follower, true},
		{"idle-color", idleState(), true},
		{"upgrading-color", upgradingState(), true},
		{"failed-color", failedState(), true},
		{"bluegreen-color", blueGreenState(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := WriteTable(&b, tt.state, tt.color); err != nil {
				t.Fatal(err)
			}
			got := b.Bytes()
			if !tt.color && bytes.ContainsRune(got, 0x1b) {
				t.Error("escape codes without color")
			}
			if tt.color && !bytes.Contains(got, []byte(styleReset)) {
				t.Error("no color when asked")
			}
			for _, r := range []rune{'\u202e', '\t'} {
				if bytes.ContainsRune(got, r) {
					t.Errorf("output holds %U", r)
				}
			}
			golden(t, tt.name+".golden", got)
		})
	}
}

// TestWriteTableColorIsOnlyStyle: the colored table is the plain one plus styles.
func TestWriteTableColorIsOnlyStyle(t *testing.T) {
	for _, s := range []State{idleState(), upgradingState(), failedState()} {
		var plain, colored bytes.Buffer
		if err := WriteTable(&plain, s, false); err != nil {
			t.Fatal(err)
		}
		if err := WriteTable(&colored, s, true); err != nil {
			t.Fatal(err)
		}
		stripped := ansi.ReplaceAllString(colored.String(), "")
		if stripped != plain.String() {
			t.Errorf("colored table without its styles:\n%s\nplain:\n%s", stripped, plain.String())
		}
	}
}

var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, os.ErrClosed }

func TestWriteTableError(t *testing.T) {
	if err := WriteTable(failingWriter{}, idleState(), false); err == nil {
		t.Fatal("a write error was lost")
	}
}

func TestAge(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s ago"},
		{0, "0s ago"},
		{1499 * time.Millisecond, "1s ago"},
		{59 * time.Second, "59s ago"},
		{61 * time.Second, "1m ago"},
		{time.Hour + 5*time.Minute, "1h05m ago"},
		{47 * time.Hour, "47h00m ago"},
		{50 * time.Hour, "2d2h ago"},
	}
	for _, tt := range tests {
		if got := age(tt.d); got != tt.want {
			t.Errorf("age(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}
