package gitsync

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/internal/redact"
)

// History is cloned in full, never shallow. Rewind detection walks from the
// new head back to the accepted one, so every commit in between is fetched
// anyway; a shallow clone would save only the history older than the first
// clone, text that compresses to a few megabytes even for a large fleet
// repository. Against that, go-git v5.19.3 sends its shallow boundary only
// when a fetch itself asks for a depth. Tried: after a depth-1 clone, a plain
// fetch of a force-push onto a commit older than the boundary arrives without
// that commit (the server believes the client has the history behind its
// haves), and the ancestry walk ends in "object not found" instead of a
// clear rewind verdict. Fetching with a depth judged that case right, but it
// deepens the clone on each fetch, which is what shallow was meant to avoid.

// remoteName names the remote in the local repository's tracking ref.
const remoteName = "origin"

// objectCacheSize bounds go-git's decoded object cache; its 96 MiB default
// alone would be three times the agent's memory budget.
const objectCacheSize = 4 * cache.MiByte

func (s *Syncer) acceptedRef() plumbing.ReferenceName {
	return plumbing.NewBranchReferenceName(s.opts.Branch)
}

func (s *Syncer) trackingRef() plumbing.ReferenceName {
	return plumbing.NewRemoteReferenceName(remoteName, s.opts.Branch)
}

// Poll brings the local repository up to date with the remote branch. The
// first call clones into Dir, or opens the repository already there. Each
// call first lists the remote refs; only when the branch head differs from
// the head and is not already here are objects fetched. A remote head that
// does not descend from the anchor is refused with ErrRewound (unless
// AllowRewind) and the head stays where it was. Otherwise it becomes the
// head; with Options.Verify it becomes the anchor too only when its
// signature verifies, so that a head pushed without a trusted key is
// reported (the caller refuses it) but never becomes what later heads are
// judged against: the branch may be put back, or a signed commit pushed on
// the anchor. A fetch over Options.MaxFetch, or whose pack would unpack to
// too much, is refused likewise, and nothing of it stays in Dir. A fetch
// that leaves more than 32 packs in Dir merges the small ones (compact). On
// error the returned Update describes the head, unchanged.
//
// A poll the server refused with 429 or a 5xx returns a ServerError; until the
// wait its Retry-After asked for has passed, Poll returns that again without
// asking the server.
func (s *Syncer) Poll(ctx context.Context) (u Update, err error) {
	if err := s.waitAsked(time.Now()); err != nil {
		return Update{Commit: s.Head(), Previous: s.Head()}, err
	}
	s.polls.Lock()
	defer s.polls.Unlock()
	defer func() {
		if r := recover(); r != nil {
			_ = s.locked(func() error {
				s.repo = nil // its caches may be half updated: open it again next time
				return nil
			})
			u = Update{Commit: s.Head(), Previous: s.Head()}
			err = fmt.Errorf("poll %s: internal error in the git client: %v", redact.URL(s.opts.URL), r)
		}
		err = s.noteRefusal(err)
		s.recordResult(err)
	}()
	return s.poll(ctx)
}

func (s *Syncer) poll(ctx context.Context) (Update, error) {
	shown := redact.URL(s.opts.URL)
	if err := s.locked(func() error { _, err := s.openRepo(); return err }); err != nil {
		return Update{}, err
	}
	prev := s.Head()
	u := Update{Commit: prev, Previous: prev}

	auth, err := s.authMethod()
	if err != nil {
		return u, err
	}
	lim := &fetchLimit{max: s.opts.MaxFetch}
	sess, err := s.session(auth, lim)
	if err != nil {
		return u, fmt.Errorf("list refs of %s: %w", shown, err)
	}
	defer func() { _ = sess.Close() }()
	ar, remoteHead, err := s.remoteHead(ctx, sess, lim, shown)
	if err != nil {
		return u, err
	}
	if remoteHead.String() == prev {
		return u, nil
	}

	var have bool
	_ = s.locked(func() error { have = hasObject(s.repo.Storer, remoteHead); return nil })
	if !have {
		err := s.fetch(ctx, sess, ar.Capabilities, remoteHead, lim)
		if lim.exceeded() {
			err = lim.refusal("the fetch")
		}
		if err != nil {
			return u, fmt.Errorf("fetch %s from %s: %w", s.opts.Branch, shown, err)
		}
		u.Fetched = true
	}
	err = s.locked(func() error { return s.accept(ctx, &u, prev, remoteHead, shown) })
	return u, err
}

// accept takes newHead, listed by the server and now in the repository, as the
// head when it passes the rewind check, and moves the anchor when it verifies;
// after a fetch it first compacts the repository's packs. s.mu is held.
func (s *Syncer) accept(ctx context.Context, u *Update, prev string, newHead plumbing.Hash, shown string) error {
	repo := s.repo
	if u.Fetched {
		s.compactAfterFetch(ctx)
	}
	if err := repo.Storer.SetReference(plumbing.NewHashReference(s.trackingRef(), newHead)); err != nil {
		return fmt.Errorf("update %s: %w", s.trackingRef(), err)
	}
	if _, err := loadCommit(repo.Storer, newHead); err != nil {
		return fmt.Errorf("read head %s of %s: %w", newHead, s.opts.Branch, err)
	}
	if err := s.checkRewind(repo.Storer, newHead, shown); err != nil {
		return err
	}
	anchor, err := s.acceptHead(repo.Storer, prev, newHead, u.Fetched)
	if err != nil {
		return err
	}
	s.setHeads(newHead.String(), anchor)
	u.Commit, u.Changed = newHead.String(), true
	return nil
}

// remoteHead lists the refs of the remote over sess and returns them with the
// head of the branch. shown is the remote's URL as errors show it.
func (s *Syncer) remoteHead(ctx context.Context, sess transport.UploadPackSession, lim *fetchLimit, shown string) (*packp.AdvRefs, plumbing.Hash, error) {
	ar, err := sess.AdvertisedReferencesContext(ctx)
	switch {
	case lim.exceeded():
		return nil, plumbing.ZeroHash, fmt.Errorf("list refs of %s: %w", shown, lim.refusal("the ref listing"))
	case errors.Is(err, transport.ErrAuthenticationRequired) || errors.Is(err, transport.ErrAuthorizationFailed):
		return nil, plumbing.ZeroHash, fmt.Errorf("list refs of %s: %w (check repo.auth)", shown, oneLine{err})
	case err != nil:
		return nil, plumbing.ZeroHash, fmt.Errorf("list refs of %s: %w", shown, err)
	}
	head, ok := ar.References[s.acceptedRef().String()]
	if !ok || head.IsZero() {
		return nil, plumbing.ZeroHash, fmt.Errorf("list refs of %s: branch %q not found", shown, s.opts.Branch)
	}
	return ar, head, nil
}

// checkRewind refuses with ErrRewound a new head that does not descend from
// the anchor, unless AllowRewind is set. shown is the remote's URL as errors
// show it.
func (s *Syncer) checkRewind(st storer.EncodedObjectStorer, newHead plumbing.Hash, shown string) error {
	anchor := s.Anchor()
	if anchor == "" {
		return nil
	}
	ok, err := descends(st, plumbing.NewHash(anchor), newHead)
	if err != nil {
		return fmt.Errorf("check that %s descends from %s: %w", commitid.ShortOrNone(newHead.String()), commitid.ShortOrNone(anchor), err)
	}
	if !ok && !s.allowRewind.Load() {
		return fmt.Errorf("%w: %s of %s moved from %s to %s, which does not descend from it (a force-push or reset); staying on %s (set repo.allowRewind: true in agent.yaml to accept such a head)",
			ErrRewound, s.opts.Branch, shown, commitid.ShortOrNone(anchor), commitid.ShortOrNone(newHead.String()), commitid.ShortOrNone(anchor))
	}
	if !ok {
		s.log.Warn("accepting a head that does not descend from the previous one (allowRewind is set)",
			"from", commitid.ShortOrNone(anchor), "to", commitid.ShortOrNone(newHead.String()))
	}
	return nil
}

// acceptHead returns the anchor that goes with newHead, which replaces prev:
// newHead itself, recorded in Dir, unless Options.Verify is set and its
// signature does not verify; then the anchor stays.
func (s *Syncer) acceptHead(st storer.EncodedObjectStorer, prev string, newHead plumbing.Hash, fetched bool) (string, error) {
	anchor := newHead.String()
	if s.opts.Verify.Enabled() {
		if _, err := verifyCommit(st, s.opts.Verify, newHead); err != nil {
			// Not an error of the poll: the head is reported, and its caller
			// refuses it with the same verdict.
			anchor = s.Anchor()
			s.log.Warn("new head does not verify; the anchor stays", "from", commitid.ShortOrNone(prev), "to", commitid.ShortOrNone(newHead.String()), "anchor", commitid.ShortOrNone(anchor), "err", err)
		}
	}
	if anchor == newHead.String() {
		if err := writeRef(s.opts.Dir, s.acceptedRef(), newHead); err != nil {
			return "", fmt.Errorf("record accepted head %s: %w", commitid.ShortOrNone(newHead.String()), err)
		}
		s.log.Info("accepted new head", "from", commitid.ShortOrNone(prev), "to", commitid.ShortOrNone(newHead.String()), "fetched", fetched)
	}
	return anchor, nil
}

// openRepo opens the local bare repository, creating it when Dir holds
// none, and loads the accepted head. s.mu is held.
func (s *Syncer) openRepo() (*git.Repository, error) {
	if s.repo != nil {
		return s.repo, nil
	}
	dir := s.opts.Dir
	objects := cache.NewObjectLRU(objectCacheSize)
	st := filesystem.NewStorageWithOptions(osfs.New(dir), objects, filesystem.Options{
		LargeObjectThreshold: largeObject, // a larger blob is read as a stream, not whole
	})
	repo, err := git.Open(st, nil)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		if entries, _ := os.ReadDir(dir); len(entries) > 0 {
			return nil, fmt.Errorf("open local repository %s: the directory is not empty and holds no git repository", dir)
		}
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("create local repository: %w", err)
		}
		repo, err = git.InitWithOptions(st, nil, git.InitOptions{DefaultBranch: s.acceptedRef()})
	}
	if err != nil {
		return nil, fmt.Errorf("open local repository %s: %w", dir, err)
	}
	head := ""
	ref, err := repo.Storer.Reference(s.acceptedRef())
	switch {
	case errors.Is(err, plumbing.ErrReferenceNotFound):
	case err != nil:
		return nil, fmt.Errorf("open local repository %s: read %s: %w", dir, s.acceptedRef(), err)
	default:
		if _, err := loadCommit(repo.Storer, ref.Hash()); err != nil {
			return nil, fmt.Errorf("open local repository %s: accepted head %s: %w (remove the directory to clone again)", dir, ref.Hash(), err)
		}
		h, err := s.reanchor(repo.Storer, ref.Hash())
		if err != nil {
			return nil, fmt.Errorf("open local repository %s: %w", dir, err)
		}
		head = h.String()
	}
	// The tracking ref only says what the last fetch brought; it is not
	// trusted across restarts (go-git writes it without fsync).
	if err := repo.Storer.RemoveReference(s.trackingRef()); err != nil && !errors.Is(err, plumbing.ErrReferenceNotFound) {
		return nil, fmt.Errorf("open local repository %s: reset %s: %w", dir, s.trackingRef(), err)
	}
	s.repo, s.store, s.objects = repo, st, objects
	s.setHeads(head, head)
	return repo, nil
}

// maxReanchor bounds how far back reanchor looks for a commit that verifies.
const maxReanchor = 1000

// reanchor checks the anchor stored in Dir, h, when Options.Verify is set.
// An anchor that does not verify was written by an earlier baton, which
// recorded each new head before its signature was checked: one unsigned
// push then left every host that polled it refusing the signed branch as
// rewound. The anchor goes back to h's nearest first-parent ancestor that
// verifies, within maxReanchor commits, and is recorded. When none does
// (signatures were turned on over unsigned history), or the keys do not
// load, h stays: the stricter of the two. s.mu is held.
func (s *Syncer) reanchor(st storer.EncodedObjectStorer, h plumbing.Hash) (plumbing.Hash, error) {
	if !s.opts.Verify.Enabled() {
		return h, nil
	}
	v, err := NewVerifier(s.opts.Verify)
	if err != nil {
		s.log.Warn("cannot check the signature of the anchor; keeping it", "anchor", commitid.ShortOrNone(h.String()), "err", err)
		return h, nil
	}
	at, ok := nearestVerified(st, v, h)
	if !ok {
		s.log.Info("neither the anchor nor its first-parent ancestors verify; keeping it", "anchor", commitid.ShortOrNone(h.String()))
		return h, nil
	}
	if at == h {
		return h, nil
	}
	if err := writeRef(s.opts.Dir, s.acceptedRef(), at); err != nil {
		return h, fmt.Errorf("record the anchor %s: %w", commitid.ShortOrNone(at.String()), err)
	}
	s.log.Warn("the anchor does not verify (an earlier baton recorded it unchecked, or its key is no longer trusted); anchored at its nearest ancestor that does",
		"from", commitid.ShortOrNone(h.String()), "to", commitid.ShortOrNone(at.String()))
	return at, nil
}

// nearestVerified returns the first of h and its first-parent ancestors
// that verifies, looking at maxReanchor commits at most; false when none.
func nearestVerified(st storer.EncodedObjectStorer, v *Verifier, h plumbing.Hash) (plumbing.Hash, bool) {
	for range maxReanchor {
		c, err := loadCommit(st, h)
		if err != nil {
			return h, false
		}
		if _, err := v.VerifyCommit(c); err == nil {
			return h, true
		}
		if len(c.ParentHashes) == 0 {
			return h, false
		}
		h = c.ParentHashes[0]
	}
	return h, false
}

// Descends reports whether commit is ancestor or a descendant of it, from
// the objects already fetched. When ancestor is not among them the error
// wraps ErrUnknownCommit: callers guarding against a downgrade refuse.
func (s *Syncer) Descends(ancestor, commit string) (bool, error) {
	a, err := parseHash(ancestor)
	if err != nil {
		return false, err
	}
	c, err := parseHash(commit)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	repo, err := s.openRepo()
	if err != nil {
		return false, err
	}
	ok, err := descends(repo.Storer, a, c)
	if err != nil {
		return false, fmt.Errorf("check that %s descends from %s: %w", commitid.ShortOrNone(commit), commitid.ShortOrNone(ancestor), err)
	}
	return ok, nil
}

// descends walks the history of commit breadth first looking for ancestor.
// A missing object is an error, not a "no"; a missing ancestor wraps
// ErrUnknownCommit.
func descends(st storer.EncodedObjectStorer, ancestor, commit plumbing.Hash) (bool, error) {
	if ancestor == commit {
		return true, nil
	}
	if _, err := loadCommit(st, ancestor); errors.Is(err, plumbing.ErrObjectNotFound) {
		return false, fmt.Errorf("commit %s: %w", commitid.ShortOrNone(ancestor.String()), ErrUnknownCommit)
	} else if err != nil {
		return false, fmt.Errorf("read commit %s: %w", ancestor, err)
	}
	seen := map[plumbing.Hash]bool{commit: true}
	queue := []plumbing.Hash{commit}
	for len(queue) > 0 {
		h := queue[0]
		queue = queue[1:]
		c, err := loadCommit(st, h)
		if err != nil {
			return false, fmt.Errorf("read commit %s: %w", h, err)
		}
		for _, p := range c.ParentHashes {
			if p == ancestor {
				return true, nil
			}
			if !seen[p] {
				seen[p] = true
				queue = append(queue, p)
			}
		}
	}
	return false, nil
}

// maxParsed bounds the commits and trees read: go-git decodes one whole
// into memory. A tree this large would list some 50,000 files, five times
// as many as Export writes.
const maxParsed = 4 << 20

// loadCommit reads commit h, refusing one over maxParsed.
func loadCommit(st storer.EncodedObjectStorer, h plumbing.Hash) (*object.Commit, error) {
	o, err := loadParsed(st, plumbing.CommitObject, h)
	if err != nil {
		return nil, err
	}
	return object.DecodeCommit(st, o)
}

// loadTree reads tree h, refusing one over maxParsed.
func loadTree(st storer.EncodedObjectStorer, h plumbing.Hash) (*object.Tree, error) {
	o, err := loadParsed(st, plumbing.TreeObject, h)
	if err != nil {
		return nil, err
	}
	return object.DecodeTree(st, o)
}

func loadParsed(st storer.EncodedObjectStorer, t plumbing.ObjectType, h plumbing.Hash) (plumbing.EncodedObject, error) {
	o, err := st.EncodedObject(t, h)
	if err != nil {
		return nil, err
	}
	if o.Size() > maxParsed {
		return nil, fmt.Errorf("%s %s is %s, more than the %s baton reads", t, commitid.ShortOrNone(h.String()), formatSize(o.Size()), formatSize(maxParsed))
	}
	return o, nil
}

func hasObject(st storer.EncodedObjectStorer, h plumbing.Hash) bool {
	return st.HasEncodedObject(h) == nil
}

func parseHash(s string) (plumbing.Hash, error) {
	if !plumbing.IsHash(s) || strings.ToLower(s) != s {
		return plumbing.ZeroHash, fmt.Errorf("%q is not a full commit hash (40 lower-case hex digits)", s)
	}
	return plumbing.NewHash(s), nil
}

// writeRef points the loose ref name at h durably: write a lock file,
// fsync, rename over the ref, fsync the directory. A crash leaves the old
// value or the new one, never an empty ref.
func writeRef(dir string, name plumbing.ReferenceName, h plumbing.Hash) error {
	p := filepath.Join(dir, filepath.FromSlash(name.String()))
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		return err
	}
	lock := p + ".lock"
	f, err := os.OpenFile(lock, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	_, err = f.WriteString(h.String() + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(lock, p)
	}
	if err != nil {
		_ = os.Remove(lock)
		return err
	}
	return syncFile(filepath.Dir(p))
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// oneLine shows an error on one line: a server's answer quoted in it may end with a
// newline, or hold several.
type oneLine struct{ err error }

func (e oneLine) Error() string { return strings.Join(strings.Fields(e.err.Error()), " ") }
func (e oneLine) Unwrap() error { return e.err }
