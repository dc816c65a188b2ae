// Package httpretry bounds the waits of retrying HTTP clients: no server, whatever its Retry-After, holds a caller past a cap.
package httpretry

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// Backoff is a retryablehttp.Backoff: the library's exponential backoff from lo, its
// Retry-After (on 429 and 503) included, never longer than hi. DefaultBackoff obeys a
// Retry-After however long (a year, or a number of seconds that overflows into a
// negative wait); here either waits hi.
func Backoff(lo, hi time.Duration, n int, resp *http.Response) time.Duration {
	return Capped(retryablehttp.DefaultBackoff)(lo, hi, n, resp)
}

// Capped returns b with every wait it computes kept within [0, hi]: a negative or
// longer wait becomes hi. A nil b stands for retryablehttp.DefaultBackoff.
func Capped(b retryablehttp.Backoff) retryablehttp.Backoff {
	if b == nil {
		b = retryablehttp.DefaultBackoff
	}
	return func(lo, hi time.Duration, n int, resp *http.Response) time.Duration {
		d := b(lo, hi, n, resp)
		if d < 0 || d > hi {
			return hi
		}
		return d
	}
}

// RetryAfter reads a Retry-After header: seconds, or an HTTP date (relative to now).
// A date in the past is 0, and a wait is at most a year (callers cap it further); ok
// is false when there is no header or it is neither form.
func RetryAfter(h string, now time.Time) (d time.Duration, ok bool) {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0, false
	}
	const year = 365 * 24 * time.Hour
	if secs, err := strconv.ParseUint(h, 10, 64); err == nil {
		return time.Duration(min(secs, uint64(year/time.Second))) * time.Second, true
	} else if errors.Is(err, strconv.ErrRange) {
		return year, true
	}
	t, err := http.ParseTime(h)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), year), true
}
