package gitsync

import (
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNew(t *testing.T) {
	dir := t.TempDir()
	token := writeTemp(t, "token", "t0ken\n")
	key := writeTemp(t, "id_ed25519", "not parsed by New\n")
	known := writeTemp(t, "known_hosts", "")
	repoDir := filepath.Join(dir, "repo.git")
	tests := []struct {
		name    string
		opts    Options
		wantErr string // "" for success
	}{
		{"https anonymous", Options{URL: "https://git.example.com/ops/fleet.git"}, ""},
		{"https token", Options{URL: "https://git.example.com/ops/fleet.git", Auth: Auth{TokenFile: token}}, ""},
		{"ssh", Options{URL: "ssh://git@git.example.com:2222/ops/fleet.git", Auth: Auth{SSHKeyFile: key, KnownHostsFile: known}}, ""},
		{"ssh no user", Options{URL: "ssh://git.example.com/ops/fleet.git", Auth: Auth{SSHKeyFile: key, KnownHostsFile: known}}, ""},
		{"file", Options{URL: "file:///srv/git/fleet.git"}, ""},
		{"http loopback", Options{URL: "http://127.0.0.1:8080/fleet.git"}, ""},
		{"http localhost", Options{URL: "http://localhost/fleet.git"}, ""},
		{"http ipv6 loopback", Options{URL: "http://[::1]:80/fleet.git"}, ""},
		{"branch", Options{URL: "file:///srv/fleet.git", Branch: "release/v1"}, ""},

		{"empty url", Options{}, "repo url: required"},
		{"http remote", Options{URL: "http://git.example.com/fleet.git"}, "only to a loopback host"},
		{"scp-like", Options{URL: "git@git.example.com:ops/fleet.git"}, "write it as ssh://git@git.example.com/ops/fleet.git"},
		{"plain path", Options{URL: "/srv/git/fleet.git"}, "write it as file:///srv/git/fleet.git"},
		{"git protocol", Options{URL: "git://git.example.com/fleet.git"}, `scheme "git" not supported`},
		{"https credentials", Options{URL: "https://baton:hunter2@git.example.com/fleet.git"}, "credentials in the URL"},
		{"https user", Options{URL: "https://ghp_abcdefgh@git.example.com/fleet.git"}, "credentials in the URL"},
		{"ssh password", Options{URL: "ssh://git:hunter2@git.example.com/fleet.git", Auth: Auth{SSHKeyFile: key, KnownHostsFile: known}}, "password"},
		{"ssh no known_hosts", Options{URL: "ssh://git@git.example.com/fleet.git", Auth: Auth{SSHKeyFile: key}}, "knownHostsFile is required"},
		{"ssh no key", Options{URL: "ssh://git@git.example.com/fleet.git", Auth: Auth{KnownHostsFile: known}}, "sshKeyFile is required"},
		{"ssh missing known_hosts file", Options{URL: "ssh://git@git.example.com/fleet.git", Auth: Auth{SSHKeyFile: key, KnownHostsFile: filepath.Join(dir, "nope")}}, "no such file"},
		{"ssh with token", Options{URL: "ssh://git@git.example.com/fleet.git", Auth: Auth{SSHKeyFile: key, KnownHostsFile: known, TokenFile: token}}, "tokenFile is for https"},
		{"https with ssh key", Options{URL: "https://git.example.com/fleet.git", Auth: Auth{SSHKeyFile: key}}, "for ssh URLs"},
		{"https missing token file", Options{URL: "https://git.example.com/fleet.git", Auth: Auth{TokenFile: filepath.Join(dir, "nope")}}, "no such file"},
		{"token file is a directory", Options{URL: "https://git.example.com/fleet.git", Auth: Auth{TokenFile: dir}}, "not a regular file"},
		{"file with auth", Options{URL: "file:///srv/fleet.git", Auth: Auth{TokenFile: token}}, "take no credentials"},
		{"file with host", Options{URL: "file://server/srv/fleet.git"}, "write file:///path"},
		{"no path", Options{URL: "https://git.example.com"}, "no repository path"},
		{"query", Options{URL: "https://git.example.com/fleet.git?x=1"}, "query"},
		{"bad branch", Options{URL: "file:///srv/fleet.git", Branch: "a..b"}, "not a valid branch name"},
		{"option branch", Options{URL: "file:///srv/fleet.git", Branch: "-x"}, "not a valid branch name"},
		{"backoff", Options{URL: "file:///srv/fleet.git", MinBackoff: time.Minute, MaxBackoff: time.Second}, "backoff"},
		{"negative timeout", Options{URL: "file:///srv/fleet.git", PollTimeout: -time.Second}, "negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			if opts.Dir == "" {
				opts.Dir = repoDir
			}
			s, err := New(opts, nil)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if s.opts.Branch == "" || s.opts.MinBackoff == 0 || s.opts.MaxBackoff == 0 || s.opts.Auth.TokenUser == "" {
					t.Fatalf("defaults not applied: %+v", s.opts)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New error = %v, want one containing %q", err, tc.wantErr)
			}
			for _, secret := range []string{"hunter2", "ghp_abcdefgh"} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error repeats a credential: %v", err)
				}
			}
		})
	}
	if _, err := New(Options{URL: "file:///srv/fleet.git"}, nil); err == nil {
		t.Error("New accepted an empty Dir")
	}
}

// FuzzNew checks that New never panics on a URL and that its errors never
// repeat the user name or password of one.
func FuzzNew(f *testing.F) {
	for _, seed := range []string{
		"https://git.example.com/ops/fleet.git",
		"https://baton:s3cretpassword@git.example.com/fleet.git",
		"https://ghp_0123456789abcdef@git.example.com/fleet.git",
		"ssh://git:s3cretpassword@host:22/fleet.git",
		"ssh://git@host/fleet.git",
		"file:///srv/fleet.git",
		"http://127.0.0.1:1/x",
		"http://user:passw0rdpassw0rd@[::1/x",
		"https://us%zzer:passw0rdpassw0rd@host/x",
		"git@host:fleet.git",
		"",
	} {
		f.Add(seed)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, raw string) {
		_, err := New(Options{URL: raw, Dir: dir}, nil)
		if err == nil {
			return
		}
		msg := err.Error()
		for _, secret := range userinfoOf(raw) {
			if len(secret) >= 8 && strings.Contains(msg, secret) && !strings.Contains(withoutUserinfo(raw), secret) {
				t.Fatalf("error for %q repeats %q: %s", raw, secret, msg)
			}
		}
	})
}

// userinfoOf returns what may be a credential in raw: the parsed user
// name and password, or for a URL that does not parse, the text between
// "//" and the last "@" and its parts.
func userinfoOf(raw string) []string {
	if u, err := url.Parse(raw); err == nil {
		pw, _ := u.User.Password()
		return []string{u.User.Username(), pw, u.RawQuery, u.Fragment}
	}
	_, rest, ok := strings.Cut(raw, "//")
	if !ok {
		return nil
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return nil
	}
	info := rest[:at]
	user, pw, _ := strings.Cut(info, ":")
	return []string{info, user, pw}
}

func withoutUserinfo(raw string) string {
	_, rest, ok := strings.Cut(raw, "//")
	if !ok {
		return raw
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		return raw[:len(raw)-len(rest)] + rest[at+1:]
	}
	return raw
}
