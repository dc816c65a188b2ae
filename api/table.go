package api

import (
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/baton-fleet/baton/events"
	"github.com/baton-fleet/baton/internal/commitid"
)

// What WriteTable shows at most.
const (
	outputLines  = 12  // of the failing check's output: the last ones
	lineWidth    = 160 // characters of one line of output or of a message
	eventsShown  = 5   // the most recent events
	labelColumns = 12
)

// ANSI styles, used only when WriteTable is asked for color.
const (
	styleNone   = ""
	styleBold   = "\x1b[1m"
	styleDim    = "\x1b[2m"
	styleRed    = "\x1b[31m"
	styleGreen  = "\x1b[32m"
	styleYellow = "\x1b[33m"
	styleReset  = "\x1b[0m"
)

// WriteTable writes s for a person: host and group, applied against tracked commit,
// phase, the transaction and its step, lease, last fetch, the last result with the
// failing check's output (its last lines, indented), a rejected commit, quarantined
// commits, each service's version and unit states, and the recent events. Ages are
// relative to s.Time. color adds ANSI colors: pass it only for a terminal. Text from
// the agent is cleaned of control characters, so that check output cannot drive the
// terminal.
func WriteTable(w io.Writer, s State, color bool) error {
	t := &table{w: w, color: color, now: s.Time}
	t.host(s)
	t.applied(s)
	t.field("phase", clean(s.Phase))
	if x := s.Txn; x != nil {
		t.txn(x)
	}
	t.lease(s.Lease)
	t.fetch(s.Fetch)
	if r := s.LastResult; r != nil {
		t.result(r)
	}
	if r := s.Rejected; r != nil {
		t.rejected(r)
	}
	if len(s.Quarantined) > 0 {
		t.quarantined(s.Quarantined)
	}
	t.line("")
	t.services(s.Services)
	if len(s.Events) > 0 {
		t.recent(s.Events)
	}
	return t.err
}

// host writes the host, its group and the agent's version.
func (t *table) host(s State) {
	host := t.paint(styleBold, clean(s.Host))
	if s.Group != "" {
		host += " (group " + clean(s.Group) + ")"
	} else {
		host += " " + t.paint(styleYellow, "(in no group)")
	}
	if s.Version != "" {
		host += t.paint(styleDim, "  baton "+clean(s.Version))
	}
	t.field("host", host)
}

// applied writes the commit applied and how it stands against the one tracked.
func (t *table) applied(s State) {
	applied := t.paint(styleNone, commitOrNone(s.Applied))
	switch {
	case s.Tracked == "":
	case s.Applied == s.Tracked:
		applied += " " + t.paint(styleGreen, "(up to date)")
	default:
		applied += ", tracked " + commitOrNone(s.Tracked) + " " + t.paint(styleYellow, "(behind)")
	}
	t.field("applied", applied)
}

// txn writes the open transaction: its commits and state, when it started, its
// attempt and services, and why it is rolling back.
func (t *table) txn(x *TxnState) {
	style := styleYellow
	if x.State == "ROLLING_BACK" || x.State == "FAILED" {
		style = styleRed
	}
	line := fmt.Sprintf("%s %s -> %s %s", clean(x.ID), commitOrNone(x.From), short(x.To), t.paint(style, clean(x.State)))
	if !x.Since.IsZero() {
		line += t.paint(styleDim, " since "+t.whenText(x.Since))
	}
	t.field("transaction", line)
	var more []string
	if !x.Started.IsZero() {
		more = append(more, "started "+t.whenText(x.Started))
	}
	if x.Attempts > 1 {
		more = append(more, fmt.Sprintf("attempt %d", x.Attempts))
	}
	if len(x.Services) > 0 {
		more = append(more, "services "+clean(strings.Join(x.Services, ", ")))
	}
	if len(more) > 0 {
		t.field("", t.paint(styleDim, strings.Join(more, "; ")))
	}
	if x.Reason != "" {
		t.field("", t.paint(styleRed, "reason: "+cut(clean(x.Reason))))
	}
}

// lease writes the host's hold on its group's lease.
func (t *table) lease(l LeaseState) {
	lease := t.paint(styleNone, "not held")
	switch {
	case l.Held:
		lease = t.paint(styleGreen, "held")
	case l.Waiting:
		lease = t.paint(styleYellow, "waiting")
	}
	if !l.Since.IsZero() && (l.Held || l.Waiting) {
		lease += " since " + t.when(l.Since)
	}
	if l.Backend != "" {
		lease += t.paint(styleDim, " ("+clean(l.Backend)+")")
	}
	t.field("lease", lease)
}

// fetch writes the last poll of the fleet repository and why it failed.
func (t *table) fetch(f FetchState) {
	fetch := t.paint(styleYellow, "not yet")
	if !f.Time.IsZero() {
		fetch = t.when(f.Time)
		if f.Error == "" {
			fetch += " " + t.paint(styleGreen, "ok")
		} else {
			fetch += " " + t.paint(styleRed, "failed")
			if !f.LastSuccess.IsZero() {
				fetch += t.paint(styleDim, ", last ok "+t.whenText(f.LastSuccess))
			}
		}
	}
	t.field("fetch", fetch)
	if f.Error != "" {
		t.field("", t.paint(styleRed, cut(clean(f.Error))))
	}
	if f.Shared != nil {
		t.sharedHead(f.Shared)
	}
}

// sharedHead writes which host fetches for the fleet, the head it published and
// when this agent last saw it confirmed.
func (t *table) sharedHead(h *SharedHead) {
	var line string
	switch {
	case h.Self:
		line = t.paint(styleBold, "this host")
	case h.Fetcher != "":
		line = clean(h.Fetcher)
	default:
		line = t.paint(styleYellow, "none heard yet")
	}
	if h.Head != "" {
		line += ", head " + short(h.Head)
	}
	if !h.Heard.IsZero() {
		line += " confirmed " + t.when(h.Heard)
	}
	if h.Failed != "" && !h.Stale {
		line += ", " + t.paint(styleYellow, "its last poll failed: "+clean(h.Failed))
	}
	switch {
	case h.Stale && h.Heard.IsZero():
		line += " " + t.paint(styleYellow, "(this host polls on its own)")
	case h.Stale:
		line += " " + t.paint(styleYellow, "(stale: this host polls on its own)")
	}
	t.field("fetcher", line)
}

// rejected writes the commit refused as bad input and why.
func (t *table) rejected(r *Rejected) {
	line := short(r.Commit) + " " + t.paint(styleRed, "rejected")
	if !r.Time.IsZero() {
		line += " " + t.when(r.Time)
	}
	t.field("rejected", line)
	t.output(r.Reason, styleRed)
}

// quarantined writes the quarantined commits, one a line: when, where and why.
func (t *table) quarantined(qs []Quarantined) {
	t.line(t.paint(styleBold, "quarantined"))
	for _, q := range qs {
		line := "  " + t.paint(styleYellow, short(q.Commit))
		if !q.Time.IsZero() {
			line += " " + t.when(q.Time)
		}
		if q.Host != "" {
			line += " on " + clean(q.Host)
		}
		if q.Reason != "" {
			line += ": " + cut(clean(q.Reason))
		}
		t.line(line)
	}
}

// services writes each service's version (and the one being installed) and the
// states of its units, in columns.
func (t *table) services(svcs []ServiceState) {
	if len(svcs) == 0 {
		t.line(t.paint(styleDim, "no services on this host"))
		return
	}
	rows := [][]cell{{{"SERVICE", styleBold}, {"VERSION", styleBold}, {"UNITS", styleBold}}}
	for _, svc := range svcs {
		version := cell{clean(orDash(svc.Version)) + colorOf(svc.Color), styleNone}
		if svc.Target != "" && svc.Target != svc.Version {
			version = cell{clean(orDash(svc.Version)) + colorOf(svc.Color) + " -> " + clean(svc.Target) + colorOf(svc.TargetColor), styleYellow}
		}
		var units []string
		for _, u := range svc.Units {
			units = append(units, t.unit(u))
		}
		rows = append(rows, []cell{{clean(svc.Name), styleNone}, version, {strings.Join(units, "  "), styleNone}})
		for _, c := range svc.Colors {
			rows = append(rows, []cell{{"  " + clean(c.Name), styleDim}, {clean(orDash(c.Version)) + " " + t.paint(colorStyle(c.State), clean(c.State)), styleNone}})
		}
	}
	t.rows(rows)
}

// colorStyle is the style of a color's state.
func colorStyle(state string) string {
	switch state {
	case ColorActive:
		return styleGreen
	case ColorStarting, ColorDraining, ColorReverting:
		return styleYellow
	}
	return styleDim
}

// colorOf names a bluegreen service's color after its version, "" for others.
func colorOf(color string) string {
	if color == "" {
		return ""
	}
	return " (" + clean(color) + ")"
}

// unit is a unit's name and state, colored by its state, and whether it drifted.
func (t *table) unit(u UnitState) string {
	state := clean(orDash(u.Active))
	if u.Sub != "" {
		state += "/" + clean(u.Sub)
	}
	unit := clean(u.Name) + " " + t.paint(unitStyle(u.Active), state)
	if u.Drift {
		unit += " " + t.paint(styleRed, "(drift)")
	}
	return unit
}

// recent writes the most recent events (eventsShown), in columns.
func (t *table) recent(all []events.Event) {
	t.line("")
	t.line(t.paint(styleBold, "recent events"))
	var rows [][]cell
	for _, e := range all[max(0, len(all)-eventsShown):] {
		about := strings.TrimSpace(short(e.Commit) + " " + clean(e.Service))
		rows = append(rows, []cell{
			{"  " + t.stamp(e.Time), styleDim},
			{clean(e.Type), eventStyle(e.Type)},
			{about, styleNone},
			{cut(clean(e.Message)), styleNone},
		})
	}
	t.rows(rows)
}

// result writes the last result and the failing check's output.
func (t *table) result(r *Result) {
	style := styleNone
	switch r.Outcome {
	case OutcomeUpgraded, OutcomeUnchanged:
		style = styleGreen
	case OutcomeReverted, OutcomeAborted, OutcomeRolledBack:
		style = styleYellow
	case OutcomeFailed, OutcomeRejected:
		style = styleRed
	}
	line := t.paint(style, clean(orDash(r.Outcome)))
	switch {
	case r.From != "" && r.To != "" && (r.Outcome == OutcomeReverted || r.Outcome == OutcomeFailed):
		line += " (the upgrade " + short(r.From) + " -> " + short(r.To) + " failed)"
	case r.To != "" && (r.Outcome == OutcomeReverted || r.Outcome == OutcomeFailed):
		line += " (the upgrade to " + short(r.To) + " failed)"
	case r.From != "" && r.To != "":
		line += " " + short(r.From) + " -> " + short(r.To)
	case r.To != "":
		line += " " + short(r.To)
	}
	if !r.Time.IsZero() {
		line += " " + t.when(r.Time)
	}
	t.field("last result", line)
	if r.Message != "" {
		t.field("", cut(clean(r.Message)))
	}
	var where []string
	if r.Step != "" {
		where = append(where, "step "+clean(r.Step))
	}
	if r.Check != "" {
		where = append(where, "check "+clean(r.Check))
	}
	if len(where) > 0 {
		t.field("", t.paint(styleDim, strings.Join(where, ", ")))
	}
	t.output(r.Output, styleNone)
}

// output writes the last lines of a check's output (or of a long reason), indented
// under the labels.
func (t *table) output(out, style string) {
	lines := strings.Split(strings.TrimRight(strings.ToValidUTF8(out, "?"), " \t\r\n"), "\n")
	if len(lines) == 1 && strings.TrimSpace(lines[0]) == "" {
		return
	}
	pad := strings.Repeat(" ", labelColumns)
	if n := len(lines) - outputLines; n > 0 {
		t.line(pad + t.paint(styleDim, fmt.Sprintf("| … %d earlier lines", n)))
		lines = lines[n:]
	}
	for _, l := range lines {
		t.line(pad + t.paint(styleDim, "| ") + t.paint(style, cut(clean(strings.TrimRight(l, " \t\r")))))
	}
}

type table struct {
	w     io.Writer
	color bool
	now   time.Time
	err   error
}

type cell struct {
	text  string // may hold ANSI styles of its own, made by paint
	style string
}

func (t *table) line(s string) {
	if t.err == nil {
		_, t.err = io.WriteString(t.w, strings.TrimRight(s, " ")+"\n")
	}
}

// field writes a labeled line; an empty label continues the field above.
func (t *table) field(label, value string) {
	pad := strings.Repeat(" ", max(labelColumns-len(label), 1))
	t.line(t.paint(styleBold, label) + pad + value)
}

// rows writes cells in aligned columns; the last column is not padded.
func (t *table) rows(rows [][]cell) {
	var widths []int
	for _, r := range rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], visibleWidth(c.text))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		for i, c := range r {
			b.WriteString(t.paint(c.style, c.text))
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-visibleWidth(c.text)+2))
			}
		}
		t.line(b.String())
	}
}

func (t *table) paint(style, s string) string {
	if !t.color || style == styleNone || s == "" {
		return s
	}
	return style + s + styleReset
}

// when formats a time and, when the state has its own time, its age (dimmed).
func (t *table) when(at time.Time) string {
	if t.now.IsZero() {
		return t.stamp(at)
	}
	return t.stamp(at) + t.paint(styleDim, " ("+age(t.now.Sub(at))+")")
}

// whenText is when without styles, to go inside a painted string.
func (t *table) whenText(at time.Time) string {
	if t.now.IsZero() {
		return t.stamp(at)
	}
	return t.stamp(at) + " (" + age(t.now.Sub(at)) + ")"
}

func (t *table) stamp(at time.Time) string {
	if at.IsZero() {
		return "-"
	}
	return at.Format("2006-01-02 15:04:05")
}

// age formats d for a person: 42s ago, 5m ago, 3h05m ago, 2d4h ago.
func age(d time.Duration) string {
	d = max(d, 0).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm ago", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh ago", int(d.Hours())/24, int(d.Hours())%24)
}

func unitStyle(active string) string {
	switch active {
	case "active":
		return styleGreen
	case "failed":
		return styleRed
	case "activating", "deactivating", "reloading", "refreshing":
		return styleYellow
	}
	return styleNone
}

func eventStyle(typ string) string {
	switch typ {
	case "upgrade.succeeded":
		return styleGreen
	case "upgrade.failed", "rollout.halted", "commit.rejected", "drift.found":
		return styleRed
	case "revert.done":
		return styleYellow
	}
	return styleNone
}

// visibleWidth is the width of s on a terminal, ANSI styles left out.
func visibleWidth(s string) int {
	n := 0
	for i := 0; i < len(s); {
		if s[i] == 0x1b {
			if j := strings.IndexByte(s[i:], 'm'); j >= 0 {
				i += j + 1
				continue
			}
		}
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
		n++
	}
	return n
}

// clean makes agent text safe to print on one line: invalid UTF-8, control and
// bidirectional-override characters become "?", tabs and newlines spaces.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "?")
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			return ' '
		case unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == utf8.RuneError:
			return '?'
		}
		return r
	}, s)
}

// cut shortens s to lineWidth characters.
func cut(s string) string {
	if utf8.RuneCountInString(s) <= lineWidth {
		return s
	}
	r := []rune(s)
	return string(r[:lineWidth-1]) + "…"
}

// short and commitOrNone show a commit id the agent sent, cleaned for the terminal.
func short(commit string) string        { return commitid.Short(clean(commit)) }
func commitOrNone(commit string) string { return commitid.ShortOrNone(clean(commit)) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
