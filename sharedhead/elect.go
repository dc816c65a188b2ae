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

// campaign stands in the election whenever fewer than Candidates agents do, and
// leads while elected, until ctx ends.
func (s *Shared) campaign(ctx context.Context, wake func()) {
	for {
		err := s.waitForOpening(ctx)
		if err == nil {
			err = s.stand(ctx, wake)
		}
		if ctx.Err() != nil {
			return
		}
		if !errors.Is(err, errOutranked) {
			s.log.Debug("the election of the fleet's fetcher: starting again", "err", err)
		}
		if !sleep(ctx, retryWait) {
			return
		}
	}
}

// waitForOpening returns once fewer than Candidates agents stand, watching the
// election's keys for one to go.
func (s *Shared) waitForOpening(ctx context.Context) error {
	pfx := electionPrefix(s.o.Prefix, s.o.Branch) + "/"
	for {
		resp, err := s.cli.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		if resp.Count < int64(s.o.Candidates) {
			return nil
		}
		if err := s.waitForDelete(ctx, pfx, resp.Header.Revision+1); err != nil {
			return err
		}
	}
}

func (s *Shared) waitForDelete(ctx context.Context, pfx string, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range s.cli.Watch(wctx, pfx, clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithFilterPut()) {
		if err := wr.Err(); err != nil {
			return err
		}
		if len(wr.Events) > 0 {
			return nil
		}
	}
	return ctx.Err()
}

// stand is one candidacy: a session, a key in the election, and, once elected,
// the lead until the session or ctx ends. Its session is closed on return, so its
// key goes at once (or after the TTL when etcd does not answer).
func (s *Shared) stand(ctx context.Context, wake func()) error {
	// The session outlives ctx so that Close can still revoke its lease.
	sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(max(1, int(s.o.TTL/time.Second))), concurrency.WithContext(context.WithoutCancel(ctx)))
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
	s.setElected(e)
	defer s.setElected(nil)
	s.log.Info("elected the fleet's fetcher: this agent polls the repository for the fleet")
	wake()
	select {
	case <-sess.Done():
		s.log.Warn("no longer the fleet's fetcher: the election session ended (etcd unreachable?)")
	case <-ctx.Done():
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = e.Resign(rctx)
		rcancel()
	}
	return nil
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
