package gitsync

import (
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/baton-fleet/baton/internal/quieturl"
)

// scpRE matches git's scp-like syntax, user@host:path, when it holds nothing secret.
var scpRE = regexp.MustCompile(`^(?:([A-Za-z0-9._-]+)@)?([A-Za-z0-9][A-Za-z0-9.-]*):([^:@]*)$`)

// CheckURL checks the URL of a fleet repository as baton reads it: https://host/path,
// ssh://[user@]host[:port]/path, file:///path, or http:// to a loopback host; no
// credentials in it, no query or fragment. It returns the scheme when it is one baton
// reads, even when the rest of the URL is wrong (so that the checks of the
// credentials can still run), and why the URL is refused, "" when it is not. Its
// reasons never quote the URL: it may hold a secret. This is the one copy of the
// rules: the agent's start-up (New) and `baton validate-config` both ask it.
func CheckURL(raw string) (scheme, why string) {
	if raw == "" {
		return "", "required"
	}
	scheme, userinfo, ok := quieturl.Split(raw)
	if !ok {
		return "", noScheme(raw)
	}
	switch scheme {
	case "https", "http", "ssh", "file":
	default:
		return "", fmt.Sprintf("scheme %q not supported; use https://, ssh:// or file://", scheme)
	}
	switch {
	case userinfo != "" && (scheme == "https" || scheme == "http"):
		return scheme, "credentials in the URL are refused; put the token in a file named by repo.auth.tokenFile (and the user in repo.auth.tokenUser)"
	case strings.Contains(userinfo, ":") && scheme == "ssh":
		return scheme, "a password in the URL is refused; use a key named by repo.auth.sshKeyFile"
	case userinfo != "" && scheme == "file":
		return scheme, "a file:// URL takes no user; write file:///path"
	}
	u, why := quieturl.Parse(raw)
	if u == nil {
		return scheme, why
	}
	switch {
	case u.RawQuery != "" || u.ForceQuery:
		return scheme, "a query string is refused: it may hold a token; put the token in a file named by repo.auth.tokenFile"
	case u.Fragment != "":
		return scheme, `a fragment ("#...") means nothing to git; set repo.branch`
	case scheme == "file":
		return scheme, filePath(u.Host, u.Path)
	case u.Hostname() == "":
		return scheme, "no host"
	case scheme == "http" && !quieturl.Loopback(u.Hostname()):
		return scheme, fmt.Sprintf("http:// only to a loopback host, not %q; use https://", u.Hostname())
	case u.Path == "" || u.Path == "/":
		return scheme, "no repository path"
	}
	return scheme, ""
}

// noScheme says why raw, with no scheme, is not a repository URL, and what to write.
func noScheme(raw string) string {
	switch g := scpRE.FindStringSubmatch(raw); {
	case g != nil:
		user := ""
		if g[1] != "" {
			user = g[1] + "@"
		}
		return fmt.Sprintf("scp-style address; write it as ssh://%s%s/%s", user, g[2], strings.TrimPrefix(g[3], "/"))
	case strings.HasPrefix(raw, "/") && !quieturl.HasControl(raw) && !strings.ContainsAny(raw, "@?#") && !strings.HasPrefix(raw, "//"):
		return fmt.Sprintf("a path, not a URL; write it as file://%s", raw)
	case strings.HasPrefix(raw, "/") && !quieturl.HasControl(raw):
		// It may hold what a URL's user info would: it is not repeated.
		return "a path, not a URL; write it as file:///path"
	}
	return "no scheme; use https://, ssh:// or file://"
}

// filePath says why a file:// URL of host and p is not a repository's, "" when it is.
func filePath(host, p string) string {
	switch {
	case host != "" && !strings.EqualFold(host, "localhost"):
		return fmt.Sprintf("a file:// URL names no host, not %q; write file:///path", host)
	case p == "" || p == "/":
		return "no repository path"
	case path.Clean(p) != p:
		return fmt.Sprintf("path %q is not clean; write %q", p, path.Clean(p))
	}
	return ""
}

// CheckBranch says why s is not a branch name baton follows (one `git check-ref-format
// --branch` accepts), "" when it is.
// It also refuses a full ref ("refs/heads/main"), which would name another branch.
func CheckBranch(s string) string {
	switch {
	case strings.HasPrefix(s, "refs/"):
		return fmt.Sprintf("write the branch name %q, not a full ref", strings.TrimPrefix(s, "refs/heads/"))
	case strings.HasPrefix(s, "-"):
		return `starts with "-"`
	case s == "HEAD" || s == "@":
		return "reserved by git"
	case strings.Contains(s, ".."):
		return `contains ".."`
	case strings.Contains(s, "@{"):
		return `contains "@{"`
	case strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/") || strings.Contains(s, "//"):
		return `has an empty component (a leading, trailing or double "/")`
	case strings.HasSuffix(s, "."):
		return `ends with "."`
	}
	for _, r := range s {
		switch {
		case r == ' ':
			return "contains a space"
		case r < ' ' || r == 0x7f:
			return "contains a control character"
		case strings.ContainsRune(`~^:?*[\`, r):
			return fmt.Sprintf("contains %q", r)
		}
	}
	for part := range strings.SplitSeq(s, "/") {
		if strings.HasPrefix(part, ".") {
			return `a component starts with "."`
		}
		if strings.HasSuffix(part, ".lock") {
			return `a component ends with ".lock"`
		}
	}
	return ""
}
