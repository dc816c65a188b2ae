package agent_test

import (
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/events"
	"github.com/baton-fleet/baton/internal/testfleet"
	"github.com/baton-fleet/baton/internal/testprom"
)

// latencyBlock is an analysis check of the host's p99 latency against the rest of the
// fleet's, appended to testfleet.ErrorRateAnalysis's checks.
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
// resolves. A Prometheus stopped during an analysis is no data, which each check's
// noData decides (analysisWithoutPrometheus).
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
	withAnalysis := drainBlock + testfleet.ErrorRateAnalysis(promURL)
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
	slow := drainBlock + testfleet.ErrorRateAnalysis(promURL) + fmt.Sprintf(latencyBlock, promURL)
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

	analysisWithoutPrometheus(t, hosts, prom, promURL, drainBlock+testfleet.ErrorRateAnalysis(promURL), fleetFile)
}

// analysisWithoutPrometheus stops Prometheus while a host analyses a release, once for
// each noData that decides something. With wait (the default) the host waits out its
// window without data and reverts, blaming no one: nothing quarantined or halted, the
// gate holds the other host meanwhile, and the commit goes through once Prometheus is
// back. With fail each evaluation without an answer is a failure: the release is
// reverted on that host, quarantined, and the group halted.
func analysisWithoutPrometheus(t *testing.T, hosts []*harness, prom *testprom.Prometheus, promURL, waitBlock, fleetFile string) {
	t.Helper()
	start := time.Now()
	defer func() { t.Logf("the phases without Prometheus took %v", time.Since(start).Round(time.Second)) }()
	h1 := hosts[0]
	noAnswer := "errors: no data (prometheus unreachable: " + promURL + ": "

	c6 := h1.push(release{version: "6.0.0", mode: "ok", drain: waitBlock, fleet: fleetFile})
	tried, other := stopPrometheusInFlight(t, hosts, prom)
	h1.waitFor("the analysis without Prometheus to end", 2*time.Minute, func() bool {
		return tried.host.TxnState() == "" && tried.host.LastGood().Revision != c6
	})
	if tried.host.Quarantined(c6) {
		t.Errorf("%s quarantined %s, which only met a Prometheus down: %s", tried.host.Name, short(c6), tried.host.QuarantineReason(c6))
	}
	said := "analysis inconclusive: " + noAnswer
	saysWhy(t, tried, c6, "aborted", said, "; noData: wait)")
	if v := h1.host.MustExec(t, "/usr/local/bin/baton", "fleet"); strings.Contains(v, "HALTED on "+short(c6)) {
		t.Errorf("an analysis without Prometheus halted the group:\n%s", v)
	}
	other.waitFor("the gate to hold the other host while Prometheus is down", time.Minute, func() bool {
		return strings.Contains(other.status().Phase, "held: prometheus unreachable: "+promURL)
	})
	prom.Restart(t)
	for _, h := range hosts {
		h.settled(c6)
		if h.host.LastGood().Revision != c6 {
			t.Errorf("%s did not commit %s once Prometheus was back: %s", h.host.Name, short(c6), h.host.QuarantineReason(c6))
		}
	}

	failBlock := strings.Replace(waitBlock, "max: 0.01\n", "max: 0.01\n        noData: fail\n", 1)
	c7 := h1.push(release{version: "7.0.0", mode: "ok", drain: failBlock, fleet: fleetFile})
	tried, other = stopPrometheusInFlight(t, hosts, prom)
	h1.waitFor("the release to fail without Prometheus", 2*time.Minute, func() bool {
		return tried.host.Quarantined(c7) && tried.host.TxnState() == ""
	})
	said = "analysis failed: " + noAnswer
	if r := tried.host.QuarantineReason(c7); !strings.HasPrefix(r, "analyze: "+said) || !strings.HasSuffix(r, "; noData: fail) (2 of 2 failures)") {
		t.Errorf("%s quarantined %s for %q, want analyze: %s...; noData: fail) (2 of 2 failures)", tried.host.Name, short(c7), r, said)
	}
	saysWhy(t, tried, c7, "reverted", said, "; noData: fail) (2 of 2 failures)")
	if v := h1.host.MustExec(t, "/usr/local/bin/baton", "fleet"); !strings.Contains(v, "HALTED on "+short(c7)) {
		t.Errorf("baton fleet does not show the halt on %s:\n%s", short(c7), v)
	}
	h1.waitFor("the served version back to 6.0.0", time.Minute, func() bool { return tried.host.Served() == "6.0.0" })
	prom.Restart(t) // the gate answers again: only the halt holds the other host
	other.waitFor("the other host to see the halt", time.Minute, func() bool {
		return strings.Contains(other.journal(), "commit "+short(c7)+" failed on "+tried.host.Name)
	})
	if other.host.LastGood().Revision != c6 || strings.Contains(other.journal(), "-> "+short(c7)+": switching") {
		t.Errorf("%s switched to %s, which failed its analysis on %s", other.host.Name, short(c7), tried.host.Name)
	}
}

// stopPrometheusInFlight waits for a host to upgrade past the gate (verifying, or
// analysing) and stops Prometheus: the host's analysis gets no answer from the start.
// It returns that host and the other.
func stopPrometheusInFlight(t *testing.T, hosts []*harness, prom *testprom.Prometheus) (tried, other *harness) {
	t.Helper()
	hosts[0].waitFor("a host to verify the release", 3*time.Minute, func() bool {
		for i, h := range hosts {
			if s := h.host.TxnState(); s == "VERIFYING" || s == "ANALYZING" {
				tried, other = h, hosts[1-i]
				return true
			}
		}
		return false
	})
	prom.Stop()
	return tried, other
}

// saysWhy checks that the host's last result (in its status) says how its transaction
// to commit ended and why, as do its analysis event and its journal: the analysis'
// text begins with prefix, and its end, with what noData made of it, holds suffix.
func saysWhy(t *testing.T, h *harness, commit, outcome, prefix, suffix string) {
	t.Helper()
	st := h.status()
	if r := st.LastResult; r == nil || r.Outcome != outcome || r.To != commit || !strings.HasPrefix(r.Message, prefix) || !strings.Contains(r.Message, suffix) {
		t.Errorf("%s: last result %+v, want %s to %s: %s...%s", h.host.Name, r, outcome, short(commit), prefix, suffix)
	}
	finished := false
	for _, e := range st.Events {
		finished = finished || (e.Type == events.AnalysisFinished && e.Commit == commit && strings.HasPrefix(e.Message, prefix) && strings.Contains(e.Message, suffix))
	}
	if !finished {
		t.Errorf("%s: no %s event for %s saying %s...%s", h.host.Name, events.AnalysisFinished, short(commit), prefix, suffix)
	}
	if j := h.journal(); !strings.Contains(j, prefix) || !strings.Contains(j, suffix) {
		t.Errorf("%s: the journal does not say %s...%s", h.host.Name, prefix, suffix)
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
