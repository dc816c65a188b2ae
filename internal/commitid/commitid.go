// Package commitid holds the one rule for git commit ids as people see and type them: the short form shown, and how a typed prefix names a commit.
package commitid

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ShortLen is how many digits a short commit id shows: git's shortest abbreviation.
const ShortLen = 7

// MinPrefix is the fewest digits a typed prefix may have, the length Short shows.
const MinPrefix = ShortLen

// Full ids are 40 (SHA-1) or 64 (SHA-256) hex digits.
const (
	sha1Len   = 40
	sha256Len = 64
)

// Short is id as people read it: its first ShortLen characters. An id shorter than that
// (a prefix an operator typed) is shown whole, and "" stays "": callers that show an
// absent commit say so in their own words, or with ShortOrNone.
func Short(id string) string {
	// Cut on characters, not bytes, so that text that is not an id stays valid UTF-8.
	n := 0
	for i := range id {
		if n == ShortLen {
			return id[:i]
		}
		n++
	}
	return id
}

// ShortOrNone is Short(id), or "none" when there is no id.
func ShortOrNone(id string) string {
	if id == "" {
		return "none"
	}
	return Short(id)
}

// IsFull reports whether s is a full commit id: 40 (SHA-1) or 64 (SHA-256) lower-case
// hex digits.
func IsFull(s string) bool {
	return (len(s) == sha1Len || len(s) == sha256Len) && !strings.ContainsFunc(s, notHex)
}

// CheckPrefix says why s (lower case) is neither a commit id nor a prefix of one that
// Match takes: MinPrefix to 64 hex digits.
func CheckPrefix(s string) error {
	if len(s) < MinPrefix || len(s) > sha256Len {
		return fmt.Errorf("commit must be %d to %d hex digits, got %d characters", MinPrefix, sha256Len, len(s))
	}
	if i := strings.IndexFunc(s, notHex); i >= 0 {
		return fmt.Errorf("commit must be hex digits, got %q at %d", s[i], i)
	}
	return nil
}

// ErrNoMatch and ErrAmbiguous are Match's failures.
var (
	ErrNoMatch   = errors.New("no such commit")
	ErrAmbiguous = errors.New("ambiguous commit prefix")
)

// Match returns the one id of ids that prefix names: an id equal to prefix, else the
// one id that begins with it. A prefix shorter than MinPrefix matches only an id equal
// to it. Repeats in ids count once. Several ids beginning with prefix is ErrAmbiguous,
// none is ErrNoMatch; the error names prefix and, when ambiguous, the candidates.
func Match(prefix string, ids []string) (string, error) {
	if prefix == "" {
		return "", fmt.Errorf("%w: no commit given", ErrNoMatch)
	}
	var found []string
	for _, id := range ids {
		switch {
		case id == prefix:
			return id, nil
		case len(prefix) >= MinPrefix && strings.HasPrefix(id, prefix) && !slices.Contains(found, id):
			found = append(found, id)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("%w: %s", ErrNoMatch, prefix)
	case 1:
		return found[0], nil
	}
	// Show the candidates as far as it takes to tell them apart.
	slices.Sort(found)
	n := len(prefix)
	for i := 1; i < len(found); i++ {
		a, b := found[i-1], found[i]
		common := 0
		for common < min(len(a), len(b)) && a[common] == b[common] {
			common++
		}
		n = max(n, common+1)
	}
	shown := make([]string, len(found))
	for i, id := range found {
		shown[i] = id[:min(len(id), n)]
	}
	return "", fmt.Errorf("%w: %s names %s; give more digits", ErrAmbiguous, prefix, strings.Join(shown, ", "))
}

// notHex reports whether r is not a lower-case hex digit.
func notHex(r rune) bool { return !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') }
