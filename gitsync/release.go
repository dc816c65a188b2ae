package gitsync

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// ReleaseSigners name the release keys (repo.verify.release in agent.yaml):
// of the trusted keys, those whose signature on a commit gets it applied.
//
// A signature vouches for a commit, not for the branch it is on. Without
// release signers, whoever can push may fast-forward the branch to any
// commit a trusted key signed that descends from the anchor: a signed
// commit of a feature branch, say. With them, such a head is refused as
// an unsigned one is, and only a commit signed by a release key (a signed
// merge onto the branch, typically) is applied. Each file has the format of
// its counterpart in VerifyOptions and is read by the same rules; a key
// must be in both: removing it from the trusted keys retires it as a
// release key too.
type ReleaseSigners struct {
	// OpenPGPKeyring is an armored keyring of the OpenPGP release keys.
	OpenPGPKeyring string
	// SSHAllowedSigners is an allowed_signers file of the SSH release
	// keys, whose principals, namespaces and validity apply as in
	// VerifyOptions.SSHAllowedSigners.
	SSHAllowedSigners string
}

// Enabled reports whether release signers are configured.
func (r ReleaseSigners) Enabled() bool {
	return r.OpenPGPKeyring != "" || r.SSHAllowedSigners != ""
}

// check refuses release keys of a kind o has no trusted keys of: no commit
// signed so could ever verify.
func (r ReleaseSigners) check(o VerifyOptions) error {
	var errs []error
	if r.SSHAllowedSigners != "" && o.SSHAllowedSigners == "" {
		errs = append(errs, fmt.Errorf("SSH release signers %s are set without SSH allowed signers: a release key must also be a trusted key", r.SSHAllowedSigners))
	}
	if r.OpenPGPKeyring != "" && o.OpenPGPKeyring == "" {
		errs = append(errs, fmt.Errorf("the OpenPGP release keyring %s is set without an OpenPGP keyring: a release key must also be a trusted key", r.OpenPGPKeyring))
	}
	return errors.Join(errs...)
}

// releaseKeys are the keys ReleaseSigners name, once read.
type releaseKeys struct {
	openpgp openpgp.EntityList
	ssh     []allowedSigner
}

// load reads the files of r as NewVerifier reads the trusted keys.
func (r ReleaseSigners) load() (releaseKeys, error) {
	var k releaseKeys
	if r.OpenPGPKeyring != "" {
		data, err := os.ReadFile(r.OpenPGPKeyring)
		if err != nil {
			return k, fmt.Errorf("read release keys: %w", err)
		}
		if k.openpgp, err = parseOpenPGPKeyring(r.OpenPGPKeyring, data); err != nil {
			return k, err
		}
	}
	if r.SSHAllowedSigners != "" {
		data, err := os.ReadFile(r.SSHAllowedSigners)
		if err != nil {
			return k, fmt.Errorf("read release keys: %w", err)
		}
		if k.ssh, err = parseAllowedSigners(r.SSHAllowedSigners, data, time.Local); err != nil {
			return k, err
		}
	}
	return k, nil
}

// checkRelease checks that c, whose signature verified against the trusted
// keys as signer's, is signed by a release key: listed in the release file
// of its kind, for the committer (SSH), and valid at the commit's date and
// now. v.mu is held.
func (v *Verifier) checkRelease(c *object.Commit, signer Signer) error {
	refuse := func(reason string) error {
		return &releaseError{signer: signer, branch: v.opts.Branch, reason: reason}
	}
	var err error
	switch signer.Kind {
	case KindSSH:
		if v.opts.Release.SSHAllowedSigners == "" {
			return refuse("no SSH release signers are configured")
		}
		sig, perr := commitSSHSignature(c)
		if perr != nil {
			return perr // verified already: not reached
		}
		_, err = findSSHSigner(v.release.ssh, "the release signers", sig.PublicKey, c.Committer.Email, c.Committer.When, v.now())
	case KindOpenPGP:
		if v.opts.Release.OpenPGPKeyring == "" {
			return refuse("no OpenPGP release keyring is configured")
		}
		var got Signer
		got, err = verifyOpenPGP(c, v.release.openpgp, "the release keyring", v.now())
		if err == nil && got.Fingerprint != signer.Fingerprint {
			return refuse("") // another key of the same key id: not the one that signed
		}
	default:
		return refuse("unknown kind of signature")
	}
	var bad *badSignature
	switch {
	case err == nil:
		return nil
	case errors.As(err, &bad) && bad.unlisted:
		return refuse("")
	case errors.As(err, &bad):
		return refuse(bad.reason)
	}
	return err
}

// releaseError refuses a commit signed by a trusted key that is not a
// release signer.
type releaseError struct {
	signer Signer
	branch string // "" when not known
	reason string // why the release keys refuse the key; "" when they do not list it
}

func (e *releaseError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "signed by %s, which is not a release signer", e.signer)
	if e.branch != "" {
		fmt.Fprintf(&b, " for branch %s", e.branch)
	}
	if e.reason != "" {
		b.WriteString(": " + e.reason)
	}
	return b.String()
}

func (e *releaseError) Is(target error) bool { return target == ErrNotReleaseSigner }

// badSignature is the error for a signature that does not verify against a
// set of keys: it wraps ErrBadSignature.
type badSignature struct {
	reason   string
	unlisted bool // the set does not have the key at all
}

func badSig(format string, args ...any) error {
	return &badSignature{reason: fmt.Sprintf(format, args...)}
}

func (e *badSignature) Error() string { return ErrBadSignature.Error() + ": " + e.reason }
func (e *badSignature) Unwrap() error { return ErrBadSignature }
