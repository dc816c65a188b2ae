package sim

import (
	"errors"
	"math"
	"time"
)

// A host's requests to etcd take time. One sent at t reaches the cluster, which applies
// it, a leg later, and its answer reaches the host a leg after that. The host waits for
// the answer on its own clock, as the agent waits with a context deadline: one that
// comes later, or never, is a timeout, whether or not etcd applied the request. So a
// lease can expire between a host's read and the write it decides, and a write the host
// gave up on can still land.

// drawLeg is how long one leg of a request takes (World.leg): a few milliseconds
// mostly, up to a second now and then, and rarely a stall of up to 5 s (a slow disk
// under etcd's log, a congested link), as long as the agent waits for most calls.
func (w *World) drawLeg() time.Duration {
	switch r := w.rng.IntN(1000); {
	case r < 3:
		return w.between(time.Second, 5*time.Second)
	case r < 20:
		return w.between(10*time.Millisecond, time.Second)
	}
	return w.between(200*time.Microsecond, 5*time.Millisecond)
}

// call sends a request of the host to etcd. apply runs on the cluster a leg later (one
// of Etcd's calls, which take effect at the instant they are made, returning what the
// request's answer says); the answer reaches the host a leg after that. done gets the
// answer's error, or ErrTimeout once timeout passed on the host's clock without one;
// it runs in this life of the agent only. No answer comes when etcd's call says so
// (ErrTimeout: cut off, or the request or its answer lost) or when the host is cut off
// as the answer arrives; an answer that arrives while the host is paused waits for it.
// A timeout of 0 or less is a deadline already passed: nothing is sent.
func (h *Host) call(what string, timeout time.Duration, apply func() error, done func(error)) {
	w, life, deadline := h.w, h.life, h.now()+timeout
	// expire hands done the timeout at the deadline: no answer comes before it.
	expire := func() {
		if h.up && h.life == life {
			h.at(deadline, func() {
				w.tracef(h.name, "%s: no answer within %v", what, timeout)
				done(ErrTimeout)
			})
		}
	}
	if timeout <= 0 {
		h.after(0, func() {
			w.tracef(h.name, "%s: not sent, its deadline passed %v ago", what, -timeout)
			done(ErrTimeout)
		})
		return
	}
	w.clock.After(w.leg(), func() {
		err := apply()
		back := w.leg()
		if errors.Is(err, ErrTimeout) || back >= h.untilLocal(deadline) {
			expire()
			return
		}
		w.clock.After(back, func() {
			if w.etcd.Partitioned(h.name) {
				expire()
				return
			}
			h.awake(func() {
				if h.up && h.life == life {
					done(err)
				}
			})
		})
	})
	if d := h.pauseNext; d > 0 {
		h.pauseNext = 0
		w.tracef(h.name, "fault: paused for %v as %s is on the wire", d, what)
		h.pause(d)
	}
}

// now reads the host's monotonic clock, which runs at the host's rate against etcd's
// and stands still while the host is paused.
func (h *Host) now() time.Duration {
	elapsed := h.w.clock.Elapsed()
	if elapsed <= h.anchor {
		return h.localAt
	}
	return h.localAt + time.Duration(float64(elapsed-h.anchor)*h.rate)
}

// paused says whether the host is paused now.
func (h *Host) paused() bool { return h.w.clock.Elapsed() < h.anchor }

// pause stops the host for d, on etcd's clock: a VM its hypervisor paused, a suspended
// host. The agent runs nothing and its monotonic clock stands still, so a deadline it
// measures on it stretches by d; what it sent is on the wire, and what is sent back
// waits for it.
func (h *Host) pause(d time.Duration) {
	h.localAt = h.now()
	h.anchor = max(h.anchor, h.w.clock.Elapsed()) + d
}

// awake runs fn now, or when the host's pause ends.
func (h *Host) awake(fn func()) {
	if !h.paused() {
		fn()
		return
	}
	h.w.clock.After(h.anchor-h.w.clock.Elapsed(), func() { h.awake(fn) })
}

// at runs fn when the host's clock reads local, in this life of the agent only.
func (h *Host) at(local time.Duration, fn func()) {
	life := h.life
	var arm func()
	arm = func() {
		h.w.clock.After(h.untilLocal(local), func() {
			switch {
			case !h.up || h.life != life:
			case h.now() < local:
				arm() // the host was paused meanwhile
			default:
				fn()
			}
		})
	}
	arm()
}

// after runs fn after d on the host's clock, in this life of the agent only.
func (h *Host) after(d time.Duration, fn func()) { h.at(h.now()+d, fn) }

// untilLocal is how long, on etcd's clock, the host's clock takes to read local if it
// is not paused again: rounded up, so that it reads local by then.
func (h *Host) untilLocal(local time.Duration) time.Duration {
	elapsed := h.w.clock.Elapsed()
	from := max(elapsed, h.anchor)
	d := time.Duration(math.Ceil(float64(local-h.now()) / h.rate))
	return from + max(d, 0) - elapsed
}
