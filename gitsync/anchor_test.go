package gitsync

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/internal/testgit"
)

// TestPollAnchorsOnlyVerifiedHeads is issue 18's first case: a head pushed without a
// trusted key is reported but never becomes the anchor, so putting the branch back,
// or pushing a signed commit on the signed head, is no rewind.
func TestPollAnchorsOnlyVerifiedHeads(t *testing.T) {
	r := signedRepo(t)
	alice, mallory := newSSHKey(t, "alice"), newSSHKey(t, "mallory")
	signers := writeTemp(t, "allowed_signers", committer+" "+alice.authorized+"\n")
	opts := Options{URL: r.FileURL(), Dir: filepath.Join(t.TempDir(), "repo.git"), Verify: VerifyOptions{SSHAllowedSigners: signers}}
	s := newSyncer(t, opts)

	signSSH(r, alice)
	s1 := r.CommitFiles("signed 1", map[string]string{"v": "1"})
	mustPoll(t, s)

	// poll checks one poll's Update, head and anchor.
	poll := func(step string, s *Syncer, want Update, anchor string) {
		t.Helper()
		got, err := s.Poll(context.Background())
		if err != nil {
			t.Fatalf("%s: Poll: %v", step, err)
		}
		if got != want || s.Head() != want.Commit || s.Anchor() != anchor {
			t.Fatalf("%s: Update %+v, head %s, anchor %s;\nwant %+v, head %s, anchor %s",
				step, got, commitid.Short(s.Head()), commitid.Short(s.Anchor()), want, commitid.Short(want.Commit), commitid.Short(anchor))
		}
	}
	// push makes a commit on the branch as it stands, signed by key (nil for none).
	push := func(key *sshKey, msg string) string {
		t.Helper()
		if key == nil {
			unsigned(r)
		} else {
			signSSH(r, *key)
		}
		return r.CommitFiles(msg, map[string]string{"v": msg})
	}

	// An unsigned head on the signed one, polled: reported, not anchored.
	u1 := push(nil, "unsigned 1")
	poll("an unsigned head", s, Update{Commit: u1, Previous: s1, Changed: true, Fetched: true}, s1)
	// Put back: the signed head is taken again, no rewind.
	r.Rewind(s1)
	poll("the branch put back", s, Update{Commit: s1, Previous: u1, Changed: true}, s1)

	// A head signed by a key not trusted is no better than an unsigned one; a signed
	// commit on the signed head, the bad one dropped, is taken.
	m := push(&mallory, "signed by mallory")
	poll("a head signed by an untrusted key", s, Update{Commit: m, Previous: s1, Changed: true, Fetched: true}, s1)
	r.Rewind(s1)
	s2 := push(&alice, "signed 2")
	poll("a signed commit on the signed head", s, Update{Commit: s2, Previous: m, Changed: true, Fetched: true}, s2)

	// A signed commit on top of an unsigned one descends from the anchor: taken.
	u2 := push(nil, "unsigned 2")
	poll("an unsigned head again", s, Update{Commit: u2, Previous: s2, Changed: true, Fetched: true}, s2)
	s3 := push(&alice, "signed 3")
	poll("a signed commit on the unsigned head", s, Update{Commit: s3, Previous: u2, Changed: true, Fetched: true}, s3)

	// A restart after an unsigned head starts from the anchor, and reports the
	// unsigned head again.
	u3 := push(nil, "unsigned 3")
	poll("an unsigned head before a restart", s, Update{Commit: u3, Previous: s3, Changed: true, Fetched: true}, s3)
	s = newSyncer(t, opts)
	poll("the same head after the restart", s, Update{Commit: u3, Previous: s3, Changed: true}, s3)

	// Rewinds are still judged against the anchor: an older signed commit is refused,
	// and so is a signed commit on it.
	for _, step := range []string{"rewound to an older signed commit", "a signed commit on an older one"} {
		if step == "a signed commit on an older one" {
			push(&alice, "signed on s1")
		} else {
			r.Rewind(s1)
		}
		u, err := s.Poll(context.Background())
		if !errors.Is(err, ErrRewound) || u.Commit != u3 || s.Head() != u3 || s.Anchor() != s3 {
			t.Fatalf("%s: Poll = %+v, %v (head %s, anchor %s); want ErrRewound against %s, head %s kept",
				step, u, err, commitid.Short(s.Head()), commitid.Short(s.Anchor()), commitid.Short(s3), commitid.Short(u3))
		}
	}

	// Without keys configured every head that passes the rewind check is the anchor.
	r.Rewind(u3)
	plain := newSyncer(t, Options{URL: r.FileURL()})
	poll("no keys configured", plain, Update{Commit: u3, Changed: true, Fetched: true}, u3)
}

// TestPollReanchors: a clone whose anchor does not verify, as an earlier baton left
// it after polling an unsigned head, is anchored again at the nearest first-parent
// ancestor that verifies, so that the branch put back is taken. With no such
// ancestor the anchor stays.
func TestPollReanchors(t *testing.T) {
	r := signedRepo(t)
	alice := newSSHKey(t, "alice")
	verify := VerifyOptions{SSHAllowedSigners: writeTemp(t, "allowed_signers", committer+" "+alice.authorized+"\n")}
	unsigned(r)
	u0 := r.Commit("unsigned history")
	signSSH(r, alice)
	s1 := r.Commit("signed")
	unsigned(r)
	r.Commit("unsigned 1")
	u2 := r.Commit("unsigned 2")

	// The earlier baton's clone: anchored at whatever head it polled last.
	dir := filepath.Join(t.TempDir(), "repo.git")
	if got := mustPoll(t, newSyncer(t, Options{URL: r.FileURL(), Dir: dir})); got.Commit != u2 {
		t.Fatalf("polled %s, want %s", commitid.Short(got.Commit), commitid.Short(u2))
	}
	r.Rewind(s1)
	s := newSyncer(t, Options{URL: r.FileURL(), Dir: dir, Verify: verify})
	got := mustPoll(t, s)
	if want := (Update{Commit: s1, Previous: s1}); got != want || s.Anchor() != s1 {
		t.Fatalf("poll of the branch put back = %+v, anchor %s; want %+v, anchor %s", got, commitid.Short(s.Anchor()), want, commitid.Short(s1))
	}
	// Recorded: a restart keeps it.
	if s := newSyncer(t, Options{URL: r.FileURL(), Dir: dir}); mustPoll(t, s).Commit != s1 || s.Anchor() != s1 {
		t.Fatalf("after a restart the anchor is %s, want %s", commitid.Short(s.Anchor()), commitid.Short(s1))
	}

	// Only unsigned history behind the anchor: it stays, and a rewind is refused.
	r.Rewind(u0)
	side := r.Commit("unsigned on the first commit")
	dir2 := filepath.Join(t.TempDir(), "repo.git")
	mustPoll(t, newSyncer(t, Options{URL: r.FileURL(), Dir: dir2}))
	r.Rewind(u0)
	s = newSyncer(t, Options{URL: r.FileURL(), Dir: dir2, Verify: verify})
	if _, err := s.Poll(context.Background()); !errors.Is(err, ErrRewound) || s.Anchor() != side {
		t.Fatalf("Poll = %v, anchor %s; want ErrRewound, anchor %s kept", err, commitid.Short(s.Anchor()), commitid.Short(side))
	}
}

// TestSetAllowRewind: a reloaded repo.allowRewind takes effect at the next poll.
func TestSetAllowRewind(t *testing.T) {
	r := testgit.NewRepo(t)
	a := r.Commit("a")
	b := r.Commit("b")
	s := newSyncer(t, Options{URL: r.FileURL()})
	mustPoll(t, s)
	r.Rewind(a)
	if _, err := s.Poll(context.Background()); !errors.Is(err, ErrRewound) {
		t.Fatalf("Poll = %v, want ErrRewound", err)
	}
	s.SetAllowRewind(true)
	if got, want := mustPoll(t, s), (Update{Commit: a, Previous: b, Changed: true}); got != want {
		t.Fatalf("Poll with allowRewind set = %+v, want %+v", got, want)
	}
	s.SetAllowRewind(false)
	r.Rewind(b)
	mustPoll(t, s) // b descends from a
	r.Rewind(a)
	if _, err := s.Poll(context.Background()); !errors.Is(err, ErrRewound) {
		t.Fatalf("Poll with allowRewind unset again = %v, want ErrRewound", err)
	}
}
