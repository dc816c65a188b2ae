package agent_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestUpgradeAndBadReleases upgrades a real host from v1 to v2, then pushes one bad
// release after another: each must be reverted (or never started), quarantined, and
// leave the host serving v2. A newer good commit then goes through.
func TestUpgradeAndBadReleases(t *testing.T) {
	h := newHarness(t)
	c1 := h.push(release{version: "1.0.0", mode: "ok"})
	h.startAgent()
	h.settled(c1)
	if lg := h.host.LastGood(); lg.Revision != c1 || lg.Services["demo"].Version != "1.0.0" {
		t.Fatalf("after the first commit the last good record is %+v", lg)
	}
	h.consistent()

	c2 := h.push(release{version: "2.0.0", mode: "ok"})
	h.settled(c2)
	if h.host.Quarantined(c2) {
		t.Fatalf("a good release was quarantined")
	}
	h.consistent()
	if got := h.host.Served(); got != "2.0.0" {
		t.Fatalf("serving %q after the upgrade, want 2.0.0", got)
	}

	gateway := strings.TrimPrefix(h.rel.URL, "http://")
	gateway = gateway[:strings.LastIndex(gateway, ":")]
	bad := []struct {
		name   string
		rel    release
		reason string // the quarantine's reason holds this
	}{
		{"fails its health check", release{version: "3.0.0", mode: "fail-health"}, "verify: check health failed 10 times in a row"},
		{"crashes after 3s", release{version: "3.1.0", mode: "crash-after"}, "verify: demo.service"},
		// systemd's verdict (the unit exited) or the health check (nothing listens), as
		// the process starts and exits faster or slower than three probes
		{"exits at once", release{version: "3.2.0", mode: "exit"}, "verify: "},
		{"unit file systemd rejects", release{version: "3.3.0", mode: "ok",
			unit: "[Unit]\nDescription=no ExecStart\n\n[Service]\nExecStop=/bin/true\n"}, "switch: "},
		{"artifact with a wrong sha256", release{version: "3.4.0", mode: "ok", sha256: strings.Repeat("0", 64)}, "stage: "},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			h.t = t
			start := time.Now()
			c := h.push(tt.rel)
			h.settled(c)
			reason := h.host.QuarantineReason(c)
			if reason == "" {
				t.Fatalf("bad release %s was not quarantined (last good %s)", tt.rel.version, short(h.host.LastGood().Revision))
			}
			if !strings.Contains(reason, tt.reason) {
				t.Errorf("quarantined for %q, want a reason holding %q", reason, tt.reason)
			}
			if lg := h.host.LastGood(); lg.Revision != c2 {
				t.Errorf("last good is %s, want %s", short(lg.Revision), short(c2))
			}
			h.consistent()
			t.Logf("back on 2.0.0 %v after the push; quarantined for: %s", time.Since(start).Round(100*time.Millisecond), reason)
		})
	}
	h.t = t

	// The host's own trouble is not the release's fault: nothing is quarantined, and the
	// host tries again after a backoff.
	t.Run("download server down", func(t *testing.T) {
		h.t = t
		c := h.push(release{version: "3.5.0", mode: "ok", url: "http://" + gateway + ":1/demo"})
		h.waitFor("the agent to give up staging for now", 2*time.Minute, func() bool {
			return strings.Contains(h.journal(), "could not stage") && strings.Contains(h.journal(), short(c)) && h.host.TxnState() == ""
		})
		if reason := h.host.QuarantineReason(c); reason != "" {
			t.Fatalf("a release the host could not download was quarantined: %s", reason)
		}
		if !strings.Contains(h.status().Phase, "waiting until") {
			t.Errorf("phase = %q, want the backoff", h.status().Phase)
		}
		if lg := h.host.LastGood(); lg.Revision != c2 {
			t.Errorf("last good is %s, want %s", short(lg.Revision), short(c2))
		}
		h.consistent()
	})
	h.t = t

	t.Run("bad input", func(t *testing.T) {
		h.t = t
		h.repo.WriteFile("fleet.yaml", strings.Replace(fleetYAML, "hosts:", "hostz:", 1))
		c := h.repo.Commit("a typo")
		h.waitFor("the agent to reject the commit", time.Minute, func() bool {
			return strings.Contains(h.journal(), "commit rejected; keeping the last good revision") && strings.Contains(h.journal(), short(c))
		})
		if !strings.Contains(h.journal(), `fleet.yaml:4: unknown field \"hostz\"`) {
			t.Errorf("the rejection does not name the file and line:\n%s", h.journal())
		}
		if !h.host.AgentActive() || h.host.LastGood().Revision != c2 || h.host.TxnState() != "" {
			t.Fatalf("after a bad commit: agent active %v, last good %s, txn %q", h.host.AgentActive(), short(h.host.LastGood().Revision), h.host.TxnState())
		}
		h.consistent()
	})
	h.t = t

	c4 := h.push(release{version: "4.0.0", mode: "ok"})
	h.settled(c4)
	if h.host.LastGood().Revision != c4 {
		t.Fatalf("a good commit after bad ones did not go through")
	}
	h.consistent()
}

// TestCrashAtEveryState kills the agent (SIGKILL) right after it persists each state
// of the transaction, starts it again, and checks that the host always ends serving a
// good version, with its state consistent and nothing half-written.
func TestCrashAtEveryState(t *testing.T) {
	h := newHarness(t)
	c := h.push(release{version: "1.0.0", mode: "ok"})
	h.startAgent()
	h.settled(c)
	h.stopAgent()

	tests := []struct {
		state     string
		mode      string // the release pushed
		committed bool   // the commit ends applied (else quarantined and reverted)
	}{
		{"PREPARED", "ok", true},
		{"STAGED", "ok", true},
		{"LEASED", "ok", true},
		{"SWITCHING", "ok", true}, // reverted, not quarantined (an interruption), then tried again
		{"VERIFYING", "ok", true},
		{"COMMITTED", "ok", true},
		{"ROLLING_BACK", "fail-health", false},
		{"FAILED", "fail-health", false},
	}
	for i, tt := range tests {
		t.Run(tt.state, func(t *testing.T) {
			h.t = t
			before := h.host.LastGood().Revision
			c := h.push(release{version: "5." + string(rune('0'+i)) + ".0", mode: tt.mode})
			h.startAgent("BATON_FAILPOINT=" + tt.state)
			h.waitFor("the agent to crash at "+tt.state, 3*time.Minute, func() bool { return !h.host.AgentActive() })
			if got := h.host.TxnState(); got != tt.state {
				t.Fatalf("after the crash the transaction is in %q, want %q", got, tt.state)
			}
			h.startAgent()
			h.settled(c)
			h.stopAgent()
			switch lg := h.host.LastGood(); {
			case tt.committed && lg.Revision != c:
				t.Errorf("last good is %s, want the new commit %s", short(lg.Revision), short(c))
			case !tt.committed && (lg.Revision != before || !h.host.Quarantined(c)):
				t.Errorf("last good is %s (want %s) and the commit quarantined: %v", short(lg.Revision), short(before), h.host.Quarantined(c))
			}
			h.consistent()
			leftovers, _ := os.ReadDir(h.host.Path(stateDir))
			for _, e := range leftovers {
				if strings.Contains(e.Name(), ".tmp") {
					t.Errorf("half-written file left in the state directory: %s", e.Name())
				}
			}
		})
	}
}

// TestLoopGuard crashes the agent in the same state on every start: after three
// resumes it must stop resuming, revert, quarantine the commit and say why.
func TestLoopGuard(t *testing.T) {
	h := newHarness(t)
	c1 := h.push(release{version: "1.0.0", mode: "ok"})
	h.startAgent()
	h.settled(c1)
	h.stopAgent()

	c2 := h.push(release{version: "2.0.0", mode: "fail-health"})
	for i := range 3 {
		h.startAgent("BATON_FAILPOINT=ROLLING_BACK")
		h.waitFor(fmt.Sprintf("crash %d", i+1), 2*time.Minute, func() bool { return !h.host.AgentActive() })
		if got := h.host.TxnState(); got != "ROLLING_BACK" {
			t.Fatalf("after crash %d the transaction is in %q, want ROLLING_BACK", i+1, got)
		}
	}
	// The fourth start would crash again in ROLLING_BACK; the guard must not resume it.
	h.startAgent("BATON_FAILPOINT=ROLLING_BACK")
	h.settled(c2)
	reason := h.host.QuarantineReason(c2)
	if !strings.Contains(reason, "stopped 3 times") {
		t.Errorf("quarantined for %q, want the loop guard's reason", reason)
	}
	if lg := h.host.LastGood(); lg.Revision != c1 {
		t.Errorf("last good is %s, want %s", short(lg.Revision), short(c1))
	}
	h.consistent()
}

// TestOwnershipAndRemoval: a unit file that baton did not create is never touched,
// even when the repository names it; a service dropped from the repository is
// stopped, disabled and deleted.
func TestOwnershipAndRemoval(t *testing.T) {
	h := newHarness(t)
	c1 := h.push(release{version: "1.0.0", mode: "ok"})
	h.startAgent()
	h.settled(c1)

	foreign := "[Unit]\nDescription=not baton's\n\n[Service]\nExecStart=/bin/sleep infinity\n"
	if err := os.WriteFile(h.host.Path("/etc/systemd/system/foreign.service"), []byte(foreign), 0o644); err != nil {
		t.Fatal(err)
	}
	h.repo.WriteFile("services/other/service.yaml", "version: \"1\"\nunits: [foreign.service]\n")
	h.repo.WriteFile("services/other/foreign.service", "[Service]\nExecStart=/bin/true\n")
	h.repo.WriteFile("fleet.yaml", strings.Replace(fleetYAML, "services: [demo]", "services: [demo, other]", 1))
	c2 := h.repo.Commit("claim a foreign unit")
	// The host is in the way, not the release: the agent says so and waits, with
	// nothing quarantined, and goes on once the file is gone (below, with a commit
	// that no longer claims it).
	blocked := "blocked: unit file foreign.service exists in /etc/systemd/system and baton does not own it; remove it, or rename the unit in the repository"
	h.waitFor("the agent to refuse the foreign unit", time.Minute, func() bool { return h.status().Phase == blocked })
	if st := h.status(); st.LastResult == nil || st.LastResult.To != c2 || st.LastResult.Message != blocked {
		t.Errorf("last result = %+v, want the reason", st.LastResult)
	}
	if got, _ := os.ReadFile(h.host.Path("/etc/systemd/system/foreign.service")); string(got) != foreign {
		t.Errorf("the foreign unit file was changed:\n%s", got)
	}
	if h.host.Quarantined(c2) || h.host.TxnState() != "" {
		t.Errorf("a host-local conflict quarantined the commit (%q) or opened a transaction (%q)", h.host.QuarantineReason(c2), h.host.TxnState())
	}
	h.consistent()

	h.repo.Remove("services/other")
	h.repo.Remove("services/demo")
	h.repo.WriteFile("fleet.yaml", strings.Replace(fleetYAML, "services: [demo]", "services: []", 1))
	c3 := h.repo.Commit("drop every service")
	h.settled(c3)
	if h.host.LastGood().Revision != c3 {
		t.Fatalf("dropping the services was not committed: %s", h.host.QuarantineReason(c3))
	}
	if _, err := os.Stat(h.host.Path("/etc/systemd/system/demo.service")); !os.IsNotExist(err) {
		t.Errorf("demo.service still on disk: %v", err)
	}
	out, _ := h.host.Exec(context.Background(), "systemctl", "is-active", "demo.service")
	if state := strings.TrimSpace(string(out)); state == "active" {
		t.Errorf("demo.service is still %s", state)
	}
	if h.host.Served() != "" {
		t.Error("the dropped service still answers")
	}
	if got, _ := os.ReadFile(h.host.Path("/etc/systemd/system/foreign.service")); string(got) != foreign {
		t.Error("the foreign unit file was touched by the removal")
	}
	if _, err := os.Stat(h.host.Path(stateDir + "/releases/demo")); !os.IsNotExist(err) {
		t.Errorf("the dropped service's releases are still on disk: %v", err)
	}
}

// TestFetchErrorsAreNotFatal takes the repository away from a running agent: it must
// report the fetch errors, keep running and serving, and pick up the next commit once
// the repository is back.
func TestFetchErrorsAreNotFatal(t *testing.T) {
	h := newHarness(t)
	c1 := h.push(release{version: "1.0.0", mode: "ok"})
	h.startAgent()
	h.settled(c1)

	off := h.repo.Bare + ".off"
	if err := os.Rename(h.repo.Bare, off); err != nil {
		t.Fatal(err)
	}
	h.waitFor("fetch errors in the journal", time.Minute, func() bool {
		return strings.Count(h.journal(), "fetch the fleet repository") >= 2
	})
	if !h.host.AgentActive() || h.host.Served() != "1.0.0" {
		t.Fatalf("without its repository: agent active %v, serving %q", h.host.AgentActive(), h.host.Served())
	}
	if err := os.Rename(off, h.repo.Bare); err != nil {
		t.Fatal(err)
	}
	c2 := h.push(release{version: "2.0.0", mode: "ok"})
	h.settled(c2)
	if h.host.LastGood().Revision != c2 {
		t.Fatalf("the commit pushed after the outage was not applied: %s", h.host.QuarantineReason(c2))
	}
	h.consistent()
}
