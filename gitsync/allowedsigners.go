package gitsync

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

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
