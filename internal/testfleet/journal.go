package testfleet

import (
	"regexp"
	"strings"
	"time"
)

// The agent logs with slog's text handler: time=... level=... msg="..." key=value ...
var (
	timeAttr  = regexp.MustCompile(`(?:^|\s)time=(\S+)`)
	stepsAttr = regexp.MustCompile(`(?:^|\s)steps="([^"]*)"`)
	tookAttr  = regexp.MustCompile(`(?:^|\s)took=(\S+)`)
)

// findLine returns the last journal line with message msg about commit.
func findLine(journal, msg, commit string) (string, bool) {
	lines := strings.Split(journal, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := lines[i]
		if strings.Contains(l, `msg="`+msg+`"`) && strings.Contains(l, "commit="+short(commit)) {
			return l, true
		}
	}
	return "", false
}

// parseTime is the time= attribute of a log line.
func parseTime(line string) (time.Time, bool) {
	m := timeAttr.FindStringSubmatch(line)
	if m == nil {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, m[1])
	return t, err == nil
}

// parseSteps is the steps= attribute of a log line: each state's duration.
func parseSteps(line string) map[string]time.Duration {
	m := stepsAttr.FindStringSubmatch(line)
	if m == nil {
		return nil
	}
	out := map[string]time.Duration{}
	for _, f := range strings.Fields(m[1]) {
		state, d, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		if v, err := time.ParseDuration(d); err == nil {
			out[state] += v
		}
	}
	return out
}

// CommitSteps is how long the host spent in each transaction state for commit, from
// its agent's "upgrade committed" line; false when the host has not committed it.
func (h *Host) CommitSteps(commit string) (map[string]time.Duration, bool) {
	l, ok := findLine(h.Journal(), "upgrade committed", commit)
	if !ok {
		return nil, false
	}
	return parseSteps(l), true
}

// RevertStarted is when the host's agent gave up on commit and began reverting
// ("upgrade failed; reverting"); false when it did not.
func (h *Host) RevertStarted(commit string) (time.Time, bool) {
	return h.lineTime("upgrade failed; reverting", commit)
}

// TxnStarted is when the host's agent began its transaction to commit (the phase
// "...: preparing"); false when it did not.
func (h *Host) TxnStarted(commit string) (time.Time, bool) {
	l, ok := findPhase(h.Journal(), ": preparing", commit)
	if !ok {
		return time.Time{}, false
	}
	return parseTime(l)
}

// Committed is when the host's agent committed commit; false when it did not.
func (h *Host) Committed(commit string) (time.Time, bool) {
	return h.lineTime("upgrade committed", commit)
}

// findPhase returns the first journal line whose message ends with suffix, about commit.
func findPhase(journal, suffix, commit string) (string, bool) {
	for l := range strings.SplitSeq(journal, "\n") {
		if strings.Contains(l, suffix+`"`) && strings.Contains(l, "commit="+short(commit)) {
			return l, true
		}
	}
	return "", false
}

// Noticed is when the host's agent fetched commit ("new commit"); false when it did not.
func (h *Host) Noticed(commit string) (time.Time, bool) {
	return h.lineTime("new commit", commit)
}

// lineTime is when the host's agent logged its last line with message msg about
// commit; false when it did not.
func (h *Host) lineTime(msg, commit string) (time.Time, bool) {
	l, ok := findLine(h.Journal(), msg, commit)
	if !ok {
		return time.Time{}, false
	}
	return parseTime(l)
}

// SwitchTook is how long the host's agent took to move the clients to the new color
// for commit (bluegreen's cutover); false when it did not.
func (h *Host) SwitchTook(commit string) (time.Duration, bool) {
	l, ok := findLine(h.Journal(), "the load balancer sends new clients to the new color", commit)
	if !ok {
		return 0, false
	}
	return parseTook(l)
}

// SwitchedBack is when the host's agent had sent the clients back to the old color,
// reverting commit, and how long that switch took; false when it did not.
func (h *Host) SwitchedBack(commit string) (time.Time, time.Duration, bool) {
	l, ok := findLine(h.Journal(), "the load balancer sends the clients back to the old color", commit)
	if !ok || !strings.Contains(l, "clientsMoved=true") {
		return time.Time{}, 0, false
	}
	at, ok := parseTime(l)
	took, ok2 := parseTook(l)
	return at, took, ok && ok2
}

// parseTook is the took= attribute of a log line.
func parseTook(line string) (time.Duration, bool) {
	m := tookAttr.FindStringSubmatch(line)
	if m == nil {
		return 0, false
	}
	d, err := time.ParseDuration(m[1])
	return d, err == nil
}
