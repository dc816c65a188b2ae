package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/baton-fleet/baton/api"
	"github.com/baton-fleet/baton/events"
	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/plan"
	"github.com/baton-fleet/baton/rollback"
	"github.com/baton-fleet/baton/spec"
)

// rollbackRequest is an operator's `baton rollback`, taken by the API and run by
// the main loop: from the revision the host ran when it was asked, to an earlier one.
type rollbackRequest struct {
	id, from, to string
}

// requestRollback checks that the host can go back, picks the revision, and hands
// the request to the main loop; it does not wait for the rollback. to is a commit
// id or prefix from the host's history, or "" for the newest earlier revision that
// is not quarantined.
func (a *Agent) requestRollback(to string) (api.RollbackAnswer, error) {
	txn, err := a.store.Load()
	if err != nil {
		return api.RollbackAnswer{}, err
	}
	if txn != nil {
		return api.RollbackAnswer{}, fmt.Errorf("%w: %s to %s is in progress (%s); ask again once it ends", api.ErrConflict, doing(txn), commitid.ShortOrNone(txn.To), txn.State)
	}
	lg, err := a.store.LastGood()
	if err != nil {
		return api.RollbackAnswer{}, err
	}
	if lg.Revision == "" {
		return api.RollbackAnswer{}, fmt.Errorf("%w: this host has not applied any revision yet", api.ErrInvalid)
	}
	target, err := a.rollbackTarget(lg, to)
	if err != nil {
		return api.RollbackAnswer{}, err
	}
	id := make([]byte, 4)
	_, _ = rand.Read(id)
	req := &rollbackRequest{id: hex.EncodeToString(id), from: lg.Revision, to: target}
	a.mu.Lock()
	busy := a.rollbackTo != nil || a.rollingBack
	if !busy {
		a.rollbackTo = req
	}
	a.mu.Unlock()
	if busy {
		return api.RollbackAnswer{}, fmt.Errorf("%w: a rollback is already under way; see baton status", api.ErrConflict)
	}
	a.log.Info("rollback requested by an operator", "from", commitid.ShortOrNone(lg.Revision), "to", commitid.ShortOrNone(target), "request", req.id)
	a.SyncNow()
	return api.RollbackAnswer{Request: req.id, From: lg.Revision, To: target}, nil
}

// rollbackTarget picks the revision to go back to from lg's history.
func (a *Agent) rollbackTarget(lg *rollback.LastGood, to string) (string, error) {
	ran := make([]string, len(lg.History))
	for i, rev := range lg.History {
		ran[i] = commitid.ShortOrNone(rev)
	}
	if to != "" {
		rev, err := commitid.Match(to, append([]string{lg.Revision}, lg.History...))
		switch {
		case errors.Is(err, commitid.ErrAmbiguous):
			return "", fmt.Errorf("%w: %w", api.ErrInvalid, err)
		case err != nil:
			return "", fmt.Errorf("%w: %s is not a revision this host ran before %s (it ran, newest first: %s)",
				api.ErrNotFound, to, commitid.ShortOrNone(lg.Revision), orNone(ran))
		case rev == lg.Revision:
			return "", fmt.Errorf("%w: %s is the revision this host runs", api.ErrInvalid, commitid.ShortOrNone(lg.Revision))
		}
		return rev, nil // quarantined or halted or not: the operator named it
	}
	if len(lg.History) == 0 {
		return "", fmt.Errorf("%w: this host has run only %s (since it began to keep a history)", api.ErrNotFound, commitid.ShortOrNone(lg.Revision))
	}
	q, err := a.store.Quarantine()
	if err != nil {
		return "", err
	}
	out := a.groupFailures(lg.Group)
	for _, e := range q {
		out[e.Commit] = true
	}
	for _, rev := range lg.History {
		if rev != lg.Revision && !out[rev] {
			return rev, nil
		}
	}
	return "", fmt.Errorf("%w: every earlier revision this host ran is quarantined here or halted in its group (newest first: %s); name one with --to",
		api.ErrNotFound, orNone(ran))
}

// groupFailures returns the commits that failed in group (halting it), by the fleet
// state: an empty set without one, or when it cannot be read.
func (a *Agent) groupFailures(group string) map[string]bool {
	failed := map[string]bool{}
	if a.fleet == nil || group == "" {
		return failed
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	snap, err := a.fleet.store.Snapshot(ctx)
	if err != nil || snap.Groups[group] == nil {
		return failed
	}
	for commit := range snap.Groups[group].Failed {
		failed[commit] = true
	}
	return failed
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, " ")
}

// takeRollback returns the pending rollback request, if any, and marks it under
// way: no other is taken until operatorRollback ends.
func (a *Agent) takeRollback() *rollbackRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	req := a.rollbackTo
	a.rollbackTo = nil
	a.rollingBack = req != nil
	return req
}

// operatorRollback runs an operator's rollback as a transaction like any upgrade
// (stage, lease, drain, switch, verify, commit or revert), to a revision the host
// ran before. The revision it leaves is quarantined first (and, with the etcd
// lease, its group halted), so that neither a crash nor the next poll brings it
// back; `baton retry` lifts both.
func (a *Agent) operatorRollback(ctx context.Context, req *rollbackRequest) {
	defer func() {
		a.mu.Lock()
		a.rollingBack = false
		a.mu.Unlock()
	}()
	log := a.log.With("commit", commitid.ShortOrNone(req.to), "from", commitid.ShortOrNone(req.from), "request", req.id)
	refuse := func(outcome, why string) {
		a.result(api.Result{Outcome: outcome, From: req.from, To: req.to, Message: "rollback: " + why, Request: req.id})
		a.setStatus(func(s *Status) {
			s.LastResult = fmt.Sprintf("rollback to %s refused: %s", commitid.ShortOrNone(req.to), why)
		})
		log.Error("rollback refused", "reason", why)
	}
	lg, err := a.store.LastGood()
	if err != nil {
		refuse(api.OutcomeAborted, err.Error())
		return
	}
	if lg.Revision == req.to {
		a.result(api.Result{Outcome: api.OutcomeRolledBack, From: req.from, To: req.to, Message: "the host already runs it", Request: req.id})
		return
	}
	hs, p, outcome, why := a.rollbackPlan(ctx, req, lg)
	if why != "" {
		refuse(outcome, why)
		return
	}
	// From here on the revision being left stays out: the operator judged it bad,
	// whether or not this host gets back.
	if why := a.judgedBad(ctx, lg, req.from); why != "" {
		refuse(api.OutcomeAborted, why)
		return
	}
	if !p.Changed() {
		if err := a.rollbackRecord(ctx, log, req, lg, hs); err != nil {
			refuse(api.OutcomeAborted, err.Error())
		}
		return
	}
	txn := newTxn(hs, lg, p)
	txn.Rollback, txn.Request = true, req.id
	a.upgrade(ctx, log, txn, hs)
}

// rollbackPlan checks that the host may go back to req.to from lg and plans it; when
// not, it says why and the outcome of the refusal.
func (a *Agent) rollbackPlan(ctx context.Context, req *rollbackRequest, lg *rollback.LastGood) (*spec.HostSpec, *plan.Plan, string, string) {
	if lg.Revision != req.from {
		return nil, nil, api.OutcomeAborted, fmt.Sprintf("the host moved to %s before the rollback began; ask again", commitid.ShortOrNone(lg.Revision))
	}
	if a.signedOnly {
		if _, err := a.git.Verify(req.to); err != nil {
			return nil, nil, api.OutcomeRejected, "signature: " + err.Error()
		}
	}
	hs, _, err := a.load(ctx, req.to)
	if err != nil {
		return nil, nil, api.OutcomeRejected, err.Error()
	}
	p, err := plan.Compute(hs, lg, a.unitDir.Path)
	if err != nil {
		return nil, nil, api.OutcomeAborted, "plan: " + err.Error()
	}
	if why := a.foreignUnits(hs, lg); why != "" {
		return nil, nil, api.OutcomeAborted, why
	}
	return hs, p, "", ""
}

// judgedBad quarantines the revision an operator rolls back from, and halts its group
// on it; "" once done, else why not.
func (a *Agent) judgedBad(ctx context.Context, lg *rollback.LastGood, from string) string {
	reason := fmt.Sprintf("rolled back by an operator on %s", a.cfg.Host)
	if err := a.store.AddQuarantine(from, reason); err != nil {
		return "quarantine " + commitid.ShortOrNone(from) + ": " + err.Error()
	}
	haltCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	a.haltCommit(haltCtx, lg.Group, from, reason)
	cancel()
	a.emit(events.RolloutHalted, from, "", fmt.Sprintf("%s quarantined: %s", commitid.ShortOrNone(from), reason), map[string]string{"rollback": "operator"})
	return ""
}

// rollbackRecord goes back to an earlier revision that runs the same services: only
// the record moves.
func (a *Agent) rollbackRecord(ctx context.Context, log *slog.Logger, req *rollbackRequest, lg *rollback.LastGood, hs *spec.HostSpec) error {
	next := *lg
	next.Revision, next.Time, next.History, next.Group = req.to, time.Now().UTC(), lg.NextHistory(), hs.Group.Name
	if err := a.store.SetLastGood(&next); err != nil {
		return err
	}
	a.result(api.Result{Outcome: api.OutcomeRolledBack, From: req.from, To: req.to, Message: "nothing to change on this host", Request: req.id})
	a.setStatus(func(s *Status) {
		s.Applied, s.LastResult = req.to, fmt.Sprintf("rolled back %s -> %s (nothing to change)", commitid.ShortOrNone(req.from), commitid.ShortOrNone(req.to))
	})
	a.idle()
	a.recordIdle(ctx, hs.Group.Name, req.to, "rolled back")
	log.Info("rolled back; the services were the same")
	return nil
}
