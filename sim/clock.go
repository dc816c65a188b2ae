package sim

import (
	"container/heap"
	"time"
)

// Epoch is the virtual time at which every Clock starts.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Clock is virtual time and the queue of callbacks due at later virtual times. Time
// moves only when Step or RunUntil runs the next callback; callbacks due at the same
// time run in the order they were scheduled. A Clock is not safe for concurrent use.
type Clock struct {
	now time.Duration // since Epoch
	seq uint64        // timers scheduled so far: the tie-break
	q   timerQueue
}

// Timer is a callback scheduled by After; Cancel takes it back before it runs.
type Timer struct {
	at    time.Duration
	seq   uint64
	fn    func()
	index int // in the queue; -1 once run or cancelled
}

// NewClock returns a Clock at Epoch with nothing scheduled.
func NewClock() *Clock { return &Clock{} }

// Now returns the virtual time.
func (c *Clock) Now() time.Time { return Epoch.Add(c.now) }

// Elapsed returns the virtual time elapsed since Epoch.
func (c *Clock) Elapsed() time.Duration { return c.now }

// After schedules fn to run d from now (a negative d counts as 0) and returns its
// Timer, for Cancel.
func (c *Clock) After(d time.Duration, fn func()) *Timer {
	c.seq++
	t := &Timer{at: c.now + max(d, 0), seq: c.seq, fn: fn}
	heap.Push(&c.q, t)
	return t
}

// Cancel removes t from the queue and reports whether it was still pending. A nil t,
// or one that already ran or was cancelled, is false.
func (c *Clock) Cancel(t *Timer) bool {
	if t == nil || t.index < 0 {
		return false
	}
	heap.Remove(&c.q, t.index)
	return true
}

// Pending returns the number of callbacks scheduled and not yet run.
func (c *Clock) Pending() int { return len(c.q) }

// Step moves time to the next callback and runs it; it returns false, doing nothing,
// when none is scheduled.
func (c *Clock) Step() bool {
	if len(c.q) == 0 {
		return false
	}
	t := heap.Pop(&c.q).(*Timer)
	c.now = t.at
	t.fn()
	return true
}

// RunUntil runs every callback due at or before t, those they schedule included, in
// order, then leaves the clock at t (or where it was, when that is later).
func (c *Clock) RunUntil(t time.Time) {
	end := t.Sub(Epoch)
	for len(c.q) > 0 && c.q[0].at <= end {
		c.Step()
	}
	c.now = max(c.now, end)
}

// timerQueue is a min-heap of timers by time, then by scheduling order.
type timerQueue []*Timer

func (q timerQueue) Len() int { return len(q) }

func (q timerQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}

func (q timerQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}

func (q *timerQueue) Push(x any) {
	t := x.(*Timer)
	t.index = len(*q)
	*q = append(*q, t)
}

func (q *timerQueue) Pop() any {
	old := *q
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	t.index = -1
	return t
}
