package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/baton-fleet/baton/core"
	"github.com/baton-fleet/baton/gitsync"
	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/plan"
	"github.com/baton-fleet/baton/rollback"
	"github.com/baton-fleet/baton/spec"
)

// reconcile moves the host to commit, when it is new, good and not quarantined.
func (a *Agent) reconcile(ctx context.Context, commit string) {
	if commit == "" {
		return
	}
	lg, err := a.store.LastGood()
	if err != nil {
		a.log.Error("read the last good record", "err", err)
		return
	}
	st := a.Status()
	if commit == lg.Revision {
		a.contractAgain(ctx, commit)
		return
	}
	if commit == st.Rejected {
		return
	}
	log := a.log.With("commit", commitid.ShortOrNone(commit))
	if !a.mayTry(log, st, commit) {
		return
	}
	if err := a.trusted(log, lg, commit); err != nil {
		a.endLook(ctx, look{log: log, commit: commit, lg: lg}, core.Outcome{Kind: core.Rejected, Reason: err.Error()})
		return
	}
	hs, repo, err := a.load(ctx, commit)
	if errors.Is(err, errExport) {
		// The host could not write the tree out (a full disk, a damaged clone): the
		// commit is not bad input, and is tried again after a backoff.
		retry := a.trouble.Add(commit, time.Now(), err.Error())
		log.Warn("commit not loaded; trying again later", "err", err, "in", retry.Round(time.Second))
		a.phase("%s", a.trouble.Waiting(commit, time.Now()))
		return
	}
	if err != nil {
		a.endLook(ctx, look{log: log, commit: commit, lg: lg}, core.Outcome{Kind: core.Rejected, Reason: err.Error()})
		return
	}
	log = log.With("group", hs.Group.Name)
	a.setStatus(func(s *Status) { s.Group = hs.Group.Name })
	a.noteGroup(hs)
	a.obs.metrics.Host(a.cfg.Host, hs.Group.Name)
	p, err := plan.Compute(hs, lg, a.unitDir.Path)
	if err != nil {
		log.Error("plan", "err", err)
		return
	}
	l := look{log: log, commit: commit, lg: lg, hs: hs}
	if !p.Changed() {
		if a.unchanged(l) {
			a.endLook(ctx, l, core.Outcome{Kind: core.Unchanged})
			a.contract(ctx, hs)
		}
		return
	}
	txn := newTxn(hs, lg, p)
	if o := a.blocked(ctx, log, lg, hs, repo, txn); o != nil {
		a.endLook(ctx, l, *o)
		return
	}
	a.upgrade(ctx, log.With("txn", txn.ID), txn, hs)
}

// mayTry says whether the loop may consider commit at all now: no transaction is
// open, the commit is not waiting out a backoff of this host's, and it is known not to
// be quarantined here. When not, the status says why.
func (a *Agent) mayTry(log *slog.Logger, st Status, commit string) bool {
	if open, err := a.store.Load(); err != nil || open != nil {
		// Never start a transaction while one is open: a new PREPARED would overwrite
		// the state a crash left, and with it the only record of what to revert.
		why := "an interrupted transaction is open; it is finished first"
		if err != nil {
			why = "the open transaction cannot be read: " + err.Error()
		}
		if st.Phase != why {
			a.phase("%s", why)
			log.Error("not starting a new upgrade", "reason", why)
		}
		return false
	}
	if why := a.trouble.Waiting(commit, time.Now()); why != "" {
		if st.Phase != why {
			a.phase("%s", why)
		}
		return false
	}
	q, err := a.store.IsQuarantined(commit)
	if err != nil {
		// Not knowing whether the commit failed here is no licence to try it.
		if why := "the quarantine cannot be read: " + err.Error(); st.Phase != why {
			a.phase("%s", why)
			log.Error("not starting the upgrade", "reason", why)
		}
		return false
	}
	if q != nil {
		if said := fmt.Sprintf("quarantined %s: %s", commitid.ShortOrNone(commit), q.Reason); st.LastResult != said {
			a.setStatus(func(s *Status) { s.LastResult = said })
			log.Warn("commit is quarantined on this host; waiting for a newer one or baton retry", "reason", q.Reason)
		}
		return false
	}
	return true
}

// trusted checks that commit may be applied over the last good revision: signed by a
// trusted key when signatures are required, and shown to descend from the applied
// commit unless repo.allowRewind. Its error is why the commit is rejected.
func (a *Agent) trusted(log *slog.Logger, lg *rollback.LastGood, commit string) error {
	if a.signedOnly {
		signer, err := a.git.Verify(commit)
		if err != nil {
			return fmt.Errorf("signature: %w", err)
		}
		log.Info("commit signature verified", "signer", signer.String())
	}
	if lg.Revision == "" || a.cfg.Repo.AllowRewind {
		return nil
	}
	// A commit not shown to descend from the applied one could be a downgrade: an
	// error refuses as a "no" does.
	ok, err := a.git.Descends(lg.Revision, commit)
	switch {
	case errors.Is(err, gitsync.ErrUnknownCommit):
		return fmt.Errorf("the applied commit %s is not in the local clone (it was cloned again or cleaned up), so commit %s cannot be shown to descend from it and could be a downgrade; set repo.allowRewind: true in agent.yaml to accept it", commitid.ShortOrNone(lg.Revision), commitid.ShortOrNone(commit))
	case err != nil:
		return fmt.Errorf("commit %s cannot be shown to descend from the applied %s, so it could be a downgrade: %w; set repo.allowRewind: true in agent.yaml to accept it", commitid.ShortOrNone(commit), commitid.ShortOrNone(lg.Revision), err)
	case !ok:
		return fmt.Errorf("commit %s does not descend from the applied %s (rewound or force-pushed); set repo.allowRewind to accept it", commitid.ShortOrNone(commit), commitid.ShortOrNone(lg.Revision))
	}
	return nil
}

// unchanged records a commit that changes nothing of this host as its last good
// revision: it is good here as it is. It reports whether it could.
func (a *Agent) unchanged(l look) bool {
	lg, hs := l.lg, l.hs
	lg.History = lg.NextHistory()
	lg.Revision, lg.Time, lg.Host, lg.Group = l.commit, time.Now().UTC(), hs.Host, hs.Group.Name
	if err := a.store.SetLastGood(lg); err != nil {
		l.log.Error("record the last good revision", "err", err)
		return false
	}
	return true
}

// blocked says what holds txn back now, as far as this host can tell before the
// lease, as a Blocked outcome: a unit file of the release that is someone else's
// (the host, not the release, is in the way: nothing is quarantined or halted, and
// the next poll looks again), a freeze, the fleet's gate, a migration halted in the
// ledger, the group's alerts. It is
// nil when the transaction may start.
func (a *Agent) blocked(ctx context.Context, log *slog.Logger, lg *rollback.LastGood, hs *spec.HostSpec, repo *spec.Repo, txn *rollback.Txn) *core.Outcome {
	held := func(by, why string) *core.Outcome { return &core.Outcome{Kind: core.Blocked, Step: by, Reason: why} }
	if why := a.foreignUnits(hs, lg); why != "" {
		return held(heldByUnits, why)
	}
	if repo.Fleet.Freeze {
		return held(heldByFreeze, "frozen")
	}
	v, err := a.gate(ctx, hs.Group, txn)
	if err != nil {
		log.Warn("read the fleet state", "err", err)
		return held(heldByFleetState, "")
	}
	if !v.OK {
		a.obs.metrics.Halted(v.Halted)
		return held(heldByGate, v.Why)
	}
	if why := a.migrationHold(ctx, hs, txn); why != "" {
		return held(heldByMigration, why)
	}
	if why := a.promGate(ctx, hs.Group, txn.To); why != "" {
		return held(heldByAlerts, why)
	}
	return nil
}

// foreignUnits says which unit files of hs are taken on the host without baton
// owning them (units.Dir.Taken: a file of that name, or the template of an instance),
// "" when none: baton never overwrites or overrides them, so the upgrade cannot start.
// It is checked again under the lease, before switching.
func (a *Agent) foreignUnits(hs *spec.HostSpec, lg *rollback.LastGood) string {
	owned := func(name string) bool { _, ok := lg.Files[name]; return ok }
	var foreign, others []string
	for _, r := range hs.Services {
		names := r.Units.Names()
		for _, c := range r.Colors {
			names = append(names, c.Units.Names()...)
		}
		for _, name := range names {
			p, err := a.unitDir.Taken(name, owned)
			switch {
			case err != nil:
				others = append(others, err.Error())
			case p == filepath.Join(a.unitDir.Path, name):
				foreign = append(foreign, name)
			case p != "":
				others = append(others, fmt.Sprintf("unit %s would override %s, which baton does not own", name, p))
			}
		}
	}
	var why []string
	if len(foreign) > 0 {
		slices.Sort(foreign)
		why = append(why, fmt.Sprintf("unit file %s exists in %s and baton does not own it", strings.Join(foreign, ", "), a.unitDir.Path))
	}
	if len(why)+len(others) == 0 {
		return ""
	}
	slices.Sort(others)
	return "blocked: " + strings.Join(append(why, others...), "; ") + "; remove it, or rename the unit in the repository"
}

// errExport is wrapped in an error of load that is the host's, not the commit's: the
// tree could not be written out.
var errExport = errors.New("could not export the commit")

// load exports commit, parses and validates it, and renders it for this host.
func (a *Agent) load(ctx context.Context, commit string) (*spec.HostSpec, *spec.Repo, error) {
	dir, err := a.export(ctx, loopTrees, commit)
	if err != nil && !errors.Is(err, gitsync.ErrBadTree) {
		return nil, nil, fmt.Errorf("%w: %w", errExport, err)
	}
	if err != nil {
		return nil, nil, err
	}
	repo, err := spec.LoadWith(os.DirFS(dir), spec.LoadOptions{AllowUnits: a.cfg.AllowUnits})
	if err != nil {
		return nil, nil, err
	}
	hs, err := repo.ForHost(a.cfg.Host, commit, a.cfg.Paths.State)
	if err != nil {
		return nil, nil, err
	}
	return hs, repo, nil
}

// The directories of the state directory that commits are exported to, each
// written by one goroutine alone: an export there removes the trees of other
// commits, which must not be in use.
const (
	loopTrees    = "revisions"          // the loop's: the commit it loads and applies
	fetcherTrees = "revisions.statuses" // the fleet's fetcher's: the commit whose statuses it posts
)

// export writes the tree of commit under the state directory's directory trees
// once, atomically, and removes the trees of other commits there.
func (a *Agent) export(ctx context.Context, trees, commit string) (string, error) {
	root := filepath.Join(a.cfg.Paths.State, trees)
	// The repository's files may hold what others on the host must not read (a token
	// in an artifact's URL, say): the exported trees are the agent's alone, also where
	// an older baton made the directory readable by all.
	if err := os.MkdirAll(root, 0o700); err != nil {
		return "", fmt.Errorf("export %s: %w", commitid.ShortOrNone(commit), err)
	}
	if err := os.Chmod(root, 0o700); err != nil {
		return "", fmt.Errorf("export %s: %w", commitid.ShortOrNone(commit), err)
	}
	dir := filepath.Join(root, commit)
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	tmp := filepath.Join(root, ".tmp-"+commit)
	_ = os.RemoveAll(tmp)
	if err := a.git.Export(ctx, commit, tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", fmt.Errorf("export %s: %w", commitid.ShortOrNone(commit), err)
	}
	// Every other name goes: the trees of other commits, and the .tmp- trees that a
	// crash left half written. One goroutine exports under root, one commit at a
	// time, so no other export is under way and no other tree is in use.
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		if e.Name() != commit {
			_ = os.RemoveAll(filepath.Join(root, e.Name()))
		}
	}
	return dir, nil
}

// idle sets the phase to "idle at <applied>", in place of one that said why a
// commit waited (frozen, blocked, the fleet's gate), when the agent has moved on.
func (a *Agent) idle() {
	st := a.Status()
	if p := "idle at " + commitid.ShortOrNone(st.Applied); st.Phase != p {
		a.phase("%s", p)
	}
}
