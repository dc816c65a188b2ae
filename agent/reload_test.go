package agent_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestConfigReload: the agent picks up a good change to agent.yaml at once (a poll of
// one minute becomes one second), refuses a bad one with its file:line reason and
// keeps running on the current one, and reloads on SIGHUP.
func TestConfigReload(t *testing.T) {
	h := newHarness(t)
	c1 := h.push(release{version: "1.0.0", mode: "ok"})
	cfg, err := os.ReadFile(h.host.Path("/etc/baton/agent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	fast := string(cfg)
	slow := strings.Replace(fast, "poll: 1s", "poll: 1m", 1)
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(h.host.Path("/etc/baton/agent.yaml"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(slow)
	h.startAgent()
	h.settled(c1) // the first poll is at start

	write(fast)
	h.waitFor("the reload", 30*time.Second, func() bool {
		return strings.Contains(h.journal(), `msg="configuration reloaded" host=h1 why="the file changed" poll=1s`)
	})
	c2 := h.push(release{version: "2.0.0", mode: "ok"})
	h.waitFor("the faster poll to see the new commit", 30*time.Second, func() bool { return h.host.LastGood().Revision == c2 })

	write(strings.Replace(fast, "branch:", "brnch:", 1))
	h.waitFor("the bad configuration to be refused", 30*time.Second, func() bool {
		return strings.Contains(h.journal(), "configuration not reloaded; keeping the current one")
	})
	if j := h.journal(); !strings.Contains(j, `agent.yaml:5: unknown field \"brnch\" (did you mean \"branch\"?)`) {
		t.Errorf("the refusal does not give the file and line:\n%s", j)
	}
	if !h.host.AgentActive() {
		t.Fatal("the agent stopped on a bad configuration")
	}
	c3 := h.push(release{version: "3.0.0", mode: "ok"})
	h.settled(c3)

	write(fast)
	h.waitFor("the good configuration again", 30*time.Second, func() bool {
		return strings.Count(h.journal(), `msg="configuration reloaded"`) >= 2
	})
	h.host.MustExec(t, "systemctl", "kill", "--kill-whom=main", "-s", "HUP", h.host.AgentUnit())
	h.waitFor("a reload on SIGHUP", 30*time.Second, func() bool {
		// a change of the file still waiting to be read joins the signal's reload
		return regexp.MustCompile(`msg="configuration reloaded" host=h1 why="?[^"]*SIGHUP`).MatchString(h.journal())
	})
	if !h.host.AgentActive() {
		t.Fatal("SIGHUP stopped the agent")
	}
}
