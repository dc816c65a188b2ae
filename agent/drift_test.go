package agent_test

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestDrift: with a poll of one minute, a drop-in added by hand (as `systemctl edit`
// does) is reported within moments: status, metric, event. With driftPolicy restore,
// a hand edit of a managed unit file is put back and the service restarted.
func TestDrift(t *testing.T) {
	h := newHarness(t)
	h.writeConfig("listen: {metrics: \"0.0.0.0:9732\"}\n")
	c1 := h.push(release{version: "1.0.0", mode: "ok"})
	h.startAgent()
	h.settled(c1)
	h.stopAgent()
	cfg, err := os.ReadFile(h.host.Path("/etc/baton/agent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	slow := strings.Replace(string(cfg), "poll: 1s", "poll: 1m", 1)
	if err := os.WriteFile(h.host.Path("/etc/baton/agent.yaml"), []byte(slow), 0o644); err != nil {
		t.Fatal(err)
	}
	h.startAgent()
	h.waitFor("the agent to be idle", 30*time.Second, func() bool { return strings.Contains(h.journal(), "idle at") })

	start := time.Now()
	h.host.MustExec(t, "sh", "-c", "mkdir -p /etc/systemd/system/demo.service.d && printf '[Service]\\nEnvironment=HAND=edited\\n' >/etc/systemd/system/demo.service.d/override.conf")
	h.waitFor("the drift to be reported", 30*time.Second, func() bool {
		return strings.Contains(h.journal(), "drift: a managed unit was changed outside baton")
	})
	t.Logf("drop-in reported %v after it was written (poll interval 1m)", time.Since(start).Round(10*time.Millisecond))
	for _, l := range strings.Split(h.journal(), "\n") {
		if strings.Contains(l, "drift") || strings.Contains(l, "idle at") {
			t.Log(l)
		}
	}
	st := h.status()
	if len(st.Services) != 1 || len(st.Services[0].Units) != 1 || !st.Services[0].Units[0].Drift {
		t.Errorf("status does not show the drift: %+v", st.Services)
	}
	if m := h.scrape(); !strings.Contains(m, `baton_unit_drift{unit="demo.service"} 1`) {
		t.Errorf("metrics do not show the drift")
	}
	if !strings.Contains(h.journal(), "demo.service.d/override.conf") {
		t.Errorf("the report does not name the drop-in")
	}
	h.stopAgent()

	// restore: the drop-in goes, a hand edit of the unit file is undone, the service restarts
	if err := os.WriteFile(h.host.Path("/etc/baton/agent.yaml"), []byte(slow+"driftPolicy: restore\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pid := h.unitProp("demo.service", "MainPID")
	h.startAgent()
	h.waitFor("the drift to be restored", time.Minute, func() bool {
		_, err := os.Stat(h.host.Path("/etc/systemd/system/demo.service.d/override.conf"))
		return os.IsNotExist(err) && strings.Contains(h.journal(), "restored drifted units")
	})
	if h.unitProp("demo.service", "MainPID") == pid {
		t.Errorf("demo.service was not restarted after its drop-in was removed")
	}
	h.consistent()
}
