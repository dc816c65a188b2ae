package sharedhead

import (
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/commitid"
)

func TestParseHead(t *testing.T) {
	good := `{"commit":"` + c1 + `","by":"web-01","time":"2026-12-06T10:00:00Z"}`
	h, err := ParseHead([]byte(good))
	if err != nil || h.Commit != c1 || h.By != "web-01" || h.Time.IsZero() {
		t.Fatalf("ParseHead(good) = %+v, %v", h, err)
	}
	failed := `{"commit":"` + c1 + `","by":"web-01","time":"2026-12-06T10:00:00Z","failed":"the git server answered 429"}`
	if h, err := ParseHead([]byte(failed)); err != nil || h.Failed != "the git server answered 429" {
		t.Fatalf("ParseHead(failed) = %+v, %v", h, err)
	}
	for _, tt := range []struct{ value, want string }{
		{``, "not a JSON head"},
		{`null`, "commit is not a full commit id"},
		{`[]`, "not a JSON head"},
		{c1, "not a JSON head"},
		{`{"commit":"` + strings.Repeat("AB", 20) + `"}`, "commit is not a full commit id"},
		{`{"commit":"` + c1[:39] + `"}`, "commit is not a full commit id"},
		{`{"commit":"` + c1 + `","extra":1}`, "not a JSON head"},
		{`{"commit":"` + c1 + `","time":"yesterday"}`, "not a JSON head"},
		{`{"commit":"` + c1 + `"} {}`, "more than one JSON value"},
		{`{"commit":"` + c1 + `","by":"` + strings.Repeat("x", 5000) + `"}`, "over 4096"},
	} {
		_, err := ParseHead([]byte(tt.value))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseHead(%.40q) = %v, want an error with %q", tt.value, err, tt.want)
		}
		if err != nil && len(err.Error()) > 400 {
			t.Errorf("error of %d bytes quotes too much: %.80s...", len(err.Error()), err)
		}
	}
}

func FuzzParseHead(f *testing.F) {
	f.Add(`{"commit":"` + c1 + `","by":"web-01","time":"2026-12-06T10:00:00Z"}`)
	f.Add(`{"commit":"` + c1 + `"}`)
	f.Add(`{"commit":1}`)
	f.Fuzz(func(t *testing.T, value string) {
		h, err := ParseHead([]byte(value))
		if err != nil {
			if len(err.Error()) > 400 { // 64 bytes quoted, each at most \u+4 hex
				t.Errorf("error of %d bytes", len(err.Error()))
			}
			return
		}
		if !commitid.IsFull(h.Commit) {
			t.Errorf("accepted commit %q", h.Commit)
		}
	})
}

// TestJitter: a regular poll waits its interval plus at most a tenth; the fallback
// spreads over a whole interval around it; both average near the interval.
func TestJitter(t *testing.T) {
	const every = 30 * time.Second
	var sumJ, sumF time.Duration
	const n = 2000
	spread := map[bool]bool{}
	for range n {
		j, f := Jitter(every), FullJitter(every)
		if j < every || j > every+every/10 {
			t.Fatalf("Jitter(%v) = %v, outside [%v, %v]", every, j, every, every+every/10)
		}
		if f < every/2 || f > every*3/2 {
			t.Fatalf("FullJitter(%v) = %v, outside [%v, %v]", every, f, every/2, every*3/2)
		}
		spread[f < every] = true
		sumJ += j
		sumF += f
	}
	if mean := sumJ / n; mean < every+every/40 || mean > every+every/10-every/40 {
		t.Errorf("Jitter's mean %v, want near %v", mean, every+every/20)
	}
	if mean := sumF / n; mean < every*9/10 || mean > every*11/10 {
		t.Errorf("FullJitter's mean %v, want near %v", mean, every)
	}
	if len(spread) != 2 {
		t.Error("FullJitter never fell on one side of the interval")
	}
	if Jitter(0) != 0 || FullJitter(0) != 0 {
		t.Error("a zero interval waits")
	}
}

func TestOwnPoll(t *testing.T) {
	const poll, ttl = 30 * time.Second, 30 * time.Second
	stale := StaleAfter(poll, ttl)
	if stale != 90*time.Second || StaleAfter(time.Second, 5*time.Second) != 6*time.Second {
		t.Fatalf("StaleAfter: %v, %v", stale, StaleAfter(time.Second, 5*time.Second))
	}
	for _, tt := range []struct {
		name     string
		v        View
		poll     bool
		min, max time.Duration
	}{
		{"fetcher", View{Role: Fetcher, Heard: true}, true, poll, poll + poll/10},
		{"fetcher that never heard itself", View{Role: Fetcher}, true, poll, poll + poll/10},
		{"follower, fresh", View{Heard: true, SinceAck: poll}, false, poll, poll + poll/10},
		{"follower, just fresh", View{Heard: true, SinceAck: stale}, false, poll, poll + poll/10},
		{"follower, stale", View{Heard: true, SinceAck: stale + time.Millisecond}, true, poll / 2, poll * 3 / 2},
		{"follower, never heard", View{}, true, poll / 2, poll * 3 / 2},
	} {
		tt.v.Poll, tt.v.TTL = poll, ttl
		for range 50 {
			p, wait := OwnPoll(tt.v)
			if p != tt.poll || wait < tt.min || wait > tt.max {
				t.Fatalf("%s: OwnPoll = %v, %v; want %v, within [%v, %v]", tt.name, p, wait, tt.poll, tt.min, tt.max)
			}
		}
	}
}
