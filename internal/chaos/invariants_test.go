package chaos

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)

// line writes a journal line as the agent's text handler does, at t0+sec.
func line(sec float64, msg, txn, commit, step string) string {
	at := t0.Add(time.Duration(sec * float64(time.Second))).Format(time.RFC3339Nano)
	return fmt.Sprintf("time=%s level=INFO msg=%q host=h txn=%s group=web commit=%s from=aaaaaaa service=demo step=%s", at, msg, txn, commit, step)
}

// upgrade is a host's journal for one transaction to commit: switching at sw, ending
// at end with msg (committed, quarantined, aborted; "" leaves it open).
func upgrade(txn, commit string, start, sw, end float64, endMsg string) []string {
	ls := []string{
		line(start, "upgrading aaaaaaa -> "+commit+": preparing", txn, commit, "PREPARED"),
		line(start+0.1, "upgrading aaaaaaa -> "+commit+": waiting for the web lease", txn, commit, "STAGED"),
	}
	if sw >= 0 {
		ls = append(ls,
			line(sw, "upgrading aaaaaaa -> "+commit+": switching", txn, commit, "LEASED"),
			line(sw+0.5, "upgrading aaaaaaa -> "+commit+": verifying", txn, commit, "VERIFYING"))
	}
	if endMsg != "" {
		ls = append(ls, line(end, endMsg, txn, commit, "COMMITTED"))
	}
	return ls
}

func journal(parts ...[]string) string {
	var all []string
	for _, p := range parts {
		all = append(all, p...)
	}
	return strings.Join(all, "\n") + "\n"
}

const (
	good = "bbbbbbb1111"
	bad  = "ccccccc2222"
)

var releases = []Release{{Commit: "aaaaaaa0000", Version: "1.0.0", Good: true}, {Commit: good, Version: "2.0.0", Good: true}, {Commit: bad, Version: "3.0.0"}}

func settled(names ...string) []HostState {
	var hs []HostState
	for _, n := range names {
		hs = append(hs, HostState{Name: n, LastGood: good, Served: "2.0.0"})
	}
	return hs
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		in   Input
		want []string // invariants violated, in order
	}{
		{
			name: "a clean rolling upgrade, one at a time",
			in: Input{Journals: map[string]string{
				"h1": journal(upgrade("t1", "bbbbbbb", 0, 1, 5, msgCommitted)),
				"h2": journal(upgrade("t2", "bbbbbbb", 0, 5, 9, msgCommitted)), // takes the slot as h1 ends
				"h3": journal(upgrade("t3", "bbbbbbb", 0, 9.2, 13, msgCommitted)),
			}, Releases: releases, Hosts: settled("h1", "h2", "h3")},
		},
		{
			name: "two hosts switched at once with one slot",
			in: Input{Journals: map[string]string{
				"h1": journal(upgrade("t1", "bbbbbbb", 0, 1, 8, msgCommitted)),
				"h2": journal(upgrade("t2", "bbbbbbb", 0, 6, 12, msgCommitted)),
			}, Releases: releases, Hosts: settled("h1", "h2")},
			want: []string{MaxParallel},
		},
		{
			name: "two hosts at once are fine with two slots",
			in: Input{MaxParallel: 2, Journals: map[string]string{
				"h1": journal(upgrade("t1", "bbbbbbb", 0, 1, 8, msgCommitted)),
				"h2": journal(upgrade("t2", "bbbbbbb", 0, 6, 12, msgCommitted)),
			}, Releases: releases, Hosts: settled("h1", "h2")},
		},
		{
			name: "a host killed while switching stays switched until its recovery ends",
			in: Input{Journals: map[string]string{
				"h1": journal(upgrade("t1", "bbbbbbb", 0, 1, 0, ""), []string{
					line(20, "resuming an interrupted transaction", "t1", "bbbbbbb", ""),
					line(25, msgCommitted, "t1", "bbbbbbb", "COMMITTED"),
				}),
				"h2": journal(upgrade("t2", "bbbbbbb", 0, 10, 15, msgCommitted)),
			}, Releases: releases, Hosts: settled("h1", "h2")},
			want: []string{MaxParallel},
		},
		{
			name: "an interrupted switch reverted and aborted ends its window",
			in: Input{Journals: map[string]string{
				"h1": journal(upgrade("t1", "bbbbbbb", 0, 1, 0, ""), []string{
					line(10, "resuming an interrupted transaction", "t1", "bbbbbbb", ""),
					line(12, "upgrade aborted after reverting the host", "t1", "bbbbbbb", ""),
				}, upgrade("t5", "bbbbbbb", 30, 31, 34, msgCommitted)),
				"h2": journal(upgrade("t2", "bbbbbbb", 0, 13, 17, msgCommitted)),
			}, Releases: releases, Hosts: settled("h1", "h2")},
		},
		{
			name: "a line in a final state ends the window",
			in: Input{Journals: map[string]string{
				"h1": journal(upgrade("t1", "bbbbbbb", 0, 1, 0, ""), []string{line(4, "lease slot released", "t1", "bbbbbbb", "FAILED")}),
				"h2": journal(upgrade("t2", "bbbbbbb", 0, 5, 9, msgCommitted)),
			}, Releases: releases, Hosts: settled("h1", "h2")},
		},
		{
			name: "an abort before switching takes no slot",
			in: Input{Journals: map[string]string{
				"h1": journal(upgrade("t1", "bbbbbbb", 0, -1, 3, msgAborted), upgrade("t4", "bbbbbbb", 10, 11, 14, msgCommitted)),
				"h2": journal(upgrade("t2", "bbbbbbb", 0, 2, 9, msgCommitted)),
			}, Releases: releases, Hosts: settled("h1", "h2")},
		},
		{
			name: "a bad release reverted on one host",
			in: Input{Journals: map[string]string{
				"h1": journal(upgrade("t1", "ccccccc", 0, 1, 6, msgQuarantined)),
				"h2": journal(upgrade("t2", "ccccccc", 0, -1, 7, msgAborted)),
			}, Releases: releases, Halted: []string{bad},
				Hosts: []HostState{{Name: "h1", LastGood: good, Served: "2.0.0", Quarantined: []string{bad}}, {Name: "h2", LastGood: good, Served: "2.0.0"}}},
		},
		{
			name: "a bad release that reached a second host",
			in: Input{Journals: map[string]string{
				"h1": journal(upgrade("t1", "ccccccc", 0, 1, 6, msgQuarantined)),
				"h2": journal(upgrade("t2", "ccccccc", 0, 7, 12, msgQuarantined)),
			}, Releases: releases, Hosts: settled("h1", "h2")},
			want: []string{BadSpread},
		},
		{
			name: "a host left with its transaction open",
			in: Input{Journals: map[string]string{"h1": journal(upgrade("t1", "bbbbbbb", 0, 1, 5, msgCommitted))},
				Releases: releases, Hosts: []HostState{{Name: "h1", TxnState: "SWITCHING", LastGood: good, Served: "2.0.0"}}},
			want: []string{Settled},
		},
		{
			name: "a host serving another version than it committed, and one serving nothing",
			in: Input{Journals: map[string]string{},
				Releases: releases, Hosts: []HostState{{Name: "h1", LastGood: good, Served: "3.0.0"}, {Name: "h2", LastGood: good}, {Name: "h3"}}},
			want: []string{Settled, Settled, Settled},
		},
		{
			name: "a good release quarantined by a host and halted in the group",
			in: Input{Journals: map[string]string{"h1": journal(upgrade("t1", "bbbbbbb", 0, 1, 5, msgQuarantined))},
				Releases: releases, Halted: []string{good},
				Hosts: []HostState{{Name: "h1", LastGood: "aaaaaaa0000", Served: "1.0.0", Quarantined: []string{good}}}},
			want: []string{GoodPunished, GoodPunished},
		},
		{
			name: "a new transaction written over a switched one",
			in: Input{Journals: map[string]string{"h1": journal(upgrade("t1", "bbbbbbb", 0, 1, 0, ""), upgrade("t9", "bbbbbbb", 20, 21, 25, msgCommitted))},
				Releases: releases, Hosts: settled("h1")},
			want: []string{TxnOverwrites},
		},
		{
			name: "lines before the window are ignored",
			in: Input{Since: t0.Add(10 * time.Second), Journals: map[string]string{
				"h1": journal(upgrade("t1", "bbbbbbb", 0, 1, 8, msgCommitted)),
				"h2": journal(upgrade("t2", "bbbbbbb", 0, 6, 12, msgCommitted)),
			}, Releases: releases, Hosts: settled("h1", "h2")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			vs := Check(tt.in)
			for _, v := range vs {
				got = append(got, v.Invariant)
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("violations: got %v, want %v", vs, tt.want)
			}
		})
	}
}

func TestParseLine(t *testing.T) {
	l, ok := ParseLine(`time=2025-03-01T10:00:01.5Z level=ERROR msg="upgrade failed; reverting" host=h1 txn=ab12 step=verify reason="check \"health\" failed" output=""`)
	if !ok {
		t.Fatal("not parsed")
	}
	if !l.At.Equal(t0.Add(1500*time.Millisecond)) || l.Msg != "upgrade failed; reverting" || l.Attrs["reason"] != `check "health" failed` || l.Attrs["txn"] != "ab12" || l.Attrs["output"] != "" {
		t.Errorf("got %+v", l)
	}
	if _, ok := ParseLine("Started baton-agent.service."); ok {
		t.Error("a systemd line parsed as the agent's")
	}
}

func TestTimelineCounts(t *testing.T) {
	tl := BuildTimeline(map[string]string{
		"h1": journal(upgrade("t1", "bbbbbbb", 0, 1, 5, msgCommitted), upgrade("t2", "ccccccc", 6, 7, 9, msgQuarantined)),
		"h2": "baton-agent.service: Watchdog timeout (limit 10s)!\n" + journal(upgrade("t3", "bbbbbbb", 0, -1, 2, msgAborted)),
	}, time.Time{})
	n := tl.Count()
	if n[Committed] != 1 || n[Failed] != 1 || n[Aborted] != 1 || len(tl.Windows) != 2 || tl.WatchdogKills["h2"] != 1 {
		t.Errorf("counts %v, %d windows, watchdog kills %v", n, len(tl.Windows), tl.WatchdogKills)
	}
}
