package gitsync

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"

	"github.com/baton-fleet/baton/internal/httpretry"
)

// ServerError is in the chain of a poll's error when the git server itself
// refused it: 429 (too many requests) or a 5xx. That is the server's trouble,
// which every agent asking it now meets as well, unlike a network or credential
// fault of one host: the fleet's fetcher keeps its post rather than hand the
// fleet's polls to the agents (sharedhead), and no agent asks again before
// Until.
type ServerError struct {
	Status int // the HTTP status
	// RetryAfter is the wait the server asked for (its Retry-After), at most
	// Options.MaxBackoff; zero when it named none.
	RetryAfter time.Duration
	Until      time.Time // Poll does not ask the server again before this
	err        error
}

func (e *ServerError) Error() string {
	msg := fmt.Sprintf("the git server answered %d %s", e.Status, http.StatusText(e.Status))
	if e.RetryAfter > 0 {
		msg += fmt.Sprintf(" and asked to wait %v", e.RetryAfter)
	}
	if e.err != nil {
		msg += ": " + e.err.Error()
	}
	return msg
}

func (e *ServerError) Unwrap() error { return e.err }

// IsServerError reports whether err is, or wraps, a ServerError.
func IsServerError(err error) bool {
	var se *ServerError
	return errors.As(err, &se)
}

// RetryIn is what is left of the wait the git server asked for when it refused a
// poll (err carries a ServerError), 0 for any other error or once it passed.
func RetryIn(err error) time.Duration {
	var se *ServerError
	if !errors.As(err, &se) {
		return 0
	}
	return max(time.Until(se.Until), 0)
}

// serverRefusal is the ServerError that err carries as go-git returns it (an
// UnexpectedError, which does not unwrap, around the HTTP response), or nil.
func serverRefusal(err error, now time.Time, maxWait time.Duration) *ServerError {
	var ue *plumbing.UnexpectedError
	if !errors.As(err, &ue) {
		return nil
	}
	var he *githttp.Err
	if !errors.As(ue.Err, &he) || he.Response == nil {
		return nil
	}
	status := he.Response.StatusCode
	if status != http.StatusTooManyRequests && status < 500 {
		return nil
	}
	wait, _ := httpretry.RetryAfter(he.Response.Header.Get("Retry-After"), now)
	wait = min(wait, maxWait)
	return &ServerError{Status: status, RetryAfter: wait, Until: now.Add(wait)}
}

// noteRefusal wraps err in a ServerError when the server refused the poll, and
// remembers until when it asked the agents to stay away.
func (s *Syncer) noteRefusal(err error) error {
	se := serverRefusal(err, time.Now(), s.opts.MaxBackoff)
	if se == nil {
		return err
	}
	se.err = err
	s.state.Lock()
	s.notBefore = se.Until
	s.state.Unlock()
	return se
}

// waitAsked is the ServerError of the last refusal while its Retry-After
// lasts: Poll returns it without asking the server. Nil once it passed.
func (s *Syncer) waitAsked(now time.Time) error {
	s.state.Lock()
	until := s.notBefore
	err := s.lastErr
	s.state.Unlock()
	if !now.Before(until) {
		return nil
	}
	var se *ServerError
	if !errors.As(err, &se) {
		return nil
	}
	return &ServerError{Status: se.Status, RetryAfter: se.RetryAfter, Until: until,
		err: fmt.Errorf("not asking it again before %s", until.UTC().Format(time.RFC3339))}
}
