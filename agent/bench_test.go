package agent_test

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	committedRE = regexp.MustCompile(`msg="upgrade committed".* took=(\S+) steps="([^"]*)"`)
	revertingRE = regexp.MustCompile(`time=(\S+) level=ERROR msg="upgrade failed; reverting"`)
)

// journal returns the agent's log lines since the start of the test.
func (h *harness) journal() string {
	out, err := h.host.Exec(context.Background(), "journalctl", "--no-pager", "-o", "cat", "-t", agentTag)
	if err != nil {
		h.t.Fatal(err)
	}
	return string(out)
}

// BenchmarkUpgrade measures what baton adds to an upgrade beyond the service's own
// restart and the soak: the time in every step but SWITCHING (unit files, reload,
// restart jobs) and VERIFYING (restart-to-healthy plus minHealthy), per upgrade of
// a real host. It prints the median of each step and of the overhead.
//
//	go test -run '^$' -bench BenchmarkUpgrade -benchtime 5x ./agent/
func BenchmarkUpgrade(b *testing.B) {
	h := newHarness(b)
	c := h.push(release{version: "1.0.0", mode: "ok"})
	h.startAgent()
	h.settled(c)
	steps := map[string][]time.Duration{}
	var overhead, took []time.Duration
	b.ResetTimer()
	for i := range b.N {
		c := h.push(release{version: fmt.Sprintf("2.%d.0", i), mode: "ok"})
		h.settled(c)
		m := committedRE.FindAllStringSubmatch(h.journal(), -1)
		if len(m) < i+2 {
			b.Fatalf("no commit line for upgrade %d", i)
		}
		last := m[len(m)-1]
		total, _ := time.ParseDuration(last[1])
		took = append(took, total)
		rest := total
		for _, kv := range strings.Fields(last[2]) {
			k, v, _ := strings.Cut(kv, "=")
			d, _ := time.ParseDuration(v)
			steps[k] = append(steps[k], d)
			if k == "SWITCHING" || k == "VERIFYING" {
				rest -= d
			}
		}
		overhead = append(overhead, rest)
	}
	b.StopTimer()
	for _, k := range []string{"PREPARED", "STAGED", "LEASED", "SWITCHING", "VERIFYING", "COMMITTED"} {
		b.ReportMetric(float64(median(steps[k]).Milliseconds()), k+"-ms")
	}
	b.ReportMetric(float64(median(took).Milliseconds()), "upgrade-ms")
	b.ReportMetric(float64(median(overhead).Milliseconds()), "overhead-ms")
	b.Logf("median over %d upgrades: upgrade %v, of which baton's own steps (all but SWITCHING and VERIFYING) %v; minHealthy is 5s",
		b.N, median(took), median(overhead))
}

// BenchmarkRevert measures the time from the failed check that condemns a release to
// the old version answering again on the host.
//
//	go test -run '^$' -bench BenchmarkRevert -benchtime 5x ./agent/
func BenchmarkRevert(b *testing.B) {
	h := newHarness(b)
	c := h.push(release{version: "1.0.0", mode: "ok"})
	h.startAgent()
	h.settled(c)
	var reverts []time.Duration
	b.ResetTimer()
	for i := range b.N {
		seen := len(revertingRE.FindAllString(h.journal(), -1))
		c := h.push(release{version: fmt.Sprintf("9.%d.0", i), mode: "fail-health"})
		// wait until the bad version serves, then until the old one is back
		h.waitFor("the bad release to start", time.Minute, func() bool { return h.host.Served() == fmt.Sprintf("9.%d.0", i) })
		var back time.Time
		h.waitEvery("the old version to serve again", time.Minute, 10*time.Millisecond, func() bool {
			if h.host.Served() == "1.0.0" {
				back = time.Now()
				return true
			}
			return false
		})
		h.settled(c)
		m := revertingRE.FindAllStringSubmatch(h.journal(), -1)
		if len(m) <= seen {
			b.Fatalf("no revert logged for release %d", i)
		}
		failed, err := time.Parse(time.RFC3339Nano, m[len(m)-1][1])
		if err != nil {
			b.Fatal(err)
		}
		reverts = append(reverts, back.Sub(failed))
	}
	b.StopTimer()
	b.ReportMetric(float64(median(reverts).Milliseconds()), "fail-to-old-serving-ms")
	b.Logf("median over %d reverts: %v from the failed check to the old version serving (polled every 10ms)", b.N, median(reverts))
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
