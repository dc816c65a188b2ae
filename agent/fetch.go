package agent

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/baton-fleet/baton/api"
	"github.com/baton-fleet/baton/config"
	"github.com/baton-fleet/baton/gitsync"
	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/sharedhead"
	"github.com/baton-fleet/baton/spec"
	"github.com/baton-fleet/baton/webhook"
)

// newSharedHead is the agent's part in sharing the head (repo.sharedHead, with the
// etcd backend), or nil.
func newSharedHead(cfg *config.Config, fs *fleetState, a *Agent) *sharedhead.Shared {
	if fs == nil || !cfg.Repo.SharedHead {
		return nil
	}
	// The election's TTL is the lease's: how long the fleet waits for a host that
	// went silent is one setting.
	return sharedhead.New(fs.store.Client(), sharedhead.Options{
		Prefix: fs.prefix, Branch: cfg.Repo.Branch, Host: cfg.Host, Poll: cfg.Repo.Poll.D(), TTL: cfg.Lease.Etcd.TTL.D(), Logger: a.log,
		Splay: a.splay,
	})
}

// noteGroup remembers whether the host's group, by hs, waits for another group
// (after:): splay follows it.
func (a *Agent) noteGroup(hs *spec.HostSpec) {
	a.groupWaits.Store(len(hs.Group.After) > 0)
}

// learnGroup notes the host's group by commit, the one it runs, as the agent
// starts: until it loads a new commit, that is the group it is in. A commit that
// cannot be loaded leaves the splay off.
func (a *Agent) learnGroup(ctx context.Context, commit string) {
	hs, _, err := a.load(ctx, commit)
	if err != nil {
		a.log.Debug("the host's group is not known: a new head is fetched at once", "commit", commitid.ShortOrNone(commit), "err", err)
		return
	}
	a.noteGroup(hs)
}

// splay is how long this agent may wait before it fetches a new head the fleet's
// fetcher published: repo.splay when its group waits for another (after:), so
// that the hosts of the groups that go first fetch at once and start the rollout
// while the rest of the fleet's fetches spread over the splay.
func (a *Agent) splay(sharedhead.Head) time.Duration {
	if !a.groupWaits.Load() {
		return 0
	}
	return a.cfg.Repo.Splay.D()
}

// runSharedHead stands in the election of the fleet's fetcher and watches the
// shared head until ctx ends: a head other than this agent's anchor (the last head
// it accepted and verified), or a sync asked of the fetcher, makes the loop poll now.
func (a *Agent) runSharedHead(ctx context.Context) {
	if a.head != nil {
		a.head.Run(ctx, a.git.Anchor, a.SyncNow)
	}
}

// fetch polls the repository when this turn of the loop calls for it, and says
// whether it did. It does when nothing was fetched yet, and without a shared head.
// With one, the fleet's fetcher leaves the polls to fetchForFleet, and a follower
// polls when asked to (SyncNow: an operator, a webhook, a new shared head) or when
// it has not heard the fetcher for a while (sharedhead.OwnPoll).
func (a *Agent) fetch(ctx context.Context) (gitsync.Update, bool, error) {
	asked := a.pollNow.Swap(false)
	fetcher := a.head != nil && a.head.Fetcher()
	a.obs.metrics.Fetcher(fetcher)
	if h := a.git.Head(); h != "" && a.head != nil {
		current := gitsync.Update{Commit: h, Previous: h}
		if fetcher {
			return current, false, nil
		}
		v := a.head.View()
		v.Poll = a.poll()
		if own, _ := sharedhead.OwnPoll(v); !own && !asked {
			return current, false, nil
		}
	}
	u, err := a.git.Poll(ctx)
	return u, true, err
}

// fetchForFleet polls the repository for the fleet while this agent is its elected
// fetcher, until ctx ends: when elected, at each sync asked (SyncNow, on this host
// or through etcd), and every poll interval with jitter, with the loop's backoff
// after a failure. Each poll is published (publishHead), a new head wakes the
// loop, and the head's commit statuses are brought up to date (queueStatuses).
// It runs beside the loop, not in it: a fetcher in a long transaction of its own
// (waiting for the lease behind the rest of its group, soaking, analysing,
// running a migration) still tells the fleet of a push as it would idle, where
// the loop would have left the whole fleet on the old head until it was done.
func (a *Agent) fetchForFleet(ctx context.Context) {
	if a.head == nil {
		return
	}
	var next <-chan time.Time
	var backoff time.Duration
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.fleetPoll:
		case <-next:
		}
		next = nil
		fetcher := a.head.Fetcher()
		a.obs.metrics.Fetcher(fetcher)
		if !fetcher {
			continue // a term that ended; the next begins with a sync asked
		}
		pctx, cancel := context.WithTimeout(ctx, pollTimeout)
		u, err := a.git.Poll(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		a.publishHead(ctx, err)
		a.notePoll(u, err)
		if u.Changed {
			wakeUp(a.wake)
		}
		a.queueStatuses(ctx)
		next = time.After(afterPoll(&backoff, err, sharedhead.Jitter(a.poll())))
	}
}

// publishHead publishes the anchor, the last head that passed the rewind check and
// verified, as the fleet's head, with pollErr when the poll failed: the other
// agents hear the fetcher all the same (sharedhead.Shared.AfterPoll). Each refusal
// to publish is logged once.
func (a *Agent) publishHead(ctx context.Context, pollErr error) {
	descends := a.git.Descends
	if a.git.AllowsRewind() {
		descends = func(string, string) (bool, error) { return true, nil }
	}
	pctx, cancel := context.WithTimeout(ctx, etcdCallTimeout)
	err := a.head.AfterPoll(pctx, a.git.Anchor(), pollErr, descends)
	cancel()
	switch {
	case err == nil, errors.Is(err, sharedhead.ErrNotFetcher):
		a.publishErr = ""
	case err.Error() != a.publishErr:
		a.publishErr = err.Error()
		a.log.Warn("the shared head stays; the other agents fall back to their own polls", "commit", commitid.ShortOrNone(a.git.Anchor()), "err", err)
	}
}

// nextPoll is the wait before the loop's next turn: the poll interval with jitter,
// or, for an agent that no longer hears the fleet's fetcher, a wait spread over a
// whole interval (sharedhead.OwnPoll).
func (a *Agent) nextPoll() time.Duration {
	poll := a.poll()
	if a.head == nil {
		return sharedhead.Jitter(poll)
	}
	v := a.head.View()
	v.Poll = poll
	_, wait := sharedhead.OwnPoll(v)
	return wait
}

// sharedHeadState is the shared head as baton status shows it: who published it,
// when this agent last saw it confirmed, and whether it polls on its own for not
// hearing the fetcher; nil without a shared head.
func (a *Agent) sharedHeadState() *api.SharedHead {
	if a.head == nil {
		return nil
	}
	h, age := a.head.Head()
	v := a.head.View()
	v.Poll = a.poll()
	own, _ := sharedhead.OwnPoll(v)
	st := &api.SharedHead{Fetcher: h.By, Head: h.Commit, Self: v.Role == sharedhead.Fetcher, Stale: own && v.Role != sharedhead.Fetcher, Failed: h.Failed}
	if st.Self {
		st.Fetcher = a.cfg.Host
	}
	if h.Commit != "" {
		st.Heard = time.Now().Add(-age)
	}
	return st
}

// receiveWebhooks serves listen.webhook until ctx ends: a push to the followed
// branch makes this agent poll now and, with a shared head, asks the fleet's
// fetcher to.
func (a *Agent) receiveWebhooks(ctx context.Context) {
	w := a.cfg.Listen.Webhook
	if w.Address == "" {
		return
	}
	r, err := webhook.New(webhook.Options{
		SecretFile: w.SecretFile, Repo: a.cfg.Repo.URL, Branch: a.cfg.Repo.Branch, Logger: a.log,
		Push:   func(forge webhook.Forge, p webhook.Push) { a.pushed(ctx, forge) },
		Result: a.obs.metrics.PushDelivery,
	})
	if err != nil {
		a.log.Error("start the webhook receiver", "err", err)
		return
	}
	l, err := net.Listen("tcp", w.Address)
	if err != nil {
		a.log.Error("start the webhook receiver", "addr", w.Address, "err", err)
		return
	}
	if err := webhook.Serve(ctx, l, r, a.log); err != nil {
		a.log.Error("receive webhooks", "err", err)
	}
}

// pushed is a push to the followed branch, told by forge.
func (a *Agent) pushed(ctx context.Context, forge webhook.Forge) {
	a.SyncNow()
	if a.head == nil || a.head.Fetcher() {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, etcdCallTimeout)
	defer cancel()
	err := sharedhead.RequestSync(sctx, a.fleet.store.Client(), a.fleet.prefix, a.cfg.Repo.Branch, sharedhead.Sync{By: a.cfg.Host, Why: "webhook from " + string(forge)})
	if err != nil {
		a.log.Warn("ask the fleet's fetcher to poll after a webhook", "err", err)
	}
}
