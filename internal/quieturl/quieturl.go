// Package quieturl reads URLs that may hold a secret (a token in the user info or the
// query) without ever quoting them: url.Parse's errors repeat the whole URL.
package quieturl

import (
	"net"
	"net/url"
	"regexp"
	"strings"
)

// schemeRE is what a URL scheme may be (RFC 3986).
var schemeRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*$`)

// Split reports the scheme (lower case) and user info of raw, and whether raw has the
// form scheme://..., without url.Parse: the user info is looked at before anything
// could quote it.
func Split(raw string) (scheme, userinfo string, ok bool) {
	scheme, rest, found := strings.Cut(raw, "://")
	if !found || !schemeRE.MatchString(scheme) {
		return "", "", false
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		userinfo = rest[:i]
	}
	return strings.ToLower(scheme), userinfo, true
}

// Parse parses raw, returning why it is not a URL without quoting any of it.
func Parse(raw string) (*url.URL, string) {
	u, err := url.Parse(raw)
	if err == nil {
		return u, ""
	}
	msg := err.Error()
	for _, c := range [][2]string{
		{"invalid port", "invalid port"},
		{"invalid character", "invalid character in the host"},
		{"invalid URL escape", `invalid "%" escape`},
		{"invalid control character", "a control character"},
	} {
		if strings.Contains(msg, c[0]) {
			return nil, "not a valid URL: " + c[1]
		}
	}
	return nil, "not a valid URL"
}

// HasControl reports whether s holds a control character.
func HasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f })
}

// Loopback reports whether host (a name or an address, no port) is this machine's
// loopback: localhost, 127.0.0.0/8 or ::1.
func Loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
