package drain

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path"
	"strings"
	"time"
)

// Bounds of one runtime API command.
const (
	commandTimeout = 5 * time.Second // connect, send, read the whole answer
	maxAnswer      = 8 << 20         // bytes; show stat of a backend of thousands of servers fits
)

// errAnswerTooLong is returned when an answer exceeds maxAnswer.
var errAnswerTooLong = fmt.Errorf("answer longer than %d bytes", maxAnswer)

// command sends one command to HAProxy's runtime API at addr (an absolute unix
// socket path, or host:port for TCP) and returns the whole answer. HAProxy's API
// is non-interactive by default: it answers one command and closes the
// connection, so the answer is everything read until EOF. The exchange is bounded
// by ctx and commandTimeout.
func command(ctx context.Context, addr, cmd string) (string, error) {
	network := "tcp"
	if path.IsAbs(addr) {
		network = "unix"
	}
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return "", fmt.Errorf("connect to the runtime API: %w", err)
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	// A ctx canceled before the deadline ends the exchange at once.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return "", fmt.Errorf("send %q: %w", cmd, ctxErr(ctx, err))
	}
	b, err := io.ReadAll(io.LimitReader(c, maxAnswer+1))
	if err != nil {
		return "", fmt.Errorf("read the answer to %q: %w", cmd, ctxErr(ctx, err))
	}
	if len(b) > maxAnswer {
		return "", fmt.Errorf("read the answer to %q: %w", cmd, errAnswerTooLong)
	}
	return string(b), nil
}

// ctxErr turns the i/o timeout that ends an exchange into its cause: ctx
// canceled, or the deadline (ctx's or commandTimeout) passed.
func ctxErr(ctx context.Context, err error) error {
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return err
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return ctx.Err()
	}
	return fmt.Errorf("no answer in time: %w", context.DeadlineExceeded)
}

// checkName reports whether s can be sent as a backend or server name: HAProxy
// allows letters, digits and "-_.:" in them, and anything else (a space, ';', a
// newline) would change the command.
func checkName(kind, s string) error {
	if s == "" {
		return fmt.Errorf("%s name is empty", kind)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.:", r)) {
			return fmt.Errorf("%s name %q: HAProxy names hold only letters, digits, '-', '_', '.' and ':'", kind, s)
		}
	}
	return nil
}

// checkAddr reports whether addr is an absolute unix socket path or host:port.
func checkAddr(addr string) error {
	if path.IsAbs(addr) {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("runtime API address %q is neither an absolute unix socket path nor host:port", addr)
	}
	return nil
}
