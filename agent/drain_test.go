package agent_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-fleet/baton/drain"
	"github.com/baton-fleet/baton/internal/testfleet"
	"github.com/baton-fleet/baton/internal/testhaproxy"
)

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

	l := testfleet.StartLoad(lb.URL+"/", 4, 200000, 2*time.Minute)
	time.Sleep(time.Second)
	// sample h1's admin state while it upgrades: it must pass through maint
	var sawMaint atomic.Bool
	sampling := make(chan struct{})
	go func() {
		defer close(sampling)
		for h.host.LastGood().Revision == c1 {
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
	sent, failed := l.Finish()
	t.Logf("%d requests through HAProxy during the upgrade, %d failed", sent, failed)
	if h.host.LastGood().Revision != c2 {
		t.Fatalf("the upgrade did not commit: %s", h.host.QuarantineReason(c2))
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

// TestRollingUpgradeUnderLoad is the mission in one test: three hosts behind a real
// HAProxy on the etcd lease, clients sending requests throughout. A good release rolls
// through every host with never more than maxParallel out of rotation and no failed
// request; a bad release is reverted on the first host, reaches no other, and no
// request fails either.
func TestRollingUpgradeUnderLoad(t *testing.T) {
	hosts, lb, drainBlock := balancedFleet(t, 3)
	h1 := hosts[0]
	states := func() int { return outOfRotation(lb, hosts) }

	rollout := func(name string, rel release, want func(h *harness, c string) bool) {
		l := testfleet.StartLoad(lb.URL+"/", 4, 500000, 4*time.Minute)
		var maxOut atomic.Int64
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				if n := int64(states()); n > maxOut.Load() {
					maxOut.Store(n)
				}
			}
		}()
		start := time.Now()
		c := h1.push(rel)
		for _, h := range hosts {
			h.waitFor(h.host.Name+" to settle on "+short(c), 3*time.Minute, func() bool { return want(h, c) })
		}
		took := time.Since(start)
		h1.waitFor("every host back in rotation", time.Minute, func() bool { return states() == 0 })
		close(stop)
		<-sampled
		sent, failed := l.Finish()
		t.Logf("%s: %d requests through HAProxy, %d failed; at most %d host(s) out of rotation; %v", name, sent, failed, maxOut.Load(), took.Round(100*time.Millisecond))
		if failed != 0 {
			t.Errorf("%s: %d of %d requests failed", name, failed, sent)
		}
		if maxOut.Load() > 1 {
			t.Errorf("%s: %d hosts out of rotation at once with maxParallel 1", name, maxOut.Load())
		}
	}

	rollout("good release", release{version: "2.0.0", mode: "ok", drain: drainBlock}, func(h *harness, c string) bool {
		return h.host.TxnState() == "" && h.host.LastGood().Revision == c
	})
	for _, h := range hosts {
		h.consistent()
	}

	var tried []string
	rollout("bad release", release{version: "3.0.0", mode: "fail-health", drain: drainBlock}, func(h *harness, c string) bool {
		if h.host.TxnState() != "" {
			return false
		}
		if h.host.Quarantined(c) {
			return true
		}
		return strings.Contains(h.journal(), "the group is halted")
	})
	for _, h := range hosts {
		if strings.Contains(h.journal(), ": switching") && strings.Contains(h.journal(), "3.0.0") && h.host.Quarantined(h1.repo.Head()) {
			tried = append(tried, h.host.Name)
		}
		if h.host.Served() != "2.0.0" {
			t.Errorf("%s serves %q after the bad release", h.host.Name, h.host.Served())
		}
	}
	if len(tried) != 1 {
		t.Errorf("the bad release was tried on %v, want exactly one host", tried)
	}
}

// TestHostKilledHoldingTheLease powers off a host (SIGKILL to its container) while it
// holds the group's only slot mid-upgrade, out of rotation: the rollout goes on with
// the other hosts once its etcd lease expires and its verdict is overdue, and HAProxy
// keeps serving throughout.
func TestHostKilledHoldingTheLease(t *testing.T) {
	hosts, lb, drainBlock := balancedFleet(t, 3)
	h1 := hosts[0]

	l := testfleet.StartLoad(lb.URL+"/", 4, 500000, 4*time.Minute)
	c2 := h1.push(release{version: "2.0.0", mode: "ok", drain: drainBlock})
	var victim *harness
	h1.waitFor("a host to be verifying the upgrade", 2*time.Minute, func() bool {
		for _, h := range hosts {
			if h.host.TxnState() == "VERIFYING" {
				victim = h
				return true
			}
		}
		return false
	})
	victim.host.Kill()
	killed := time.Now()
	other := hosts[0]
	if other == victim {
		other = hosts[1]
	}
	t.Logf("baton fleet after %s was powered off:\n%s", victim.host.Name, other.host.MustExec(t, "/usr/local/bin/baton", "fleet", "--json"))
	for _, h := range hosts {
		if h != victim {
			h.settled(c2)
		}
	}
	t.Logf("the rest committed %v after %s was powered off holding the slot", time.Since(killed).Round(100*time.Millisecond), victim.host.Name)
	waited := false
	for _, h := range hosts {
		if h != victim && strings.Contains(h.journal(), "for "+victim.host.Name+": switched (to "+short(c2)+" or an earlier commit) and silent since") {
			waited = true
		}
	}
	if !waited {
		for _, h := range hosts {
			if h != victim {
				t.Logf("%s:\n%s", h.host.Name, h.journal())
			}
		}
		t.Errorf("no host waited for the verdict of %s, silent since its switch", victim.host.Name)
	}
	sent, failed := l.Finish()
	t.Logf("%d requests through HAProxy, %d failed", sent, failed)
	if failed != 0 {
		t.Errorf("%d of %d requests failed while a host died mid-upgrade", failed, sent)
	}
	for _, h := range hosts {
		if h != victim && h.host.LastGood().Revision != c2 {
			t.Errorf("%s did not upgrade after %s died", h.host.Name, victim.host.Name)
		}
	}
}

// balancedFleet starts n hosts on the etcd lease behind HAProxy, each draining itself
// through HAProxy's runtime API, and returns once all run 1.0.0 and are in rotation.
// drainBlock is the service.yaml drain: block for the releases the test pushes.
func balancedFleet(t *testing.T, n int) (hosts []*harness, lb *testhaproxy.HAProxy, drainBlock string) {
	t.Helper()
	_, hosts = newEtcdFleet(t, n)
	var servers []testhaproxy.Server
	for _, h := range hosts {
		servers = append(servers, testhaproxy.Server{Name: h.host.Name, Addr: h.host.IP + ":" + demoPort, Check: true})
	}
	lb = testhaproxy.Start(t, testhaproxy.Config{Backend: "web", Servers: servers, AdminTCP: hosts[0].gateway + ":0"})
	drainBlock = fmt.Sprintf("drain:\n  haproxy: {socket: %q, backend: web, server: \"{{ .Host }}\", timeout: 10s}\n", lb.AdminTCP)
	h1 := hosts[0]
	c1 := h1.push(release{version: "1.0.0", mode: "ok", drain: drainBlock})
	for _, h := range hosts {
		h.startAgent()
	}
	for _, h := range hosts {
		h.settled(c1)
	}
	h1.waitFor("every host in rotation", time.Minute, func() bool { return outOfRotation(lb, hosts) == 0 })
	return hosts, lb, drainBlock
}

// outOfRotation counts the hosts that HAProxy does not send requests to now: not
// ready (drained or in maint) or not up by its health checks.
func outOfRotation(lb *testhaproxy.HAProxy, hosts []*harness) (out int) {
	for _, h := range hosts {
		st, err := (&drain.HAProxy{Addr: lb.AdminTCP, Backend: "web", Server: h.host.Name}).State(context.Background())
		if err != nil || st.Admin.String() != "ready" || !strings.HasPrefix(st.Status, "UP") {
			out++
		}
	}
	return out
}
