package drain

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Server states that `set server ... state` sets.
const (
	StateReady = "ready" // in rotation
	StateDrain = "drain" // no new sessions; persistent (sticky) ones still arrive
	StateMaint = "maint" // no traffic at all
)

// DefaultUpTimeout bounds how long Switch waits for a server leaving maint to
// pass its first health check.
const DefaultUpTimeout = 10 * time.Second

// Counters is what HAProxy counts of one server, read at one moment.
type Counters struct {
	Admin    AdminState // ready, drain or maint
	Oper     OperState  // up or down, as its health checks say
	Sessions int        // current sessions (scur)
	Queued   int        // requests queued for it (qcur)
	Total    int64      // sessions ever sent to it (stot): one per HTTP request
	Requests int64      // HTTP requests it answered (req_tot); 0 where HAProxy does not count them
	// LastSess is how long ago HAProxy last sent it a session (lastsess, in whole
	// seconds); -1 when it never did.
	LastSess time.Duration
	// Check is its last health check's result (check_status: "L7OK", "L4CON",
	// ...), "INI" until the first check after it left maint, "" when unchecked.
	Check string
}

// Up reports whether HAProxy takes the server as up on the word of a health check
// (or has no check for it). A server leaving maint is taken as up at once, before
// any check: until the first one ends, Check is "INI" and Up is false.
func (c Counters) Up() bool {
	return c.Oper != OperStopped && strings.TrimLeft(c.Check, "* ") != "INI"
}

// SetState sets the server ready, drain or maint over the runtime API. It records
// nothing: a bluegreen switch persists which color is active itself.
func (h *HAProxy) SetState(ctx context.Context, state string) error {
	if err := h.validate(); err != nil {
		return fmt.Errorf("set state: %w", err)
	}
	switch state {
	case StateReady, StateDrain, StateMaint:
	default:
		return fmt.Errorf("set %s state %q: not one of ready, drain, maint", h.name(), state)
	}
	if err := h.set(ctx, state); err != nil {
		return fmt.Errorf("set %s %s: %w", h.name(), state, err)
	}
	return nil
}

// Counters reads the server's state and counters: `show servers state`, then
// `show stat`, one after the other.
func (h *HAProxy) Counters(ctx context.Context) (Counters, error) {
	st, err := h.State(ctx)
	if err != nil {
		return Counters{}, fmt.Errorf("read %s: %w", h.name(), err)
	}
	row, err := h.stat(ctx)
	if err != nil {
		return Counters{}, fmt.Errorf("read %s: %w", h.name(), err)
	}
	c := Counters{Admin: st.Admin, Oper: st.Oper, Sessions: row.Sessions, Queued: row.Queued,
		Total: row.Total, Requests: row.Requests, LastSess: -1, Check: row.Check}
	if row.LastSess >= 0 {
		c.LastSess = time.Duration(row.LastSess) * time.Second
	}
	return c, nil
}

// Switch moves new traffic from one server to another of the same backend, such
// as from the old color to the new, so that the backend always has a ready server:
//  1. to leaves maint for drain, where HAProxy health-checks it but sends it no new
//     client, and Switch waits (at most to.UpTimeout) for its first check to pass:
//     HAProxy takes a server that leaves maint as up before checking it;
//  2. to is set ready;
//  3. from is set drain: its sticky sessions keep reaching it until WaitIdle says
//     they ended, new ones go to to.
//
// A to that is not in maint skips step 1. When to does not pass its check in time,
// it goes back to maint, from is left as it was, and Switch returns the error.
// Switch and SwitchBack are idempotent: run again after a crash, they end in the
// same states.
func Switch(ctx context.Context, from, to *HAProxy) error {
	return hand(ctx, from, to, StateDrain)
}

// SwitchBack undoes a Switch, as a revert: to (the old color, still in drain) is
// set ready and then from (the new one) maint, so that no client reaches from
// again, not even one whose sticky session began there. Its steps are Switch's.
func SwitchBack(ctx context.Context, from, to *HAProxy) error {
	return hand(ctx, from, to, StateMaint)
}

// hand brings to into rotation, checked, then sets from out.
func hand(ctx context.Context, from, to *HAProxy, out string) error {
	if from.Addr != to.Addr || from.Backend != to.Backend {
		return fmt.Errorf("switch %s to %s: not two servers of one backend on one runtime API", from.name(), to.name())
	}
	if from.Server == to.Server {
		return fmt.Errorf("switch %s to itself", from.name())
	}
	if err := to.comeUp(ctx); err != nil {
		if rerr := to.SetState(context.WithoutCancel(ctx), StateMaint); rerr != nil {
			err = fmt.Errorf("%w; and back to maint: %v", err, rerr)
		}
		return fmt.Errorf("switch to %s: %w; %s still takes the traffic", to.Server, err, from.Server)
	}
	if err := from.SetState(ctx, out); err != nil {
		return fmt.Errorf("switch from %s: %w; both take new traffic", from.Server, err)
	}
	to.logger().Info("switched", "from", from.Server, "to", to.Server, "from_state", out)
	return nil
}

// comeUp puts the server in rotation: from maint through drain until a health
// check passes (see Switch), then ready.
func (h *HAProxy) comeUp(ctx context.Context) error {
	c, err := h.Counters(ctx)
	if err != nil {
		return err
	}
	if c.Admin.Maint() {
		if err := h.SetState(ctx, StateDrain); err != nil {
			return err
		}
	}
	if !c.Up() || c.Admin.Maint() {
		if err := h.waitUp(ctx); err != nil {
			return err
		}
	}
	return h.SetState(ctx, StateReady)
}

// waitUp waits until HAProxy takes the server as up on the word of a health
// check, at most UpTimeout.
func (h *HAProxy) waitUp(ctx context.Context) error {
	timeout := orDefault(h.UpTimeout, DefaultUpTimeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	poll := orDefault(h.Poll, DefaultPoll)
	for {
		c, err := h.Counters(ctx)
		if err == nil && c.Up() {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("HAProxy takes it as %s, its check says %q", c.Oper, c.Check)
			}
			return fmt.Errorf("not up after %s: %w", timeout, err)
		case <-time.After(poll):
		}
	}
}

// Idle is how a WaitIdle ended.
type Idle struct {
	Idle     bool          // no session for the idle time asked for; false: the bound passed first
	Took     time.Duration // how long WaitIdle waited
	Sessions int           // current sessions when it returned: those the bound cuts
	Served   int64         // sessions HAProxy sent the server while WaitIdle waited
}

// WaitIdle waits until a draining server has had no current session and no new one
// for idle, and returns; or, when bound passes first, returns what was left. A
// client between two requests holds no session but may still come back with its
// sticky cookie: that is why zero sessions is not enough and the server must stay
// unvisited for idle. The server has been idle since HAProxy's lastsess when it
// has no session at the start; from then on every new session (stot grows) or
// current one starts the idle time again. The clock is h's (time.Now).
func (h *HAProxy) WaitIdle(ctx context.Context, idle, bound time.Duration) (Idle, error) {
	poll := orDefault(h.Poll, DefaultPoll)
	start := time.Now()
	deadline := start.Add(bound)
	first, err := h.Counters(ctx)
	if err != nil {
		return Idle{}, fmt.Errorf("wait for %s to idle: %w", h.name(), err)
	}
	var w idleWatch
	w.start(first, start)
	for {
		now := time.Now()
		if w.idleFor(now) >= idle || !now.Before(deadline) {
			res := Idle{Idle: w.idleFor(now) >= idle, Took: now.Sub(start), Sessions: w.last.Sessions + w.last.Queued, Served: w.last.Total - first.Total}
			h.logger().Info("drain of a color ended", "idle", res.Idle, "took", res.Took.Round(time.Millisecond), "sessions_left", res.Sessions, "served", res.Served)
			return res, nil
		}
		select {
		case <-ctx.Done():
			return Idle{Took: time.Since(start), Sessions: w.last.Sessions}, fmt.Errorf("wait for %s to idle: %w", h.name(), ctx.Err())
		case <-time.After(min(poll, time.Until(deadline))):
		}
		c, err := h.Counters(ctx)
		if err != nil {
			return Idle{}, fmt.Errorf("wait for %s to idle: %w", h.name(), err)
		}
		w.see(c, time.Now())
	}
}

// idleWatch follows a server's counters and knows since when it has been idle.
// It is the pure part of WaitIdle.
type idleWatch struct {
	last  Counters
	since time.Time // idle since; zero while busy
}

// start takes the first reading at now: a server with no session has been idle
// since its last session (lastsess), or since now when HAProxy does not say.
func (w *idleWatch) start(c Counters, now time.Time) {
	w.last = c
	switch {
	case c.Sessions+c.Queued > 0:
		w.since = time.Time{}
	case c.LastSess >= 0:
		w.since = now.Add(-c.LastSess)
	default:
		w.since = now
	}
}

// see takes a later reading at now: a new session or a current one means busy.
func (w *idleWatch) see(c Counters, now time.Time) {
	busy := c.Sessions+c.Queued > 0 || c.Total != w.last.Total
	w.last = c
	switch {
	case busy:
		w.since = time.Time{}
	case w.since.IsZero():
		w.since = now
	}
}

// idleFor is how long the server has been idle at now; 0 while busy.
func (w *idleWatch) idleFor(now time.Time) time.Duration {
	if w.since.IsZero() {
		return 0
	}
	return now.Sub(w.since)
}
