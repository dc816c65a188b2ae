// Package chaos checks baton's safety promises after faults: a pure invariant checker
// over the agents' journals and the fleet's final state, and the fault suite and the
// chaos run that drive a test fleet (internal/testfleet) through etcd, network and
// agent faults.
package chaos

import (
	"sort"
	"strconv"
	"strings"
	"time"
)

// Line is one parsed log line of an agent: its time, message and attributes.
type Line struct {
	At    time.Time
	Msg   string
	Attrs map[string]string
}

// ParseLine parses a line of slog's text handler (time=... level=... msg="..." k=v);
// false for a line that has no time (systemd's own lines about the unit).
func ParseLine(s string) (Line, bool) {
	attrs := map[string]string{}
	for s != "" {
		s = strings.TrimLeft(s, " ")
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || strings.ContainsAny(s[:eq], " \"") {
			break
		}
		key := s[:eq]
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				break
			}
			val, _ = strconv.Unquote(q)
			s = s[len(q):]
		} else {
			end := strings.IndexByte(s, ' ')
			if end < 0 {
				end = len(s)
			}
			val, s = s[:end], s[end:]
		}
		attrs[key] = val
	}
	at, err := time.Parse(time.RFC3339Nano, attrs["time"])
	if err != nil {
		return Line{}, false
	}
	return Line{At: at, Msg: attrs["msg"], Attrs: attrs}, true
}

// Messages of the agent that open and close a host's switched window.
const (
	msgCommitted   = "upgrade committed"
	msgQuarantined = "upgrade failed; commit quarantined"
	msgAborted     = "upgrade aborted" // before touching the host, or after reverting it
	phaseSwitching = ": switching"
)

// Window is the time one host spent between starting to switch to a commit and the
// end of that transaction (committed, reverted and failed, or aborted): the span in
// which it counts against the group's maxParallel. End is zero while still open.
type Window struct {
	Host, Txn, Commit string // Commit as the journal writes it: its first 7 digits
	Start, End        time.Time
	Outcome           Outcome // how the transaction ended
}

// Outcome is how a transaction ended, by its journal.
type Outcome string

// Outcomes of a transaction.
const (
	Open        Outcome = "open"
	Committed   Outcome = "committed"
	Failed      Outcome = "failed"
	Aborted     Outcome = "aborted"
	Interrupted Outcome = "interrupted" // the agent stopped in it; a later start resumed it
)

// Txn is one transaction of one host, by its journal.
type Txn struct {
	Host, ID, Commit string
	Started          time.Time
	Switched         bool // it reached SWITCHING: the host ran the new release
	Outcome          Outcome
	Resumed          int // times a restarted agent resumed it
}

// Timeline is what the journals of a fleet say happened.
type Timeline struct {
	Windows []Window
	Txns    []Txn
	// WatchdogKills counts systemd's "Watchdog timeout" lines, per host.
	WatchdogKills map[string]int
}

// switched reports whether a line says its transaction is switching or past it.
func switched(l Line) bool {
	switch l.Attrs["step"] {
	case "SWITCHING", "VERIFYING", "ROLLING_BACK":
		return true
	}
	return strings.HasSuffix(l.Msg, phaseSwitching)
}

// ended is how a line ends its transaction, "" when it does not: by its message, or
// by the state persisted (a line logged in COMMITTED, FAILED or ABORTED).
func ended(l Line) Outcome {
	switch {
	case l.Msg == msgCommitted:
		return Committed
	case l.Msg == msgQuarantined:
		return Failed
	case strings.HasPrefix(l.Msg, msgAborted):
		return Aborted
	}
	switch l.Attrs["step"] {
	case "COMMITTED":
		return Committed
	case "FAILED":
		return Failed
	case "ABORTED":
		return Aborted
	}
	return ""
}

// BuildTimeline reads the journals (host -> the agent's journal, lines in order),
// keeping the lines at or after since.
func BuildTimeline(journals map[string]string, since time.Time) Timeline {
	tl := Timeline{WatchdogKills: map[string]int{}}
	hosts := make([]string, 0, len(journals))
	for h := range journals {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, host := range hosts {
		byID := map[string]*Txn{}
		var order []string
		var open *Window
		for raw := range strings.SplitSeq(journals[host], "\n") {
			if strings.Contains(raw, "Watchdog timeout") {
				tl.WatchdogKills[host]++
				continue
			}
			l, ok := ParseLine(raw)
			if !ok || l.At.Before(since) {
				continue
			}
			id := l.Attrs["txn"]
			if id == "" {
				continue
			}
			t := byID[id]
			if t == nil {
				t = &Txn{Host: host, ID: id, Commit: l.Attrs["commit"], Started: l.At, Outcome: Open}
				byID[id] = t
				order = append(order, id)
			}
			if l.Msg == "resuming an interrupted transaction" {
				t.Resumed++
			}
			if open != nil && open.Txn != id {
				// A host runs one transaction at a time: another one's line means the
				// earlier one was left behind (overwritten) without an end.
				open.End, open.Outcome = l.At, Interrupted
				tl.Windows = append(tl.Windows, *open)
				open = nil
			}
			if switched(l) && t.Outcome == Open {
				t.Switched = true
				if open == nil {
					open = &Window{Host: host, Txn: id, Commit: t.Commit, Start: l.At, Outcome: Open}
				}
			}
			if out := ended(l); out != "" {
				t.Outcome = out
				if open != nil {
					open.End, open.Outcome = l.At, out
					tl.Windows = append(tl.Windows, *open)
					open = nil
				}
			}
		}
		if open != nil {
			tl.Windows = append(tl.Windows, *open)
		}
		for _, id := range order {
			tl.Txns = append(tl.Txns, *byID[id])
		}
	}
	return tl
}

// Count is how many transactions ended each way.
func (tl Timeline) Count() map[Outcome]int {
	n := map[Outcome]int{}
	for _, t := range tl.Txns {
		n[t.Outcome]++
	}
	return n
}
