package agent_test

import (
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testfleet"
	"github.com/baton-fleet/baton/internal/testprom"
)

// analysisBlock is the service.yaml analysis of the demo service: its error rate, as
// a real Prometheus scrapes it from the hosts, must stay at most 1%.
const analysisBlock = `analysis:
  window: 10s
  checks:
    - name: errors
      prometheus:
        url: %q
        query: '(sum(rate(http_requests_total{host="{{ .Host }}",code=~"5.."}[5s])) or vector(0)) / sum(rate(http_requests_total{host="{{ .Host }}"}[5s]))'
        max: 0.01
      interval: 1s
      failures: 2
`

// latencyBlock is an analysis check of the host's p99 latency against the rest of the
// fleet's, appended to analysisBlock's checks.
const latencyBlock = `    - name: latency-vs-fleet
      prometheus:
        url: %q
        query: 'histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{host="{{ .Host }}"}[5s])))'
        baseline: 'histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{host!="{{ .Host }}"}[5s])))'
        maxRatio: 3
      interval: 1s
      failures: 2
`

// gatedFleetYAML is fleetYAML with a gate on firing alerts.
const gatedFleetYAML = `apiVersion: baton/v1
groups:
  - name: web
    hosts: ["h*"]
    services: [demo]
    rollout:
      minHealthy: 5s
      healthyDeadline: 30s
      gate:
        prometheus: {url: %q, query: 'ALERTS{alertstate="firing"}'}
`

// TestAnalysisAndGate: two hosts behind HAProxy on the etcd lease, a real Prometheus
// scraping their demo service. A release that passes its health checks but answers 3%
// of its requests with 500 fails its analysis on the first host once it serves: drained
// again, reverted, quarantined, and the group halted, so the second host never runs it.
// An alert firing holds the group's gate: a good release waits, and goes once it
// resolves.
func TestAnalysisAndGate(t *testing.T) {
	hosts, lb, drainBlock := balancedFleet(t, 2)
	h1 := hosts[0]
	alerts := testprom.NewExporter(t)
	var targets []string
	for _, h := range hosts {
		targets = append(targets, h.host.IP+":"+demoPort)
	}
	prom := testprom.Start(t, testprom.Config{Targets: append(targets, alerts.Addr), Rules: `groups:
  - name: test
    rules:
      - alert: DiskFull
        expr: disk_full > 0
`})
	promURL := "http://" + testfleet.Forward(t, h1.gateway, strings.TrimPrefix(prom.URL, "http://"))
	fleetFile := fmt.Sprintf(gatedFleetYAML, promURL)
	withAnalysis := drainBlock + fmt.Sprintf(analysisBlock, promURL)
	l := testfleet.StartLoad(lb.URL+"/", 4, 2000000, 8*time.Minute)
	defer l.Finish()

	// A release that fails only its analysis.
	c2 := h1.push(release{version: "2.0.0", mode: "flaky", drain: withAnalysis, fleet: fleetFile})
	var failed *harness
	h1.waitFor("a host to fail the analysis", 4*time.Minute, func() bool {
		for _, h := range hosts {
			if h.host.Quarantined(c2) && h.host.TxnState() == "" {
				failed = h
				return true
			}
		}
		return false
	})
	if r := failed.host.QuarantineReason(c2); !strings.Contains(r, "analysis failed: errors: ") || !strings.Contains(r, "> max 0.01 (2 of 2 failures)") {
		t.Errorf("quarantined for %q, want the analysis' verdict", r)
	}
	time.Sleep(5 * time.Second)
	for _, h := range hosts {
		if lg := h.host.LastGood(); lg.Services["demo"].Version != "1.0.0" {
			t.Errorf("%s runs %s after the failed analysis, want 1.0.0", h.host.Name, lg.Services["demo"].Version)
		}
		if h != failed && strings.Contains(h.journal(), "upgrading "+short(h.host.LastGood().Revision)+" -> "+short(c2)+": switching") {
			t.Errorf("%s switched to the release that failed its analysis on %s", h.host.Name, failed.host.Name)
		}
	}
	h1.waitFor("the served version back to 1.0.0", time.Minute, func() bool { return failed.host.Served() == "1.0.0" })

	// An alert holds the gate: the next good release waits for it to resolve.
	alerts.Set("disk_full", map[string]string{"instance": "db-02"}, 1)
	h1.waitFor("the alert to fire", time.Minute, func() bool {
		return strings.Contains(promQuery(t, prom.URL, `ALERTS{alertstate="firing"}`), "DiskFull")
	})
	c3 := h1.push(release{version: "3.0.0", mode: "ok", drain: withAnalysis, fleet: fleetFile})
	h1.waitFor("the gate to hold the group", time.Minute, func() bool {
		return strings.Contains(h1.status().Phase, `held: ALERTS{alertname="DiskFull",instance="db-02"`)
	})
	time.Sleep(3 * time.Second)
	for _, h := range hosts {
		if h.host.TxnState() != "" || h.host.LastGood().Revision == c3 {
			t.Errorf("%s started %s while the gate held", h.host.Name, short(c3))
		}
	}
	alerts.Set("disk_full", map[string]string{"instance": "db-02"}, 0)
	for _, h := range hosts {
		h.settled(c3)
		if h.host.LastGood().Revision != c3 {
			t.Errorf("%s did not upgrade once the alert resolved: %s", h.host.Name, h.host.QuarantineReason(c3))
		}
		// A good release passes its analysis: the window is what it adds.
		if !strings.Contains(h.journal(), "analysis passed: errors: ") {
			t.Errorf("%s: no passed analysis in the journal", h.host.Name)
		}
		if m := analyzingTook.FindStringSubmatch(h.journal()); m != nil {
			t.Logf("%s: the analysis of a good release took %s (window 10s)", h.host.Name, m[1])
		}
	}

	// A release 300 ms slower than the rest of the fleet fails the baseline comparison.
	slow := drainBlock + fmt.Sprintf(analysisBlock, promURL) + fmt.Sprintf(latencyBlock, promURL)
	c4 := h1.push(release{version: "4.0.0", mode: "slow", drain: slow, fleet: fleetFile})
	h1.waitFor("a host to fail the slow release", 4*time.Minute, func() bool {
		for _, h := range hosts {
			if h.host.Quarantined(c4) && h.host.TxnState() == "" {
				failed = h
				return true
			}
		}
		return false
	})
	if r := failed.host.QuarantineReason(c4); !strings.Contains(r, "analysis failed: latency-vs-fleet: ") || !strings.Contains(r, "> maxRatio 3") {
		t.Errorf("the slow release was quarantined for %q, want the baseline comparison", r)
	}

	// A gate that starts holding lets an upgrade in flight finish, and holds the next.
	c5 := h1.push(release{version: "5.0.0", mode: "ok", drain: withAnalysis, fleet: fleetFile})
	var first *harness
	h1.waitFor("a host to analyse 5.0.0", 3*time.Minute, func() bool {
		for _, h := range hosts {
			if h.host.TxnState() == "ANALYZING" {
				first = h
				return true
			}
		}
		return false
	})
	alerts.Set("disk_full", map[string]string{"instance": "db-02"}, 1)
	first.settled(c5)
	if first.host.LastGood().Revision != c5 {
		t.Errorf("%s did not finish the upgrade in flight when the gate began to hold: %s", first.host.Name, first.host.QuarantineReason(c5))
	}
	time.Sleep(3 * time.Second)
	for _, h := range hosts {
		if h != first && (h.host.LastGood().Revision == c5 || h.host.TxnState() == "SWITCHING" || h.host.TxnState() == "VERIFYING") {
			t.Errorf("%s started %s while the gate held", h.host.Name, short(c5))
		}
	}
	alerts.Set("disk_full", map[string]string{"instance": "db-02"}, 0)
	for _, h := range hosts {
		h.settled(c5)
	}
}

// analyzingTook finds how long the last committed transaction spent ANALYZING.
var analyzingTook = regexp.MustCompile(`(?s).*steps="[^"]*ANALYZING=([0-9.]+m?s)`)

// promQuery is Prometheus' answer to an instant query, as text.
func promQuery(t *testing.T, base, query string) string {
	t.Helper()
	resp, err := testClient.Get(base + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
