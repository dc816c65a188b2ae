package migrate

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/baton-fleet/baton/events"
	"github.com/baton-fleet/baton/spec"
)

func TestDecide(t *testing.T) {
	start := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	e := func(state, sum string) *Entry {
		return &Entry{Service: "api", ID: "0007-orders-status", Version: "2.0.0", State: state, Host: "web-01", Start: start, Checksum: sum, Error: "exit status 3: ERROR: relation exists"}
	}
	for _, tt := range []struct {
		name       string
		entry      *Entry
		rerunnable bool
		run        bool
		halt       string
	}{
		{"never run", nil, false, true, ""},
		{"pending after a --rerun", e(StatePending, "old"), false, true, ""},
		{"done", e(StateDone, "sum"), false, false, ""},
		{"done with another command", e(StateDone, "0123456789abcdef"), false, false,
			"migration 0007-orders-status of api ran on web-01 at 2026-12-06T12:00:00Z with another command (checksum 0123456789ab, the release's is sum): a migration that ran is never changed; restore it, and put the change in a migration of its own id"},
		{"interrupted", e(StateRunning, "sum"), false, false,
			"migration 0007-orders-status interrupted on web-01 at 2026-12-06T12:00:00Z (api 2.0.0): it is not rerunnable, so it is not run again; check the database, then baton migration resolve api 0007-orders-status --done if it completed, or --rerun"},
		{"interrupted, rerunnable", e(StateRunning, "sum"), true, true, ""},
		{"interrupted with another command", e(StateRunning, "other"), true, false,
			"migration 0007-orders-status of api ran on web-01 at 2026-12-06T12:00:00Z with another command (checksum other, the release's is sum): a migration that ran is never changed; restore it, and put the change in a migration of its own id"},
		{"failed", e(StateFailed, "sum"), true, false,
			"migration 0007-orders-status of api failed on web-01 at 2026-12-06T12:00:00Z: exit status 3: ERROR: relation exists; fix the cause, then baton migration resolve api 0007-orders-status --rerun"},
		{"unreadable", &Entry{Service: "api", ID: "x", State: StateUnreadable, Error: "the ledger entry does not parse: bad"}, true, false,
			"migration x of api: the ledger entry does not parse: bad; fix or delete the key with etcdctl"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			run, halt := decide(tt.entry, tt.rerunnable, "sum")
			got := ""
			if halt != nil {
				got = halt.Error()
			}
			if run != tt.run || got != tt.halt {
				t.Errorf("decide = %v, %q\nwant %v, %q", run, got, tt.run, tt.halt)
			}
		})
	}
}

func TestChecksum(t *testing.T) {
	a := Checksum([]string{"/usr/bin/psql", "-c", "SELECT 1"})
	for _, other := range [][]string{{"/usr/bin/psql", "-c", "SELECT 2"}, {"/usr/bin/psql", "-c SELECT 1"}, {"/usr/bin/psql", "-c", "SELECT", "1"}, {"/usr/bin/psql", "-c", "SELECT 1", ""}} {
		if Checksum(other) == a {
			t.Errorf("Checksum(%q) = Checksum of another command", other)
		}
	}
	if Checksum([]string{"/usr/bin/psql", "-c", "SELECT 1"}) != a {
		t.Error("Checksum is not stable")
	}
	// Two hosts with state directories of their own run the same migration.
	m1 := spec.Migration{Command: []string{"/srv/baton/releases/api/2.0.0-ab/api", "up"}, Canonical: []string{"/var/lib/baton/releases/api/2.0.0-ab/api", "up"}}
	m2 := spec.Migration{Command: []string{"/var/lib/baton/releases/api/2.0.0-ab/api", "up"}, Canonical: []string{"/var/lib/baton/releases/api/2.0.0-ab/api", "up"}}
	if sumOf(m1) != sumOf(m2) || sumOf(m1) != Checksum(m2.Command) {
		t.Error("the checksum depends on the host's state directory")
	}
	if sumOf(spec.Migration{Command: m1.Command}) != Checksum(m1.Command) {
		t.Error("a migration without a canonical rendering is not checksummed by its command")
	}
}

func TestParseEntry(t *testing.T) {
	for _, tt := range []struct{ value, state string }{
		{`{"state":"done","host":"web-01","checksum":"x"}`, StateDone},
		{`{"state":"running"}`, StateRunning},
		{`{"state":"pending"}`, StatePending},
		{`{"state":"failed"}`, StateFailed},
		{`{"state":"finished"}`, StateUnreadable},
		{`{}`, StateUnreadable},
		{`not json`, StateUnreadable},
		{``, StateUnreadable},
		{`{"state":"done","start":"yesterday"}`, StateUnreadable},
	} {
		e := parseEntry("api", "7", []byte(tt.value))
		if e.State != tt.state || e.Service != "api" || e.ID != "7" {
			t.Errorf("parseEntry(%s) = %+v, want state %s", tt.value, e, tt.state)
		}
		if tt.state == StateUnreadable && e.Error == "" {
			t.Errorf("parseEntry(%s) does not say why it is unreadable", tt.value)
		}
	}
}

// FuzzParseEntry: any value under a ledger key reads as an entry of a known state,
// never a panic, and what is not a runnable state stops a runner.
func FuzzParseEntry(f *testing.F) {
	f.Add([]byte(`{"state":"done","host":"web-01","start":"2026-12-06T12:00:00Z","checksum":"x"}`))
	f.Add([]byte(`{"state":"running"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, v []byte) {
		e := parseEntry("api", "7", v)
		run, halt := decide(&e, false, "x")
		switch e.State {
		case StatePending:
			if !run {
				t.Fatalf("a pending entry does not run: %s", v)
			}
		case StateDone:
		case StateRunning, StateFailed, StateUnreadable:
			if run || halt == nil {
				t.Fatalf("entry %+v from %q does not stop the runner", e, v)
			}
		default:
			t.Fatalf("state %q from %q", e.State, v)
		}
		if _, err := json.Marshal(e); err != nil {
			t.Fatal(err)
		}
	})
}

func TestEntryEvent(t *testing.T) {
	start := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	e := Entry{Service: "api", ID: "0007", Phase: "expand", Version: "2.0.0", State: StateDone, Host: "web-01", Start: start, End: start.Add(1500 * time.Millisecond)}
	ev := e.Event()
	if ev.Type != events.MigrationDone || ev.Host != "web-01" || ev.Service != "api" || ev.Fields["duration"] != "1.5s" || ev.Fields["id"] != "0007" || ev.Message != "migration 0007 of api 2.0.0 done" || ev.Fields["error"] != "" {
		t.Errorf("done: %+v", ev)
	}
	e.State, e.Error, e.Output = StateFailed, "exit status 3", "ERROR: x\n"
	ev = e.Event()
	if ev.Type != events.MigrationFailed || ev.Fields["error"] != "exit status 3" || ev.Fields["output"] != "ERROR: x\n" || ev.Message != "migration 0007 of api 2.0.0 failed: exit status 3" {
		t.Errorf("failed: %+v", ev)
	}
}
