package sharedhead

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// errOutranked ends a candidacy that came in past the first Candidates.
var errOutranked = errors.New("enough agents stand already")

// errSteppedDown ends a term the fetcher resigned (Shared.AfterPoll): like a lost
// turn, it doubles the spread of the agent's next candidacy, so that the others,
// which may reach the git server, stand before it does.
var errSteppedDown = errors.New("stepped down as the fleet's fetcher")

// maxSpreadFactor bounds how far an agent that lost the turn, or whose candidacy
// failed, spreads its next try: up to this many TTLs.
const maxSpreadFactor = 64

// campaign stands in the election whenever fewer than Candidates agents do and
// this agent took the turn (waitForTurn), and leads while elected, until ctx ends.
// A candidacy that failed (etcd did not answer in time) or came in past the first
// Candidates doubles the spread of the next try, as a lost turn does.
func (s *Shared) campaign(ctx context.Context, wake func()) {
	spread := s.o.TTL
	for {
		err := s.waitForTurn(ctx, &spread)
		if err == nil {
			if err = s.stand(ctx, wake); err != nil {
				spread = s.backOff(spread)
			} else {
				spread = s.o.TTL
			}
		}
		if ctx.Err() != nil {
			return
		}
		if !errors.Is(err, errOutranked) && !errors.Is(err, errSteppedDown) {
			s.log.Debug("the election of the fleet's fetcher: starting again", "err", err)
		}
		if !sleep(ctx, retryWait) {
			return
		}
	}
}

func (s *Shared) backOff(spread time.Duration) time.Duration {
	return min(2*spread, maxSpreadFactor*s.o.TTL)
}

// waitForTurn returns once this agent may stand: fewer than Candidates stand, it
// waited a StandDelay(*spread) since it saw so (or since another agent last took
// the turn), and it took the turn: a compare-and-swap of TurnKey from the revision
// it last saw. Of a fleet that saw the same opening one agent at a time stands,
// however slowly etcd shows the candidates' keys; the others lose a write that
// changes nothing, and double their spread. (Standing straight away, 10,000 agents
// started together each took a lease and wrote a key, and the keys' comings and
// goings, each sent to every waiting agent, overloaded etcd for minutes.) Waiting
// costs etcd nothing: the count and the turn are read once, then kept from a
// watch.
func (s *Shared) waitForTurn(ctx context.Context, spread *time.Duration) error {
	keys, turnKey := electionPrefix(s.o.Prefix, s.o.Branch)+"/", TurnKey(s.o.Prefix, s.o.Branch)
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(keys, clientv3.WithPrefix(), clientv3.WithCountOnly()), clientv3.OpGet(turnKey)).Commit()
	if err != nil {
		return err
	}
	standing, turn := resp.Responses[0].GetResponseRange().Count, modRevision(resp.Responses[1].GetResponseRange().Kvs)
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	from := clientv3.WithRev(resp.Header.Revision + 1)
	candidates := s.cli.Watch(wctx, keys, clientv3.WithPrefix(), from)
	turns := s.cli.Watch(wctx, turnKey, from, clientv3.WithFilterDelete())
	var look *time.Timer // armed while fewer than Candidates stand
	defer func() { stopTimer(look) }()
	for {
		if look == nil && standing < int64(s.o.Candidates) {
			look = time.NewTimer(StandDelay(*spread))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timerC(look):
			look = nil
			if standing >= int64(s.o.Candidates) {
				continue
			}
			won, err := s.takeTurn(ctx, turnKey, &turn)
			if err != nil || won {
				return err
			}
			*spread = s.backOff(*spread)
		case wr, ok := <-candidates:
			if err := watchErr(wr, ok); err != nil {
				return err
			}
			standing += countChange(wr.Events)
		case wr, ok := <-turns:
			if err := watchErr(wr, ok); err != nil {
				return err
			}
			turn = max(turn, modRevision(eventKvs(wr.Events)))
			stopTimer(look) // the agent that took the turn gets a spread to stand
			look = nil
		}
	}
}

// takeTurn writes TurnKey if no one did since *turn, and says whether it did;
// otherwise *turn becomes the revision of the write that won.
func (s *Shared) takeTurn(ctx context.Context, key string, turn *int64) (bool, error) {
	tctx, cancel := context.WithTimeout(ctx, s.o.TTL)
	defer cancel()
	// A read first, which the member serves alone: of a fleet whose turns came
	// together most find the turn taken here, and write nothing.
	cur, err := s.cli.Get(tctx, key, clientv3.WithSerializable())
	if err != nil {
		return false, fmt.Errorf("take the turn to stand: %w", err)
	}
	if rev := modRevision(cur.Kvs); rev != *turn {
		*turn = rev
		return false, nil
	}
	resp, err := s.cli.Txn(tctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", *turn)).
		Then(clientv3.OpPut(key, s.o.Host)).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return false, fmt.Errorf("take the turn to stand: %w", err)
	}
	if !resp.Succeeded {
		*turn = modRevision(resp.Responses[0].GetResponseRange().Kvs)
	}
	return resp.Succeeded, nil
}

// countChange is how many keys events add: one for each created, minus one for each
// deleted (a write to a key that exists adds none).
func countChange(events []*clientv3.Event) int64 {
	var n int64
	for _, ev := range events {
		switch {
		case ev.Type == mvccpb.DELETE:
			n--
		case ev.IsCreate():
			n++
		}
	}
	return n
}

// modRevision is the highest ModRevision of kvs, 0 for none.
func modRevision(kvs []*mvccpb.KeyValue) int64 {
	var rev int64
	for _, kv := range kvs {
		rev = max(rev, kv.ModRevision)
	}
	return rev
}

func eventKvs(events []*clientv3.Event) []*mvccpb.KeyValue {
	kvs := make([]*mvccpb.KeyValue, len(events))
	for i, ev := range events {
		kvs[i] = ev.Kv
	}
	return kvs
}

func watchErr(wr clientv3.WatchResponse, ok bool) error {
	if !ok {
		return errors.New("the watch of the election ended")
	}
	return wr.Err()
}

func timerC(t *time.Timer) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// stand is one candidacy: a session, a key in the election, and, once elected,
// the lead until the session or ctx ends. Its session is closed on return, so its
// key goes at once (or after the TTL when etcd does not answer).
func (s *Shared) stand(ctx context.Context, wake func()) error {
	ttl := max(1, int(s.o.TTL/time.Second))
	// The lease is asked for within a TTL: the client retries a grant etcd was too
	// busy to answer, and each retry may leave a lease behind; a candidate that
	// cannot get one that soon is better off trying later.
	gctx, gcancel := context.WithTimeout(ctx, s.o.TTL)
	lease, err := s.cli.Grant(gctx, int64(ttl))
	gcancel()
	if err != nil {
		return fmt.Errorf("start an election session: %w", err)
	}
	// The session outlives ctx so that Close can still revoke its lease.
	sess, err := concurrency.NewSession(s.cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(ttl), concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return fmt.Errorf("start an election session: %w", err)
	}
	defer sess.Close()
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-sess.Done():
			cancel(errors.New("the election session ended"))
		case <-cctx.Done():
		}
	}()
	pfx := electionPrefix(s.o.Prefix, s.o.Branch)
	go func() {
		if err := s.checkRank(cctx, pfx+"/", fmt.Sprintf("%s/%x", pfx, sess.Lease())); err != nil {
			cancel(err)
		}
	}()
	e := concurrency.NewElection(sess, pfx)
	if err := e.Campaign(cctx, s.o.Host); err != nil {
		if cause := context.Cause(cctx); cause != nil {
			return cause
		}
		return err
	}
	return s.lead(ctx, sess, e, wake)
}

// lead is the fetcher's term: it polls at once (wake), and again at each sync
// request, until its session or ctx ends (nil), or it steps down (AfterPoll:
// errSteppedDown). Only the fetcher watches SyncKey: a sync request is one message
// from etcd, not one to every agent of the fleet.
func (s *Shared) lead(ctx context.Context, sess *concurrency.Session, e *concurrency.Election, wake func()) error {
	s.drainResign() // a step-down asked in an earlier term is not this one's
	s.setElected(&term{key: e.Key(), rev: e.Rev()})
	defer s.setElected(nil)
	resign := func() {
		s.setElected(nil)
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = e.Resign(rctx)
		rcancel()
	}
	s.log.Info("elected the fleet's fetcher: this agent polls the repository for the fleet")
	wake()
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	watchSyncs := func() clientv3.WatchChan {
		return s.cli.Watch(wctx, SyncKey(s.o.Prefix, s.o.Branch), clientv3.WithFilterDelete())
	}
	syncs := watchSyncs()
	var again <-chan time.Time // after a watch that ended (etcd lost its leader)
	for {
		select {
		case <-sess.Done():
			s.log.Warn("no longer the fleet's fetcher: the election session ended (etcd unreachable?)")
			return nil
		case <-ctx.Done():
			resign()
			return nil
		case why := <-s.resign:
			s.log.Warn("stepping down as the fleet's fetcher: another agent may reach the git server", "why", why)
			resign()
			return errSteppedDown
		case <-again:
			syncs, again = watchSyncs(), nil
		case wr, ok := <-syncs:
			if err := watchErr(wr, ok); err != nil {
				s.log.Debug("the watch of sync requests ended; starting again", "err", err)
				syncs, again = nil, time.After(retryWait)
				continue
			}
			if len(wr.Events) > 0 {
				s.log.Info("a fleet sync was asked for: polling now")
				wake()
			}
		}
	}
}

// drainResign forgets a step-down that no lead took.
func (s *Shared) drainResign() {
	select {
	case <-s.resign:
	default:
	}
}

// checkRank withdraws a candidacy that came in behind Candidates others (agents
// that looked at once all found an opening). It returns nil once the key is among
// the first, errOutranked otherwise.
func (s *Shared) checkRank(ctx context.Context, pfx, key string) error {
	for ctx.Err() == nil {
		ok, err := s.exists(ctx, key)
		if err != nil {
			return nil // the campaign meets the same error
		}
		if !ok { // the campaign has not written its key yet
			if !sleep(ctx, 50*time.Millisecond) {
				return nil
			}
			continue
		}
		resp, err := s.cli.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(int64(s.o.Candidates)))
		if err != nil {
			return nil
		}
		if slices.ContainsFunc(resp.Kvs, func(kv *mvccpb.KeyValue) bool { return string(kv.Key) == key }) {
			return nil
		}
		return errOutranked
	}
	return nil
}

func (s *Shared) exists(ctx context.Context, key string) (bool, error) {
	resp, err := s.cli.Get(ctx, key, clientv3.WithCountOnly())
	if err != nil {
		return false, err
	}
	return resp.Count > 0, nil
}
