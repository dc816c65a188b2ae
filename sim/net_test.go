package sim

import (
	"errors"
	"testing"
	"time"
)

// oneHost returns a world of one host whose requests take leg each way, and the host.
func oneHost(leg time.Duration) (*World, *Host) {
	w := newWorld(Config{Seed: 1, Hosts: 1, MaxParallel: 1})
	w.leg = func() time.Duration { return leg }
	h := w.hosts[0]
	h.rate = 1
	return w, h
}

// answer is what a call handed its done, and when (since Epoch).
type answer struct {
	err error
	at  time.Duration
}

// put sends a put of key through h.call and returns where its answer will be.
func put(w *World, h *Host, key string, timeout time.Duration) *answer {
	a := &answer{at: -1}
	h.call("put "+key, timeout, func() error {
		_, err := w.etcd.Put(h.name, key, []byte("v"), 0)
		return err
	}, func(err error) { a.err, a.at = err, w.clock.Elapsed() })
	return a
}

func TestCallIsAppliedThenAnswered(t *testing.T) {
	w, h := oneHost(10 * time.Millisecond)
	a := put(w, h, "/k", 5*time.Second)
	runTo(w.clock, 15*time.Millisecond)
	if !has(w.etcd, "/k") || a.at >= 0 {
		t.Fatalf("after one leg: applied %v, answered at %v; want applied, not answered", has(w.etcd, "/k"), a.at)
	}
	runTo(w.clock, time.Second)
	if a.err != nil || a.at != 20*time.Millisecond {
		t.Fatalf("answer %+v, want nil at 20ms", *a)
	}
}

// A request whose answer comes after the host's deadline times out at the deadline,
// and etcd applied it all the same.
func TestCallTimesOutYetApplied(t *testing.T) {
	w, h := oneHost(3 * time.Second)
	a := put(w, h, "/k", 5*time.Second)
	runTo(w.clock, time.Minute)
	if !errors.Is(a.err, ErrTimeout) || a.at != 5*time.Second {
		t.Fatalf("answer %+v, want ErrTimeout at 5s", *a)
	}
	if !has(w.etcd, "/k") {
		t.Fatal("the request that timed out was not applied")
	}
}

// A deadline already passed sends nothing.
func TestCallPastItsDeadline(t *testing.T) {
	w, h := oneHost(time.Millisecond)
	a := put(w, h, "/k", -time.Second)
	runTo(w.clock, time.Minute)
	if !errors.Is(a.err, ErrTimeout) || a.at != 0 || has(w.etcd, "/k") {
		t.Fatalf("answer %+v, applied %v; want ErrTimeout at once, nothing applied", *a, has(w.etcd, "/k"))
	}
}

// The answer to a host cut off as it arrives is lost: the host times out.
func TestCallAnswerLostToAPartition(t *testing.T) {
	w, h := oneHost(time.Second)
	a := put(w, h, "/k", 5*time.Second)
	w.clock.After(1500*time.Millisecond, func() { w.etcd.Partition(h.name) })
	runTo(w.clock, time.Minute)
	if !errors.Is(a.err, ErrTimeout) || a.at != 5*time.Second || !has(w.etcd, "/k") {
		t.Fatalf("answer %+v, applied %v; want ErrTimeout at 5s, applied", *a, has(w.etcd, "/k"))
	}
}

// A paused host's clock stands still: its timers and deadlines stretch by the pause,
// and an answer that arrives meanwhile waits for it.
func TestPausedHost(t *testing.T) {
	w, h := oneHost(time.Millisecond)
	h.pauseNext = 10 * time.Second
	a := put(w, h, "/k", 5*time.Second)
	fired := time.Duration(-1)
	h.after(time.Second, func() { fired = w.clock.Elapsed() })
	runTo(w.clock, 9*time.Second)
	if h.now() != 0 || a.at >= 0 || !has(w.etcd, "/k") {
		t.Fatalf("during the pause: clock %v, answered at %v, applied %v; want 0, not answered, applied", h.now(), a.at, has(w.etcd, "/k"))
	}
	runTo(w.clock, time.Minute)
	if a.err != nil || a.at != 10*time.Second {
		t.Fatalf("answer %+v, want nil at the pause's end (10s), within the stretched deadline", *a)
	}
	if fired != 11*time.Second {
		t.Fatalf("a 1s timer set as the pause began fired at %v, want 11s", fired)
	}
}

// A slow clock makes a host's durations last longer on etcd's clock.
func TestSlowClock(t *testing.T) {
	w, h := oneHost(time.Millisecond)
	h.rate = 0.8
	fired := time.Duration(-1)
	h.after(8*time.Second, func() { fired = w.clock.Elapsed() })
	runTo(w.clock, time.Minute)
	if fired != 10*time.Second {
		t.Fatalf("8s on a clock running at 0.8 ended at %v, want 10s", fired)
	}
}
