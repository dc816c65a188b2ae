package testfleet

import (
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
