package core

import (
	"fmt"
	"sync"
	"time"

	"github.com/baton-fleet/baton/internal/commitid"
)

// Backoff of a commit that this host could not carry out for reasons of its own.
const (
	FirstRetry = 30 * time.Second
	MaxRetry   = 10 * time.Minute
)

// Backoff remembers the last commit that this host could not carry out for reasons of
// its own, or that an interruption made it revert (Outcome.Retry), so that the loop
// tries it again after a backoff instead of downloading, draining or failing again at
// every poll. A newer commit starts afresh. It is safe for concurrent use.
type Backoff struct {
	mu     sync.Mutex
	commit string
	tries  int
	until  time.Time
	why    string
}

// Add records one more failed try of commit at now, and returns how long until the next.
func (t *Backoff) Add(commit string, now time.Time, why string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.commit != commit {
		t.commit, t.tries = commit, 0
	}
	t.tries++
	wait := FirstRetry << min(t.tries-1, 5)
	wait = min(wait, MaxRetry)
	t.until, t.why = now.Add(wait), why
	return wait
}

// Waiting says why commit is not tried before its backoff ends, "" when it may be.
func (t *Backoff) Waiting(commit string, now time.Time) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if commit != t.commit || !now.Before(t.until) {
		return ""
	}
	return fmt.Sprintf("waiting until %s to try %s again (attempt %d failed on this host: %s)",
		t.until.UTC().Format(time.TimeOnly), commitid.ShortOrNone(commit), t.tries, t.why)
}

// Clear forgets the backoff: an operator asked to try now.
func (t *Backoff) Clear() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.commit, t.tries, t.until, t.why = "", 0, time.Time{}, ""
}
