package drain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Defaults of HAProxy.
const (
	DefaultTimeout = 30 * time.Second
	DefaultPoll    = 100 * time.Millisecond
)

// restoreTimeout bounds putting a server back as it was after a failed Drain,
// even when Drain's own context has ended.
const restoreTimeout = 5 * time.Second

// HAProxy drains one server of one HAProxy backend over HAProxy's runtime API (a
// "stats socket ... level admin"), one command per connection.
//
// Drain:
//  1. reads the server's state (`show servers state <backend>`), so that an unknown
//     backend or server fails before anything changes;
//  2. `set server <backend>/<server> state drain`: HAProxy sends it no new
//     sessions, but those that persist on it (stickiness) still arrive;
//  3. polls `show stat <backend> 4 -1` every Poll until the server's current
//     sessions (scur) and queued requests (qcur) are 0;
//  4. `set server <backend>/<server> state maint`: not even persistent sessions
//     arrive now; then polls again until sessions are 0, for a sticky session
//     that came in between.
//
// Timeout bounds steps 3 and 4 together. When it passes with sessions still open,
// Drain logs a warning with their number, sets maint anyway and returns nil: the
// restart that follows cuts those sessions. This is the bound the user chose for a
// long-lived connection (a websocket, a stream), which would otherwise block every
// upgrade. A server already in maint is not set to drain first (that would let
// sticky sessions back in); it is only waited for.
//
// Before it changes anything, Drain records the state it found the server in
// ("ready", "drain" or "maint": what `set server ... state` sets) in a file under
// StateDir, and Undrain puts the server back in that state, not simply ready: a
// server that an operator had put in maint stays in maint after the upgrade, one
// found in drain goes back to drain. The record outlives the process, so the
// Undrain of the next run, after a crash, restores the same state; and a later
// Drain that finds the server still in drain or maint with a record not yet
// restored keeps the state that record found, not baton's own maint. Undrain
// restores a record once: called again, or with no record, it does nothing. With
// no StateDir nothing is recorded and Undrain is `set server ... state ready`, as
// for a server found ready.
//
// A Drain that fails (HAProxy unreachable, an answer that is not success, ctx
// ended) puts the server back in the state it found, with its own short bound,
// and returns the error. With health checks, HAProxy takes a server that leaves
// maint as up at once and checks it immediately, so call Undrain only once the
// service answers.
//
// Errors name the backend/server and quote HAProxy's answer, such as "No such
// server.". The fields are read, never written: an HAProxy may be used from
// several goroutines.
type HAProxy struct {
	Addr            string        // runtime API: an absolute unix socket path, or host:port for TCP
	Backend, Server string        // HAProxy's names: letters, digits and -_.:
	Timeout         time.Duration // longest wait for sessions to end; 0: DefaultTimeout
	Poll            time.Duration // how often to read the session count; 0: DefaultPoll
	StateDir        string        // where Drain records the state it found; "": nowhere (Undrain sets ready)
	UpTimeout       time.Duration // longest wait in Switch for the server to pass a check; 0: DefaultUpTimeout
	Logger          *slog.Logger  // nil: discard
}

// Drain takes the server out of rotation and waits for its sessions to end; see
// HAProxy.
func (h *HAProxy) Drain(ctx context.Context) error {
	if err := h.validate(); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	before, err := h.State(ctx)
	if err != nil {
		return fmt.Errorf("drain %s: %w", h.name(), err)
	}
	was, err := h.recordFound(before.Admin)
	if err != nil {
		return fmt.Errorf("drain %s: %w", h.name(), err)
	}
	if err := h.drain(ctx, before); err != nil {
		if rerr := h.restore(ctx, was); rerr != nil {
			err = fmt.Errorf("%w; and put back to %s: %v", err, was, rerr)
		}
		return fmt.Errorf("drain %s: %w", h.name(), err)
	}
	return nil
}

func (h *HAProxy) drain(ctx context.Context, before ServerState) error {
	log := h.logger()
	start := time.Now()
	timeout := orDefault(h.Timeout, DefaultTimeout)
	deadline := start.Add(timeout)
	if before.Admin.Maint() {
		log.Info("server already in maint; waiting for its sessions to end", "sessions", before.Sessions)
	} else if err := h.set(ctx, "drain"); err != nil {
		return err
	}
	left, err := h.waitIdle(ctx, deadline)
	if err != nil {
		return err
	}
	if err := h.set(ctx, "maint"); err != nil {
		return err
	}
	if left == 0 {
		// a sticky session may have come in before maint
		if left, err = h.waitIdle(ctx, deadline); err != nil {
			return err
		}
	}
	took := time.Since(start).Round(time.Millisecond)
	if left > 0 {
		log.Warn("drain timeout: sessions still open go to maint and are cut by the restart",
			"sessions", left, "timeout", timeout, "took", took)
		return nil
	}
	log.Info("drained", "took", took, "before", before.Sessions)
	return nil
}

// restore puts the server back into the settable state was after a failed drain,
// and records that it did.
func (h *HAProxy) restore(ctx context.Context, was string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), restoreTimeout)
	defer cancel()
	now, err := h.State(ctx)
	if err != nil {
		return err
	}
	if settable(now.Admin) != was {
		if err := h.set(ctx, was); err != nil {
			return err
		}
	}
	return h.restored()
}

// restored marks the server's record, if any, as restored.
func (h *HAProxy) restored() error {
	if h.StateDir == "" {
		return nil
	}
	f, ok, err := h.readFound()
	if err != nil || !ok {
		return err
	}
	return h.markRestored(f)
}

// Undrain puts the server back in the state the last Drain found it in, once;
// see HAProxy. It is idempotent and needs no prior Drain.
func (h *HAProxy) Undrain(ctx context.Context) error {
	if err := h.validate(); err != nil {
		return fmt.Errorf("undrain: %w", err)
	}
	if err := h.undrain(ctx); err != nil {
		return fmt.Errorf("undrain %s: %w", h.name(), err)
	}
	return nil
}

func (h *HAProxy) undrain(ctx context.Context) error {
	log := h.logger()
	if h.StateDir == "" {
		if err := h.set(ctx, "ready"); err != nil {
			return err
		}
		log.Info("undrained")
		return nil
	}
	f, ok, err := h.readFound()
	if err != nil {
		return err
	}
	if !ok || f.Restored {
		log.Debug("no drain to undo")
		return nil
	}
	if err := h.set(ctx, f.State); err != nil {
		return err
	}
	if err := h.markRestored(f); err != nil {
		return err
	}
	if f.State == "ready" {
		log.Info("undrained")
	} else {
		log.Info("put back in "+f.State+", as the drain found it", "found", f.Time)
	}
	return nil
}

// State reads the server's admin and operational state (`show servers state
// <backend>`) and its current sessions, queue and status (`show stat <backend> 4
// -1`). The two are read one after the other, not atomically.
func (h *HAProxy) State(ctx context.Context) (ServerState, error) {
	if err := h.validate(); err != nil {
		return ServerState{}, err
	}
	answer, err := command(ctx, h.Addr, "show servers state "+h.Backend)
	if err != nil {
		return ServerState{}, err
	}
	ss, err := parseServersState(answer)
	if err != nil {
		return ServerState{}, fmt.Errorf("show servers state %s: %w", h.Backend, err)
	}
	row, err := findServerState(ss, h.Backend, h.Server)
	if err != nil {
		return ServerState{}, h.noServer(ss)
	}
	st, err := h.stat(ctx)
	if err != nil {
		return ServerState{}, err
	}
	return ServerState{
		Backend:  h.Backend,
		Server:   h.Server,
		Admin:    row.Admin,
		Oper:     row.Oper,
		Status:   st.Status,
		Sessions: st.Sessions,
		Queued:   st.Queued,
	}, nil
}

// stat reads the server's line of `show stat`.
func (h *HAProxy) stat(ctx context.Context) (statRow, error) {
	cmd := "show stat " + h.Backend + " 4 -1" // 4: servers only; -1: all of them
	answer, err := command(ctx, h.Addr, cmd)
	if err != nil {
		return statRow{}, err
	}
	rows, err := parseStat(answer)
	if err != nil {
		return statRow{}, fmt.Errorf("%s: %w", cmd, err)
	}
	row, err := findStat(rows, h.Backend, h.Server)
	if err != nil {
		return statRow{}, fmt.Errorf("%s: the server is not listed", cmd)
	}
	return row, nil
}

// waitIdle polls the server's sessions and queue until both are 0 or deadline
// passes, and returns how many are left.
func (h *HAProxy) waitIdle(ctx context.Context, deadline time.Time) (int, error) {
	poll := orDefault(h.Poll, DefaultPoll)
	for {
		st, err := h.stat(ctx)
		if err != nil {
			return 0, err
		}
		left := st.Sessions + st.Queued
		if left == 0 || !time.Now().Before(deadline) {
			return left, nil
		}
		wait := min(poll, time.Until(deadline))
		select {
		case <-ctx.Done():
			return left, fmt.Errorf("waiting for %d sessions to end: %w", left, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// set sends `set server <backend>/<server> state <state>`. HAProxy answers an
// empty line on success and a message otherwise.
func (h *HAProxy) set(ctx context.Context, state string) error {
	cmd := "set server " + h.Backend + "/" + h.Server + " state " + state
	answer, err := command(ctx, h.Addr, cmd)
	if err != nil {
		return err
	}
	if strings.TrimSpace(answer) != "" {
		return fmt.Errorf("%s: %w", cmd, answerError(answer))
	}
	return nil
}

// noServer is the error for a backend that lacks the server, naming those it has.
func (h *HAProxy) noServer(rows []serverStateRow) error {
	var names []string
	for _, r := range rows {
		if r.Backend == h.Backend {
			names = append(names, r.Server)
		}
	}
	if len(names) > 10 {
		names = append(names[:10], "...")
	}
	if len(names) == 0 {
		return fmt.Errorf("HAProxy has no server %q in backend %s, which has no servers", h.Server, h.Backend)
	}
	return fmt.Errorf("HAProxy has no server %q in backend %s (it has %s)", h.Server, h.Backend, strings.Join(names, ", "))
}

func (h *HAProxy) validate() error {
	return errors.Join(checkAddr(h.Addr), checkName("backend", h.Backend), checkName("server", h.Server))
}

func (h *HAProxy) name() string { return h.Backend + "/" + h.Server }

func (h *HAProxy) logger() *slog.Logger {
	if h.Logger == nil {
		return discard
	}
	return h.Logger
}

// orDefault returns d, or def when d is not positive.
func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
