package testfleet

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestProgramTBTurnsFatalIntoAnError(t *testing.T) {
	p := newProgramTB(nil)
	var order []int
	err := catch(func() {
		p.Cleanup(func() { order = append(order, 1) })
		p.Cleanup(func() { order = append(order, 2) })
		p.Fatalf("boot host %s: %v", "h1", errors.New("no bridge"))
		t.Error("Fatalf returned")
	})
	if err == nil || err.Error() != "boot host h1: no bridge" {
		t.Errorf("catch: got %v", err)
	}
	if !p.Failed() {
		t.Error("not failed after Fatalf")
	}
	p.Close()
	if fmt.Sprint(order) != "[2 1]" {
		t.Errorf("cleanups ran in order %v, want [2 1]", order)
	}
	if err := catch(func() {}); err != nil {
		t.Errorf("catch of nothing: %v", err)
	}
}

// TestFleet starts two hosts and upgrades them under load through HAProxy: no request
// fails; then a bad release is reverted on one host and halts the group.
func TestFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("boots real hosts")
	}
	f := StartTB(t, Options{Hosts: 2, MinHealthy: 2 * time.Second})
	ctx := context.Background()
	l := StartLoad(f.LB.URL+"/", 4, 200000, 3*time.Minute)
	good, err := f.Upgrade(ctx, Release{Version: "2.0.0"})
	sent, failed := l.Finish()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("good release: %d requests, %d failed, rollout %v (floor %v), at most %d out of rotation", sent, failed, good.Rollout.Round(time.Millisecond), good.Floor, good.MaxOut)
	if good.Rollout <= good.Floor/2 || good.Rollout > good.Took || good.PushToStart <= 0 {
		t.Errorf("rollout %v, push to start %v, against a floor of %v and %v from the push to settled: the journal's times are off",
			good.Rollout, good.PushToStart, good.Floor, good.Took)
	}
	if failed != 0 || len(good.Committed) != 2 || good.MaxOut > 1 {
		t.Errorf("good release: %d of %d failed, committed on %v, %d out at once", failed, sent, good.Committed, good.MaxOut)
	}
	for _, h := range f.Hosts {
		if v := h.Served(); v != "2.0.0" {
			t.Errorf("%s serves %q", h.Name, v)
		}
	}
	holders, waiting, err := f.Lease(ctx)
	if err != nil || len(holders)+len(waiting) != 0 {
		t.Errorf("lease after the rollout: holders %v, waiting %v, %v", holders, waiting, err)
	}

	bad, err := f.Upgrade(ctx, Release{Version: "3.0.0", Mode: "fail-health"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bad release: ran on %v, halted %v, old version serving %v after the revert began", bad.Switched, bad.Halted, bad.RevertToServing)
	if len(bad.Switched) != 1 || !bad.Halted || len(bad.Committed) != 0 || bad.RevertToServing <= 0 {
		t.Errorf("bad release: %+v", bad)
	}
	for _, h := range f.Hosts {
		if v := h.Served(); v != "2.0.0" {
			t.Errorf("%s serves %q after the bad release", h.Name, v)
		}
	}
}

// BenchmarkRollout measures rolling upgrades of 3 and 5 hosts behind HAProxy under
// steady load, a bad release on each, and a rollout of 3 hosts with drain disabled.
// Run with -benchtime 1x: each iteration is a good and a bad release.
func BenchmarkRollout(b *testing.B) {
	for _, n := range []int{3, 5} {
		b.Run(fmt.Sprintf("hosts=%d", n), func(b *testing.B) { benchRollout(b, Options{Hosts: n}) })
	}
	b.Run("hosts=3/no-drain", func(b *testing.B) { benchRollout(b, Options{Hosts: 3, NoDrain: true}) })
	// The demo service finishes requests in flight at SIGTERM and HAProxy retries a
	// refused connection, so a restart without drain may fail nothing. Slow requests
	// cut at SIGTERM show what drain avoids for a service that is less polite.
	const rude = "--request-delay 50ms --shutdown-timeout 1ms"
	b.Run("hosts=3/rude", func(b *testing.B) { benchRollout(b, Options{Hosts: 3, ServiceFlags: rude}) })
	b.Run("hosts=3/rude/no-drain", func(b *testing.B) { benchRollout(b, Options{Hosts: 3, ServiceFlags: rude, NoDrain: true}) })
	// Clients that log in and keep a session in the service's memory, and long
	// downloads, through cookie persistence: deployed by restart with drain, then
	// by bluegreen.
	b.Run("hosts=3/sessions/restart", func(b *testing.B) { benchSessions(b, Options{Hosts: 3, Sticky: true}) })
	b.Run("hosts=3/sessions/bluegreen", func(b *testing.B) { benchSessions(b, Options{Hosts: 3, BlueGreen: true}) })
}

// benchSessions rolls a good release through f under the session load and reports
// the sessions lost and the downloads cut; in a bluegreen fleet, the switches, the
// memory of two colors, a bad release and a release that fails after its switch too.
func benchSessions(b *testing.B, o Options) {
	f := StartTB(b, o)
	ctx := context.Background()
	strategy := "restart with drain"
	if o.BlueGreen {
		strategy = "bluegreen"
	}
	b.ResetTimer()
	for i := range b.N {
		l := StartSessionLoad(f.LB.URL)
		good, err := f.Upgrade(ctx, Release{Version: fmt.Sprintf("2.%d.0", i)})
		counts, downloads := l.Finish()
		if err != nil {
			b.Fatal(err)
		}
		ratio := good.Rollout.Seconds() / good.Floor.Seconds()
		b.ReportMetric(float64(counts.Sent), "sent")
		b.ReportMetric(float64(counts.Failed), "failed")
		b.ReportMetric(float64(counts.Completed+counts.Lost), "sessions")
		b.ReportMetric(float64(counts.Lost), "lost-sessions")
		b.ReportMetric(float64(len(downloads)), "downloads")
		b.ReportMetric(float64(len(downloads)-downloads.Completed()), "cut-downloads")
		b.ReportMetric(ratio, "rollout/floor")
		b.Logf("%d hosts, %s, under %d session clients and %d downloading %v at a time: %d requests, %d failed; %d sessions, %d lost; %d downloads, %d cut %v; rollout %v, floor %v, ratio %.3f",
			o.Hosts, strategy, SessionClients, DownloadClients, DownloadLength, counts.Sent, counts.Failed, counts.Completed+counts.Lost, counts.Lost,
			len(downloads), len(downloads)-downloads.Completed(), downloads.Failures(3), good.Rollout.Round(time.Millisecond), good.Floor.Round(time.Millisecond), ratio)
		for _, h := range f.Hosts {
			if steps, ok := h.CommitSteps(good.Commit); ok {
				b.Logf("  %s: %v", h.Name, steps)
			}
		}
		if !o.BlueGreen {
			continue
		}
		var slowest time.Duration
		for _, d := range good.Switches {
			slowest = max(slowest, d)
		}
		b.ReportMetric(float64(slowest.Microseconds())/1000, "switch-ms")
		b.ReportMetric(float64(good.OneColor>>20), "one-color-MiB")
		b.ReportMetric(float64(good.TwoColors>>20), "two-colors-MiB")
		b.Logf("switches (new color checked by HAProxy, ready; old one drain): %v; resident memory of one color at most %d MiB, of two colors on one host at once %d MiB",
			good.Switches, good.OneColor>>20, good.TwoColors>>20)
		benchBadBlueGreen(b, f, i)
	}
}

// benchBadBlueGreen pushes, under the session load, a release that fails on its own
// port (no client may reach it) and one that fails once clients reach it (switched
// back).
func benchBadBlueGreen(b *testing.B, f *Fleet, i int) {
	ctx := context.Background()
	l := StartSessionLoad(f.LB.URL)
	bad, err := f.Upgrade(ctx, Release{Version: fmt.Sprintf("3.%d.0", i), Mode: "fail-health"})
	counts, downloads := l.Finish()
	if err != nil {
		b.Fatal(err)
	}
	answered := counts.Versions[bad.Release.Version]
	b.ReportMetric(float64(answered), "bad-answers")
	b.Logf("a release failing its check on its own port: ran on %v, halted %v; it answered %d of %d client requests; %d failed, %d sessions lost, %d of %d downloads cut",
		bad.Switched, bad.Halted, answered, counts.Sent, counts.Failed, counts.Lost, len(downloads)-downloads.Completed(), len(downloads))

	l = StartSessionLoad(f.LB.URL)
	back, err := f.Upgrade(ctx, Release{Version: fmt.Sprintf("4.%d.0", i), Mode: "fail-on-traffic"})
	counts, downloads = l.Finish()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(back.SwitchBack.Microseconds())/1000, "revert-ms")
	b.ReportMetric(back.RevertToServing.Seconds()*1000, "revert-to-serving-ms")
	b.Logf("a release failing once clients reach it: switched back on %v in %v (%v from the failed check), halted %v; it answered %d of %d client requests; %d failed, %d sessions lost (those it took), %d of %d downloads cut",
		back.Switched, back.SwitchBack, back.RevertToServing.Round(time.Millisecond), back.Halted, counts.Versions[back.Release.Version], counts.Sent,
		counts.Failed, counts.Lost, len(downloads)-downloads.Completed(), len(downloads))
}

func benchRollout(b *testing.B, o Options) {
	f := StartTB(b, o)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		l := StartLoad(f.LB.URL+"/", 4, 1000000, 5*time.Minute)
		good, err := f.Upgrade(ctx, Release{Version: fmt.Sprintf("2.%d.0", i)})
		sent, failed := l.Finish()
		if err != nil {
			b.Fatal(err)
		}
		ratio := good.Rollout.Seconds() / good.Floor.Seconds()
		b.ReportMetric(float64(sent), "sent")
		b.ReportMetric(float64(failed), "failed")
		b.ReportMetric(good.Rollout.Seconds(), "rollout-s")
		b.ReportMetric(good.Floor.Seconds(), "floor-s")
		b.ReportMetric(ratio, "rollout/floor")
		b.ReportMetric(good.PushToStart.Seconds(), "push-to-start-s")
		b.ReportMetric(good.PushToFetch.Seconds(), "push-to-fetch-s")
		b.Logf("%d hosts, drain %v: %d requests during the upgrade, %d failed; rollout %v (first start to last commit), floor %v (sum of SWITCHING+VERIFYING), ratio %.3f; push to first start %v, push to settled %v; at most %d out of rotation",
			o.Hosts, !o.NoDrain, sent, failed, good.Rollout.Round(time.Millisecond), good.Floor.Round(time.Millisecond), ratio,
			good.PushToStart.Round(time.Millisecond), good.Took.Round(time.Millisecond), good.MaxOut)
		for _, h := range f.Hosts {
			if steps, ok := h.CommitSteps(good.Commit); ok {
				b.Logf("  %s: %v", h.Name, steps)
			}
		}
		if o.NoDrain || o.ServiceFlags != "" {
			continue // the bad release adds nothing to what drain avoids
		}
		l = StartLoad(f.LB.URL+"/", 4, 1000000, 5*time.Minute)
		bad, err := f.Upgrade(ctx, Release{Version: fmt.Sprintf("3.%d.0", i), Mode: "fail-health"})
		sent, failed = l.Finish()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(bad.RevertToServing.Seconds(), "revert-s")
		b.ReportMetric(float64(len(bad.Switched)), "bad-hosts")
		b.ReportMetric(float64(failed), "bad-failed")
		b.Logf("%d hosts, bad release: ran on %d host(s) %v, group halted %v; failing check to old version serving %v; %d requests, %d failed",
			o.Hosts, len(bad.Switched), bad.Switched, bad.Halted, bad.RevertToServing.Round(time.Millisecond), sent, failed)
	}
}
