package sharedhead

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-fleet/baton/gitsync"
	"github.com/baton-fleet/baton/internal/commitid"
)

// Defaults for Options.
const (
	// DefaultTTL is the election session's TTL: how long a fetcher that died
	// stays elected. Only candidates hold a session (see Candidates).
	DefaultTTL = 30 * time.Second
	// DefaultCandidates is how many agents stand in the election at once; the
	// others only watch. Their keys are all the election stores in etcd.
	DefaultCandidates = 3
	// retryWait is the pause after an etcd error before the campaign or the
	// watch starts again; a follower meanwhile falls back to its own poll.
	retryWait = 2 * time.Second
)

// Options configure a Shared.
type Options struct {
	Prefix string // the fleet state's etcd prefix, e.g. /baton
	Branch string // the branch followed
	Host   string // this agent's host, the value of its election key and of the heads it writes
	// Poll is the agent's poll interval: the fetcher polls at it, and the head
	// is stale after StaleAfter(Poll, TTL) without a word from the fetcher.
	Poll time.Duration
	// TTL is the election session's TTL; DefaultTTL when zero.
	TTL time.Duration
	// Candidates bounds the agents standing in the election at once;
	// DefaultCandidates when zero. An agent stands when fewer stand.
	Candidates int
	// Splay, when set, is asked as a follower hears a new head h: it fetches h
	// at a random moment within what Splay returns, rather than at once (0), so
	// that a push does not start the whole fleet's fetches together
	// (repo.splay).
	Splay  func(h Head) time.Duration
	Logger *slog.Logger
}

// Shared is one agent's part in sharing the head: a candidate in the election of
// the fetcher, and a watcher of the head it publishes. Its methods are safe for
// concurrent use.
type Shared struct {
	cli *clientv3.Client
	o   Options
	log *slog.Logger

	mu       sync.Mutex
	elected  *term     // while this agent is the fetcher
	failures int       // the fetcher's failed polls in a row (countFailure)
	ackAt    time.Time // when a write of the head was last seen, on the monotonic clock
	head     Head      // the head last seen

	resign  chan string // a reason for the lead to resign (stepDown)
	splayed *time.Timer // a follower's wake to fetch a new head, pending (wakeWithin)
}

// New returns a Shared on cli; Run takes part.
func New(cli *clientv3.Client, o Options) *Shared {
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.Candidates <= 0 {
		o.Candidates = DefaultCandidates
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Shared{cli: cli, o: o, log: log.With("branch", o.Branch), resign: make(chan string, 1)}
}

// Run stands in the election of the fetcher and watches the head until ctx ends.
// It calls wake (which must not block) when the agent should poll now: as a
// follower, when the published head is not local(), the agent's own head; as the
// fetcher, when it was just elected or someone wrote SyncKey. It returns once
// every goroutine it started has stopped, the election key given up.
func (s *Shared) Run(ctx context.Context, local func() string, wake func()) {
	var wg sync.WaitGroup
	wg.Go(func() { s.campaign(ctx, wake) })
	wg.Go(func() { s.watch(ctx, local, wake) })
	wg.Wait()
	s.mu.Lock()
	if s.splayed != nil {
		s.splayed.Stop()
		s.splayed = nil
	}
	s.mu.Unlock()
}

// wakeWithin wakes the agent at a random moment within d, unless a wake is pending
// already: it fetches whatever the branch holds then. It returns the wait, 0 when
// one was pending.
func (s *Shared) wakeWithin(d time.Duration, wake func()) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.splayed != nil {
		return 0
	}
	after := rand.N(d) + 1
	s.splayed = time.AfterFunc(after, func() {
		s.mu.Lock()
		s.splayed = nil
		s.mu.Unlock()
		wake()
	})
	return after
}

// Fetcher reports whether this agent is the elected fetcher now.
func (s *Shared) Fetcher() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.elected != nil
}

// View is what the agent knows now, for OwnPoll.
func (s *Shared) View() View {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := View{Role: Follower, Poll: s.o.Poll, TTL: s.o.TTL, Heard: !s.ackAt.IsZero()}
	if s.elected != nil {
		v.Role = Fetcher
	}
	if v.Heard {
		v.SinceAck = time.Since(s.ackAt)
	}
	return v
}

// Head returns the head last seen published, and how long ago; zero when none.
func (s *Shared) Head() (Head, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ackAt.IsZero() {
		return Head{}, 0
	}
	return s.head, time.Since(s.ackAt)
}

func (s *Shared) ack(h Head) {
	s.mu.Lock()
	s.head, s.ackAt = h, time.Now()
	s.mu.Unlock()
}

// term is the fetcher's election key as Campaign left it: what its writes are
// fenced by. A copy, read once, so that a write in flight never reads the
// Election while the lead resigns it.
type term struct {
	key string
	rev int64 // the key's create revision
}

// setElected records the term that begins (non-nil) or ends (nil); each term
// counts its own failed polls.
func (s *Shared) setElected(t *term) {
	s.mu.Lock()
	s.elected, s.failures = t, 0
	s.mu.Unlock()
}

// ErrNotFetcher is returned by Publish when this agent is not, or no longer, the
// elected fetcher.
var ErrNotFetcher = errors.New("not the elected fetcher")

// Publish writes commit, the head this agent polled and verified, as the shared
// head, and so confirms it to the followers even when it did not move. Only the
// fetcher publishes: the write is fenced by its election key, and by the head's
// revision read first. A commit that does not descend from the published head
// (descends(published, commit) false, or an error: the published commit is
// unknown here) is refused with ErrRewind and nothing is written.
func (s *Shared) Publish(ctx context.Context, commit string, descends func(ancestor, commit string) (bool, error)) error {
	return s.publish(ctx, commit, "", descends)
}

// StepDownAfter is how many polls in a row the fetcher may fail for a reason that
// may be its host's own (a network or credential fault: not a gitsync.ServerError,
// not a rewind) before it resigns, so that another agent polls for the fleet.
const StepDownAfter = 3

// AfterPoll is the fetcher's part after each of its polls, failed or not: anchor is
// the last head it verified, pollErr the poll's error. It publishes anchor, with
// the error when there is one: the followers then hear the fetcher even while the
// git server refuses it, and do not turn to the server themselves (at 10,000
// agents, a rate-limited server would otherwise get 10,000 polls where it refused
// one). After StepDownAfter failures in a row that the git server did not cause,
// it resigns: an agent elsewhere may reach the server. A fetcher that holds no head
// yet (its first poll failed) has nothing to publish, and steps down all the same.
// An agent that is not the fetcher does nothing.
func (s *Shared) AfterPoll(ctx context.Context, anchor string, pollErr error, descends func(ancestor, commit string) (bool, error)) error {
	if !s.Fetcher() {
		return nil
	}
	failed := ""
	if pollErr != nil {
		failed = pollErr.Error()
		if len(failed) > maxFailed {
			failed = strings.ToValidUTF8(failed[:maxFailed], "") + "..."
		}
	}
	var err error
	if anchor != "" {
		err = s.publish(ctx, anchor, failed, descends) // the reason first, then the step down
	}
	if s.countFailure(pollErr) >= StepDownAfter {
		s.stepDown(fmt.Sprintf("%d polls in a row failed: %v", StepDownAfter, pollErr))
	}
	return err
}

// countFailure counts the fetcher's polls in a row that failed for a reason that
// may be its host's own, and returns the count; a poll that succeeded ends the run.
func (s *Shared) countFailure(pollErr error) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case pollErr == nil:
		s.failures = 0
	case !gitsync.IsServerError(pollErr) && !errors.Is(pollErr, gitsync.ErrRewound):
		s.failures++
	}
	return s.failures
}

// stepDown asks the lead to resign (lead), once.
func (s *Shared) stepDown(why string) {
	select {
	case s.resign <- why:
	default:
	}
}

func (s *Shared) publish(ctx context.Context, commit, failed string, descends func(ancestor, commit string) (bool, error)) error {
	s.mu.Lock()
	e := s.elected
	s.mu.Unlock()
	if e == nil {
		return ErrNotFetcher
	}
	key := HeadKey(s.o.Prefix, s.o.Branch)
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read the shared head: %w", err)
	}
	var modRev int64
	if len(resp.Kvs) == 1 {
		modRev = resp.Kvs[0].ModRevision
		cur, err := ParseHead(resp.Kvs[0].Value)
		switch {
		case err != nil:
			s.log.Warn("overwriting an unreadable shared head", "key", key, "err", err)
		case cur.Commit != commit:
			ok, err := descends(cur.Commit, commit)
			if err != nil || !ok {
				why := "a force-push or reset"
				if err != nil {
					why = err.Error()
				}
				return fmt.Errorf("publish %s: %w %s (%s)", commitid.Short(commit), ErrRewind, commitid.Short(cur.Commit), why)
			}
		}
	}
	val, err := json.Marshal(Head{Commit: commit, By: s.o.Host, Time: time.Now().UTC(), Failed: failed})
	if err != nil {
		return err
	}
	tr, err := s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(e.key), "=", e.rev),
		clientv3.Compare(clientv3.ModRevision(key), "=", modRev),
	).Then(clientv3.OpPut(key, string(val))).Commit()
	if err != nil {
		return fmt.Errorf("publish %s: %w", commitid.Short(commit), err)
	}
	if !tr.Succeeded {
		return fmt.Errorf("publish %s: %w (the election or the head changed meanwhile)", commitid.Short(commit), ErrNotFetcher)
	}
	return nil
}

// RequestSync asks the fetcher of branch to poll now: baton sync --fleet, and a
// webhook delivery to any agent.
func RequestSync(ctx context.Context, cli *clientv3.Client, prefix, branch string, req Sync) error {
	if req.Time.IsZero() {
		req.Time = time.Now().UTC()
	}
	val, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if _, err := cli.Put(ctx, SyncKey(prefix, branch), string(val)); err != nil {
		return fmt.Errorf("ask the fleet's fetcher to poll: %w", err)
	}
	return nil
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
