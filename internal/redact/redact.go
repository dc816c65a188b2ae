// Package redact holds the one policy by which a URL is shown in logs, errors and the local API: what of it may hold a secret is left out.
//
// The policy, for every URL baton shows:
//   - the user information (a user name, a password, a token put as either) is
//     dropped, whoever the user;
//   - each query value is replaced by "REDACTED", the names kept
//     (https://h/a.tgz?token=REDACTED), so that a reader still sees what was sent;
//   - the fragment is dropped;
//   - the scheme, host, port and path are kept, but for a URL whose path may itself be
//     the secret (a webhook's: many services put the token there), shown by URLHost.
//
// A URL that does not parse is shown as "(invalid URL)": nothing of it is known to be
// safe to show.
package redact

import (
	"net/url"
	"regexp"
	"strings"
)

// Invalid is what a URL that does not parse is shown as.
const Invalid = "(invalid URL)"

// hidden replaces each query value; a query that does not parse is replaced whole.
const hidden = "REDACTED"

// URL returns raw shown by the policy: raw itself when it holds nothing to leave out.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return Invalid
	}
	if u.User == nil && u.RawQuery == "" && u.Fragment == "" && u.RawFragment == "" {
		return raw
	}
	return ParsedURL(u)
}

// ParsedURL returns u shown by the policy; u is not changed.
func ParsedURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	r := *u
	r.User = nil
	r.Fragment, r.RawFragment = "", ""
	if r.RawQuery != "" {
		q, err := url.ParseQuery(r.RawQuery)
		if err != nil {
			r.RawQuery = hidden
		} else {
			for k := range q {
				q[k] = []string{hidden}
			}
			r.RawQuery = q.Encode()
		}
	}
	shown := r.String()
	// A path that starts with "//" under no host reads back as an authority, its "@"
	// as user information: what is shown must read back as what was meant.
	if back, err := url.Parse(shown); err != nil || back.User != nil || back.Host != r.Host {
		return Invalid
	}
	return shown
}

// URLHost returns raw reduced to its scheme, host and port, for a URL whose path may
// be a secret (a webhook's): a path, query or fragment is shown as "/…". A URL with no
// host has nothing to show and is Invalid.
func URLHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return Invalid
	}
	out := u.Scheme + "://" + u.Host
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" {
		out += "/…"
	}
	return out
}

// urlPattern finds URLs in free text: error messages quote the URLs they failed on.
var urlPattern = regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"'<>]+`)

// Text returns s with every URL in it shown by URL: the last line for free text that
// may quote a URL, such as the error of a library.
func Text(s string) string {
	return urlPattern.ReplaceAllStringFunc(s, textURL)
}

// textURL shows a URL found in free text. Punctuation after it that makes it
// unparsable is the text's, not the URL's ("ask http://prom:9090: connection
// refused": a port of "9090:" does not parse), and is kept after it.
func textURL(s string) string {
	if shown := URL(s); shown != Invalid {
		return shown
	}
	u := strings.TrimRight(s, ":,.;")
	return URL(u) + s[len(u):]
}
