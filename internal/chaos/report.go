package chaos

import (
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"
)

// Report is the table a chaos run ends with.
type Report struct {
	Seed          int64
	Took          time.Duration
	Hosts         int
	EtcdMembers   int
	Pushed, Bad   int             // releases pushed, and how many of them bad
	Txns          map[Outcome]int // transactions by how they ended
	Faults        map[string]int  // faults injected, by kind
	WatchdogKills int             // systemd's watchdog kills of an agent
	Violations    []Violation     // the invariants broken
	Unsettled     int             // rollouts that did not settle within their bound
}

// Write prints the report as a table.
func (r Report) Write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "chaos run\tseed %d, %v, %d hosts, %d etcd members\n", r.Seed, r.Took.Round(time.Second), r.Hosts, r.EtcdMembers)
	fmt.Fprintf(tw, "releases pushed\t%d (%d bad)\n", r.Pushed, r.Bad)
	fmt.Fprintf(tw, "transactions\t%d committed, %d failed, %d aborted, %d open\n", r.Txns[Committed], r.Txns[Failed], r.Txns[Aborted], r.Txns[Open])
	fmt.Fprintf(tw, "rollouts not settled\t%d\n", r.Unsettled)
	total := 0
	for _, k := range sortedCounts(r.Faults) {
		fmt.Fprintf(tw, "fault: %s\t%d\n", k, r.Faults[k])
		total += r.Faults[k]
	}
	fmt.Fprintf(tw, "faults\t%d\n", total)
	fmt.Fprintf(tw, "watchdog kills\t%d\n", r.WatchdogKills)
	byKind := map[string]int{}
	for _, v := range r.Violations {
		byKind[v.Invariant]++
	}
	for _, k := range sortedCounts(byKind) {
		fmt.Fprintf(tw, "violation: %s\t%d\n", k, byKind[k])
	}
	fmt.Fprintf(tw, "invariant violations\t%d\n", len(r.Violations))
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, v := range r.Violations {
		if _, err := fmt.Fprintf(w, "  %v\n", v); err != nil {
			return err
		}
	}
	return nil
}

func sortedCounts(m map[string]int) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
