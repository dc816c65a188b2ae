package sim

import (
	"testing"
	"time"
)

func TestClockOrder(t *testing.T) {
	c := NewClock()
	var got []string
	at := func(name string, d time.Duration) *Timer {
		return c.After(d, func() { got = append(got, name+"@"+c.Now().Sub(Epoch).String()) })
	}
	at("b", 2*time.Second)
	at("a", time.Second)
	at("c", 2*time.Second) // a tie: after b, scheduled first
	gone := at("x", 1500*time.Millisecond)
	at("neg", -time.Second) // counts as now
	c.After(time.Second, func() {
		at("from-a", 0) // at 1s, after every other event of 1s
		at("later", time.Hour)
	})
	if !c.Cancel(gone) || c.Cancel(gone) || c.Cancel(nil) {
		t.Fatal("Cancel: want true once, then false; false for nil")
	}
	c.RunUntil(Epoch.Add(3 * time.Second))
	want := []string{"neg@0s", "a@1s", "from-a@1s", "b@2s", "c@2s"}
	if len(got) != len(want) {
		t.Fatalf("ran %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ran %v, want %v", got, want)
		}
	}
	if now := c.Elapsed(); now != 3*time.Second {
		t.Errorf("after RunUntil(3s): now %v, want 3s", now)
	}
	if c.Pending() != 1 {
		t.Errorf("pending %d, want 1 (later)", c.Pending())
	}
	if !c.Step() || c.Elapsed() != time.Second+time.Hour || c.Step() {
		t.Errorf("Step: want one more event at 1h1s, then none; now %v", c.Elapsed())
	}
}

func TestClockRunUntilPast(t *testing.T) {
	c := NewClock()
	c.RunUntil(Epoch.Add(time.Minute))
	c.RunUntil(Epoch.Add(time.Second)) // the past: time does not go back
	if got := c.Now(); !got.Equal(Epoch.Add(time.Minute)) {
		t.Errorf("now %v, want epoch+1m", got)
	}
	ran := false
	tm := c.After(time.Second, func() { ran = true })
	c.Step()
	if !ran || c.Cancel(tm) {
		t.Errorf("ran %v, Cancel after run true", ran)
	}
}
