package httpretry

import (
	"net/http"
	"strconv"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	const lo, hi = time.Second, 30 * time.Second
	resp := func(status int, retryAfter string) *http.Response {
		r := &http.Response{StatusCode: status, Header: http.Header{}}
		if retryAfter != "" {
			r.Header.Set("Retry-After", retryAfter)
		}
		return r
	}
	year := strconv.Itoa(365 * 24 * 3600)
	for _, tt := range []struct {
		name string
		n    int
		resp *http.Response
		want time.Duration
	}{
		{"first retry", 0, nil, lo},
		{"doubles", 2, nil, 4 * time.Second},
		{"capped exponent", 20, nil, hi},
		{"short Retry-After obeyed", 0, resp(503, "3"), 3 * time.Second},
		{"a year of Retry-After", 0, resp(503, year), hi},
		{"429 with a year", 0, resp(429, year), hi},
		{"Retry-After that overflows", 0, resp(503, "9223372036854775807"), hi},
		{"a date far ahead", 0, resp(503, time.Now().AddDate(5, 0, 0).UTC().Format(http.TimeFormat)), hi},
		{"Retry-After on a 500 ignored", 1, resp(500, year), 2 * time.Second},
	} {
		if got := Backoff(lo, hi, tt.n, tt.resp); got != tt.want {
			t.Errorf("%s: Backoff = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestCapped(t *testing.T) {
	for _, d := range []time.Duration{-time.Second, time.Hour} {
		b := Capped(func(time.Duration, time.Duration, int, *http.Response) time.Duration { return d })
		if got := b(time.Millisecond, time.Second, 0, nil); got != time.Second {
			t.Errorf("Capped(%v) = %v, want 1s", d, got)
		}
	}
}

// TestRetryAfter: both forms of the header, bounded; anything else is no header.
func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for h, want := range map[string]time.Duration{
		"":                              -1,
		"0":                             0,
		"120":                           2 * time.Minute,
		" 7 ":                           7 * time.Second,
		"31536000":                      365 * 24 * time.Hour,
		"99999999999999999999999":       365 * 24 * time.Hour,
		"-1":                            -1,
		"1.5":                           -1,
		"soon":                          -1,
		"Sat, 01 Mar 2025 12:00:30 GMT": 30 * time.Second,
		"Sat, 01 Mar 2025 11:00:00 GMT": 0,
		"Sat, 01 Mar 2125 11:00:00 GMT": 365 * 24 * time.Hour,
	} {
		d, ok := RetryAfter(h, now)
		if !ok {
			d = -1
		}
		if d != want {
			t.Errorf("Retry-After %q = %v, want %v", h, d, want)
		}
	}
}
