package gitsync

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// Watch polls at once and then every interval until ctx is done, calling
// notify (from Watch's goroutine) with each Update whose Changed is set. A
// restart that opens an existing Dir whose head is current reports no
// change: read Head for the starting point.
//
// A failed poll is logged (Warn) and retried after an exponential backoff
// with jitter between MinBackoff and MaxBackoff, reset by the next success,
// or after the server's Retry-After when longer (see ServerError).
// A refused rewind is logged once per refused head (Error) and polled again
// at the normal interval: it is a verdict, not an outage. Each poll is
// bounded by PollTimeout. Watch never panics and never gives up on a fetch
// error; it returns when ctx is done.
func (s *Syncer) Watch(ctx context.Context, every time.Duration, notify func(Update)) {
	if every <= 0 {
		every = time.Minute
	}
	failures := 0
	lastRefusal := ""
	for {
		pctx, cancel := context.WithTimeout(ctx, s.opts.PollTimeout)
		u, err := s.Poll(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		wait := every
		switch {
		case err == nil:
			failures, lastRefusal = 0, ""
			if u.Changed {
				notify(u)
			}
		case errors.Is(err, ErrRewound):
			failures = 0
			if msg := err.Error(); msg != lastRefusal {
				lastRefusal = msg
				s.log.Error("refusing the remote head", "err", err)
			}
		default:
			failures++
			wait = max(backoff(s.opts.MinBackoff, s.opts.MaxBackoff, failures), RetryIn(err))
			s.log.Warn("poll failed, will retry", "err", err, "failures", failures, "retry_in", wait.Round(time.Millisecond))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// backoff is the delay before retry number failures (1, 2, ...): min
// doubled per failure, capped at max, then drawn uniformly from its upper
// half ("equal jitter") and never below min.
func backoff(minD, maxD time.Duration, failures int) time.Duration {
	d := minD
	for i := 1; i < failures && d < maxD; i++ {
		if d > maxD/2 {
			d = maxD
			break
		}
		d *= 2
	}
	d = min(d, maxD)
	d = d/2 + rand.N(d/2+1)
	return max(d, minD)
}
