package testfleet

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/baton-fleet/baton/fleet"
)

// Outcome is what one pushed release did to the fleet.
type Outcome struct {
	Release Release
	Commit  string
	Took    time.Duration // from the push until every host settled
	// Rollout is from the first host starting its transaction to the last host
	// committing, by the agents' journals: Took less the wait for the first poll
	// (PushToStart) and the test's own polling.
	Rollout     time.Duration
	PushToStart time.Duration
	// PushToFetch is from the push to the first host fetching the commit: the wait
	// for the next poll, and the fetch.
	PushToFetch time.Duration
	// Floor is the sum over the hosts that committed of their SWITCHING and VERIFYING
	// times (restart-to-healthy plus minHealthy): what a one-at-a-time rollout cannot
	// go below.
	Floor     time.Duration
	Committed []string // hosts that committed the release
	Switched  []string // hosts that ever switched to it (ran it)
	Halted    bool     // the group recorded the release as failed
	MaxOut    int      // most hosts out of HAProxy's rotation at once
	// RevertToServing is, on the first host that failed the release, the time from its
	// agent giving up ("upgrade failed; reverting") to the previous version answering
	// on /version again (polled every 10ms). 0 when no host failed it.
	RevertToServing time.Duration
}

// Upgrade pushes rel and waits until every host settled on it (committed, reverted,
// or held back by the group's halt) and is back in rotation, sampling HAProxy every
// 50ms and each host's /version every 10ms meanwhile.
func (f *Fleet) Upgrade(ctx context.Context, rel Release) (*Outcome, error) {
	prev := map[string]string{}
	for _, h := range f.Hosts {
		prev[h.Name] = h.Served()
	}
	type change struct {
		at      time.Time
		version string
	}
	var mu sync.Mutex
	timeline := map[string][]change{}
	o := &Outcome{Release: rel}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, h := range f.Hosts {
		wg.Go(func() {
			last := prev[h.Name]
			for {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				if v := h.Served(); v != last {
					last = v
					mu.Lock()
					timeline[h.Name] = append(timeline[h.Name], change{time.Now(), v})
					mu.Unlock()
				}
			}
		})
	}
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if n := f.OutOfRotation(); n > o.MaxOut {
				mu.Lock()
				o.MaxOut = n
				mu.Unlock()
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()

	start := time.Now()
	c, err := f.Push(rel)
	if err != nil {
		return nil, err
	}
	o.Commit = c
	halted := func() bool {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		s, err := f.groupFailed(ctx, c)
		return err == nil && s
	}
	for _, h := range f.Hosts {
		err := f.WaitFor(ctx, h.Name+" to settle on "+short(c), settleLimit, func() bool {
			if h.TxnState() != "" {
				return false
			}
			return h.LastGood().Revision == c || h.Quarantined(c) || halted()
		})
		if err != nil {
			return nil, err
		}
	}
	o.Took = time.Since(start)
	if err := f.WaitInRotation(ctx, time.Minute); err != nil {
		return nil, err
	}
	o.Halted = halted()
	var first, last time.Time
	for _, h := range f.Hosts {
		if t, ok := h.TxnStarted(c); ok && (first.IsZero() || t.Before(first)) {
			first = t
		}
		if t, ok := h.Committed(c); ok && t.After(last) {
			last = t
		}
	}
	if !first.IsZero() && !last.IsZero() {
		o.Rollout, o.PushToStart = last.Sub(first), first.Sub(start)
	}
	for _, h := range f.Hosts {
		if t, ok := h.Noticed(c); ok && (o.PushToFetch == 0 || t.Sub(start) < o.PushToFetch) {
			o.PushToFetch = t.Sub(start)
		}
	}
	for _, h := range f.Hosts {
		if h.Switched(c) {
			o.Switched = append(o.Switched, h.Name)
		}
		if h.LastGood().Revision == c {
			o.Committed = append(o.Committed, h.Name)
			steps, ok := h.CommitSteps(c)
			if !ok {
				return nil, fmt.Errorf("%s committed %s but its journal has no steps", h.Name, short(c))
			}
			o.Floor += steps["SWITCHING"] + steps["VERIFYING"]
		}
		if o.RevertToServing == 0 && h.Quarantined(c) {
			failed, ok := h.RevertStarted(c)
			if !ok {
				continue
			}
			mu.Lock()
			for _, ch := range timeline[h.Name] {
				if ch.at.After(failed) && ch.version == prev[h.Name] {
					o.RevertToServing = ch.at.Sub(failed)
					break
				}
			}
			mu.Unlock()
		}
	}
	return o, nil
}

// groupFailed reports whether the fleet state records commit as failed in the group.
func (f *Fleet) groupFailed(ctx context.Context, commit string) (bool, error) {
	fl, err := f.groupFailure(ctx, commit)
	return fl != nil, err
}

// groupFailure is the group's record of commit's failure, nil when it did not fail.
func (f *Fleet) groupFailure(ctx context.Context, commit string) (*fleet.Failure, error) {
	snap, err := f.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	g := snap.Groups[Group]
	if g == nil {
		return nil, nil
	}
	if fl, ok := g.Failed[commit]; ok {
		return &fl, nil
	}
	return nil, nil
}
