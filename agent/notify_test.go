package agent_test

import (
	"context"
	"strings"
	"testing"
	"time"
)

// unitProp reads one property of a unit in the host.
func (h *harness) unitProp(unit, prop string) string {
	out, _ := h.host.Exec(context.Background(), "systemctl", "show", "-P", prop, unit)
	return strings.TrimSpace(string(out))
}

// TestSystemdIntegration runs the agent as baton.service does (Type=notify, a
// watchdog, exit 75 restarted): systemd sees it ready and its phase, the watchdog is
// fed while the loop turns, a restart request from the package manager restarts it,
// and a main loop blocked on purpose gets it restarted by the watchdog.
func TestSystemdIntegration(t *testing.T) {
	h := newHarness(t)
	c1 := h.push(release{version: "1.0.0", mode: "ok"})
	props := []string{"Type=notify", "WatchdogSec=3s", "Restart=on-failure", "RestartSec=200ms", "RestartForceExitStatus=75"}
	// systemd-run returns once a Type=notify service has sent READY=1.
	h.startAgentWith(props)
	if got := h.unitProp(h.host.AgentUnit(), "ActiveState"); got != "active" {
		t.Fatalf("right after start the agent is %q, want active (READY sent)", got)
	}
	h.settled(c1)
	h.waitFor("STATUS to show the idle phase", 30*time.Second, func() bool {
		return strings.HasPrefix(h.unitProp(h.host.AgentUnit(), "StatusText"), "idle at "+short(c1))
	})

	// Three watchdog intervals pass: the pings keep it alive.
	pid := h.unitProp(h.host.AgentUnit(), "MainPID")
	time.Sleep(10 * time.Second)
	if got := h.unitProp(h.host.AgentUnit(), "MainPID"); got != pid || h.unitProp(h.host.AgentUnit(), "NRestarts") != "0" {
		t.Fatalf("a healthy agent was restarted (pid %s -> %s, NRestarts %s)", pid, got, h.unitProp(h.host.AgentUnit(), "NRestarts"))
	}

	// The package manager asks for a restart: the idle agent exits 75 and comes back.
	h.host.MustExec(t, "sh", "-c", "mkdir -p /run/baton && touch /run/baton/restart-requested")
	h.waitFor("the agent to restart on request", 30*time.Second, func() bool {
		p := h.unitProp(h.host.AgentUnit(), "MainPID")
		return p != pid && p != "0" && h.host.AgentActive()
	})
	if _, err := h.host.Exec(context.Background(), "test", "-e", "/run/baton/restart-requested"); err == nil {
		t.Errorf("the restart request was not consumed")
	}
	if j := h.journal(); !strings.Contains(j, "exiting to be restarted") {
		t.Errorf("no log line for the requested restart")
	}
	h.stopAgent()

	// A main loop that blocks is killed by the watchdog and restarted.
	h.startAgentWith(props, "BATON_FAILPOINT=HANG")
	h.waitFor("the watchdog to restart a hung agent", time.Minute, func() bool {
		return h.unitProp(h.host.AgentUnit(), "NRestarts") != "0"
	})
	if j := h.journal(); !strings.Contains(j, "failpoint: blocking the main loop") {
		t.Errorf("the agent did not hang as asked")
	}
}
