package sharedhead

import (
	"context"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-fleet/baton/internal/commitid"
)

// watch follows the head until ctx ends, starting again after each etcd error. A
// head read at the start is not taken as heard: its age is unknown; the next write
// of the fetcher is.
func (s *Shared) watch(ctx context.Context, local func() string, wake func()) {
	lastBad := ""
	for {
		err := s.watchOnce(ctx, local, wake, &lastBad)
		if ctx.Err() != nil {
			return
		}
		s.log.Debug("watch of the shared head ended; starting again", "err", err)
		if !sleep(ctx, retryWait) {
			return
		}
	}
}

func (s *Shared) watchOnce(ctx context.Context, local func() string, wake func(), lastBad *string) error {
	headKey := HeadKey(s.o.Prefix, s.o.Branch)
	resp, err := s.cli.Get(ctx, headKey)
	if err != nil {
		return err
	}
	if len(resp.Kvs) == 1 {
		if h, err := ParseHead(resp.Kvs[0].Value); err == nil && h.Commit != local() {
			s.fetchNew(h, wake)
		}
	}
	// Without a leader the member cannot tell of new writes: end the watch
	// rather than wait on it.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range s.cli.Watch(wctx, headKey, clientv3.WithRev(resp.Header.Revision+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			s.headEvent(ev, local, wake, lastBad)
		}
	}
	return ctx.Err()
}

func (s *Shared) headEvent(ev *clientv3.Event, local func() string, wake func(), lastBad *string) {
	if ev.Type != mvccpb.PUT {
		return
	}
	h, err := ParseHead(ev.Kv.Value)
	if err != nil {
		if msg := err.Error(); msg != *lastBad {
			*lastBad = msg
			s.log.Warn("ignoring an unreadable shared head", "key", string(ev.Kv.Key), "err", err)
		}
		return
	}
	*lastBad = ""
	s.ack(h)
	if h.Commit != local() {
		s.fetchNew(h, wake)
	}
}

// fetchNew wakes the agent to fetch h, a head other than its own: at once, or
// within what Options.Splay says.
func (s *Shared) fetchNew(h Head, wake func()) {
	if s.o.Splay != nil {
		if d := s.o.Splay(h); d > 0 {
			if in := s.wakeWithin(d, wake); in > 0 {
				s.log.Info("the fleet's fetcher published a new head: fetching it within repo.splay", "commit", commitid.Short(h.Commit), "by", h.By, "in", in.Round(time.Millisecond))
			}
			return
		}
	}
	s.log.Info("the fleet's fetcher published a new head: fetching it", "commit", commitid.Short(h.Commit), "by", h.By)
	wake()
}
