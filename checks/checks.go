// Package checks runs smoke checks and decides whether a freshly restarted service is healthy.
package checks

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/baton-fleet/baton/internal/yamldoc"
	"github.com/baton-fleet/baton/spec"
)

// Result is one run of one check, or one read of a unit's state by the implicit checks.
type Result struct {
	Check    string        // check name, or the unit name for implicit checks
	OK       bool          // the check passed
	Output   string        // what the check saw: status line and body head, output tail, dial error...
	Err      string        // why it failed, "" when OK
	Duration time.Duration // how long the run took
	At       time.Time     // when it started
}

// Clock is passed in wherever deadlines are computed.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// RealClock is the wall clock: time.Now and time.After.
var RealClock Clock = realClock{}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Limits of what a result keeps.
const (
	maxOutput   = 4 << 10  // bytes of output kept in Result.Output
	maxBodyRead = 64 << 10 // bytes of an HTTP body read and searched for Contains
	maxBodyShow = 1 << 10  // bytes of an HTTP body kept in Result.Output
	maxErrLine  = 200      // bytes of an output line quoted in Result.Err
)

// withDefaults fills the knobs that a check built in code (rather than parsed by
// spec, which sets them) leaves at zero.
func withDefaults(c spec.Check) spec.Check {
	if c.Interval <= 0 {
		c.Interval = yamldoc.Duration(spec.DefaultCheckInterval)
	}
	if c.Timeout <= 0 {
		c.Timeout = yamldoc.Duration(spec.DefaultCheckTimeout)
	}
	if c.Successes < 1 {
		c.Successes = spec.DefaultCheckSuccesses
	}
	if c.Failures < 1 {
		c.Failures = spec.DefaultCheckFailures
	}
	if c.HTTP != nil && c.HTTP.Status == 0 {
		h := *c.HTTP
		h.Status = spec.DefaultHTTPStatus
		c.HTTP = &h
	}
	return c
}

// checkName is the name a check is reported under.
func checkName(c spec.Check) string {
	switch {
	case c.Name != "":
		return c.Name
	case c.HTTP != nil:
		return "GET " + c.HTTP.URL
	case c.TCP != nil:
		return "tcp " + c.TCP.Address
	case c.Exec != nil && len(c.Exec.Command) > 0:
		return c.Exec.Command[0]
	}
	return "unnamed"
}

// printable turns bytes read from outside into valid UTF-8.
func printable(b []byte) string {
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// tail keeps the last n bytes of b, starting at a character boundary.
func tail(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	b = b[len(b)-n:]
	for i := 0; i < utf8.UTFMax && len(b) > 0 && !utf8.RuneStart(b[0]); i++ {
		b = b[1:]
	}
	return b
}

// lastLine is the last non-blank line of out, shortened for an error message.
func lastLine(out string) string {
	lines := strings.Split(strings.TrimRight(out, " \t\r\n"), "\n")
	l := strings.TrimSpace(lines[len(lines)-1])
	if len(l) > maxErrLine {
		l = string(tail([]byte(l), maxErrLine))
		l = "..." + l
	}
	return l
}

// times is "once" or "3 times", for reasons.
func times(n int) string {
	if n == 1 {
		return "once"
	}
	return fmt.Sprintf("%d times in a row", n)
}
