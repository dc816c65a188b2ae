package gitsync

import (
	"bytes"
	"encoding/base64"
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
// (repo.verify in agent.yaml). Verification is on when either file is set.
type VerifyOptions struct {
	// OpenPGPKeyring is an armored file of trusted public keys, as written by
	// gpg --export --armor; several armored blocks may follow one another.
	// Any key in it may sign any commit.
	OpenPGPKeyring string
	// SSHAllowedSigners is an allowed_signers file (ssh-keygen(1), ALLOWED
	// SIGNERS): "principals [options] keytype base64-key [comment]" per line.
	// A key signs only commits whose committer email matches its principals.
	SSHAllowedSigners string
	// Now is the clock against which key validity (valid-after,
	// valid-before, OpenPGP expiry and revocation) is judged; time.Now when nil.
	Now func() time.Time
}

// Enabled reports whether any trusted keys are configured.
func (o VerifyOptions) Enabled() bool {
	return o.OpenPGPKeyring != "" || o.SSHAllowedSigners != ""
}

var (
	// ErrUnsigned is wrapped in the error for a commit with no signature.
	ErrUnsigned = errors.New("commit is not signed")
	// ErrBadSignature is wrapped in the error for a commit whose signature
	// is malformed, made by a key that is not trusted (for this committer,
	// namespace or date), or does not match the commit. The error says which
	// key (fingerprint) and principal, and why.
	ErrBadSignature = errors.New("bad commit signature")
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
}

// NewVerifier reads the trusted keys named by o. A bad entry is refused
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
	v.mu.Lock()
	v.openpgp, v.ssh = ring, signers
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
// it) and now (so that a retired key cannot sign a backdated commit).
// Errors wrap ErrUnsigned or ErrBadSignature.
func (v *Verifier) VerifyCommit(c *object.Commit) (Signer, error) {
	sig := c.PGPSignature
	if sig == "" {
		return Signer{}, ErrUnsigned
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	switch {
	case strings.HasPrefix(sig, sshSignatureBegin):
		if v.opts.SSHAllowedSigners == "" {
			return Signer{}, fmt.Errorf("%w: the commit has an SSH signature and no SSH allowed signers are configured", ErrBadSignature)
		}
		return verifySSH(c, v.ssh, v.now())
	case strings.HasPrefix(sig, openpgpSignatureBegin):
		if v.opts.OpenPGPKeyring == "" {
			return Signer{}, fmt.Errorf("%w: the commit has an OpenPGP signature and no OpenPGP keyring is configured", ErrBadSignature)
		}
		return verifyOpenPGP(c, v.openpgp, v.now())
	default:
		return Signer{}, fmt.Errorf("%w: unsupported signature format (want OpenPGP or SSH)", ErrBadSignature)
	}
}

// signedPayload is what a commit signature is made over: the commit object
// as stored, without its gpgsig header.
func signedPayload(c *object.Commit) ([]byte, error) {
	o := &plumbing.MemoryObject{}
	if err := c.EncodeWithoutSignature(o); err != nil {
		return nil, fmt.Errorf("encode commit %s: %w", short(c.Hash.String()), err)
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
	return verifyCommit(repo.Storer, s.opts.Verify, h)
}

// verifyCommit reads the keys of o and checks the signature of commit h of st.
func verifyCommit(st storer.EncodedObjectStorer, o VerifyOptions, h plumbing.Hash) (Signer, error) {
	v, err := NewVerifier(o)
	if err != nil {
		return Signer{}, fmt.Errorf("verify %s: %w", short(h.String()), err)
	}
	c, err := loadCommit(st, h)
	if err != nil {
		return Signer{}, fmt.Errorf("verify %s: %w", short(h.String()), err)
	}
	signer, err := v.VerifyCommit(c)
	if err != nil {
		return Signer{}, fmt.Errorf("verify %s: %w", short(h.String()), err)
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
		return hash, Signer{}, fmt.Errorf("verify HEAD %s of %s: %w", short(hash), dir, err)
	}
	return hash, signer, nil
}

// --- OpenPGP

// verifyOpenPGP checks an armored OpenPGP signature with go-crypto, as
// go-git's Commit.Verify does, but against a keyring parsed once and with
// the Verifier's clock.
func verifyOpenPGP(c *object.Commit, ring openpgp.EntityList, now time.Time) (Signer, error) {
	body, issuer, err := parseOpenPGPSignature(c.PGPSignature)
	if err != nil {
		return Signer{}, fmt.Errorf("%w: malformed OpenPGP signature: %v", ErrBadSignature, err)
	}
	payload, err := signedPayload(c)
	if err != nil {
		return Signer{}, err
	}
	cfg := &packet.Config{Time: func() time.Time { return now }}
	entity, err := openpgp.CheckDetachedSignature(ring, bytes.NewReader(payload), bytes.NewReader(body), cfg)
	switch {
	case errors.Is(err, pgperrors.ErrUnknownIssuer):
		return Signer{}, fmt.Errorf("%w: OpenPGP key %s is not in the trusted keyring", ErrBadSignature, issuer)
	case errors.Is(err, pgperrors.ErrKeyExpired):
		return Signer{}, fmt.Errorf("%w: OpenPGP key %s has expired", ErrBadSignature, issuer)
	case errors.Is(err, pgperrors.ErrKeyRevoked):
		return Signer{}, fmt.Errorf("%w: OpenPGP key %s is revoked", ErrBadSignature, issuer)
	case errors.Is(err, pgperrors.ErrSignatureExpired):
		return Signer{}, fmt.Errorf("%w: OpenPGP signature by key %s has expired", ErrBadSignature, issuer)
	case err != nil:
		return Signer{}, fmt.Errorf("%w: OpenPGP signature by key %s does not verify (the commit was changed after signing, or the signature is corrupt): %v", ErrBadSignature, issuer, err)
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
	sig, err := parseSSHSignature(c.PGPSignature)
	if err != nil {
		return Signer{}, fmt.Errorf("%w: malformed SSH signature: %v", ErrBadSignature, err)
	}
	fp := ssh.FingerprintSHA256(sig.PublicKey)
	if sig.Namespace != sshNamespace {
		return Signer{}, fmt.Errorf("%w: SSH signature by key %s is for namespace %q, not %q", ErrBadSignature, fp, sig.Namespace, sshNamespace)
	}
	principal := c.Committer.Email
	if principal == "" {
		return Signer{}, fmt.Errorf("%w: SSH signature by key %s: the commit has no committer email to match a principal", ErrBadSignature, fp)
	}
	keyBytes := sig.PublicKey.Marshal()
	listed := false
	reason := ""
	var match *allowedSigner
	for i := range signers {
		e := &signers[i]
		if !bytes.Equal(e.key.Marshal(), keyBytes) {
			continue
		}
		listed = true
		if !matchPatternList(principal, e.principals) {
			continue
		}
		if r := e.refuses(sshNamespace, c.Committer.When, now); r != "" {
			if reason == "" {
				reason = fmt.Sprintf("SSH key %s (%s) %s", fp, e.where, r)
			}
			continue
		}
		match = e
		break
	}
	switch {
	case !listed:
		return Signer{}, fmt.Errorf("%w: SSH key %s is not in the allowed signers", ErrBadSignature, fp)
	case match == nil && reason == "":
		return Signer{}, fmt.Errorf("%w: SSH key %s is not allowed to sign for committer %s", ErrBadSignature, fp, principal)
	case match == nil:
		return Signer{}, fmt.Errorf("%w: %s", ErrBadSignature, reason)
	}
	payload, err := signedPayload(c)
	if err != nil {
		return Signer{}, err
	}
	if err := sshsig.Verify(bytes.NewReader(payload), sig, match.key, sig.HashAlgorithm, sshNamespace); err != nil {
		return Signer{}, fmt.Errorf("%w: SSH signature by key %s (%s) does not verify: the commit was changed after signing, or the signature is corrupt", ErrBadSignature, fp, principal)
	}
	return Signer{Kind: KindSSH, Identity: principal, Fingerprint: fp}, nil
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

// allowedSigner is one entry of an allowed_signers file.
type allowedSigner struct {
	where       string // file:line, for messages
	principals  string // pattern-list matched against the committer email
	namespaces  string // pattern-list; "" allows every namespace
	validAfter  time.Time
	validBefore time.Time // zero: no bound
	key         ssh.PublicKey
}

// refuses says why e does not allow a signature in namespace for a commit
// dated at, checked at now; "" when it allows it.
func (e *allowedSigner) refuses(namespace string, at, now time.Time) string {
	const layout = time.RFC3339
	switch {
	case e.namespaces != "" && !matchPatternList(namespace, e.namespaces):
		return fmt.Sprintf("is not allowed for namespace %q", namespace)
	case !e.validAfter.IsZero() && at.Before(e.validAfter):
		return fmt.Sprintf("is valid only from %s, and the commit is dated %s", e.validAfter.UTC().Format(layout), at.UTC().Format(layout))
	case !e.validAfter.IsZero() && now.Before(e.validAfter):
		return fmt.Sprintf("is valid only from %s", e.validAfter.UTC().Format(layout))
	case !e.validBefore.IsZero() && !at.Before(e.validBefore):
		return fmt.Sprintf("expired at %s, before the commit's date %s", e.validBefore.UTC().Format(layout), at.UTC().Format(layout))
	case !e.validBefore.IsZero() && !now.Before(e.validBefore):
		return fmt.Sprintf("expired at %s", e.validBefore.UTC().Format(layout))
	}
	return ""
}

// parseAllowedSigners parses an allowed_signers file (ssh-keygen(1), ALLOWED
// SIGNERS) as OpenSSH does: blank lines and # comments skipped; options
// namespaces, valid-after and valid-before (quoted values); time stamps
// without Z or UTC are in loc. cert-authority is refused: certificates are
// not supported. Every bad line is reported, as name:line: message.
func parseAllowedSigners(name string, data []byte, loc *time.Location) ([]allowedSigner, error) {
	var signers []allowedSigner
	var errs []error
	for i, line := range strings.Split(string(data), "\n") {
		where := fmt.Sprintf("%s:%d", name, i+1)
		e, err := parseAllowedSigner(line, loc)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %v", where, err))
		case e != nil:
			e.where = where
			signers = append(signers, *e)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(signers) == 0 {
		return nil, fmt.Errorf("%s: no allowed signers in the file", name)
	}
	return signers, nil
}

// parseAllowedSigner parses one line; nil for a blank line or a comment.
func parseAllowedSigner(line string, loc *time.Location) (*allowedSigner, error) {
	rest := strings.Trim(line, " \t\r")
	if rest == "" || rest[0] == '#' {
		return nil, nil
	}
	principals, rest, err := nextField(rest)
	if err != nil {
		return nil, err
	}
	if q, ok := strings.CutPrefix(principals, `"`); ok {
		principals, ok = strings.CutSuffix(q, `"`)
		if !ok || strings.Contains(principals, `"`) {
			return nil, errors.New("bad quoting in principals")
		}
	}
	if principals == "" {
		return nil, errors.New("empty principals")
	}
	e := &allowedSigner{principals: principals}
	field, rest, err := nextField(rest)
	if err != nil {
		return nil, err
	}
	if field != "" && !isKeyType(field) {
		if err := e.parseOptions(field, loc); err != nil {
			return nil, err
		}
		if field, rest, err = nextField(rest); err != nil {
			return nil, err
		}
	}
	if field == "" {
		return nil, errors.New("missing key")
	}
	if !isKeyType(field) {
		return nil, fmt.Errorf("unknown key type %q", field)
	}
	if field == "ssh-dss" {
		return nil, errors.New("ssh-dss (DSA) keys are not supported")
	}
	if strings.Contains(field, "-cert-") {
		return nil, fmt.Errorf("key type %s: certificates are not supported, list the signing keys", field)
	}
	b64, _, err := nextField(rest) // what follows is a comment
	if err != nil {
		return nil, err
	}
	if b64 == "" {
		return nil, fmt.Errorf("missing key data after %s", field)
	}
	blob, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("%s key data is not base64", field)
	}
	if e.key, err = ssh.ParsePublicKey(blob); err != nil {
		return nil, fmt.Errorf("bad %s key: %v", field, err)
	}
	if t := e.key.Type(); t != field {
		return nil, fmt.Errorf("key data is a %s key, not %s", t, field)
	}
	return e, nil
}

// nextField splits off the first field of s, up to a space or tab outside
// double quotes, and returns the rest with its leading white space trimmed.
func nextField(s string) (field, rest string, err error) {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			quoted = !quoted
		case c == '\\' && quoted && i+1 < len(s) && s[i+1] == '"':
			i++
		case (c == ' ' || c == '\t') && !quoted:
			return s[:i], strings.TrimLeft(s[i:], " \t"), nil
		}
	}
	if quoted {
		return "", "", errors.New("missing end quote")
	}
	return s, "", nil
}

// parseOptions parses the comma-separated options of an entry.
func (e *allowedSigner) parseOptions(opts string, loc *time.Location) error {
	seen := map[string]bool{}
	for {
		i := strings.IndexAny(opts, "=,")
		name := opts
		if i >= 0 {
			name = opts[:i]
		}
		key := strings.ToLower(name)
		switch key {
		case "cert-authority":
			return errors.New("cert-authority is not supported: list the signing keys themselves")
		case "namespaces", "valid-after", "valid-before":
		default:
			if i < 0 || opts[i] != '=' {
				return fmt.Errorf("unknown option or key type %q", name)
			}
			return fmt.Errorf("unsupported option %q", name)
		}
		if seen[key] {
			return fmt.Errorf("option %s given twice", key)
		}
		seen[key] = true
		if i < 0 || opts[i] != '=' {
			return fmt.Errorf("option %s needs a value: %s=\"...\"", key, key)
		}
		value, after, err := dequote(opts[i+1:])
		if err != nil {
			return fmt.Errorf("option %s: %v", key, err)
		}
		switch key {
		case "namespaces":
			if value == "" {
				return errors.New("option namespaces is empty")
			}
			e.namespaces = value
		case "valid-after":
			if e.validAfter, err = parseSSHTime(value, loc); err != nil {
				return fmt.Errorf("option valid-after: %v", err)
			}
		case "valid-before":
			if e.validBefore, err = parseSSHTime(value, loc); err != nil {
				return fmt.Errorf("option valid-before: %v", err)
			}
		}
		if after == "" {
			break
		}
		if after[0] != ',' {
			return fmt.Errorf("option %s: unexpected %q after the value", key, after)
		}
		if opts = after[1:]; opts == "" {
			return errors.New("unexpected end of options after ','")
		}
	}
	if !e.validAfter.IsZero() && !e.validBefore.IsZero() && !e.validBefore.After(e.validAfter) {
		return errors.New("valid-before is not after valid-after")
	}
	return nil
}

// dequote reads a double-quoted value at the start of s, in which \" stands
// for a quote, and returns it and what follows the closing quote.
func dequote(s string) (value, rest string, err error) {
	if !strings.HasPrefix(s, `"`) {
		return "", "", errors.New("the value must be in double quotes")
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s) && s[i+1] == '"':
			b.WriteByte('"')
			i++
		case s[i] == '"':
			return b.String(), s[i+1:], nil
		default:
			b.WriteByte(s[i])
		}
	}
	return "", "", errors.New("missing end quote")
}

// parseSSHTime parses an allowed_signers time stamp: YYYYMMDD,
// YYYYMMDDHHMM or YYYYMMDDHHMMSS, in UTC when followed by Z or UTC and in
// loc otherwise.
func parseSSHTime(s string, loc *time.Location) (time.Time, error) {
	digits := s
	if d, ok := strings.CutSuffix(s, "Z"); ok {
		digits, loc = d, time.UTC
	} else if len(s) > 3 && strings.EqualFold(s[len(s)-3:], "UTC") {
		digits, loc = s[:len(s)-3], time.UTC
	} else if d, ok := strings.CutSuffix(s, "z"); ok {
		digits, loc = d, time.UTC
	}
	layout := ""
	switch len(digits) {
	case 8:
		layout = "20060102"
	case 12:
		layout = "200601021504"
	case 14:
		layout = "20060102150405"
	}
	if layout == "" || strings.Trim(digits, "0123456789") != "" {
		return time.Time{}, fmt.Errorf("bad time %q: want YYYYMMDD[HHMM[SS]][Z]", s)
	}
	t, err := time.ParseInLocation(layout, digits, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad time %q: want YYYYMMDD[HHMM[SS]][Z]", s)
	}
	return t, nil
}

// isKeyType reports whether s names an SSH public key type (certificate
// types included, for a clear refusal).
func isKeyType(s string) bool {
	switch s {
	case ssh.KeyAlgoRSA, "ssh-dss", ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
		ssh.KeyAlgoED25519, ssh.KeyAlgoSKECDSA256, ssh.KeyAlgoSKED25519,
		ssh.CertAlgoRSAv01, "ssh-dss-cert-v01@openssh.com", ssh.CertAlgoECDSA256v01, ssh.CertAlgoECDSA384v01,
		ssh.CertAlgoECDSA521v01, ssh.CertAlgoED25519v01, ssh.CertAlgoSKECDSA256v01, ssh.CertAlgoSKED25519v01:
		return true
	}
	return false
}

// matchPatternList reports whether s matches the comma-separated pattern
// list (ssh_config(5), PATTERNS): some pattern matches it and no negated
// one (!pattern) does. Patterns use * and ?; matching is case-sensitive.
func matchPatternList(s, list string) bool {
	matched := false
	for _, p := range strings.Split(list, ",") {
		p, negated := strings.CutPrefix(p, "!")
		if matchPattern(s, p) {
			if negated {
				return false
			}
			matched = true
		}
	}
	return matched
}

// matchPattern matches s against a glob of * (any bytes) and ? (one byte),
// in time O(len(s)*len(p)) at worst.
func matchPattern(s, p string) bool {
	si, pi := 0, 0
	star, mark := -1, 0 // last * seen in p, and where in s it started matching
	for si < len(s) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(p) && (p[pi] == '?' || p[pi] == s[si]):
			si++
			pi++
		case star >= 0:
			mark++
			si, pi = mark, star+1
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
