package agent

import (
	"context"
	"maps"
	"reflect"
	"sync"
	"time"

	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/plan"
)

// A host waits for its group's lease with nothing touched, behind every host of the
// group before it: in a large group, for hours. A commit pushed meanwhile is what
// the fleet wants now, and a host that went on to the old one would restart its
// services twice, and roll the old release to the end of the group before the new
// one started anywhere. So the lease wait keeps polling as the loop would, and a
// newer commit that changes what this host would run ends the wait: the
// transaction aborts (core.Superseded) and the loop starts the newer one at once.
// A newer commit that does not verify, does not load (bad input) or is quarantined
// here does not: the loop refuses it later, and the rollout under way goes on.

// supersedable returns a context for the lease wait of w that ends when a newer
// commit supersedes w's transaction, and the function that stops the watch and
// says which commit did ("" for none). An operator's rollback is never superseded.
func (a *Agent) supersedable(ctx context.Context, w *work) (context.Context, func() string) {
	if w.txn.Rollback {
		return ctx, func() string { return "" }
	}
	wctx, cancel := context.WithCancel(ctx)
	var by string
	var wg sync.WaitGroup
	wg.Go(func() {
		by = a.watchForNewer(wctx, w)
		if by != "" {
			cancel()
		}
	})
	return wctx, func() string {
		cancel()
		wg.Wait()
		return by
	}
}

// watchForNewer polls as the loop would while it waits (its turns, its wake-ups:
// SyncNow, a new shared head) until ctx ends (""), or a newer commit supersedes w's
// transaction (the commit). The loop is blocked in the wait meanwhile, so the watch
// is the only reader of a.wake, and the only goroutine that exports for the loop.
func (a *Agent) watchForNewer(ctx context.Context, w *work) string {
	var backoff time.Duration
	looked := w.txn.To
	wait := a.nextPoll()
	for {
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ""
		case <-a.wake:
			timer.Stop()
		case <-timer.C:
		}
		pctx, cancel := context.WithTimeout(ctx, pollTimeout)
		u, polled, err := a.fetch(pctx)
		cancel()
		if ctx.Err() != nil {
			return ""
		}
		if polled {
			a.notePoll(u, err)
		}
		if c := a.git.Anchor(); c != "" && c != looked {
			looked = c
			if a.supersedes(ctx, w, c) {
				return c
			}
		}
		wait = afterPoll(&backoff, err, a.nextPoll())
	}
}

// supersedes says whether commit, newer than w's target, should replace it: it is
// trusted (signed when signatures are required, descending from the applied
// commit), not quarantined here, it loads, and it changes what this host would run
// compared with w's target. Anything else leaves the transaction as it is.
func (a *Agent) supersedes(ctx context.Context, w *work, commit string) bool {
	log := w.log.With("newer", commitid.ShortOrNone(commit))
	if q, err := a.store.IsQuarantined(commit); err != nil || q != nil {
		return false
	}
	lg, err := a.store.LastGood()
	if err != nil || a.trusted(log, lg, commit) != nil {
		return false
	}
	hs, _, err := a.load(ctx, commit)
	if err != nil {
		log.Info("a newer commit does not load; the upgrade under way goes on, and the loop refuses it after", "err", err)
		return false
	}
	p, err := plan.Compute(hs, lg, a.unitDir.Path)
	if err != nil {
		return false
	}
	next := newTxn(hs, lg, p).Target
	cur := w.txn.Target
	if next.Group == cur.Group && reflect.DeepEqual(next.Services, cur.Services) && maps.Equal(next.Files, cur.Files) {
		log.Info("a newer commit runs the same here; the upgrade under way goes on")
		return false
	}
	return true
}
