package gitsync

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/commitid"
)

// TestVerifyReleaseSSH: with release signers, a commit verifies only when a release
// key signed it; a developer's key, trusted, is refused as not a release signer, with
// the reason when the release file lists the key but refuses it.
func TestVerifyReleaseSSH(t *testing.T) {
	r := signedRepo(t)
	rel, dev, mallory := newSSHKey(t, "release"), newSSHKey(t, "developer"), newSSHKey(t, "mallory")
	signSSH(r, rel)
	released := r.Commit("signed by the release key")
	signSSH(r, dev)
	developed := r.Commit("signed by a developer")
	signSSH(r, mallory)
	untrusted := r.Commit("signed by mallory")
	unsigned(r)
	plain := r.Commit("not signed")

	date := func(c string) string { return commitObject(t, r, c).Committer.When.UTC().Format(time.RFC3339) }
	trusted := "committer@example.com %R\ncommitter@example.com %D\n"
	notRelease := "signed by ssh key " + dev.fp + " (committer@example.com), which is not a release signer for branch main"
	relOK := Signer{Kind: KindSSH, Identity: committer, Fingerprint: rel.fp}
	tests := []struct {
		name     string
		trusted  string // allowed_signers; %R is the release key, %D the developer's, %M mallory's
		release  string // the release allowed_signers; "" for none
		keyring  bool   // an OpenPGP release keyring is set (and no SSH release signers)
		commit   string
		now      func() time.Time
		want     Signer
		wantErr  string
		wantIs   error
		noBranch bool
	}{
		{name: "signed by a release key", trusted: trusted, release: "committer@example.com %R", commit: released, want: relOK},
		{name: "release key for every committer", trusted: trusted, release: `* namespaces="git" %R`, commit: released, want: relOK},
		{name: "no release signers: any trusted key", trusted: trusted, commit: developed,
			want: Signer{Kind: KindSSH, Identity: committer, Fingerprint: dev.fp}},

		{name: "signed by a developer", trusted: trusted, release: "committer@example.com %R", commit: developed,
			wantErr: notRelease, wantIs: ErrNotReleaseSigner},
		{name: "the branch unknown", trusted: trusted, release: "committer@example.com %R", commit: developed, noBranch: true,
			wantErr: strings.TrimSuffix(notRelease, " for branch main"), wantIs: ErrNotReleaseSigner},
		{name: "release key for another committer", trusted: trusted, release: "release@example.com %D\ncommitter@example.com %R", commit: developed,
			wantErr: notRelease + ": SSH key " + dev.fp + " is not allowed to sign for committer committer@example.com", wantIs: ErrNotReleaseSigner},
		{name: "release key retired before the commit", trusted: trusted, release: "committer@example.com valid-before=\"20230101Z\" %D", commit: developed,
			wantErr: notRelease + ": SSH key " + dev.fp + " ($RELEASE:1) expired at 2023-01-01T00:00:00Z, before the commit's date " + date(developed), wantIs: ErrNotReleaseSigner},
		{name: "release key not for git", trusted: trusted, release: `committer@example.com namespaces="file" %D`, commit: developed,
			wantErr: notRelease + ": SSH key " + dev.fp + ` ($RELEASE:1) is not allowed for namespace "git"`, wantIs: ErrNotReleaseSigner},
		{name: "only OpenPGP release keys", trusted: trusted, keyring: true, commit: released,
			wantErr: "signed by ssh key " + rel.fp + " (committer@example.com), which is not a release signer for branch main: no SSH release signers are configured", wantIs: ErrNotReleaseSigner},

		// The trusted keys are checked first: a release key must be one of them.
		{name: "unsigned", trusted: trusted, release: "committer@example.com %R", commit: plain,
			wantErr: "commit is not signed", wantIs: ErrUnsigned},
		{name: "untrusted key", trusted: trusted, release: "committer@example.com %R", commit: untrusted,
			wantErr: "bad commit signature: SSH key " + mallory.fp + " is not in the allowed signers", wantIs: ErrBadSignature},
		{name: "release key not trusted", trusted: "committer@example.com %D", release: "committer@example.com %R\ncommitter@example.com %M", commit: released,
			wantErr: "bad commit signature: SSH key " + rel.fp + " is not in the allowed signers", wantIs: ErrBadSignature},
		{name: "release key retired as a trusted key", trusted: "committer@example.com valid-before=\"20230101Z\" %R", release: "committer@example.com %R", commit: released,
			wantErr: "bad commit signature: SSH key " + rel.fp + " ($TRUSTED:1) expired at 2023-01-01T00:00:00Z, before the commit's date " + date(released), wantIs: ErrBadSignature},
	}
	keys := strings.NewReplacer("%R", rel.authorized, "%D", dev.authorized, "%M", mallory.authorized)
	keyring := mustRead(t, "testdata/verify/trusted.asc") // any armored public key: never used to verify here
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			o := VerifyOptions{SSHAllowedSigners: filepath.Join(dir, "allowed_signers"), Branch: "main", Now: tt.now}
			write(t, o.SSHAllowedSigners, keys.Replace(tt.trusted))
			if tt.release != "" {
				o.Release.SSHAllowedSigners = filepath.Join(dir, "release_signers")
				write(t, o.Release.SSHAllowedSigners, keys.Replace(tt.release)+"\n")
			}
			if tt.keyring {
				o.OpenPGPKeyring, o.Release.OpenPGPKeyring = filepath.Join(dir, "trusted.asc"), filepath.Join(dir, "release.asc")
				write(t, o.OpenPGPKeyring, keyring)
				write(t, o.Release.OpenPGPKeyring, keyring)
			}
			if tt.noBranch {
				o.Branch = ""
			}
			v, err := NewVerifier(o)
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.VerifyCommit(commitObject(t, r, tt.commit))
			want := strings.NewReplacer("$RELEASE", o.Release.SSHAllowedSigners, "$TRUSTED", o.SSHAllowedSigners).Replace(tt.wantErr)
			check(t, got, err, tt.want, want, tt.wantIs)
			if errors.Is(err, ErrNotReleaseSigner) && errors.Is(err, ErrBadSignature) {
				t.Errorf("%v is both a bad signature and not a release signer's", err)
			}
		})
	}
}

// TestVerifyReleaseOpenPGP: of an OpenPGP keyring, only the keys of the release
// keyring sign a commit that is applied.
func TestVerifyReleaseOpenPGP(t *testing.T) {
	r := signedRepo(t)
	g := newGPGHome(t)
	rel := g.newKey(t, "Release <committer@example.com>", "never")
	dev := g.newKey(t, "Developer <committer@example.com>", "never")
	signOpenPGP(r, g, rel)
	released := r.Commit("signed by the release key")
	signOpenPGP(r, g, dev)
	developed := r.Commit("signed by a developer")

	dir := t.TempDir()
	o := VerifyOptions{
		OpenPGPKeyring: filepath.Join(dir, "trusted.asc"),
		Release:        ReleaseSigners{OpenPGPKeyring: filepath.Join(dir, "release.asc")},
		Branch:         "main",
	}
	write(t, o.OpenPGPKeyring, g.export(t, rel)+g.export(t, dev))
	write(t, o.Release.OpenPGPKeyring, g.export(t, rel))
	v, err := NewVerifier(o)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.VerifyCommit(commitObject(t, r, released))
	check(t, got, err, Signer{Kind: KindOpenPGP, Identity: "Release <committer@example.com>", Fingerprint: rel}, "", nil)
	got, err = v.VerifyCommit(commitObject(t, r, developed))
	check(t, got, err, Signer{}, "signed by openpgp key "+dev+" (Developer <committer@example.com>), which is not a release signer for branch main", ErrNotReleaseSigner)

	// SSH release signers only: an OpenPGP signature is no release.
	alice := newSSHKey(t, "alice")
	o.SSHAllowedSigners, o.Release = filepath.Join(dir, "allowed_signers"), ReleaseSigners{SSHAllowedSigners: filepath.Join(dir, "release_signers")}
	write(t, o.SSHAllowedSigners, "committer@example.com "+alice.authorized+"\n")
	write(t, o.Release.SSHAllowedSigners, "committer@example.com "+alice.authorized+"\n")
	if v, err = NewVerifier(o); err != nil {
		t.Fatal(err)
	}
	got, err = v.VerifyCommit(commitObject(t, r, released))
	check(t, got, err, Signer{}, "signed by openpgp key "+rel+" (Release <committer@example.com>), which is not a release signer for branch main: no OpenPGP release keyring is configured", ErrNotReleaseSigner)
}

// TestNewVerifierRelease: release keys are read by the rules of the trusted keys, and
// need trusted keys of their kind.
func TestNewVerifierRelease(t *testing.T) {
	dir := t.TempDir()
	signers := filepath.Join(dir, "allowed_signers")
	write(t, signers, "committer@example.com "+testKey+"\n")
	broken := filepath.Join(dir, "broken")
	write(t, broken, "committer@example.com "+testKey+"\nrelease@example.com\n")
	keyring := filepath.Join(dir, "release.asc")
	write(t, keyring, mustRead(t, "testdata/verify/trusted.asc"))
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name string
		opts VerifyOptions
		want string
	}{
		{"missing release signers", VerifyOptions{SSHAllowedSigners: signers, Release: ReleaseSigners{SSHAllowedSigners: missing}},
			"read release keys: open " + missing + ": no such file or directory"},
		{"broken release signers", VerifyOptions{SSHAllowedSigners: signers, Release: ReleaseSigners{SSHAllowedSigners: broken}},
			broken + ":2: missing key"},
		{"SSH release signers alone", VerifyOptions{Release: ReleaseSigners{SSHAllowedSigners: signers}},
			"SSH release signers " + signers + " are set without SSH allowed signers: a release key must also be a trusted key"},
		{"OpenPGP release keys without an OpenPGP keyring", VerifyOptions{SSHAllowedSigners: signers, Release: ReleaseSigners{OpenPGPKeyring: keyring}},
			"the OpenPGP release keyring " + keyring + " is set without an OpenPGP keyring: a release key must also be a trusted key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.opts.Enabled() {
				t.Errorf("Enabled() = false for %+v", tt.opts)
			}
			v, err := NewVerifier(tt.opts)
			if err == nil || err.Error() != tt.want || v != nil {
				t.Errorf("NewVerifier = %v, %v; want error\n\t%s", v, err, tt.want)
			}
		})
	}
}

// TestPollReleaseSigners is issue 18's ninth case, at the syncer: a pusher without a
// key fast-forwards the branch to a developer's signed commit of a feature branch.
// Without release signers it verifies, and becomes the anchor; with them it is
// reported and refused (Verify), the anchor stays, and the release manager's signed
// merge of the same work is taken.
func TestPollReleaseSigners(t *testing.T) {
	r := signedRepo(t)
	rel, dev := newSSHKey(t, "release"), newSSHKey(t, "developer")
	dir := t.TempDir()
	trusted := VerifyOptions{SSHAllowedSigners: filepath.Join(dir, "allowed_signers")}
	write(t, trusted.SSHAllowedSigners, committer+" "+rel.authorized+"\n"+committer+" "+dev.authorized+"\n")
	release := trusted
	release.Release.SSHAllowedSigners = filepath.Join(dir, "release_signers")
	write(t, release.Release.SSHAllowedSigners, committer+" "+rel.authorized+"\n")

	signSSH(r, rel)
	s1 := r.CommitFiles("release 1", map[string]string{"v": "1"})
	// A developer's signed work on a feature branch, never merged.
	signSSH(r, dev)
	r.Git("checkout", "--quiet", "-b", "feature")
	r.WriteFile("v", "unreviewed")
	r.Git("commit", "--quiet", "--all", "--no-verify", "-m", "work in progress, signed")
	feature := r.Head()
	r.Git("push", "--quiet", "origin", "feature")

	without := newSyncer(t, Options{URL: r.FileURL(), Verify: trusted})
	with := newSyncer(t, Options{URL: r.FileURL(), Verify: release})
	for _, s := range []*Syncer{without, with} {
		if u := mustPoll(t, s); u.Commit != s1 || s.Anchor() != s1 {
			t.Fatalf("first poll: %+v, anchor %s; want %s", u, commitid.Short(s.Anchor()), commitid.Short(s1))
		}
	}

	// The pusher: a fast-forward, no key needed.
	r.Git("push", "--quiet", "origin", "feature:main")

	if u := mustPoll(t, without); u.Commit != feature || without.Anchor() != feature {
		t.Fatalf("without release signers: %+v, anchor %s; want %s taken", u, commitid.Short(without.Anchor()), commitid.Short(feature))
	}
	if _, err := without.Verify(feature); err != nil {
		t.Fatalf("without release signers the developer's commit verifies (what the policy closes): %v", err)
	}

	if u := mustPoll(t, with); u.Commit != feature || with.Anchor() != s1 {
		t.Fatalf("with release signers: %+v, anchor %s; want %s reported, anchor %s kept", u, commitid.Short(with.Anchor()), commitid.Short(feature), commitid.Short(s1))
	}
	_, err := with.Verify(feature)
	want := "verify " + commitid.Short(feature) + ": signed by ssh key " + dev.fp + " (committer@example.com), which is not a release signer for branch main"
	if err == nil || err.Error() != want || !errors.Is(err, ErrNotReleaseSigner) {
		t.Fatalf("Verify(the developer's head) = %v, want\n\t%s", err, want)
	}

	// The release manager merges the work, with a signed merge, on the released head.
	signSSH(r, rel)
	r.Git("checkout", "--quiet", "main")
	r.Git("reset", "--quiet", "--hard", s1)
	r.Git("merge", "--quiet", "--no-ff", "-S", "-m", "release 2", "feature")
	merge := r.Head()
	r.Git("push", "--quiet", "--force", "origin", "main")
	if u := mustPoll(t, with); u.Commit != merge || with.Anchor() != merge {
		t.Fatalf("the signed merge: %+v, anchor %s; want %s taken", u, commitid.Short(with.Anchor()), commitid.Short(merge))
	}
	if got, err := with.Verify(merge); err != nil || got.Fingerprint != rel.fp {
		t.Fatalf("Verify(the signed merge) = %+v, %v; want the release key %s", got, err, rel.fp)
	}

	// A new clone with the policy turned on over the developer's head anchors at the
	// release before it.
	clone := filepath.Join(t.TempDir(), "repo.git")
	r.Git("push", "--quiet", "--force", "origin", feature+":refs/heads/main")
	mustPoll(t, newSyncer(t, Options{URL: r.FileURL(), Dir: clone, Verify: trusted}))
	s := newSyncer(t, Options{URL: r.FileURL(), Dir: clone, Verify: release})
	if _, err := s.Poll(context.Background()); err != nil || s.Anchor() != s1 {
		t.Fatalf("reopened with release signers: %v, anchor %s; want %s", err, commitid.Short(s.Anchor()), commitid.Short(s1))
	}
}

func write(t testing.TB, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
