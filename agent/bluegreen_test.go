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
const blueGreenUnit = `[Unit]
Description=baton demo {{ .Version }} ({{ .Color }})

[Service]
ExecStart={{ .Release }}/demo --listen 0.0.0.0:{{ .Port }}
Restart=on-failure
RestartSec=300ms

[Install]
WantedBy=multi-user.target
`

// pushBlueGreen commits a fleet repository in which the hosts run the demo service at
// version and mode with two colors behind HAProxy's admin socket at admin.
func (h *harness) pushBlueGreen(version, mode, admin string) string {
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
	return h.repo.CommitFiles("demo "+version+" bluegreen ("+mode+")", map[string]string{
		"fleet.yaml":                 fleetYAML,
		"services/demo/service.yaml": service,
		"services/demo/demo.service": blueGreenUnit,
	})
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

// TestBlueGreenKeepsSessions: two hosts on the etcd lease, each running the demo
// service in two colors behind HAProxy with cookie persistence, under clients that log
// in and keep their session (held in the process's memory: another process answers
// 401). A good release starts on each host's idle color, is checked there before any
// client reaches it, takes new clients, and the old color serves its sessions to their
// end before it stops: no request fails and no session is lost. A bad release fails on
// its color's own port: not one client request reaches it, the first host stops it,
// and the group halts.
func TestBlueGreenKeepsSessions(t *testing.T) {
	_, hosts := newEtcdFleet(t, 2)
	h1 := hosts[0]
	var servers []testhaproxy.Server
	for _, h := range hosts {
		for _, c := range []struct{ color, port string }{{"blue", "8081"}, {"green", "8082"}} {
			servers = append(servers, testhaproxy.Server{Name: h.host.Name + "-" + c.color, Addr: h.host.IP + ":" + c.port, Check: true})
		}
	}
	lb := testhaproxy.Start(t, testhaproxy.Config{Backend: "web", Servers: servers, AdminTCP: h1.gateway + ":0", Cookie: "SRV insert indirect nocache"})
	states := func(color string) string {
		var out []string
		for _, h := range hosts {
			out = append(out, colorState(lb, h.host.Name, color))
		}
		return strings.Join(out, ",")
	}

	c1 := h1.pushBlueGreen("1.0.0", "ok", lb.AdminTCP)
	for _, h := range hosts {
		h.startAgent()
	}
	for _, h := range hosts {
		h.settled(c1)
		if h.host.LastGood().Revision != c1 {
			t.Fatalf("%s did not install the first release: %s\n%s", h.host.Name, h.host.QuarantineReason(c1), h.journal())
		}
	}
	h1.waitFor("blue to serve on both hosts", time.Minute, func() bool { return states("blue") == "ready,ready" && states("green") == "maint,maint" })

	// A good release: to green on each host, one at a time, sessions kept.
	s := testfleet.StartSessions(lb.URL, 8, 10, 100*time.Millisecond, 5*time.Minute)
	time.Sleep(2 * time.Second)
	c2 := h1.pushBlueGreen("2.0.0", "ok", lb.AdminTCP)
	for _, h := range hosts {
		h.settled(c2)
	}
	time.Sleep(time.Second)
	counts := s.Finish()
	t.Logf("good release: %d requests in %d sessions, %d failed, %d sessions lost; answers by version %v", counts.Sent, counts.Completed, counts.Failed, counts.Lost, counts.Versions)
	for _, h := range hosts {
		lg := h.host.LastGood()
		if lg.Revision != c2 || lg.Services["demo"].Color != "green" {
			t.Errorf("%s: last good %s color %q, want %s on green\n%s", h.host.Name, short(lg.Revision), lg.Services["demo"].Color, short(c2), h.journal())
		}
		if a, b := h.active("demo@green.service"), h.active("demo@blue.service"); a != "active" || b == "active" {
			t.Errorf("%s: green is %s and blue %s, want green alone running", h.host.Name, a, b)
		}
	}
	if got := states("green") + " " + states("blue"); got != "ready,ready maint,maint" {
		t.Errorf("HAProxy: green %s, want ready and blue maint", got)
	}
	if counts.Failed != 0 || counts.Lost != 0 {
		t.Errorf("during a bluegreen rollout %d requests failed and %d sessions were lost, want none", counts.Failed, counts.Lost)
	}
	if counts.Versions["2.0.0"] == 0 || counts.Versions["1.0.0"] == 0 {
		t.Errorf("the clients were not served by both versions: %v", counts.Versions)
	}

	// A bad release: checked on blue's own port, it never sees a client.
	s = testfleet.StartSessions(lb.URL, 8, 10, 100*time.Millisecond, 5*time.Minute)
	c3 := h1.pushBlueGreen("3.0.0", "fail-health", lb.AdminTCP)
	var failedOn *harness
	h1.waitFor("one host to fail the bad release", 3*time.Minute, func() bool {
		for _, h := range hosts {
			if h.host.Quarantined(c3) && h.host.TxnState() == "" {
				failedOn = h
				return true
			}
		}
		return false
	})
	time.Sleep(5 * time.Second) // time for the other host to take it, were it not halted
	counts = s.Finish()
	t.Logf("bad release: %d requests, %d failed, %d sessions lost; answers by version %v", counts.Sent, counts.Failed, counts.Lost, counts.Versions)
	if n := counts.Versions["3.0.0"]; n != 0 {
		t.Errorf("the bad release answered %d client requests, want none", n)
	}
	if counts.Failed != 0 || counts.Lost != 0 {
		t.Errorf("during a bad bluegreen release %d requests failed and %d sessions were lost, want none", counts.Failed, counts.Lost)
	}
	for _, h := range hosts {
		if h != failedOn && (h.host.Quarantined(c3) || h.active("demo@blue.service") == "active") {
			t.Errorf("%s took the bad release after %s failed it", h.host.Name, failedOn.host.Name)
		}
		if lg := h.host.LastGood(); lg.Revision != c2 || h.active("demo@green.service") != "active" || h.active("demo@blue.service") == "active" {
			t.Errorf("%s: last good %s, green %s, blue %s: want green alone running %s", h.host.Name, short(lg.Revision), h.active("demo@green.service"), h.active("demo@blue.service"), short(c2))
		}
	}
	if got := states("blue"); got != "maint,maint" {
		t.Errorf("HAProxy: blue %s after the bad release, want maint", got)
	}
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
