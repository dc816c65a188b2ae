package agent

import (
	"context"
	"errors"
	"maps"
	"reflect"
	"sync"
	"time"

	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/plan"
	"github.com/baton-fleet/baton/release"
)

// A host waits for its group's lease with nothing touched, behind every host of the
// group before it: in a large group, for hours. A commit pushed meanwhile is what
// the fleet wants now, and a host that went on to the old one would restart its
// services twice, and roll the old release to the end of the group before the new
// one started anywhere. So the lease wait keeps polling as the loop would, and a
// newer commit that changes what this host would run ends the wait: the
// transaction aborts (core.Superseded) and the loop starts the newer one at once.
// A newer commit the loop would not start at once, or whose releases do not stage,
// does not (supersedes): the rollout under way goes on.

// supersedable returns a context for the lease wait of w that ends when a newer
// commit supersedes w's transaction, and the function that stops the watch and
// says which commit did ("" for none). An operator's rollback is never superseded.
// A wake-up the watch took from the loop is given back when it stops, as is one
// for a head it saw move: the loop takes them once the transaction ends.
func (a *Agent) supersedable(ctx context.Context, w *work) (context.Context, func() string) {
	if w.txn.Rollback {
		return ctx, func() string { return "" }
	}
	wctx, cancel := context.WithCancel(ctx)
	var by string
	var woke bool
	var wg sync.WaitGroup
	wg.Go(func() {
		by, woke = a.watchForNewer(wctx, w)
		if by != "" {
			cancel()
		}
	})
	return wctx, func() string {
		cancel()
		wg.Wait()
		if woke {
			a.pollNow.Store(true) // the poll it woke for may have been cut short
		}
		if woke || by != "" || a.git.Head() != w.txn.To {
			wakeUp(a.wake)
		}
		return by
	}
}

// watchForNewer polls as the loop would while it waits (its turns, its wake-ups:
// SyncNow, a new shared head) until ctx ends (""), or a newer commit supersedes w's
// transaction (the commit); woke says whether it took a wake-up meant for the loop.
// The loop is blocked in the wait meanwhile, so the watch is the only reader of
// a.wake, and the only goroutine that exports or stages for the loop.
func (a *Agent) watchForNewer(ctx context.Context, w *work) (by string, woke bool) {
	var backoff time.Duration
	settled := w.txn.To // the last commit judged for good: no need to look at it again
	wait := a.nextPoll()
	for {
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return "", woke
		case <-a.wake:
			timer.Stop()
			woke = true
		case <-timer.C:
		}
		pctx, cancel := context.WithTimeout(ctx, pollTimeout)
		u, polled, err := a.fetch(pctx)
		cancel()
		if ctx.Err() != nil {
			return "", woke
		}
		if polled {
			a.notePoll(u, err)
		}
		if c := a.git.Anchor(); c != "" && c != settled {
			yes, final := a.supersedes(ctx, w, c)
			if yes {
				return c, woke
			}
			if final {
				settled = c
			}
		}
		wait = afterPoll(&backoff, err, a.nextPoll())
	}
}

// supersedes says whether commit, newer than w's target, should replace it now,
// and whether that answer is final for commit. It should when the loop would
// start it at once and it would get past staging: it is trusted (signed when
// signatures are required, descending from the applied commit), not quarantined
// here, it loads, it changes what this host would run compared with w's target,
// nothing holds it (the fleet's gate and halts, a freeze, a migration, firing
// alerts, unit files in the way) and its changed releases stage. A commit that
// fails any of these leaves the transaction under way as it is, so a bad push
// never splits a group between the release before and the one rolling out; one
// only held now (a gate, an artifact server that did not answer) is looked at
// again at the next turn.
func (a *Agent) supersedes(ctx context.Context, w *work, commit string) (yes, final bool) {
	log := w.log.With("newer", commitid.ShortOrNone(commit))
	q, err := a.store.IsQuarantined(commit)
	if err != nil || q != nil {
		return false, q != nil
	}
	lg, err := a.store.LastGood()
	if err != nil {
		return false, false
	}
	if a.trusted(log, lg, commit) != nil {
		return false, true
	}
	hs, repo, err := a.load(ctx, commit)
	if err != nil {
		if !errors.Is(err, errExport) {
			log.Info("a newer commit does not load; the upgrade under way goes on, and the loop refuses it after", "err", err)
		}
		return false, !errors.Is(err, errExport)
	}
	p, err := plan.Compute(hs, lg, a.unitDir.Path)
	if err != nil {
		return false, false
	}
	next := newTxn(hs, lg, p)
	if cur := w.txn.Target; next.Target.Group == cur.Group && reflect.DeepEqual(next.Target.Services, cur.Services) && maps.Equal(next.Target.Files, cur.Files) {
		log.Info("a newer commit runs the same here; the upgrade under way goes on")
		return false, true
	}
	if o := a.blocked(ctx, log, lg, hs, repo, next); o != nil {
		return false, false
	}
	for _, r := range changedServices(hs, next) {
		if _, err := a.stager.Stage(ctx, r); err != nil {
			bad := errors.Is(err, release.ErrBadArtifact)
			if bad {
				log.Info("a newer commit's release does not stage; the upgrade under way goes on", "service", r.Name, "err", err)
			}
			return false, bad
		}
	}
	return true, true
}
