package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/baton-fleet/baton/internal/testfleet"
)

// blueGreenAct is the demo's bluegreen act: a second fleet whose hosts run the demo
// service in two colors behind HAProxy with cookie persistence, under clients that log
// in and keep a session in the service's memory and clients downloading for seconds
// at a time. A good release starts on each host's idle color, is checked there, takes
// the new clients, and the old color finishes its sessions and downloads before it
// stops; a release that breaks once clients reach it is switched back.
func blueGreenAct(ctx context.Context, w io.Writer, hosts int, minHealthy time.Duration, baton string) error {
	fmt.Fprintf(w, "\n== bluegreen: a second fleet of %d hosts, each running the demo service twice (blue on :%s, green on :%s),\n",
		hosts, testfleet.Colors[0].Port, testfleet.Colors[1].Port)
	fmt.Fprintln(w, "   behind HAProxy with cookie persistence; its clients log in and keep a session in the service's memory")
	f, err := testfleet.Start(ctx, testfleet.Options{Hosts: hosts, MinHealthy: minHealthy, Baton: baton, BlueGreen: true, Log: prefixed(w, "   ")})
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(w, "== every host runs %s on blue; HAProxy serves on %s\n", testfleet.DefaultInitial, f.LB.URL)
	showColors(w, f, nil)

	steps := []struct {
		title string
		rel   testfleet.Release
	}{
		{"push v2.0.0: each host starts green beside blue, checks it on its own port, then switches its clients", testfleet.Release{Version: "2.0.0"}},
		{"push v3.0.0: a release that passes its checks until clients reach it", testfleet.Release{Version: "3.0.0", Mode: "fail-on-traffic"}},
	}
	for _, s := range steps {
		fmt.Fprintf(w, "\n== %s\n", s.title)
		l := testfleet.StartSessionLoad(f.LB.URL)
		o, err := watchColors(ctx, w, f, l, s.rel)
		counts, downloads := l.Finish()
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "== %s: %d requests, %d failed; %d sessions, %d lost; %d downloads of %v, %d cut\n",
			s.rel.Version, counts.Sent, counts.Failed, counts.Completed+counts.Lost, counts.Lost,
			len(downloads), testfleet.DownloadLength, len(downloads)-downloads.Completed())
		switch {
		case len(o.Committed) == len(f.Hosts):
			fmt.Fprintf(w, "   committed on every host; each switch took %v; the old colors served their sessions to the end, then stopped\n", roundAll(o.Switches))
			fmt.Fprintf(w, "   two colors side by side cost a host %d MiB, one alone %d MiB\n", o.TwoColors>>20, o.OneColor>>20)
		case o.Halted:
			fmt.Fprintf(w, "   %s switched to it, saw it fail and switched back in %v; the group is HALTED: no other host started it\n",
				strings.Join(o.Switched, ", "), o.SwitchBack.Round(10*time.Microsecond))
			fmt.Fprintf(w, "   the old color never stopped: what was lost (%d sessions) is what the bad color took in its moments of traffic\n", counts.Lost)
		default:
			fmt.Fprintf(w, "   committed on %v, ran on %v\n", o.Committed, o.Switched)
		}
	}
	return nil
}

// watchColors pushes rel and prints the bluegreen fleet's table every second until
// every host settled.
func watchColors(ctx context.Context, w io.Writer, f *testfleet.Fleet, l testfleet.SessionLoad, rel testfleet.Release) (*testfleet.Outcome, error) {
	return upgradeShowing(ctx, f, rel, func() { showColors(w, f, &l) })
}

// showColors prints one table of the bluegreen fleet: each host's colors (the version
// answering on its port and its state in HAProxy), transaction state and last good
// commit; and what the clients saw so far.
func showColors(w io.Writer, f *testfleet.Fleet, l *testfleet.SessionLoad) {
	fmt.Fprintf(w, "-- %s\n", time.Now().Format("15:04:05"))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "   HOST"
	for _, c := range testfleet.Colors {
		head += "\t" + strings.ToUpper(c.Name)
	}
	fmt.Fprintln(tw, head+"\tSTATE\tLAST GOOD")
	for _, h := range f.Hosts {
		line := "   " + h.Name
		for _, c := range h.Colors() {
			line += "\t" + cmp.Or(c.Version, "-") + " " + cmp.Or(c.Admin, "?")
		}
		fmt.Fprintf(tw, "%s\t%s\t%.7s\n", line, cmp.Or(h.TxnState(), "idle"), h.LastGood().Revision)
	}
	tw.Flush()
	if l != nil {
		c, d := l.Sessions.Counts(), l.Downloads.Log()
		fmt.Fprintf(w, "   clients: %d requests, %d failed; %d sessions, %d lost; downloads: %d done, %d cut\n",
			c.Sent, c.Failed, c.Completed+c.Lost, c.Lost, d.Completed(), len(d)-d.Completed())
	}
}

// roundAll rounds each duration to 10µs, for reading.
func roundAll(ds []time.Duration) []time.Duration {
	out := slices.Clone(ds)
	for i := range out {
		out[i] = out[i].Round(10 * time.Microsecond)
	}
	return out
}
