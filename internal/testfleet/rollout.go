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

	// In a bluegreen fleet:
	// Switches are each host's cutover to its new color, as its agent timed it: the
	// new color's server out of maint, up by HAProxy's check, ready; the old one's
	// drain.
	Switches []time.Duration
	// SwitchBack is, on the first host that failed the release after its cutover,
	// how long its agent took to send the clients back to the old color; 0 when no
	// host switched back. RevertToServing is then from the agent giving up to that
	// switch back done.
	SwitchBack time.Duration
	// OneColor is the most resident memory one color of the demo service used, and
	// TwoColors the most that both colors of one host used at once (sampled every
	// 250ms, by the processes' own RSS).
	OneColor, TwoColors uint64
}

// Upgrade pushes rel and waits until every host settled on it (committed, reverted,
// or held back by the group's halt) and is back in rotation, sampling HAProxy every
// 50ms and each host's /version every 10ms meanwhile.
func (f *Fleet) Upgrade(ctx context.Context, rel Release) (*Outcome, error) {
	s := f.sample()
	defer s.stop()
	start := time.Now()
	c, err := f.Push(rel)
	if err != nil {
		return nil, err
	}
	o := &Outcome{Release: rel, Commit: c}
	if err := f.settle(ctx, c); err != nil {
		return nil, err
	}
	o.Took = time.Since(start)
	if err := f.WaitInRotation(ctx, time.Minute); err != nil {
		return nil, err
	}
	o.Halted = f.halted(ctx, c)
	f.timeRollout(o, start)
	if err := f.tally(o, s); err != nil {
		return nil, err
	}
	s.stop()
	o.MaxOut = s.maxOut
	o.OneColor, o.TwoColors = s.memory.one, s.memory.two
	return o, nil
}

// settle waits until every host settled on commit c: no transaction open, and c
// committed, quarantined, or halted in the group.
func (f *Fleet) settle(ctx context.Context, c string) error {
	for _, h := range f.Hosts {
		err := f.WaitFor(ctx, h.Name+" to settle on "+short(c), settleLimit, func() bool {
			if h.TxnState() != "" {
				return false
			}
			return h.LastGood().Revision == c || h.Quarantined(c) || f.halted(ctx, c)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// halted says whether the group recorded commit c as failed; false when the fleet
// state cannot be read within 2s.
func (f *Fleet) halted(ctx context.Context, c string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := f.groupFailed(ctx, c)
	return err == nil && s
}

// timeRollout sets o's Rollout, PushToStart and PushToFetch from the hosts' journals,
// for the commit pushed at start.
func (f *Fleet) timeRollout(o *Outcome, start time.Time) {
	var first, last time.Time
	for _, h := range f.Hosts {
		if t, ok := h.TxnStarted(o.Commit); ok && (first.IsZero() || t.Before(first)) {
			first = t
		}
		if t, ok := h.Committed(o.Commit); ok && t.After(last) {
			last = t
		}
	}
	if !first.IsZero() && !last.IsZero() {
		o.Rollout, o.PushToStart = last.Sub(first), first.Sub(start)
	}
	for _, h := range f.Hosts {
		if t, ok := h.Noticed(o.Commit); ok && (o.PushToFetch == 0 || t.Sub(start) < o.PushToFetch) {
			o.PushToFetch = t.Sub(start)
		}
	}
}

// tally sets o's hosts that switched to and committed its commit, the Floor of their
// steps, and RevertToServing on the first host that failed it, from s's timeline.
func (f *Fleet) tally(o *Outcome, s *sampler) error {
	c := o.Commit
	for _, h := range f.Hosts {
		if h.Switched(c) {
			o.Switched = append(o.Switched, h.Name)
		}
		if h.LastGood().Revision == c {
			o.Committed = append(o.Committed, h.Name)
			steps, ok := h.CommitSteps(c)
			if !ok {
				return fmt.Errorf("%s committed %s but its journal has no steps", h.Name, short(c))
			}
			o.Floor += steps["SWITCHING"] + steps["VERIFYING"]
		}
		if took, ok := h.SwitchTook(c); ok {
			o.Switches = append(o.Switches, took)
		}
		if o.RevertToServing == 0 && h.Quarantined(c) {
			if failed, ok := h.RevertStarted(c); ok {
				o.RevertToServing = s.backSince(h.Name, failed)
				if at, took, ok := h.SwitchedBack(c); ok && f.opts.BlueGreen {
					o.RevertToServing, o.SwitchBack = at.Sub(failed), took
				}
			}
		}
	}
	return nil
}

// sampler watches the fleet while a release rolls out: each host's served version
// every 10ms, and the most hosts out of HAProxy's rotation at once every 50ms.
type sampler struct {
	prev map[string]string // each host's version before the push

	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup

	maxOut int          // written by rotation alone; read after stop
	memory memorySample // written by colorMemory alone; read after stop

	mu       sync.Mutex
	timeline map[string][]change // each host's changes of version
}

// change is a host starting to serve version at.
type change struct {
	at      time.Time
	version string
}

// sample starts sampling f; stop ends it.
func (f *Fleet) sample() *sampler {
	s := &sampler{prev: map[string]string{}, done: make(chan struct{}), timeline: map[string][]change{}}
	for _, h := range f.Hosts {
		s.prev[h.Name] = h.Served()
	}
	for _, h := range f.Hosts {
		if f.opts.BlueGreen {
			// Served asks HAProxy which color is ready: too slow for every 10ms, and
			// the switch back is timed by the agent.
			continue
		}
		s.wg.Go(func() { s.served(h) })
	}
	s.wg.Go(func() { s.rotation(f) })
	if f.opts.BlueGreen {
		s.wg.Go(func() { s.colorMemory(f) })
	}
	return s
}

// colorMemory records the most memory one color, and two colors of one host, used.
func (s *sampler) colorMemory(f *Fleet) {
	for {
		select {
		case <-s.done:
			return
		case <-time.After(250 * time.Millisecond):
		}
		for _, h := range f.Hosts {
			s.memory.add(h.ColorMemory())
		}
	}
}

// served records each change of the version h serves.
func (s *sampler) served(h *Host) {
	last := s.prev[h.Name]
	for {
		select {
		case <-s.done:
			return
		case <-time.After(10 * time.Millisecond):
		}
		if v := h.Served(); v != last {
			last = v
			s.mu.Lock()
			s.timeline[h.Name] = append(s.timeline[h.Name], change{time.Now(), v})
			s.mu.Unlock()
		}
	}
}

// rotation records the most hosts out of rotation at once.
func (s *sampler) rotation(f *Fleet) {
	for {
		select {
		case <-s.done:
			return
		case <-time.After(50 * time.Millisecond):
		}
		s.maxOut = max(s.maxOut, f.OutOfRotation())
	}
}

// backSince is how long after since host served its version from before the push
// again, 0 if it has not.
func (s *sampler) backSince(host string, since time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range s.timeline[host] {
		if ch.at.After(since) && ch.version == s.prev[host] {
			return ch.at.Sub(since)
		}
	}
	return 0
}

// stop ends the sampling and waits for it; it may be called more than once.
func (s *sampler) stop() {
	s.once.Do(func() { close(s.done) })
	s.wg.Wait()
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
