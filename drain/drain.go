// Package drain takes a host out of its load balancer around a restart and puts it back, and switches a bluegreen service from one color to the other.
package drain

import (
	"context"
	"log/slog"

	"github.com/baton-fleet/baton/checks"
	"github.com/baton-fleet/baton/spec"
)

// Drainer takes this host out of its load balancer and puts it back.
//
// Drain returns once no new request reaches the host and the requests it was
// serving have ended (or the drainer's own bound passed); an error means the host
// may still get traffic and nothing must restart. A Drain that fails has put the
// host back as it found it, as far as it could; calling Undrain after it is
// still safe.
//
// Undrain puts the host back as the last Drain found it: into rotation, unless
// an operator had taken it out (see HAProxy). It is idempotent and safe to call
// without a prior Drain, in this process or any other: after a commit, after a
// revert once the old version is healthy, and when recovering from a crash.
type Drainer interface {
	Drain(ctx context.Context) error
	Undrain(ctx context.Context) error
}

// New returns the Drainer that a rendered spec.Drain describes: an *HAProxy, an
// *Exec (whose commands run as d.Exec.User when set), or Nop when d is nil or
// empty. A nil logger discards. Its HAProxy records nothing, so its Undrain sets
// ready whatever the state found: an agent uses NewWithState.
func New(d *spec.Drain, logger *slog.Logger) Drainer { return NewWithState(d, "", logger) }

// NewWithState is New with an HAProxy drainer that records the state it finds
// under stateDir (see HAProxy.StateDir), so that Undrain, in this process or the
// next, restores it. stateDir is the drainers' own directory; one serves every
// service of a host.
func NewWithState(d *spec.Drain, stateDir string, logger *slog.Logger) Drainer {
	if logger == nil {
		logger = discard
	}
	switch {
	case d == nil:
		return Nop{}
	case d.HAProxy != nil:
		h := NewHAProxy(d, logger)
		h.StateDir = stateDir
		return h
	case d.Exec != nil:
		return &Exec{
			DrainCmd:   d.Exec.Drain,
			UndrainCmd: d.Exec.Undrain,
			Prober:     &checks.Prober{User: d.Exec.User},
			Logger:     logger.With("drain", "exec"),
		}
	}
	return Nop{}
}

// NewHAProxy returns the HAProxy drainer of a rendered drain.haproxy, such as the
// server of one color of a bluegreen service (spec.RenderedColor.Drain), or nil
// when d has none. It records nothing (StateDir is ""): a bluegreen switch
// persists which color is active itself. A nil logger discards.
func NewHAProxy(d *spec.Drain, logger *slog.Logger) *HAProxy {
	if d == nil || d.HAProxy == nil {
		return nil
	}
	if logger == nil {
		logger = discard
	}
	h := d.HAProxy
	return &HAProxy{
		Addr:    h.Socket,
		Backend: h.Backend,
		Server:  h.Server,
		Timeout: h.Timeout.D(),
		Logger:  logger.With("drain", "haproxy", "server", h.Backend+"/"+h.Server),
	}
}

// Nop is the Drainer of a service behind no load balancer: it does nothing.
type Nop struct{}

// Drain does nothing.
func (Nop) Drain(context.Context) error { return nil }

// Undrain does nothing.
func (Nop) Undrain(context.Context) error { return nil }

var discard = slog.New(slog.DiscardHandler)
