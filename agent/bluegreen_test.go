package agent_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/drain"
	"github.com/baton-fleet/baton/internal/testfleet"
	"github.com/baton-fleet/baton/internal/testhaproxy"
)

// blueGreenUnit runs the demo service on its color's port.
var blueGreenUnit = testfleet.DemoUnit("baton demo {{ .Version }} ({{ .Color }})", "{{ .Port }}", "")

// pushBlueGreen commits a fleet repository in which the hosts run the demo service at
// version and mode with two colors behind HAProxy's admin socket at admin.
func (h *harness) pushBlueGreen(version, mode, admin string) string {
	h.t.Helper()
	return h.repo.CommitFiles("demo "+version+" bluegreen ("+mode+")", h.blueGreenFiles(version, mode, admin))
}

// blueGreenFiles are the files of a fleet repository in which the hosts run the demo
// service at version and mode with two colors behind HAProxy's admin socket at admin.
func (h *harness) blueGreenFiles(version, mode, admin string) map[string]string {
	h.t.Helper()
	url, sum := h.rel.Publish(h.t, version, mode)
	service := fmt.Sprintf(`version: %q
units: [demo.service]
artifacts:
  - url: %q
    sha256: %q
    name: demo
deploy:
  strategy: bluegreen
  colors:
    blue: {port: 8081}
    green: {port: 8082}
  drainTimeout: 30s
  drainIdle: 2s
drain:
  haproxy: {socket: %q, backend: web, server: "{{ .Host }}-{{ .Color }}"}
checks:
  - name: health
    http: {url: "http://127.0.0.1:{{ .Port }}/healthz", contains: ok}
    interval: 200ms
    timeout: 1s
    successes: 2
    failures: 3
`, version, url, sum, admin)
	return map[string]string{
		"fleet.yaml":                 fleetYAML,
		"services/demo/service.yaml": service,
		"services/demo/demo.service": blueGreenUnit,
	}
}

// colorState is HAProxy's admin state of host's color server: ready, drain or maint.
func colorState(lb *testhaproxy.HAProxy, host, color string) string {
	st, err := (&drain.HAProxy{Addr: lb.AdminTCP, Backend: "web", Server: host + "-" + color}).State(context.Background())
	if err != nil {
		return "unknown: " + err.Error()
	}
	return st.Admin.String()
}

// active is the unit's state in the host: active, inactive, failed.
func (h *harness) active(unit string) string {
	out, _ := h.host.Exec(context.Background(), "systemctl", "is-active", unit)
	return strings.TrimSpace(string(out))
}

// TestBlueGreenCrashAtEveryStep kills the agent (SIGKILL) right after it persists each
// state of a bluegreen upgrade, starts it again, and checks that one color runs and
// serves, the one the last good record names, ready in HAProxy with the other in maint:
// never two colors left running, never none.
func TestBlueGreenCrashAtEveryStep(t *testing.T) {
	h := newHarness(t)
	lb := testhaproxy.Start(t, testhaproxy.Config{Backend: "web", AdminTCP: h.gateway + ":0", Cookie: "SRV insert indirect nocache", Servers: []testhaproxy.Server{
		{Name: "h1-blue", Addr: h.host.IP + ":8081", Check: true}, {Name: "h1-green", Addr: h.host.IP + ":8082", Check: true}}})
	c := h.pushBlueGreen("1.0.0", "ok", lb.AdminTCP)
	h.startAgent()
	h.settled(c)
	h.stopAgent()
	tests := []struct {
		failpoint string
		mode      string
		committed bool // else quarantined, and the old color serves
	}{
		{"SWITCHING", "ok", true}, // the new color stopped, not quarantined, then tried again
		{"VERIFYING", "ok", true}, // checked again on its port
		{"VERIFYING+cutover", "ok", true},
		{"COMMITTED", "ok", true},
		{"ROLLING_BACK", "fail-health", false},
	}
	for i, tt := range tests {
		t.Run(tt.failpoint, func(t *testing.T) {
			h.t = t
			before := h.host.LastGood()
			c := h.pushBlueGreen(fmt.Sprintf("5.%d.0", i), tt.mode, lb.AdminTCP)
			h.startAgent("BATON_FAILPOINT=" + tt.failpoint)
			h.waitFor("the agent to crash at "+tt.failpoint, 3*time.Minute, func() bool { return !h.host.AgentActive() })
			h.startAgent()
			h.settled(c)
			h.stopAgent()
			lg := h.host.LastGood()
			switch {
			case tt.committed && lg.Revision != c:
				t.Fatalf("last good is %s, want %s\n%s", short(lg.Revision), short(c), h.journal())
			case !tt.committed && (lg.Revision != before.Revision || !h.host.Quarantined(c)):
				t.Fatalf("last good is %s (want %s), quarantined %v", short(lg.Revision), short(before.Revision), h.host.Quarantined(c))
			}
			active := lg.Services["demo"].Color
			idle := map[string]string{"blue": "green", "green": "blue"}[active]
			if a, b := h.active("demo@"+active+".service"), h.active("demo@"+idle+".service"); a != "active" || b == "active" {
				t.Errorf("the active color %s is %s and the idle %s is %s: want one color running", active, a, idle, b)
			}
			h.waitFor("HAProxy to send clients to "+active+" alone", 30*time.Second, func() bool {
				return colorState(lb, "h1", active) == "ready" && colorState(lb, "h1", idle) == "maint"
			})
			version := lg.Services["demo"].Version
			resp, err := testClient.Get(lb.URL + "/version")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("X-Demo-Version"); got != version {
				t.Errorf("HAProxy answers with %q, want %s", got, version)
			}
		})
	}
}
