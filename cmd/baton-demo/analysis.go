package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/baton-fleet/baton/internal/testfleet"
	"github.com/baton-fleet/baton/internal/testprom"
)

// The analysis act's release and how it is read: its error rate through a 5 s range,
// every second, for a window of 10 s once the host serves again.
const (
	flakyVersion   = "3.1.0"
	analysisWindow = 10 * time.Second
)

// analysisAct pushes a release whose health check passes but which answers 3% of its
// requests with 500 (the demo service's flaky mode). Checks alone would commit it; a
// Prometheus scraping every host sees its errors once the first host serves it again,
// and the analysis reverts it there and halts the group. The act runs its own
// Prometheus and stops it at the end. Without prometheus installed (and without
// -install to install it) the act is skipped, saying why.
func analysisAct(ctx context.Context, w io.Writer, f *testfleet.Fleet, install bool) error {
	if err := needPrometheus(ctx, w, install); err != nil {
		fmt.Fprintf(w, "\n== skipping the analysis act: %v\n", err)
		return nil
	}
	fmt.Fprintln(w, "\n== starting Prometheus, scraping the demo service's /metrics on every host")
	prom, url, err := f.StartPrometheus()
	if err != nil {
		return fmt.Errorf("start prometheus: %w", err)
	}
	defer func() {
		prom.Stop()
		fmt.Fprintln(w, "== Prometheus stopped")
	}()

	rel := testfleet.Release{Version: flakyVersion, Mode: "flaky", Analysis: testfleet.ErrorRateAnalysis(url)}
	fmt.Fprintf(w, "\n== push v%s: /healthz is fine, but 3%% of its requests answer 500; its analysis reads the host's error rate\n"+
		"   from Prometheus for %v once the host is back in rotation, and allows 1%%\n", flakyVersion, analysisWindow)
	o, sent, failed, err := watch(ctx, w, f, rel)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "== %s: %d requests through HAProxy, %d failed; settled in %v\n", flakyVersion, sent, failed, o.Took.Round(100*time.Millisecond))
	if len(o.Switched) == 0 || !o.Halted {
		fmt.Fprintf(w, "   committed on %v, ran on %v: the analysis did not stop it\n", o.Committed, o.Switched)
		return nil
	}
	h := hostNamed(f, o.Switched[0])
	fmt.Fprintf(w, "   its health check passed on %s; serving, it failed the analysis:\n     %s\n"+
		"   reverted there and quarantined; the group is HALTED: no other host started it.\n"+
		"   The %d failed requests are its 500s, from its return to rotation to that verdict.\n",
		h.Name, strings.TrimPrefix(h.QuarantineReason(o.Commit), "analyze: "), failed)
	return nil
}

// needPrometheus finds the prometheus binary, or installs Debian's package as
// scripts/deps does when install is set and this is root.
func needPrometheus(ctx context.Context, w io.Writer, install bool) error {
	if _, err := testprom.Binary(); err == nil {
		return nil
	}
	if _, err := exec.LookPath("apt-get"); !install || os.Geteuid() != 0 || err != nil {
		return errors.New("prometheus is not installed (apt-get install prometheus, or run with -install as root)")
	}
	fmt.Fprintln(w, "\n== installing prometheus (apt-get install prometheus)")
	for _, args := range [][]string{{"update", "-qq"}, {"install", "-y", "-qq", "--no-install-recommends", "prometheus"}} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %w", strings.Join(args, " "), err)
		}
	}
	_, err := testprom.Binary()
	return err
}

// hostNamed is the fleet's host of that name.
func hostNamed(f *testfleet.Fleet, name string) *testfleet.Host {
	for _, h := range f.Hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}
