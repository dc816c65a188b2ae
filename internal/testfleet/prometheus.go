package testfleet

import (
	"fmt"
	"strings"

	"github.com/baton-fleet/baton/internal/testprom"
)

// StartPrometheus starts a Prometheus on this machine (Debian's prometheus, run by
// internal/testprom) scraping every host's demo service, and returns it with the URL
// the hosts reach it at, relayed from the gateway: for a release's analysis: block.
// The caller stops it when done with it; Close (or the test's cleanup) stops it too
// and removes its storage.
func (f *Fleet) StartPrometheus() (p *testprom.Prometheus, url string, err error) {
	err = catch(func() {
		var targets []string
		for _, h := range f.Hosts {
			targets = append(targets, h.IP+":"+DemoPort)
		}
		p = testprom.Start(f.tb, testprom.Config{Targets: targets})
		url = "http://" + Forward(f.tb, f.Gateway, strings.TrimPrefix(p.URL, "http://"))
	})
	return p, url, err
}

// ErrorRateAnalysis is the service.yaml analysis block of the demo service against
// the Prometheus at url: its error rate on the host, as Prometheus scrapes it, must
// stay at most 1% over a window of 10 s, evaluated every second, two failures in a
// row failing it.
func ErrorRateAnalysis(url string) string {
	return fmt.Sprintf(`analysis:
  window: 10s
  checks:
    - name: errors
      prometheus:
        url: %q
        query: '(sum(rate(http_requests_total{host="{{ .Host }}",code=~"5.."}[5s])) or vector(0)) / sum(rate(http_requests_total{host="{{ .Host }}"}[5s]))'
        max: 0.01
      interval: 1s
      failures: 2
`, url)
}
