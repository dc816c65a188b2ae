package agent_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-fleet/baton/api"
	"github.com/baton-fleet/baton/internal/testfleet"
	"github.com/baton-fleet/baton/internal/testhaproxy"
)

// sessionFleet is three hosts on the etcd lease running two services behind two
// HAProxies with cookie persistence: demo, deployed by bluegreen (h1-blue, h1-green,
// ... in backend web), and shop, the same program deployed by restart with drain (h1,
// h2, h3 in backend shop). A commit that changes one of them upgrades only it.
type sessionFleet struct {
	t        *testing.T
	hosts    []*harness
	lb, shop *testhaproxy.HAProxy
	demo     release // the demo service's version and mode in the last push
	shopVer  string  // the shop service's version in the last push
}

// sessionFleetYAML runs both services on every host, maxParallel (%d) at a time.
const sessionFleetYAML = `apiVersion: baton/v1
groups:
  - name: web
    hosts: ["h*"]
    services: [demo, shop]
    rollout: {maxParallel: %d, minHealthy: 3s, healthyDeadline: 30s}
`

// shopUnit runs the demo program as the shop service, on the port of its checks.
var shopUnit = testfleet.DemoUnit("baton shop {{ .Version }}", demoPort, "")

func newSessionFleet(t *testing.T, n int) *sessionFleet {
	_, hosts := newEtcdFleet(t, n)
	h1 := hosts[0]
	var web, shop []testhaproxy.Server
	for _, h := range hosts {
		for _, c := range testfleet.Colors {
			web = append(web, testhaproxy.Server{Name: h.host.Name + "-" + c.Name, Addr: h.host.IP + ":" + c.Port, Check: true})
		}
		shop = append(shop, testhaproxy.Server{Name: h.host.Name, Addr: h.host.IP + ":" + demoPort, Check: true})
	}
	return &sessionFleet{
		t:     t,
		hosts: hosts,
		lb:    testhaproxy.Start(t, testhaproxy.Config{Backend: "web", Servers: web, AdminTCP: h1.gateway + ":0", Cookie: testfleet.StickyCookie}),
		shop:  testhaproxy.Start(t, testhaproxy.Config{Backend: "shop", Servers: shop, AdminTCP: h1.gateway + ":0", Cookie: testfleet.StickyCookie}),
	}
}

// push commits demo at its version and mode (bluegreen) and shop at shopVersion
// (restart), one host at a time, and returns the commit.
func (f *sessionFleet) push(demo release, shopVersion string) string {
	return f.pushParallel(demo, shopVersion, 1)
}

// pushParallel is push with maxParallel hosts at a time.
func (f *sessionFleet) pushParallel(demo release, shopVersion string, maxParallel int) string {
	h1 := f.hosts[0]
	files := h1.blueGreenFiles(demo.version, demo.mode, f.lb.AdminTCP)
	url, sum := h1.rel.Publish(f.t, shopVersion, "ok")
	maps.Copy(files, map[string]string{
		"fleet.yaml": fmt.Sprintf(sessionFleetYAML, maxParallel),
		"services/shop/service.yaml": fmt.Sprintf("version: %q\nunits: [shop.service]\nartifacts:\n  - {url: %q, sha256: %q, name: demo}\n", shopVersion, url, sum) +
			testfleet.DemoChecks + fmt.Sprintf("drain:\n  haproxy: {socket: %q, backend: shop, server: \"{{ .Host }}\", timeout: 10s}\n", f.shop.AdminTCP),
		"services/shop/shop.service": shopUnit,
	})
	f.demo, f.shopVer = demo, shopVersion
	return h1.repo.CommitFiles(fmt.Sprintf("demo %s (%s), shop %s", demo.version, demo.mode, shopVersion), files)
}

// states are HAProxy's admin states of color's servers, host by host: "ready,ready,ready".
func (f *sessionFleet) states(color string) string {
	var out []string
	for _, h := range f.hosts {
		out = append(out, colorState(f.lb, h.host.Name, color))
	}
	return strings.Join(out, ",")
}

// settled waits until every host settled on commit.
func (f *sessionFleet) settled(commit string) {
	for _, h := range f.hosts {
		h.settled(commit)
	}
}

// watchColors polls `baton status --json` in the host every 200ms until the function
// it returns is called, which returns each different way the demo service's colors
// were shown, in order, such as "green 2.0.0 active, blue 1.0.0 draining".
func (h *harness) watchColors() func() []string {
	done := make(chan struct{})
	var seen []string
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(200 * time.Millisecond):
			}
			out, err := h.host.Exec(context.Background(), "/usr/local/bin/baton", "status", "--json")
			var st api.State
			if err != nil || json.Unmarshal(out, &st) != nil {
				continue
			}
			for _, svc := range st.Services {
				if svc.Name != "demo" {
					continue
				}
				var cs []string
				for _, c := range svc.Colors {
					cs = append(cs, strings.TrimSpace(c.Name+" "+cmp.Or(c.Version, "-")+" "+c.State))
				}
				if now := strings.Join(cs, ", "); len(seen) == 0 || seen[len(seen)-1] != now {
					seen = append(seen, now)
				}
			}
		}
	})
	return func() []string {
		close(done)
		wg.Wait()
		return seen
	}
}

// timeRE is the time of an agent's log line.
var timeRE = regexp.MustCompile(`(?:^|\s)time=(\S+)`)

// cutover is when h's agent had sent new clients to the new color for commit.
func (h *harness) cutover(commit string) (time.Time, bool) {
	for l := range strings.SplitSeq(h.journal(), "\n") {
		if !strings.Contains(l, `msg="the load balancer sends new clients to the new color"`) || !strings.Contains(l, " commit="+short(commit)+" ") {
			continue
		}
		if m := timeRE.FindStringSubmatch(l); m != nil {
			t, err := time.Parse(time.RFC3339Nano, m[1])
			return t, err == nil
		}
	}
	return time.Time{}, false
}

// TestBlueGreenKeepsSessions: three hosts on the etcd lease, each running the demo
// service in two colors behind HAProxy with cookie persistence, under clients that log
// in and keep their session (held in the process's memory: another process answers
// 401) and clients downloading for 4s at a time (testfleet.StartSessionLoad). A good release starts on each host's
// idle color, is checked there before any client reaches it, takes new clients, and
// the old color serves its sessions and its downloads to their end before it stops:
// no request fails, no session is lost, every download completes, among them some
// that were running on an old color when its host switched. The same load on the same
// hosts through a service deployed by restart with drain loses sessions: the count is
// logged beside bluegreen's. A bad release fails on its color's own port: not one
// client request reaches it, the first host stops it, and the group halts.
func TestBlueGreenKeepsSessions(t *testing.T) {
	f := newSessionFleet(t, 3)
	c1 := f.pushParallel(release{version: "1.0.0", mode: "ok"}, "1.0.0", len(f.hosts)) // the first install, on every host at once
	for _, h := range f.hosts {
		h.startAgent()
	}
	for _, h := range f.hosts {
		h.settled(c1)
		if h.host.LastGood().Revision != c1 {
			t.Fatalf("%s did not install the first release: %s\n%s", h.host.Name, h.host.QuarantineReason(c1), h.journal())
		}
	}
	f.hosts[0].waitFor("blue to serve on every host", time.Minute, func() bool {
		return f.states("blue") == "ready,ready,ready" && f.states("green") == "maint,maint,maint"
	})

	blueGreen, blueGreenDownloads := f.goodBlueGreen()
	restart, restartDownloads := f.restartWithDrain()
	t.Logf("sessions lost under the same load on the same 3 hosts: bluegreen %d of %d, restart with drain %d of %d; downloads cut: bluegreen %d of %d, restart with drain %d of %d",
		blueGreen.Lost, blueGreen.Completed+blueGreen.Lost, restart.Lost, restart.Completed+restart.Lost,
		len(blueGreenDownloads)-blueGreenDownloads.Completed(), len(blueGreenDownloads), len(restartDownloads)-restartDownloads.Completed(), len(restartDownloads))
	f.badBlueGreen()
}

// goodBlueGreen rolls 2.0.0 of demo through the hosts under the session load: to
// green on each host, one at a time, sessions and downloads kept.
func (f *sessionFleet) goodBlueGreen() (testfleet.SessionCounts, testfleet.DownloadLog) {
	t := f.t
	l := testfleet.StartSessionLoad(f.lb.URL)
	seen := f.hosts[0].watchColors()
	c := f.push(release{version: "2.0.0", mode: "ok"}, f.shopVer)
	f.settled(c)
	counts, downloads := l.Finish()
	colors := seen()
	t.Logf("baton status on h1 showed the colors as %q", colors)
	for _, want := range []string{"blue 1.0.0 active, green - stopped", "blue 1.0.0 active, green 2.0.0 starting", "green 2.0.0 active, blue 1.0.0 draining", "green 2.0.0 active, blue - stopped"} {
		if !slices.Contains(colors, want) {
			t.Errorf("baton status on h1 never showed %q", want)
		}
	}
	t.Logf("bluegreen: %d requests in %d sessions, %d failed, %d sessions lost; %d downloads, %d complete; answers by version %v",
		counts.Sent, counts.Completed, counts.Failed, counts.Lost, len(downloads), downloads.Completed(), counts.Versions)
	for _, h := range f.hosts {
		lg := h.host.LastGood()
		if lg.Revision != c || lg.Services["demo"].Color != "green" {
			t.Errorf("%s: last good %s color %q, want %s on green\n%s", h.host.Name, short(lg.Revision), lg.Services["demo"].Color, short(c), h.journal())
		}
		if a, b := h.active("demo@green.service"), h.active("demo@blue.service"); a != "active" || b == "active" {
			t.Errorf("%s: green is %s and blue %s, want green alone running", h.host.Name, a, b)
		}
	}
	if got := f.states("green") + " " + f.states("blue"); got != "ready,ready,ready maint,maint,maint" {
		t.Errorf("HAProxy: green %s, want ready and blue maint", got)
	}
	if counts.Failed != 0 || counts.Lost != 0 {
		t.Errorf("during a bluegreen rollout %d requests failed and %d sessions were lost, want none", counts.Failed, counts.Lost)
	}
	if counts.Versions["2.0.0"] == 0 || counts.Versions["1.0.0"] == 0 {
		t.Errorf("the clients were not served by both versions: %v", counts.Versions)
	}
	if n := len(downloads) - downloads.Completed(); n != 0 {
		t.Errorf("%d of %d downloads were cut during a bluegreen rollout, want none: %v", n, len(downloads), downloads.Failures(5))
	}
	// The downloads that an old color was serving when its host switched: they ran on
	// in its drain.
	spanned := 0
	for _, h := range f.hosts {
		at, ok := h.cutover(c)
		if !ok {
			t.Errorf("%s's journal has no cutover of %s", h.host.Name, short(c))
			continue
		}
		n := downloads.InFlight(h.host.Name+"-blue", at)
		spanned += n
		t.Logf("%s switched at %s with %d downloads running on blue", h.host.Name, at.Format("15:04:05.000"), n)
	}
	if spanned == 0 {
		t.Errorf("no download was running on an old color when its host switched: the test proves nothing of downloads")
	}
	return counts, downloads
}

// restartWithDrain rolls 2.0.0 of shop, deployed by restart with drain, through the
// same hosts under the same load. The drain waits for the host's connections, not
// its sessions: a session still running when its host restarts is lost. How many
// that is depends on the timing (a download holds the drain open while sessions
// end), so the count is logged, not asserted.
func (f *sessionFleet) restartWithDrain() (testfleet.SessionCounts, testfleet.DownloadLog) {
	t := f.t
	l := testfleet.StartSessionLoad(f.shop.URL)
	c := f.push(f.demo, "2.0.0")
	f.settled(c)
	counts, downloads := l.Finish()
	t.Logf("restart with drain: %d requests in %d sessions, %d failed, %d sessions lost; %d downloads, %d complete; answers by version %v",
		counts.Sent, counts.Completed, counts.Failed, counts.Lost, len(downloads), downloads.Completed(), counts.Versions)
	for _, h := range f.hosts {
		if lg := h.host.LastGood(); lg.Revision != c || lg.Services["shop"].Version != "2.0.0" || lg.Services["demo"].Color != "green" {
			t.Errorf("%s: last good %s, shop %s, demo on %q: want shop 2.0.0 and demo on green", h.host.Name, short(lg.Revision), lg.Services["shop"].Version, lg.Services["demo"].Color)
		}
	}
	return counts, downloads
}

// badBlueGreen pushes a demo release that fails its health check: checked on blue's
// own port, it never sees a client; the first host stops it and the group halts.
func (f *sessionFleet) badBlueGreen() {
	t := f.t
	l := testfleet.StartSessionLoad(f.lb.URL)
	c := f.push(release{version: "3.0.0", mode: "fail-health"}, f.shopVer)
	var failedOn *harness
	f.hosts[0].waitFor("one host to fail the bad release", 3*time.Minute, func() bool {
		for _, h := range f.hosts {
			if h.host.Quarantined(c) && h.host.TxnState() == "" {
				failedOn = h
				return true
			}
		}
		return false
	})
	time.Sleep(5 * time.Second) // time for another host to take it, were it not halted
	counts, downloads := l.Finish()
	t.Logf("bad release: %d requests, %d failed, %d sessions lost, %d of %d downloads complete; answers by version %v",
		counts.Sent, counts.Failed, counts.Lost, downloads.Completed(), len(downloads), counts.Versions)
	if n := counts.Versions["3.0.0"]; n != 0 {
		t.Errorf("the bad release answered %d client requests, want none", n)
	}
	if counts.Failed != 0 || counts.Lost != 0 || downloads.Completed() != len(downloads) {
		t.Errorf("during a bad bluegreen release %d requests failed, %d sessions were lost and %d downloads cut, want none",
			counts.Failed, counts.Lost, len(downloads)-downloads.Completed())
	}
	for _, h := range f.hosts {
		if h != failedOn && (h.host.Quarantined(c) || h.active("demo@blue.service") == "active") {
			t.Errorf("%s took the bad release after %s failed it", h.host.Name, failedOn.host.Name)
		}
		if lg := h.host.LastGood(); lg.Services["demo"].Version != "2.0.0" || h.active("demo@green.service") != "active" || h.active("demo@blue.service") == "active" {
			t.Errorf("%s: last good %s (demo %s), green %s, blue %s: want green alone running 2.0.0", h.host.Name, short(lg.Revision),
				lg.Services["demo"].Version, h.active("demo@green.service"), h.active("demo@blue.service"))
		}
	}
	if got := f.states("blue"); got != "maint,maint,maint" {
		t.Errorf("HAProxy: blue %s after the bad release, want maint", got)
	}
}
