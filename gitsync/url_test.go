package gitsync

import "testing"

func TestCheckBranch(t *testing.T) {
	for branch, want := range map[string]string{
		"main":             "",
		"release/2024.1":   "",
		"feature/x-y_z":    "",
		"déploiement":      "",
		"v1.0@2":           "",
		"-main":            `starts with "-"`,
		"a..b":             `contains ".."`,
		"a b":              "contains a space",
		"a\tb":             "contains a control character",
		"a~1":              `contains '~'`,
		"a^":               `contains '^'`,
		"a:b":              `contains ':'`,
		"a?":               `contains '?'`,
		"a*":               `contains '*'`,
		"a[1]":             `contains '['`,
		`a\b`:              `contains '\\'`,
		"a@{1}":            `contains "@{"`,
		"@":                "reserved by git",
		"HEAD":             "reserved by git",
		"/main":            `has an empty component (a leading, trailing or double "/")`,
		"main/":            `has an empty component (a leading, trailing or double "/")`,
		"a//b":             `has an empty component (a leading, trailing or double "/")`,
		"main.":            `ends with "."`,
		".hidden":          `a component starts with "."`,
		"a/.b":             `a component starts with "."`,
		"main.lock":        `a component ends with ".lock"`,
		"a.lock/b":         `a component ends with ".lock"`,
		"refs/heads/main":  `write the branch name "main", not a full ref`,
		"refs/tags/v1.0.0": `write the branch name "refs/tags/v1.0.0", not a full ref`,
	} {
		if got := CheckBranch(branch); got != want {
			t.Errorf("CheckBranch(%q) = %q, want %q", branch, got, want)
		}
	}
}

// The URL rules quote no credentials, and name what to write instead.
func TestCheckURL(t *testing.T) {
	for raw, want := range map[string]string{
		"https://git.example.com/ops/fleet.git":   "",
		"ssh://git@git.example.com/ops/fleet.git": "",
		"file:///srv/git/fleet.git":               "",
		"file://localhost/srv/git/fleet.git":      "",
		"http://127.0.0.1:8080/fleet.git":         "",
		"":                                        "required",
		"git@git.example.com:ops/fleet.git":       "scp-style address; write it as ssh://git@git.example.com/ops/fleet.git",
		"/srv/git/fleet.git":                      "a path, not a URL; write it as file:///srv/git/fleet.git",
		"//tok:s3cret@git.example.com/fleet.git":  "a path, not a URL; write it as file:///path",
		"https://tok:s3cret@git.example.com/x":    "credentials in the URL are refused; put the token in a file named by repo.auth.tokenFile (and the user in repo.auth.tokenUser)",
		"https://git.example.com/x?token=s3cret":  "a query string is refused: it may hold a token; put the token in a file named by repo.auth.tokenFile",
		"http://git.example.com/fleet.git":        `http:// only to a loopback host, not "git.example.com"; use https://`,
		"file:///srv/git/../fleet.git":            `path "/srv/git/../fleet.git" is not clean; write "/srv/fleet.git"`,
		"https://git.example.com":                 "no repository path",
		"git://git.example.com/fleet.git":         `scheme "git" not supported; use https://, ssh:// or file://`,
	} {
		if _, why := CheckURL(raw); why != want {
			t.Errorf("CheckURL(%q) = %q, want %q", raw, why, want)
		}
	}
}
