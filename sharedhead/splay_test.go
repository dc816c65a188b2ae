package sharedhead

import (
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testetcd"
)

// TestSplay: a follower whose Splay is 0 fetches a new head at once; one with a
// splay is woken once within it, however many heads are published meanwhile (the
// wake fetches whatever the branch holds then), and not after it stopped.
func TestSplay(t *testing.T) {
	const splay = 1500 * time.Millisecond
	c := testetcd.Start(t)
	asked := make(chan Head, 16)
	as, f := startThree(t, c, func(i int, o *Options) {
		o.Splay = func(h Head) time.Duration {
			if i == 0 {
				return 0
			}
			asked <- h
			return splay
		}
	})
	for _, a := range as {
		a.local = c1
	}
	ctx := t.Context()
	if err := f.Publish(ctx, c1, history); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	for _, a := range as {
		select {
		case <-a.wakes: // the fetcher's wake at its election, or a head read at the start
		default:
		}
	}

	published := time.Now()
	if err := f.Publish(ctx, c2, history); err != nil {
		t.Fatal(err)
	}
	if err := f.Publish(ctx, c3, history); err != nil {
		t.Fatal(err)
	}
	// Each follower's wake waits in its channel: by the end of the splay (and some
	// slack for a busy machine) every one is there, whatever the order they came.
	deadline := published.Add(splay + 3*time.Second)
	for i, a := range as {
		switch {
		case a == f:
		case i == 0:
			wakeWithin(t, a, 3*time.Second, "a follower without a splay, at once")
		default:
			wakeWithin(t, a, time.Until(deadline), "a follower within its splay")
		}
	}
	for i, a := range as {
		if a != f && i != 0 {
			noWake(t, a, splay, "a second wake for a second head published within the splay")
		}
	}
	select {
	case h := <-asked:
		if h.Commit != c2 && h.Commit != c3 {
			t.Errorf("Splay asked about %+v", h)
		}
	default:
		t.Error("Splay was never asked")
	}

	var splayed *agent
	for i, a := range as {
		if a != f && i != 0 {
			splayed = a
			break
		}
	}
	if err := f.Publish(ctx, "4444444444444444444444444444444444444444", func(string, string) (bool, error) { return true, nil }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the follower hears the next head", func() bool {
		h, _ := splayed.Head()
		return h.Commit == "4444444444444444444444444444444444444444"
	})
	splayed.halt()
	select {
	case <-splayed.wakes: // the splay ran out before the halt
	default:
	}
	select {
	case <-splayed.wakes:
		t.Error("a follower stopped was woken by the splay")
	case <-time.After(splay + 500*time.Millisecond):
	}
}
