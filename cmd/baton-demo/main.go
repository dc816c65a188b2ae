// Command baton-demo runs baton's live demo on this machine (as root): a fleet of real
// systemd hosts (systemd-nspawn) behind HAProxy on the etcd lease, a rolling upgrade
// under load shown as a table refreshed every second, then a bad release reverted on
// the first host and halting the group, then a release healthy by its health check
// but stopped by its analysis of Prometheus' metrics; everything is removed at the end.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/baton-fleet/baton/internal/testetcd"
	"github.com/baton-fleet/baton/internal/testfleet"
)

func main() {
	testetcd.RunIfMember() // the fleet's etcd members are this program run again
	hosts := flag.Int("hosts", testfleet.DefaultHosts, "hosts in the fleet")
	minHealthy := flag.Duration("min-healthy", testfleet.DefaultMinHealthy, "the group's minHealthy")
	install := flag.Bool("install", false, "apt-get install what is missing (systemd-container, haproxy; prometheus for the analysis act)")
	baton := flag.String("baton", "", "a prebuilt baton binary (default: go build ./cmd/baton)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, *hosts, *minHealthy, *install, *baton); err != nil {
		fmt.Fprintln(os.Stderr, "baton-demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer, hosts int, minHealthy time.Duration, install bool, baton string) error {
	if err := testfleet.Require(); err != nil {
		if !install || os.Geteuid() != 0 {
			return fmt.Errorf("this machine cannot run the demo: %w (run as root; make demo-live installs systemd-container and haproxy with apt-get)", err)
		}
		fmt.Fprintln(w, "installing systemd-container and haproxy")
		cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "systemd-container", "haproxy")
		cmd.Stdout, cmd.Stderr = w, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get install systemd-container haproxy: %w", err)
		}
		if err := testfleet.Require(); err != nil {
			return fmt.Errorf("still missing after apt-get: %w", err)
		}
	}
	if err := rollingActs(ctx, w, hosts, minHealthy, install, baton); err != nil {
		return err
	}
	// The fleet of the rolling acts is stopped: bluegreen boots its own.
	return blueGreenAct(ctx, w, hosts, minHealthy, baton)
}

// rollingActs runs the acts of a fleet upgraded by restart behind its drain: a good
// release, a release that fails its health check, and one the analysis stops.
func rollingActs(ctx context.Context, w io.Writer, hosts int, minHealthy time.Duration, install bool, baton string) error {
	fmt.Fprintf(w, "== starting a fleet of %d hosts (systemd-nspawn), etcd, HAProxy, a git repository and a release server\n", hosts)
	f, err := testfleet.Start(ctx, testfleet.Options{Hosts: hosts, MinHealthy: minHealthy, Baton: baton, Log: prefixed(w, "   ")})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(w, "== stopping the hosts, etcd and HAProxy; removing the bridge")
		f.Close()
		fmt.Fprintln(w, "== done")
	}()
	fmt.Fprintf(w, "== every host runs %s; HAProxy serves on %s\n", testfleet.DefaultInitial, f.LB.URL)
	show(ctx, w, f, nil)

	steps := []struct {
		title string
		rel   testfleet.Release
	}{
		{"push v2.0.0: a good release rolls through one host at a time", testfleet.Release{Version: "2.0.0"}},
		{"push v3.0.0: a release that fails its health check", testfleet.Release{Version: "3.0.0", Mode: "fail-health"}},
	}
	for _, s := range steps {
		fmt.Fprintf(w, "\n== %s\n", s.title)
		o, sent, failed, err := watch(ctx, w, f, s.rel)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "== %s: %d requests through HAProxy, %d failed; settled in %v; at most %d host(s) out of rotation\n",
			s.rel.Version, sent, failed, o.Took.Round(100*time.Millisecond), o.MaxOut)
		switch {
		case len(o.Committed) == len(f.Hosts):
			fmt.Fprintf(w, "   committed on every host (%s); the hosts' restart-to-healthy plus minHealthy add up to %v\n",
				strings.Join(o.Committed, ", "), o.Floor.Round(100*time.Millisecond))
		case o.Halted:
			fmt.Fprintf(w, "   ran on %s only, reverted there (old version serving %v after the failing check); the group is HALTED: no other host started it\n",
				strings.Join(o.Switched, ", "), o.RevertToServing.Round(time.Millisecond))
		default:
			fmt.Fprintf(w, "   committed on %v, ran on %v\n", o.Committed, o.Switched)
		}
	}
	return analysisAct(ctx, w, f, install)
}

// watch pushes rel under load and prints the fleet's table every second until every
// host settled.
func watch(ctx context.Context, w io.Writer, f *testfleet.Fleet, rel testfleet.Release) (*testfleet.Outcome, int64, int64, error) {
	l := testfleet.StartLoad(f.LB.URL+"/", 4, 2000000, 5*time.Minute)
	o, err := upgradeShowing(ctx, f, rel, func() { show(ctx, w, f, l) })
	sent, failed := l.Finish()
	return o, sent, failed, err
}

// upgradeShowing pushes rel and waits until every host settled, calling show every
// second and once at the end.
func upgradeShowing(ctx context.Context, f *testfleet.Fleet, rel testfleet.Release, show func()) (*testfleet.Outcome, error) {
	type result struct {
		o   *testfleet.Outcome
		err error
	}
	done := make(chan result, 1)
	go func() {
		o, err := f.Upgrade(ctx, rel)
		done <- result{o, err}
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case r := <-done:
			show()
			return r.o, r.err
		case <-tick.C:
			show()
		}
	}
}

// show prints one table of the fleet: each host's served version, transaction state,
// last good commit, lease and rotation; and the load's counts.
func show(ctx context.Context, w io.Writer, f *testfleet.Fleet, l *testfleet.Load) {
	holders, waiting, err := f.Lease(ctx)
	lease := map[string]string{}
	for _, h := range holders {
		lease[h] = "holder"
	}
	for i, h := range waiting {
		lease[h] = fmt.Sprintf("waiting %d", i+1)
	}
	fmt.Fprintf(w, "-- %s\n", time.Now().Format("15:04:05"))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "   HOST\tVERSION\tSTATE\tLAST GOOD\tLEASE\tHAPROXY")
	for _, h := range f.Hosts {
		state := h.TxnState()
		if state == "" {
			state = "idle"
		}
		holder := lease[h.Name]
		if err != nil {
			holder = "?"
		}
		rot := "in"
		if !h.InRotation() {
			rot = "OUT"
		}
		version := h.Served()
		if version == "" {
			version = "-"
		}
		fmt.Fprintf(tw, "   %s\t%s\t%s\t%.7s\t%s\t%s\n", h.Name, version, state, h.LastGood().Revision, holder, rot)
	}
	tw.Flush()
	if l != nil {
		sent, failed := l.Counts()
		fmt.Fprintf(w, "   requests: %d sent, %d failed\n", sent, failed)
	}
}

// prefixed writes every line to w behind prefix.
func prefixed(w io.Writer, prefix string) io.Writer { return &prefixWriter{w: w, prefix: prefix} }

type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if line == "" {
			continue
		}
		if _, err := io.WriteString(p.w, p.prefix+line); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}
