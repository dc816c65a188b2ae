package drain

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/baton-fleet/baton/checks"
)

// DefaultExecTimeout bounds each drain or undrain command when Exec.Timeout is 0.
// A drain command may itself wait for connections to end, so it is longer than
// the HAProxy drainer's default wait.
const DefaultExecTimeout = 60 * time.Second

// Exec drains and undrains with commands of the user's: a load balancer's CLI, a
// script that edits a DNS record, a call to a cloud API.
//
// Each command runs as checks.Prober.Exec runs it: a clean environment, its own
// process group killed whole at Timeout, as the Prober's User when set (a user
// that cannot be looked up fails the command, naming the user). Exit status 0 is
// success. UndrainCmd must
// be idempotent and must work without a prior DrainCmd, as Drainer promises; baton
// cannot check that. An empty command does nothing.
type Exec struct {
	DrainCmd, UndrainCmd []string
	Timeout              time.Duration  // each command's bound; 0: DefaultExecTimeout
	Prober               *checks.Prober // runs the commands; nil: a zero Prober
	Logger               *slog.Logger   // nil: discard
}

// Drain runs DrainCmd. When it fails, Drain runs UndrainCmd (even if ctx has
// ended, bounded by Timeout) to put the host back as it was, and returns the
// drain command's error, which names the command and ends with the last line of
// its output.
func (e *Exec) Drain(ctx context.Context) error {
	err := e.run(ctx, "drain", e.DrainCmd)
	if err == nil {
		return nil
	}
	if uerr := e.run(context.WithoutCancel(ctx), "undrain", e.UndrainCmd); uerr != nil {
		return fmt.Errorf("%w; and put back: %v", err, uerr)
	}
	return err
}

// Undrain runs UndrainCmd. The error names the command and ends with the last
// line of its output.
func (e *Exec) Undrain(ctx context.Context) error { return e.run(ctx, "undrain", e.UndrainCmd) }

func (e *Exec) run(ctx context.Context, what string, argv []string) error {
	if len(argv) == 0 {
		return nil
	}
	timeout := e.Timeout
	if timeout <= 0 {
		timeout = DefaultExecTimeout
	}
	p := e.Prober
	if p == nil {
		p = &checks.Prober{}
	}
	log := e.Logger
	if log == nil {
		log = discard
	}
	start := time.Now()
	out, err := p.Exec(ctx, argv, timeout)
	if err != nil {
		// Exec's error names argv[0], says how it failed and ends with the
		// output's last line.
		return fmt.Errorf("%s command %s: %w", what, quoteArgv(argv), err)
	}
	log.Info(what+"ed", "command", argv[0], "took", time.Since(start).Round(time.Millisecond), "output", lastLine(out))
	return nil
}

// quoteArgv shows a command as a shell would need it typed, for error messages.
func quoteArgv(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && !strings.ContainsFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-=:,+@%", r))
		}) {
			q[i] = a
		} else {
			q[i] = strconv.Quote(a)
		}
	}
	return strings.Join(q, " ")
}

// lastLine is the last non-blank line of s.
func lastLine(s string) string {
	s = strings.TrimRight(s, " \t\r\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return strings.TrimSpace(s)
}
