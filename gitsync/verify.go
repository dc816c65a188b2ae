package gitsync

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"

	"github.com/baton-fleet/baton/internal/commitid"
)

// Kinds of signature, the values of Signer.Kind.
const (
	KindOpenPGP = "openpgp"
	KindSSH     = "ssh"
)

// sshNamespace is the SSHSIG namespace git signs commits in (ssh-keygen -Y sign -n git).
const sshNamespace = "git"

// Armor lines that open the signature of a commit (its gpgsig header).
const (
	sshSignatureBegin     = "-----BEGIN SSH SIGNATURE-----"
	openpgpSignatureBegin = "-----BEGIN PGP SIGNATURE-----"
)

// VerifyOptions name the keys that commit signatures are checked against
// (repo.verify in agent.yaml). Verification is on when any file is set.
type VerifyOptions struct {
	// OpenPGPKeyring is an armored file of trusted public keys, as written by
	// gpg --export --armor; several armored blocks may follow one another.
	// Any key in it may sign any commit.
	OpenPGPKeyring string
	// SSHAllowedSigners is an allowed_signers file (ssh-keygen(1), ALLOWED
	// SIGNERS): "principals [options] keytype base64-key [comment]" per line.
	// A key signs only commits whose committer email matches its principals.
	SSHAllowedSigners string
	// Release, when set, narrows which of the keys above may sign a commit
	// that is applied: see ReleaseSigners.
	Release ReleaseSigners
	// Branch is the branch whose heads are verified, named when a key is not
	// a release signer; Syncer.Verify fills it in from Options.Branch.
	Branch string
	// Now is the clock against which key validity (valid-after,
	// valid-before, OpenPGP expiry and revocation) is judged; time.Now when nil.
	Now func() time.Time
}

// Enabled reports whether any keys are configured. Release signers alone
// count, so that no caller takes them for "no verification": NewVerifier
// refuses them without the trusted keys they must be among.
func (o VerifyOptions) Enabled() bool {
	return o.OpenPGPKeyring != "" || o.SSHAllowedSigners != "" || o.Release.Enabled()
}

var (
	// ErrUnsigned is wrapped in the error for a commit with no signature.
	ErrUnsigned = errors.New("commit is not signed")
	// ErrBadSignature is wrapped in the error for a commit whose signature
	// is malformed, made by a key that is not trusted (for this committer,
	// namespace or date), or does not match the commit. The error says which
	// key (fingerprint) and principal, and why.
	ErrBadSignature = errors.New("bad commit signature")
	// ErrNotReleaseSigner is wrapped in the error for a commit whose
	// signature verifies against the trusted keys but whose key is not a
	// release signer (VerifyOptions.Release): signed, but not released.
	ErrNotReleaseSigner = errors.New("not a release signer")
	// ErrNotConfigured is returned by NewVerifier, VerifyDir and
	// Syncer.Verify when VerifyOptions name no keys: callers that do not
	// require signatures check for it with errors.Is; those that forget
	// refuse every commit rather than accept unverified ones.
	ErrNotConfigured = errors.New("no trusted keys configured for commit signatures")
)

// Signer says who signed a verified commit.
type Signer struct {
	Kind string // KindOpenPGP or KindSSH
	// Identity is, for SSH, the principal that matched: the committer's
	// email; for OpenPGP, the primary user id of the key ("Name <email>").
	Identity string
	// Fingerprint of the key: SHA256:<base64> for SSH, upper-case hex of the
	// primary key for OpenPGP.
	Fingerprint string
}

func (s Signer) String() string {
	if s.Kind == "" {
		return "(unsigned)"
	}
	return fmt.Sprintf("%s key %s (%s)", s.Kind, s.Fingerprint, s.Identity)
}

// Verifier checks commit signatures against trusted keys, read from the
// files of its VerifyOptions by NewVerifier and again by each Reload. Its
// methods are safe for concurrent use.
type Verifier struct {
	opts VerifyOptions

	mu      sync.Mutex // guards the keys and their use: go-crypto's entities are not documented as safe to share
	openpgp openpgp.EntityList
	ssh     []allowedSigner
	release releaseKeys // of ReleaseSigners; zero when not set
}

// NewVerifier reads the trusted keys named by o, and its release keys. A bad entry is refused
// with file:line: message (every bad line of an allowed_signers file is
// listed); no keys at all is ErrNotConfigured.
func NewVerifier(o VerifyOptions) (*Verifier, error) {
	v := &Verifier{opts: o}
	if err := v.Reload(); err != nil {
		return nil, err
	}
	return v, nil
}

// Reload reads the key files again. On error the keys loaded before stay
// in use.
func (v *Verifier) Reload() error {
	o := v.opts
	if !o.Enabled() {
		return ErrNotConfigured
	}
	if err := o.Release.check(o); err != nil {
		return err
	}
	var ring openpgp.EntityList
	var signers []allowedSigner
	if o.OpenPGPKeyring != "" {
		data, err := os.ReadFile(o.OpenPGPKeyring)
		if err != nil {
			return fmt.Errorf("read trusted keys: %w", err)
		}
		if ring, err = parseOpenPGPKeyring(o.OpenPGPKeyring, data); err != nil {
			return err
		}
	}
	if o.SSHAllowedSigners != "" {
		data, err := os.ReadFile(o.SSHAllowedSigners)
		if err != nil {
			return fmt.Errorf("read trusted keys: %w", err)
		}
		if signers, err = parseAllowedSigners(o.SSHAllowedSigners, data, time.Local); err != nil {
			return err
		}
	}
	release, err := o.Release.load()
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.openpgp, v.ssh, v.release = ring, signers, release
	v.mu.Unlock()
	return nil
}

func (v *Verifier) now() time.Time {
	if v.opts.Now != nil {
		return v.opts.Now()
	}
	return time.Now()
}

// VerifyCommit checks the signature of c (its gpgsig header) over the
// commit object without that header. An OpenPGP signature must verify
// against a key of the keyring that is neither expired nor revoked now. An
// SSH signature (SSHSIG, namespace "git") must be made by a key of
// allowed_signers listed for a principal matching the committer's email,
// for namespace git, and valid both at the committer date (as git checks
// it) and now (so that a retired key cannot sign a backdated commit). With
// VerifyOptions.Release the key must besides be a release signer, by the
// same rules against the release keys. Errors wrap ErrUnsigned,
// ErrBadSignature or ErrNotReleaseSigner.
func (v *Verifier) VerifyCommit(c *object.Commit) (Signer, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	signer, err := v.verifyTrusted(c)
	if err != nil || !v.opts.Release.Enabled() {
		return signer, err
	}
	if err := v.checkRelease(c, signer); err != nil {
		return Signer{}, err
	}
	return signer, nil
}

// verifyTrusted checks the signature of c against the trusted keys. v.mu is held.
func (v *Verifier) verifyTrusted(c *object.Commit) (Signer, error) {
	sig := c.PGPSignature
	if sig == "" {
		return Signer{}, ErrUnsigned
	}
	switch {
	case strings.HasPrefix(sig, sshSignatureBegin):
		if v.opts.SSHAllowedSigners == "" {
			return Signer{}, badSig("the commit has an SSH signature and no SSH allowed signers are configured")
		}
		return verifySSH(c, v.ssh, v.now())
	case strings.HasPrefix(sig, openpgpSignatureBegin):
		if v.opts.OpenPGPKeyring == "" {
			return Signer{}, badSig("the commit has an OpenPGP signature and no OpenPGP keyring is configured")
		}
		return verifyOpenPGP(c, v.openpgp, "the trusted keyring", v.now())
	default:
		return Signer{}, badSig("unsupported signature format (want OpenPGP or SSH)")
	}
}

// signedPayload is what a commit signature is made over: the commit object
// as stored, without its gpgsig header.
func signedPayload(c *object.Commit) ([]byte, error) {
	o := &plumbing.MemoryObject{}
	if err := c.EncodeWithoutSignature(o); err != nil {
		return nil, fmt.Errorf("encode commit %s: %w", commitid.ShortOrNone(c.Hash.String()), err)
	}
	r, err := o.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// Verify checks the signature of commit, which must have been fetched,
// against the keys of Options.Verify. The key files are read at each call
// (and by Poll, once per new head): an edited file takes effect at the
// next commit, and a file that does not parse is an error (wrapping
// neither ErrUnsigned nor ErrBadSignature) that refuses the commit all the
// same. With no keys configured it returns ErrNotConfigured: a caller that
// does not require signatures checks VerifyOptions.Enabled or errors.Is
// first.
func (s *Syncer) Verify(commit string) (Signer, error) {
	h, err := parseHash(commit)
	if err != nil {
		return Signer{}, fmt.Errorf("verify: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	repo, err := s.openRepo()
	if err != nil {
		return Signer{}, err
	}
	o := s.opts.Verify
	if o.Branch == "" {
		o.Branch = s.opts.Branch
	}
	return verifyCommit(repo.Storer, o, h)
}

// verifyCommit reads the keys of o and checks the signature of commit h of st.
func verifyCommit(st storer.EncodedObjectStorer, o VerifyOptions, h plumbing.Hash) (Signer, error) {
	v, err := NewVerifier(o)
	if err != nil {
		return Signer{}, fmt.Errorf("verify %s: %w", commitid.ShortOrNone(h.String()), err)
	}
	c, err := loadCommit(st, h)
	if err != nil {
		return Signer{}, fmt.Errorf("verify %s: %w", commitid.ShortOrNone(h.String()), err)
	}
	signer, err := v.VerifyCommit(c)
	if err != nil {
		return Signer{}, fmt.Errorf("verify %s: %w", commitid.ShortOrNone(h.String()), err)
	}
	return signer, nil
}

// VerifyDir opens the git repository holding dir (dir or a parent of it)
// and verifies the signature of its HEAD commit against the keys of o. It
// returns the hash of HEAD, also when the signature is refused.
func VerifyDir(dir string, o VerifyOptions) (string, Signer, error) {
	v, err := NewVerifier(o)
	if err != nil {
		return "", Signer{}, err
	}
	repo, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{DetectDotGit: true})
	if err != nil {
		return "", Signer{}, fmt.Errorf("open the git repository of %s: %w", dir, err)
	}
	ref, err := repo.Head()
	if err != nil {
		return "", Signer{}, fmt.Errorf("read HEAD of %s: %w", dir, err)
	}
	hash := ref.Hash().String()
	c, err := repo.CommitObject(ref.Hash())
	if err != nil {
		return hash, Signer{}, fmt.Errorf("read HEAD of %s: %w", dir, err)
	}
	signer, err := v.VerifyCommit(c)
	if err != nil {
		return hash, Signer{}, fmt.Errorf("verify HEAD %s of %s: %w", commitid.ShortOrNone(hash), dir, err)
	}
	return hash, signer, nil
}

// --- OpenPGP

// verifyOpenPGP checks an armored OpenPGP signature with go-crypto, as
// go-git's Commit.Verify does, but against a keyring parsed once and with
// the Verifier's clock. set names ring in errors.
func verifyOpenPGP(c *object.Commit, ring openpgp.EntityList, set string, now time.Time) (Signer, error) {
	body, issuer, err := parseOpenPGPSignature(c.PGPSignature)
	if err != nil {
		return Signer{}, badSig("malformed OpenPGP signature: %v", err)
	}
	payload, err := signedPayload(c)
	if err != nil {
		return Signer{}, err
	}
	cfg := &packet.Config{Time: func() time.Time { return now }}
	entity, err := openpgp.CheckDetachedSignature(ring, bytes.NewReader(payload), bytes.NewReader(body), cfg)
	switch {
	case errors.Is(err, pgperrors.ErrUnknownIssuer):
		return Signer{}, &badSignature{reason: fmt.Sprintf("OpenPGP key %s is not in %s", issuer, set), unlisted: true}
	case errors.Is(err, pgperrors.ErrKeyExpired):
		return Signer{}, badSig("OpenPGP key %s has expired", issuer)
	case errors.Is(err, pgperrors.ErrKeyRevoked):
		return Signer{}, badSig("OpenPGP key %s is revoked", issuer)
	case errors.Is(err, pgperrors.ErrSignatureExpired):
		return Signer{}, badSig("OpenPGP signature by key %s has expired", issuer)
	case err != nil:
		return Signer{}, badSig("OpenPGP signature by key %s does not verify (the commit was changed after signing, or the signature is corrupt): %v", issuer, err)
	}
	s := Signer{Kind: KindOpenPGP, Fingerprint: fmt.Sprintf("%X", entity.PrimaryKey.Fingerprint)}
	if id := entity.PrimaryIdentity(); id != nil {
		s.Identity = id.Name
	}
	return s, nil
}

// parseOpenPGPSignature decodes an armored signature holding exactly one
// signature packet and returns the packet's bytes and its issuer, for
// messages: the fingerprint when the packet names it, else the key id.
func parseOpenPGPSignature(armored string) (body []byte, issuer string, err error) {
	block, err := armor.Decode(strings.NewReader(armored))
	if err != nil {
		return nil, "", err
	}
	if block.Type != openpgp.SignatureType {
		return nil, "", fmt.Errorf("armor type %q, want %q", block.Type, openpgp.SignatureType)
	}
	if body, err = io.ReadAll(block.Body); err != nil {
		return nil, "", err
	}
	packets := packet.NewReader(bytes.NewReader(body))
	p, err := packets.Next()
	if err != nil {
		return nil, "", err
	}
	sig, ok := p.(*packet.Signature)
	if !ok {
		return nil, "", fmt.Errorf("a %T packet, want a signature", p)
	}
	if _, err := packets.Next(); err != io.EOF {
		return nil, "", errors.New("more than one packet (a commit carries exactly one signature)")
	}
	switch {
	case len(sig.IssuerFingerprint) > 0:
		issuer = fmt.Sprintf("%X", sig.IssuerFingerprint)
	case sig.IssuerKeyId != nil:
		issuer = fmt.Sprintf("%016X", *sig.IssuerKeyId)
	default:
		return nil, "", errors.New("the signature names no issuer key")
	}
	return body, issuer, nil
}

// parseOpenPGPKeyring reads every armored public key block of an armored
// keyring file (gpg --export --armor output, possibly several files
// concatenated). Errors are name:line: message, line being where the
// offending block begins.
func parseOpenPGPKeyring(name string, data []byte) (openpgp.EntityList, error) {
	const begin = "-----BEGIN PGP "
	lines := strings.SplitAfter(string(data), "\n")
	var starts []int // indexes into lines
	for i, l := range lines {
		if strings.HasPrefix(l, begin) {
			starts = append(starts, i)
		}
	}
	if len(starts) == 0 {
		return nil, fmt.Errorf("%s: no armored OpenPGP public key (export one with gpg --export --armor)", name)
	}
	var ring openpgp.EntityList
	for n, start := range starts {
		end := len(lines)
		if n+1 < len(starts) {
			end = starts[n+1]
		}
		if head := strings.TrimRight(lines[start], " \t\r\n"); head != "-----BEGIN "+openpgp.PublicKeyType+"-----" {
			return nil, fmt.Errorf("%s:%d: %s: want a public key block (export it with gpg --export --armor)", name, start+1, head)
		}
		list, err := openpgp.ReadArmoredKeyRing(strings.NewReader(strings.Join(lines[start:end], "")))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, start+1, err)
		}
		ring = append(ring, list...)
	}
	return ring, nil
}

// --- SSH

// verifySSH checks an armored SSHSIG signature against allowed signers.
func verifySSH(c *object.Commit, signers []allowedSigner, now time.Time) (Signer, error) {
	sig, err := commitSSHSignature(c)
	if err != nil {
		return Signer{}, err
	}
	principal := c.Committer.Email
	match, err := findSSHSigner(signers, "the allowed signers", sig.PublicKey, principal, c.Committer.When, now)
	if err != nil {
		return Signer{}, err
	}
	payload, err := signedPayload(c)
	if err != nil {
		return Signer{}, err
	}
	fp := ssh.FingerprintSHA256(sig.PublicKey)
	if err := sshsig.Verify(bytes.NewReader(payload), sig, match.key, sig.HashAlgorithm, sshNamespace); err != nil {
		return Signer{}, badSig("SSH signature by key %s (%s) does not verify: the commit was changed after signing, or the signature is corrupt", fp, principal)
	}
	return Signer{Kind: KindSSH, Identity: principal, Fingerprint: fp}, nil
}

// commitSSHSignature parses the SSH signature of c and checks what does not
// depend on the allowed signers: its namespace, and that the commit has a
// committer email to match principals against.
func commitSSHSignature(c *object.Commit) (*sshsig.Signature, error) {
	sig, err := parseSSHSignature(c.PGPSignature)
	if err != nil {
		return nil, badSig("malformed SSH signature: %v", err)
	}
	fp := ssh.FingerprintSHA256(sig.PublicKey)
	if sig.Namespace != sshNamespace {
		return nil, badSig("SSH signature by key %s is for namespace %q, not %q", fp, sig.Namespace, sshNamespace)
	}
	if c.Committer.Email == "" {
		return nil, badSig("SSH signature by key %s: the commit has no committer email to match a principal", fp)
	}
	return sig, nil
}

// findSSHSigner returns the first entry of signers (named set in errors)
// that allows key to sign for principal in namespace git, for a commit
// dated at, checked at now. Its error is a *badSignature, unlisted when no
// entry has the key; otherwise it says why the first entry with the key
// and a matching principal refused it.
func findSSHSigner(signers []allowedSigner, set string, key ssh.PublicKey, principal string, at, now time.Time) (*allowedSigner, error) {
	fp := ssh.FingerprintSHA256(key)
	keyBytes := key.Marshal()
	listed := false
	reason := ""
	for i := range signers {
		e := &signers[i]
		if !bytes.Equal(e.key.Marshal(), keyBytes) {
			continue
		}
		listed = true
		if !matchPatternList(principal, e.principals) {
			continue
		}
		if r := e.refuses(sshNamespace, at, now); r != "" {
			if reason == "" {
				reason = fmt.Sprintf("SSH key %s (%s) %s", fp, e.where, r)
			}
			continue
		}
		return e, nil
	}
	switch {
	case !listed:
		return nil, &badSignature{reason: fmt.Sprintf("SSH key %s is not in %s", fp, set), unlisted: true}
	case reason == "":
		return nil, badSig("SSH key %s is not allowed to sign for committer %s", fp, principal)
	}
	return nil, badSig("%s", reason)
}

// parseSSHSignature decodes an armored SSHSIG blob (PROTOCOL.sshsig) as git
// stores it in a gpgsig header: one "SSH SIGNATURE" armor block, nothing
// before or after it but white space. Signatures by certificates are
// refused: allowed_signers entries here are plain keys.
func parseSSHSignature(armored string) (*sshsig.Signature, error) {
	if !strings.HasPrefix(armored, sshSignatureBegin) {
		return nil, errors.New("no SSH SIGNATURE armor")
	}
	block, rest := pem.Decode([]byte(armored))
	if block == nil {
		return nil, errors.New("the armor does not decode")
	}
	if block.Type != sshsig.PEMType || len(block.Headers) > 0 {
		return nil, errors.New("unexpected armor headers")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("data after the signature")
	}
	sig, err := sshsig.ParseSignature(block.Bytes)
	if err != nil {
		return nil, err
	}
	if _, ok := sig.PublicKey.(*ssh.Certificate); ok {
		return nil, errors.New("signed with an SSH certificate, which is not supported")
	}
	return sig, nil
}
