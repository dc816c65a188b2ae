package gitsync

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"

	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/internal/testgit"
)

var updateVerify = flag.Bool("update-verify", false, "rewrite the signed commits of testdata/verify (needs git, ssh-keygen and gpg)")

const committer = "committer@example.com" // testgit's committer email

// needTool skips the test when the command is missing, and fails it under
// CI=true, where every tool must be installed.
func needTool(t testing.TB, cmd, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(cmd); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed (Debian package %s); required when CI=true", cmd, pkg)
		}
		t.Skipf("%s not installed (Debian package %s)", cmd, pkg)
	}
}

// run runs a command and returns its standard output, unchanged.
func run(t testing.TB, dir string, env []string, stdin, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Env = dir, env
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// signedRepo is a test repository whose commits can be signed.
func signedRepo(t testing.TB) *testgit.Repo {
	t.Helper()
	needTool(t, "git", "git")
	return testgit.NewRepo(t)
}

// rawCommit is the commit object hash as stored.
func rawCommit(t testing.TB, r *testgit.Repo, hash string) string {
	t.Helper()
	return run(t, r.Work, r.Environ(), "", "git", "cat-file", "commit", hash)
}

// writeCommit stores a commit object in the work clone and returns its hash.
func writeCommit(t testing.TB, r *testgit.Repo, raw string) string {
	t.Helper()
	return strings.TrimSpace(run(t, r.Work, r.Environ(), raw, "git", "hash-object", "-t", "commit", "-w", "--stdin"))
}

// commitObject reads a commit of the work clone with go-git.
func commitObject(t testing.TB, r *testgit.Repo, hash string) *object.Commit {
	t.Helper()
	repo, err := git.PlainOpen(r.Work)
	if err != nil {
		t.Fatal(err)
	}
	c, err := repo.CommitObject(plumbing.NewHash(hash))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// setSignature replaces the gpgsig header of a raw commit object with
// armored, or removes it when armored is empty.
func setSignature(raw, armored string) string {
	head, msg, _ := strings.Cut(raw, "\n\n")
	var kept []string
	skipping := false
	for _, l := range strings.Split(head, "\n") {
		if skipping && strings.HasPrefix(l, " ") {
			continue
		}
		if skipping = strings.HasPrefix(l, "gpgsig "); !skipping {
			kept = append(kept, l)
		}
	}
	if armored != "" {
		kept = append(kept, "gpgsig "+strings.ReplaceAll(strings.TrimRight(armored, "\n"), "\n", "\n "))
	}
	return strings.Join(kept, "\n") + "\n\n" + msg
}

// signature returns the armored signature of a raw commit object.
func signature(t testing.TB, raw string) string {
	t.Helper()
	c := decodeCommit(t, raw)
	if c.PGPSignature == "" {
		t.Fatal("commit is not signed")
	}
	return c.PGPSignature
}

func decodeCommit(t testing.TB, raw string) *object.Commit {
	t.Helper()
	o := &plumbing.MemoryObject{}
	o.SetType(plumbing.CommitObject)
	if _, err := o.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	c := &object.Commit{}
	if err := c.Decode(o); err != nil {
		t.Fatal(err)
	}
	return c
}

// sshKey is an ed25519 key made by ssh-keygen.
type sshKey struct {
	file       string // the private key
	authorized string // "ssh-ed25519 AAAA... comment"
	fp         string // SHA256:...
}

func newSSHKey(t testing.TB, name string) sshKey {
	t.Helper()
	needTool(t, "ssh-keygen", "openssh-client")
	file := filepath.Join(t.TempDir(), name)
	run(t, "", nil, "", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", file)
	pub, err := os.ReadFile(file + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return sshKey{file: file, authorized: strings.TrimSpace(string(pub)), fp: ssh.FingerprintSHA256(key)}
}

// signSSH makes the next commits of r signed by key, as git does with gpg.format ssh.
func signSSH(r *testgit.Repo, key sshKey) {
	r.Git("config", "gpg.format", "ssh")
	r.Git("config", "user.signingkey", key.file)
	r.Git("config", "commit.gpgsign", "true")
}

func unsigned(r *testgit.Repo) { r.Git("config", "commit.gpgsign", "false") }

// sshSign signs payload with ssh-keygen -Y sign in namespace and returns the armored signature.
func sshSign(t testing.TB, key sshKey, namespace, payload string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "payload")
	if err := os.WriteFile(f, []byte(payload), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "", nil, "", "ssh-keygen", "-q", "-Y", "sign", "-n", namespace, "-f", key.file, f)
	sig, err := os.ReadFile(f + ".sig")
	if err != nil {
		t.Fatal(err)
	}
	return string(sig)
}

// gpgHome is a GnuPG home of its own, and a wrapper for git's gpg.program
// that uses it. Its agent is stopped at the end of the test.
type gpgHome struct {
	dir     string
	program string
}

func newGPGHome(t testing.TB) *gpgHome {
	t.Helper()
	needTool(t, "gpg", "gnupg")
	needTool(t, "gpg-agent", "gnupg")
	needTool(t, "gpgconf", "gnupg")
	dir, err := os.MkdirTemp("", "gpg") // short: the agent's socket path has a length limit
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = exec.Command("gpgconf", "--homedir", dir, "--kill", "all").Run()
		_ = os.RemoveAll(dir)
	})
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	program := filepath.Join(dir, "gpg.sh")
	script := "#!/bin/sh\nexec gpg --homedir '" + dir + "' \"$@\"\n"
	if err := os.WriteFile(program, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return &gpgHome{dir: dir, program: program}
}

func (g *gpgHome) gpg(t testing.TB, args ...string) string {
	t.Helper()
	return run(t, "", nil, "", g.program, append([]string{"--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""}, args...)...)
}

// newKey makes a signing key for uid and returns its fingerprint.
func (g *gpgHome) newKey(t testing.TB, uid, expire string) string {
	t.Helper()
	g.gpg(t, "--quick-gen-key", uid, "ed25519", "sign", expire)
	for _, l := range strings.Split(g.gpg(t, "--with-colons", "--list-keys", "="+uid), "\n") {
		if f := strings.Split(l, ":"); f[0] == "fpr" && len(f) > 9 {
			return f[9]
		}
	}
	t.Fatalf("no fingerprint for %s", uid)
	return ""
}

func (g *gpgHome) export(t testing.TB, fpr string) string {
	t.Helper()
	return g.gpg(t, "--armor", "--export", fpr)
}

// signOpenPGP makes the next commits of r signed by the key fpr of g.
func signOpenPGP(r *testgit.Repo, g *gpgHome, fpr string) {
	r.Git("config", "gpg.format", "openpgp")
	r.Git("config", "gpg.program", g.program)
	r.Git("config", "user.signingkey", fpr)
	r.Git("config", "commit.gpgsign", "true")
}

func at(s string) func() time.Time {
	ts, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return func() time.Time { return ts }
}

// check compares the outcome of a verification with want: a Signer, or an
// exact error message (and the sentinel it wraps).
func check(t *testing.T, got Signer, err error, want Signer, wantErr string, wantIs error) {
	t.Helper()
	if wantErr == "" {
		if err != nil {
			t.Fatalf("got error %v, want signer %v", err, want)
		}
		if got != want {
			t.Fatalf("got signer %+v, want %+v", got, want)
		}
		return
	}
	if err == nil {
		t.Fatalf("got signer %v, want error %q", got, wantErr)
	}
	if err.Error() != wantErr {
		t.Errorf("got error\n\t%s\nwant\n\t%s", err, wantErr)
	}
	if !errors.Is(err, wantIs) {
		t.Errorf("error %v does not wrap %v", err, wantIs)
	}
	if got != (Signer{}) {
		t.Errorf("got signer %+v with the error", got)
	}
}

func TestVerifySSH(t *testing.T) {
	r := signedRepo(t)
	alice, mallory := newSSHKey(t, "alice"), newSSHKey(t, "mallory")

	signSSH(r, alice)
	good := r.Commit("signed by alice")
	goodRaw := rawCommit(t, r, good)
	signSSH(r, mallory)
	untrusted := r.Commit("signed by mallory")
	unsigned(r)
	plain := r.Commit("not signed")

	// The same commit, signed by alice for another namespace than git.
	payload := setSignature(goodRaw, "")
	otherNS := writeCommit(t, r, setSignature(payload, sshSign(t, alice, "file", payload)))
	// Alice's signature on a commit changed after signing.
	tamperedCommit := writeCommit(t, r, strings.Replace(goodRaw, "signed by alice", "signed by alice, honest", 1))
	// Alice's commit with one bit of the signature flipped.
	sig, err := sshsig.Unarmor([]byte(signature(t, goodRaw)))
	if err != nil {
		t.Fatal(err)
	}
	sig.Signature.Blob[5] ^= 1
	tamperedSig := writeCommit(t, r, setSignature(goodRaw, string(sshsig.Armor(sig))))

	when := commitObject(t, r, good).Committer.When.UTC().Format(time.RFC3339)
	bad := "bad commit signature: "
	alicesOK := Signer{Kind: KindSSH, Identity: committer, Fingerprint: alice.fp}
	tests := []struct {
		name    string
		signers string // allowed_signers; %A is alice's key, %M mallory's
		commit  string
		now     func() time.Time
		want    Signer
		wantErr string
		wantIs  error
	}{
		{name: "allowed key", signers: "committer@example.com %A", commit: good, want: alicesOK},
		{name: "wildcard principal", signers: "# team\n\n*@example.com %A", commit: good, want: alicesOK},
		{name: "quoted principals and options", signers: `"x@example.com,committer@example.com" namespaces="git,file",valid-after="20230101" %A`, commit: good, want: alicesOK},
		{name: "key listed twice", signers: "other@example.com %A\ncommitter@example.com %A", commit: good, want: alicesOK},
		{name: "valid at the commit date and now", signers: `committer@example.com valid-before="20240101Z" %A`, commit: good,
			now: at("2023-12-01T00:00:00Z"), want: alicesOK},

		{name: "unsigned", signers: "committer@example.com %A", commit: plain, wantErr: "commit is not signed", wantIs: ErrUnsigned},
		{name: "untrusted key", signers: "committer@example.com %A", commit: untrusted,
			wantErr: bad + "SSH key " + mallory.fp + " is not in the allowed signers", wantIs: ErrBadSignature},
		{name: "principal mismatch", signers: "other@example.com %A\ncommitter@example.com %M", commit: good,
			wantErr: bad + "SSH key " + alice.fp + " is not allowed to sign for committer committer@example.com", wantIs: ErrBadSignature},
		{name: "negated principal", signers: "*@example.com,!committer@example.com %A", commit: good,
			wantErr: bad + "SSH key " + alice.fp + " is not allowed to sign for committer committer@example.com", wantIs: ErrBadSignature},
		{name: "signature namespace", signers: "committer@example.com %A", commit: otherNS,
			wantErr: bad + "SSH signature by key " + alice.fp + ` is for namespace "file", not "git"`, wantIs: ErrBadSignature},
		{name: "key not for git", signers: `committer@example.com namespaces="file" %A`, commit: good,
			wantErr: bad + "SSH key " + alice.fp + ` ($FILE:1) is not allowed for namespace "git"`, wantIs: ErrBadSignature},
		{name: "tampered commit", signers: "committer@example.com %A", commit: tamperedCommit,
			wantErr: bad + "SSH signature by key " + alice.fp + " (committer@example.com) does not verify: the commit was changed after signing, or the signature is corrupt", wantIs: ErrBadSignature},
		{name: "tampered signature", signers: "committer@example.com %A", commit: tamperedSig,
			wantErr: bad + "SSH signature by key " + alice.fp + " (committer@example.com) does not verify: the commit was changed after signing, or the signature is corrupt", wantIs: ErrBadSignature},
		{name: "expired before the commit", signers: `committer@example.com valid-before="20230101Z" %A`, commit: good,
			wantErr: bad + "SSH key " + alice.fp + " ($FILE:1) expired at 2023-01-01T00:00:00Z, before the commit's date " + when, wantIs: ErrBadSignature},
		{name: "expired since (a backdated commit)", signers: `committer@example.com valid-before="20240101Z" %A`, commit: good,
			now:     at("2026-01-01T00:00:00Z"),
			wantErr: bad + "SSH key " + alice.fp + " ($FILE:1) expired at 2024-01-01T00:00:00Z", wantIs: ErrBadSignature},
		{name: "not valid yet at the commit date", signers: `committer@example.com valid-after="202401011200Z" %A`, commit: good,
			wantErr: bad + "SSH key " + alice.fp + " ($FILE:1) is valid only from 2024-01-01T12:00:00Z, and the commit is dated " + when, wantIs: ErrBadSignature},
		{name: "first refusal is reported", signers: "committer@example.com valid-before=\"20230101Z\" %A\ncommitter@example.com namespaces=\"file\" %A", commit: good,
			wantErr: bad + "SSH key " + alice.fp + " ($FILE:1) expired at 2023-01-01T00:00:00Z, before the commit's date " + when, wantIs: ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "allowed_signers")
			signers := strings.NewReplacer("%A", alice.authorized, "%M", mallory.authorized).Replace(tt.signers)
			if err := os.WriteFile(file, []byte(signers+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			v, err := NewVerifier(VerifyOptions{SSHAllowedSigners: file, Now: tt.now})
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.VerifyCommit(commitObject(t, r, tt.commit))
			check(t, got, err, tt.want, strings.ReplaceAll(tt.wantErr, "$FILE", file), tt.wantIs)
		})
	}
}

func TestVerifyOpenPGP(t *testing.T) {
	r := signedRepo(t)
	g := newGPGHome(t)
	trusted := g.newKey(t, "Test Committer <committer@example.com>", "never")
	other := g.newKey(t, "Mallory <committer@example.com>", "never")
	shortLived := g.newKey(t, "Short <committer@example.com>", "1d")

	signOpenPGP(r, g, trusted)
	good := r.Commit("signed by the trusted key")
	signOpenPGP(r, g, other)
	untrusted := r.Commit("signed by another key")
	signOpenPGP(r, g, shortLived)
	expiring := r.Commit("signed by a key that expires")
	unsigned(r)
	plain := r.Commit("not signed")
	tampered := writeCommit(t, r, strings.Replace(rawCommit(t, r, good), "signed by the trusted key", "signed by the trusted key!", 1))

	dir := t.TempDir()
	keyring := filepath.Join(dir, "trusted.asc")
	both := filepath.Join(dir, "both.asc") // two files concatenated: both blocks count
	if err := os.WriteFile(keyring, []byte(g.export(t, trusted)+g.export(t, shortLived)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(both, []byte(g.export(t, trusted)+"\n"+g.export(t, other)), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := "bad commit signature: "
	tests := []struct {
		name    string
		keyring string
		commit  string
		now     func() time.Time
		want    Signer
		wantErr string
		wantIs  error
	}{
		{name: "trusted key", keyring: keyring, commit: good,
			want: Signer{Kind: KindOpenPGP, Identity: "Test Committer <committer@example.com>", Fingerprint: trusted}},
		{name: "second block of the keyring", keyring: both, commit: untrusted,
			want: Signer{Kind: KindOpenPGP, Identity: "Mallory <committer@example.com>", Fingerprint: other}},
		{name: "untrusted key", keyring: keyring, commit: untrusted,
			wantErr: bad + "OpenPGP key " + other + " is not in the trusted keyring", wantIs: ErrBadSignature},
		{name: "unsigned", keyring: keyring, commit: plain, wantErr: "commit is not signed", wantIs: ErrUnsigned},
		{name: "expired key", keyring: keyring, commit: expiring, now: func() time.Time { return time.Now().Add(72 * time.Hour) },
			wantErr: bad + "OpenPGP key " + shortLived + " has expired", wantIs: ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewVerifier(VerifyOptions{OpenPGPKeyring: tt.keyring, Now: tt.now})
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.VerifyCommit(commitObject(t, r, tt.commit))
			check(t, got, err, tt.want, tt.wantErr, tt.wantIs)
		})
	}
	t.Run("tampered commit", func(t *testing.T) {
		v, err := NewVerifier(VerifyOptions{OpenPGPKeyring: keyring})
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.VerifyCommit(commitObject(t, r, tampered))
		want := bad + "OpenPGP signature by key " + trusted + " does not verify (the commit was changed after signing, or the signature is corrupt): "
		if !errors.Is(err, ErrBadSignature) || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("got %v, want %q...", err, want)
		}
	})
}

// The commits in testdata/verify were signed by git with the keys beside
// them; these tests need none of the binaries.
func TestVerifyVectors(t *testing.T) {
	if *updateVerify {
		writeVectors(t)
	}
	sshCommit := decodeCommit(t, mustRead(t, "testdata/verify/ssh.commit"))
	pgpCommit := decodeCommit(t, mustRead(t, "testdata/verify/openpgp.commit"))
	signers, keyring := "testdata/verify/allowed_signers", "testdata/verify/trusted.asc"
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(readVectorKey(t)))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		opts    VerifyOptions
		commit  *object.Commit
		want    Signer
		wantErr string
	}{
		{"ssh", VerifyOptions{SSHAllowedSigners: signers, OpenPGPKeyring: keyring}, sshCommit,
			Signer{Kind: KindSSH, Identity: committer, Fingerprint: ssh.FingerprintSHA256(key)}, ""},
		{"openpgp", VerifyOptions{SSHAllowedSigners: signers, OpenPGPKeyring: keyring}, pgpCommit,
			Signer{Kind: KindOpenPGP, Identity: "Test Committer <committer@example.com>", Fingerprint: strings.TrimSpace(mustRead(t, "testdata/verify/trusted.fpr"))}, ""},
		{"ssh without allowed signers", VerifyOptions{OpenPGPKeyring: keyring}, sshCommit, Signer{},
			"bad commit signature: the commit has an SSH signature and no SSH allowed signers are configured"},
		{"openpgp without keyring", VerifyOptions{SSHAllowedSigners: signers}, pgpCommit, Signer{},
			"bad commit signature: the commit has an OpenPGP signature and no OpenPGP keyring is configured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewVerifier(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.VerifyCommit(tt.commit)
			check(t, got, err, tt.want, tt.wantErr, ErrBadSignature)
		})
	}
	t.Run("unsupported format", func(t *testing.T) {
		v, err := NewVerifier(VerifyOptions{SSHAllowedSigners: signers})
		if err != nil {
			t.Fatal(err)
		}
		c := *sshCommit
		c.PGPSignature = "-----BEGIN SIGNED MESSAGE-----\nAAAA\n-----END SIGNED MESSAGE-----\n"
		_, err = v.VerifyCommit(&c)
		check(t, Signer{}, err, Signer{}, "bad commit signature: unsupported signature format (want OpenPGP or SSH)", ErrBadSignature)
	})
}

// writeVectors signs two commits with new keys and writes them, with the
// public keys, to testdata/verify.
func writeVectors(t *testing.T) {
	r := signedRepo(t)
	key := newSSHKey(t, "vector")
	g := newGPGHome(t)
	fpr := g.newKey(t, "Test Committer <committer@example.com>", "never")
	signSSH(r, key)
	sshCommit := r.Commit("signed with ssh")
	signOpenPGP(r, g, fpr)
	pgpCommit := r.Commit("signed with openpgp")
	fields := strings.Fields(key.authorized)
	files := map[string]string{
		"ssh.commit":      rawCommit(t, r, sshCommit),
		"openpgp.commit":  rawCommit(t, r, pgpCommit),
		"allowed_signers": committer + ` namespaces="git" ` + fields[0] + " " + fields[1] + " test key\n",
		"trusted.asc":     g.export(t, fpr),
		"trusted.fpr":     fpr + "\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join("testdata", "verify", name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSyncerVerify(t *testing.T) {
	r := signedRepo(t)
	alice := newSSHKey(t, "alice")
	signers := writeTemp(t, "allowed_signers", "committer@example.com "+alice.authorized+"\n")
	signSSH(r, alice)
	signed := r.Commit("signed")

	s := newSyncer(t, Options{URL: r.FileURL(), Verify: VerifyOptions{SSHAllowedSigners: signers}})
	if u := mustPoll(t, s); u.Commit != signed {
		t.Fatalf("polled %s, want %s", u.Commit, signed)
	}
	got, err := s.Verify(signed)
	if want := (Signer{Kind: KindSSH, Identity: committer, Fingerprint: alice.fp}); err != nil || got != want {
		t.Fatalf("Verify = %+v, %v; want %+v", got, err, want)
	}

	unsigned(r)
	plain := r.Commit("not signed")
	mustPoll(t, s)
	_, err = s.Verify(plain)
	if want := "verify " + commitid.Short(plain) + ": commit is not signed"; err == nil || err.Error() != want || !errors.Is(err, ErrUnsigned) {
		t.Errorf("Verify(unsigned) = %v, want %q", err, want)
	}
	if _, err := s.Verify("1234"); err == nil || errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify(bad hash) = %v", err)
	}
	if _, err := s.Verify(strings.Repeat("0", 40)); err == nil || errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify(missing commit) = %v", err)
	}

	// The file is read at each call: a broken one refuses, but not as a bad signature.
	if err := os.WriteFile(signers, []byte("committer@example.com ssh-ed25519 !!!\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = s.Verify(signed)
	if want := "verify " + commitid.Short(signed) + ": " + signers + ":1: ssh-ed25519 key data is not base64"; err == nil || err.Error() != want || errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify with a broken allowed_signers = %v, want %q", err, want)
	}

	none := newSyncer(t, Options{URL: r.FileURL()})
	mustPoll(t, none)
	if _, err := none.Verify(signed); !errors.Is(err, ErrNotConfigured) {
		t.Errorf("Verify without keys = %v, want ErrNotConfigured", err)
	}
}

func TestVerifyDir(t *testing.T) {
	r := signedRepo(t)
	alice := newSSHKey(t, "alice")
	opts := VerifyOptions{SSHAllowedSigners: writeTemp(t, "allowed_signers", "*@example.com "+alice.authorized+"\n")}
	signSSH(r, alice)
	r.WriteFile("services/api/service.yaml", "version: 1\n")
	signed := r.Commit("signed")

	hash, got, err := VerifyDir(filepath.Join(r.Work, "services"), opts) // found from a subdirectory
	if want := (Signer{Kind: KindSSH, Identity: committer, Fingerprint: alice.fp}); err != nil || hash != signed || got != want {
		t.Fatalf("VerifyDir = %s, %+v, %v; want %s, %+v", hash, got, err, signed, want)
	}

	unsigned(r)
	plain := r.Commit("not signed")
	hash, _, err = VerifyDir(r.Work, opts)
	if want := "verify HEAD " + commitid.Short(plain) + " of " + r.Work + ": commit is not signed"; hash != plain || err == nil || err.Error() != want || !errors.Is(err, ErrUnsigned) {
		t.Errorf("VerifyDir(unsigned) = %s, %v; want %s, %q", hash, err, plain, want)
	}

	if _, _, err := VerifyDir(t.TempDir(), opts); err == nil || errors.Is(err, ErrBadSignature) || errors.Is(err, ErrUnsigned) {
		t.Errorf("VerifyDir(not a repository) = %v", err)
	}
	if _, _, err := VerifyDir(r.Work, VerifyOptions{}); !errors.Is(err, ErrNotConfigured) {
		t.Errorf("VerifyDir without keys = %v, want ErrNotConfigured", err)
	}
}

func TestVerifierReload(t *testing.T) {
	alice, bob := readVectorKey(t), testKey+" bob"
	file := writeTemp(t, "allowed_signers", "committer@example.com "+bob+"\n")
	v, err := NewVerifier(VerifyOptions{SSHAllowedSigners: file})
	if err != nil {
		t.Fatal(err)
	}
	c := decodeCommit(t, mustRead(t, "testdata/verify/ssh.commit"))
	if _, err := v.VerifyCommit(c); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("before reload: %v, want ErrBadSignature", err)
	}
	if err := os.WriteFile(file, []byte("committer@example.com "+alice+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := v.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyCommit(c); err != nil {
		t.Fatalf("after reload: %v", err)
	}
	// A broken file is refused and the keys loaded before stay.
	if err := os.WriteFile(file, []byte("committer@example.com\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := v.Reload(); err == nil || err.Error() != file+":1: missing key" {
		t.Errorf("Reload(broken) = %v", err)
	}
	if _, err := v.VerifyCommit(c); err != nil {
		t.Errorf("after a failed reload: %v", err)
	}
}

func mustRead(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatalf("%v (go test -run TestVerifyVectors -update-verify writes testdata/verify)", err)
	}
	return string(b)
}

// readVectorKey is the public key of testdata/verify/allowed_signers.
func readVectorKey(t testing.TB) string {
	t.Helper()
	line := mustRead(t, "testdata/verify/allowed_signers")
	i := strings.Index(line, "ssh-ed25519 ")
	if i < 0 {
		t.Fatal("no key in testdata/verify/allowed_signers")
	}
	return strings.TrimSpace(line[i:])
}

func TestNewVerifierErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	private := writeTemp(t, "private.asc", "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nAAAA\n-----END PGP PRIVATE KEY BLOCK-----\n")
	junk := writeTemp(t, "junk.asc", "not a key\n")
	broken := writeTemp(t, "broken.asc", "comment\n-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!!\n-----END PGP PUBLIC KEY BLOCK-----\n")
	empty := writeTemp(t, "allowed_signers", "# nobody yet\n")
	tests := []struct {
		name string
		opts VerifyOptions
		want string
	}{
		{"none", VerifyOptions{}, ErrNotConfigured.Error()},
		{"missing keyring", VerifyOptions{OpenPGPKeyring: missing}, "read trusted keys: open " + missing + ": no such file or directory"},
		{"missing allowed signers", VerifyOptions{SSHAllowedSigners: missing}, "read trusted keys: open " + missing + ": no such file or directory"},
		{"private key", VerifyOptions{OpenPGPKeyring: private}, private + ":1: -----BEGIN PGP PRIVATE KEY BLOCK-----: want a public key block (export it with gpg --export --armor)"},
		{"no armor", VerifyOptions{OpenPGPKeyring: junk}, junk + ": no armored OpenPGP public key (export one with gpg --export --armor)"},
		{"broken armor", VerifyOptions{OpenPGPKeyring: broken}, broken + ":2: "},
		{"no signers", VerifyOptions{SSHAllowedSigners: empty}, empty + ": no allowed signers in the file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewVerifier(tt.opts)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) || v != nil {
				t.Errorf("NewVerifier = %v, %v; want error %q", v, err, tt.want)
			}
		})
	}
}

// testKey is an ed25519 public key for parser tests.
const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID3Ms3iVpNxsI49wXGX/aAbPg6O3JNopHz10PKKrmxWE"

func TestParseAllowedSigners(t *testing.T) {
	utc := func(s string) time.Time { return at(s)() }
	tests := []struct {
		line string
		want allowedSigner // key not compared
	}{
		{"a@example.com " + testKey, allowedSigner{principals: "a@example.com"}},
		{"  a@example.com,*@example.org\t" + testKey + " a comment with spaces\r", allowedSigner{principals: "a@example.com,*@example.org"}},
		{`"a@example.com,b@example.com" ` + testKey, allowedSigner{principals: "a@example.com,b@example.com"}},
		{`a@example.com NAMESPACES="git,file" ` + testKey, allowedSigner{principals: "a@example.com", namespaces: "git,file"}},
		{`a@example.com namespaces="a \"q\" b" ` + testKey, allowedSigner{principals: "a@example.com", namespaces: `a "q" b`}},
		{`a@example.com valid-after="20240102Z",valid-before="20250102030405Z" ` + testKey,
			allowedSigner{principals: "a@example.com", validAfter: utc("2024-01-02T00:00:00Z"), validBefore: utc("2025-01-02T03:04:05Z")}},
		{`a@example.com valid-after="202401021530UTC" ` + testKey, allowedSigner{principals: "a@example.com", validAfter: utc("2024-01-02T15:30:00Z")}},
		{`a@example.com valid-after="20240102" ` + testKey, allowedSigner{principals: "a@example.com", validAfter: utc("2024-01-01T23:00:00Z")}}, // loc is UTC+1
	}
	loc := time.FixedZone("UTC+1", 3600)
	for _, tt := range tests {
		got, err := parseAllowedSigners("f", []byte("# comment\n\n"+tt.line+"\n"), loc)
		if err != nil {
			t.Errorf("%q: %v", tt.line, err)
			continue
		}
		if len(got) != 1 {
			t.Errorf("%q: %d entries, want 1", tt.line, len(got))
			continue
		}
		g := got[0]
		if g.where != "f:3" || g.principals != tt.want.principals || g.namespaces != tt.want.namespaces ||
			!g.validAfter.Equal(tt.want.validAfter) || !g.validBefore.Equal(tt.want.validBefore) || g.key.Type() != ssh.KeyAlgoED25519 {
			t.Errorf("%q:\ngot  %+v\nwant %+v", tt.line, g, tt.want)
		}
	}
}

func TestParseAllowedSignersErrors(t *testing.T) {
	rsaKey := "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDLHAaQ9BUfS1ofGMqp5MZN1+Rn3sHmc4LkH64Ru4o9Pe0VAZcKg4TiDk8iAKNmJJvfBxv9LzXwqhMV/rZNA0fPGJ5wnxgDaBOB7nT0Y4n0akpYhThCfAuDCXphWEPaJb1b3JNxb05fQyBCp5nOrVlS4dEr6Ba2Mt1ELq+oaorBNQ=="
	tests := []struct {
		line string
		want string
	}{
		{"a@example.com", "missing key"},
		{`a@example.com namespaces="git"`, "missing key"},
		{`"a@example.com ` + testKey, "missing end quote"},
		{`"a"b"@example.com" ` + testKey, "bad quoting in principals"},
		{`"" ` + testKey, "empty principals"},
		{"a@example.com ssh-ed25519", "missing key data after ssh-ed25519"},
		{"a@example.com ssh-ed25519 !!!", "ssh-ed25519 key data is not base64"},
		{"a@example.com ssh-ed25519 AAAA", "bad ssh-ed25519 key: ssh: short read"},
		{"a@example.com ssh-rsa " + strings.Fields(testKey)[1], "key data is a ssh-ed25519 key, not ssh-rsa"},
		{"a@example.com ecdsa-sha2-nistp256 " + strings.Fields(rsaKey)[1], "key data is a ssh-rsa key, not ecdsa-sha2-nistp256"},
		{"a@example.com ssh-dss AAAA", "ssh-dss (DSA) keys are not supported"},
		{"a@example.com ssh-ed25519-cert-v01@openssh.com AAAA", "key type ssh-ed25519-cert-v01@openssh.com: certificates are not supported, list the signing keys"},
		{"a@example.com cert-authority " + testKey, "cert-authority is not supported: list the signing keys themselves"},
		{"a@example.com no-touch-required " + testKey, `unknown option or key type "no-touch-required"`},
		{"a@example.com ssh-foo AAAA", `unknown option or key type "ssh-foo"`},
		{`a@example.com verify-required="x" ` + testKey, `unsupported option "verify-required"`},
		{`a@example.com namespaces="git" ssh-foo AAAA`, `unknown key type "ssh-foo"`},
		{"a@example.com namespaces=git " + testKey, "option namespaces: the value must be in double quotes"},
		{`a@example.com namespaces="git ` + testKey, "missing end quote"},
		{`a@example.com namespaces="" ` + testKey, "option namespaces is empty"},
		{`a@example.com namespaces ` + testKey, `option namespaces needs a value: namespaces="..."`},
		{`a@example.com namespaces="git",namespaces="file" ` + testKey, "option namespaces given twice"},
		{`a@example.com namespaces="git"x ` + testKey, `option namespaces: unexpected "x" after the value`},
		{`a@example.com namespaces="git", ` + testKey, "unexpected end of options after ','"},
		{`a@example.com valid-after="2024" ` + testKey, `option valid-after: bad time "2024": want YYYYMMDD[HHMM[SS]][Z]`},
		{`a@example.com valid-before="20241301" ` + testKey, `option valid-before: bad time "20241301": want YYYYMMDD[HHMM[SS]][Z]`},
		{`a@example.com valid-before="2024-1-01" ` + testKey, `option valid-before: bad time "2024-1-01": want YYYYMMDD[HHMM[SS]][Z]`},
		{`a@example.com valid-after="20240101Z",valid-before="20240101Z" ` + testKey, "valid-before is not after valid-after"},
	}
	for _, tt := range tests {
		_, err := parseAllowedSigners("allowed_signers", []byte("# ok\n"+tt.line+"\n"), time.UTC)
		if want := "allowed_signers:2: " + tt.want; err == nil || err.Error() != want {
			t.Errorf("%s:\ngot  %v\nwant %s", tt.line, err, want)
		}
	}

	// Every bad line is reported.
	_, err := parseAllowedSigners("f", []byte("a@example.com\nb@example.com "+testKey+"\nc@example.com ssh-ed25519\n"), time.UTC)
	if want := "f:1: missing key\nf:3: missing key data after ssh-ed25519"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

func TestMatchPatternList(t *testing.T) {
	tests := []struct {
		s, list string
		want    bool
	}{
		{"a@example.com", "a@example.com", true},
		{"a@example.com", "A@example.com", false},
		{"a@example.com", "*", true},
		{"a@example.com", "*@example.com", true},
		{"a@example.com", "?@example.com", true},
		{"ab@example.com", "?@example.com", false},
		{"a@example.com", "b@example.com,*@example.*", true},
		{"a@example.com", "*@example.com,!a@*", false},
		{"b@example.com", "*@example.com,!a@*", true},
		{"a@example.com", "!a@example.com", false},
		{"a@example.com", "!b@example.com", false}, // a negation alone matches nothing
		{"a@example.com.evil", "*@example.com", false},
		{"*", "\\*", false},
		{"a*c", "a*c", true},
		{"abc", "a**c", true},
		{"", "", true},
		{"a", "", false},
		{"git", "git,file", true},
		{strings.Repeat("a", 200) + "b", strings.Repeat("*a", 40) + "*c", false},
	}
	for _, tt := range tests {
		if got := matchPatternList(tt.s, tt.list); got != tt.want {
			t.Errorf("matchPatternList(%q, %q) = %v, want %v", tt.s, tt.list, got, tt.want)
		}
	}
}

func TestParseSSHSignature(t *testing.T) {
	good := signature(t, mustRead(t, "testdata/verify/ssh.commit"))
	if _, err := parseSSHSignature(good); err != nil {
		t.Fatalf("good signature: %v", err)
	}
	tests := []struct {
		name, armored, want string
	}{
		{"other armor", strings.ReplaceAll(good, "SSH SIGNATURE", "PGP SIGNATURE"), "no SSH SIGNATURE armor"},
		{"junk before", "x\n" + good, "no SSH SIGNATURE armor"},
		{"data after", good + "more\n", "data after the signature"},
		{"two blocks", good + good, "data after the signature"},
		{"unterminated", strings.Split(good, "-----END")[0], "the armor does not decode"},
		{"headers", strings.Replace(good, "-----\n", "-----\nKey: value\n\n", 1), "unexpected armor headers"},
		{"not SSHSIG", "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n", "ssh: short read"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parseSSHSignature(tt.armored); err == nil || err.Error() != tt.want {
				t.Errorf("got %v, want %q", err, tt.want)
			}
		})
	}
}

func FuzzParseAllowedSigners(f *testing.F) {
	f.Add([]byte(mustRead(f, "testdata/verify/allowed_signers")))
	f.Add([]byte(`"a@example.com,*@b" namespaces="git",valid-after="20240101Z",valid-before="202501011200" ` + testKey + " c\n# x\n\n"))
	f.Add([]byte("a cert-authority " + testKey))
	f.Add([]byte(`a namespaces="\"",valid-before="20240101UTC" ssh-rsa AAAA`))
	f.Fuzz(func(t *testing.T, data []byte) {
		signers, err := parseAllowedSigners("f", data, time.UTC)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f:") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		for _, s := range signers {
			if s.principals == "" || s.key == nil || !strings.HasPrefix(s.where, "f:") {
				t.Fatalf("incomplete entry %+v", s)
			}
			if !s.validAfter.IsZero() && !s.validBefore.IsZero() && !s.validBefore.After(s.validAfter) {
				t.Fatalf("empty validity window %+v", s)
			}
		}
	})
}

func FuzzParseSSHSignature(f *testing.F) {
	good := signature(f, mustRead(f, "testdata/verify/ssh.commit"))
	f.Add(good)
	f.Add(good + "x")
	f.Add("-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAAAQ==\n-----END SSH SIGNATURE-----\n")
	f.Fuzz(func(t *testing.T, armored string) {
		sig, err := parseSSHSignature(armored)
		if err != nil {
			return
		}
		// What parses survives a round trip.
		again, err := parseSSHSignature(string(sshsig.Armor(sig)))
		if err != nil {
			t.Fatalf("re-armored signature does not parse: %v", err)
		}
		if !bytes.Equal(again.Marshal(), sig.Marshal()) {
			t.Fatal("round trip changed the signature")
		}
	})
}

// FuzzVerifyCommit feeds commit objects, as a remote could send them, to a
// Verifier trusting both test vectors' keys: no input may panic or verify
// without its signer being one of them.
func FuzzVerifyCommit(f *testing.F) {
	sshRaw, pgpRaw := mustRead(f, "testdata/verify/ssh.commit"), mustRead(f, "testdata/verify/openpgp.commit")
	f.Add([]byte(sshRaw))
	f.Add([]byte(pgpRaw))
	f.Add([]byte(strings.Replace(sshRaw, "signed with ssh", "signed with ssh!", 1)))
	f.Add([]byte("tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\ngpgsig -----BEGIN PGP SIGNATURE-----\n \n -----END PGP SIGNATURE-----\n\nm\n"))
	v, err := NewVerifier(VerifyOptions{SSHAllowedSigners: "testdata/verify/allowed_signers", OpenPGPKeyring: "testdata/verify/trusted.asc"})
	if err != nil {
		f.Fatal(err)
	}
	var signed [][]byte // what the test vectors' keys signed
	for _, raw := range []string{sshRaw, pgpRaw} {
		p, err := signedPayload(decodeCommit(f, raw))
		if err != nil {
			f.Fatal(err)
		}
		signed = append(signed, p)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		o := &plumbing.MemoryObject{}
		o.SetType(plumbing.CommitObject)
		_, _ = o.Write(raw)
		c := &object.Commit{}
		if c.Decode(o) != nil {
			return
		}
		s, err := v.VerifyCommit(c)
		if err != nil {
			if !errors.Is(err, ErrUnsigned) && !errors.Is(err, ErrBadSignature) {
				t.Fatalf("error wraps neither ErrUnsigned nor ErrBadSignature: %v", err)
			}
			return
		}
		p, err := signedPayload(c)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, signed[0]) && !bytes.Equal(p, signed[1]) {
			t.Fatalf("verified a commit its signer did not sign (%+v):\n%s", s, p)
		}
	})
}
