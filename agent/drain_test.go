package agent_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-fleet/baton/drain"
	"github.com/baton-fleet/baton/internal/testhaproxy"
)

// load sends GET requests through url from a few clients until stopped or until a
// bound on count and time, and counts every failure.
type load struct {
	sent, failed atomic.Int64
	stop         chan struct{}
	done         sync.WaitGroup
}

func startLoad(url string, clients int, max int64, limit time.Duration) *load {
	l := &load{stop: make(chan struct{})}
	deadline := time.Now().Add(limit)
	for range clients {
		l.done.Go(func() {
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
			defer c.CloseIdleConnections()
			for l.sent.Load() < max && time.Now().Before(deadline) {
				select {
				case <-l.stop:
					return
				default:
				}
				l.sent.Add(1)
				resp, err := c.Get(url)
				if err != nil {
					l.failed.Add(1)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					l.failed.Add(1)
				}
			}
		})
	}
	return l
}

func (l *load) finish() (sent, failed int64) {
	close(l.stop)
	l.done.Wait()
	return l.sent.Load(), l.failed.Load()
}

// TestDrainedUpgradeUnderLoad upgrades a host behind a real HAProxy while clients
// send requests through it: the agent drains the host (to maint, sessions at 0),
// restarts, verifies, and puts it back; no request fails.
func TestDrainedUpgradeUnderLoad(t *testing.T) {
	h := newHarness(t)
	// a second server that is always up, on the machine, so the backend keeps serving
	other := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "other") })}
	ln, err := net.Listen("tcp", h.gateway+":0")
	if err != nil {
		t.Fatal(err)
	}
	go other.Serve(ln)
	t.Cleanup(func() { other.Close() })
	lb := testhaproxy.Start(t, testhaproxy.Config{
		Backend:  "web",
		Servers:  []testhaproxy.Server{{Name: "h1", Addr: h.host.IP + ":" + demoPort, Check: true}, {Name: "other", Addr: ln.Addr().String()}},
		AdminTCP: h.gateway + ":0",
	})
	drainBlock := fmt.Sprintf("drain:\n  haproxy: {socket: %q, backend: web, server: \"{{ .Host }}\", timeout: 10s}\n", lb.AdminTCP)

	c1 := h.push(release{version: "1.0.0", mode: "ok", drain: drainBlock})
	h.startAgent()
	h.settled(c1)
	state := &drain.HAProxy{Addr: lb.AdminTCP, Backend: "web", Server: "h1"}
	h.waitFor("HAProxy to see h1 up", 30*time.Second, func() bool {
		st, err := state.State(context.Background())
		return err == nil && st.Admin.String() == "ready" && strings.HasPrefix(st.Status, "UP")
	})

	l := startLoad(lb.URL+"/", 4, 200000, 2*time.Minute)
	time.Sleep(time.Second)
	// sample h1's admin state while it upgrades: it must pass through maint
	var sawMaint atomic.Bool
	sampling := make(chan struct{})
	go func() {
		defer close(sampling)
		for h.lastGood().Revision == c1 {
			if st, err := state.State(context.Background()); err == nil && st.Admin.String() == "maint" {
				sawMaint.Store(true)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	c2 := h.push(release{version: "2.0.0", mode: "ok", drain: drainBlock})
	h.settled(c2)
	<-sampling
	time.Sleep(time.Second)
	sent, failed := l.finish()
	t.Logf("%d requests through HAProxy during the upgrade, %d failed", sent, failed)
	if h.lastGood().Revision != c2 {
		t.Fatalf("the upgrade did not commit: %s", h.quarantineReason(c2))
	}
	if failed != 0 {
		t.Errorf("%d of %d requests failed during a drained upgrade", failed, sent)
	}
	if !sawMaint.Load() {
		t.Error("h1 was never in maint during its upgrade")
	}
	st, err := state.State(context.Background())
	if err != nil || st.Admin.String() != "ready" {
		t.Errorf("after the upgrade h1 is %+v (%v), want ready", st, err)
	}
	h.consistent()
}
