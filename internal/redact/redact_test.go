package redact

import (
	"net/url"
	"testing"
)

// TestPolicy is the policy, one row for each of its rules and for the URLs baton shows.
func TestPolicy(t *testing.T) {
	tests := []struct{ name, in, url, host string }{
		{"nothing to hide", "https://git.example.com/ops/fleet.git", "https://git.example.com/ops/fleet.git", "https://git.example.com/…"},
		{"root path", "https://hooks.example.com/", "https://hooks.example.com/", "https://hooks.example.com"},
		{"no path", "https://hooks.example.com", "https://hooks.example.com", "https://hooks.example.com"},
		{"file URL", "file:///srv/fleet.git", "file:///srv/fleet.git", Invalid},
		{"user and password dropped", "https://user:pass@host/x.git", "https://host/x.git", "https://host/…"},
		{"a token as the user dropped", "https://ghp_abc@github.com/x", "https://github.com/x", "https://github.com/…"},
		{"ssh user dropped, git too", "ssh://git@host:22/x.git", "ssh://host:22/x.git", "ssh://host:22/…"},
		{"query values hidden, names kept", "https://h/a.tgz?token=abc&v=1", "https://h/a.tgz?token=REDACTED&v=REDACTED", "https://h/…"},
		{"query without a path", "https://hooks.example.com?token=abc", "https://hooks.example.com?token=REDACTED", "https://hooks.example.com/…"},
		{"query that does not parse", "https://h/a?x=%zz", "https://h/a?REDACTED", "https://h/…"},
		{"fragment dropped", "https://host/x.git?token=abc#frag", "https://host/x.git?token=REDACTED", "https://host/…"},
		{"all at once", "https://user:pass@hooks.example.com:8443/x?token=abc", "https://hooks.example.com:8443/x?token=REDACTED", "https://hooks.example.com:8443/…"},
		{"webhook token in the path", "https://hooks.slack.com/services/T0/B0/XXXX", "https://hooks.slack.com/services/T0/B0/XXXX", "https://hooks.slack.com/…"},
		{"IPv6 host", "http://[::1]:9000/a#frag", "http://[::1]:9000/a", "http://[::1]:9000/…"},
		{"bad escape", "https://user:pw@host/%zz", Invalid, Invalid},
		{"bad host", "http://[::1", Invalid, Invalid},
		{"not a URL", "not a url", "not a url", Invalid},
		{"empty", "", "", Invalid},
	}
	for _, tt := range tests {
		if got := URL(tt.in); got != tt.url {
			t.Errorf("%s: URL(%q) = %q, want %q", tt.name, tt.in, got, tt.url)
		}
		if got := URLHost(tt.in); got != tt.host {
			t.Errorf("%s: URLHost(%q) = %q, want %q", tt.name, tt.in, got, tt.host)
		}
		if u, err := url.Parse(tt.in); err == nil && tt.url != Invalid {
			if got := ParsedURL(u); got != tt.url && got != u.String() {
				t.Errorf("%s: ParsedURL(%q) = %q, want %q", tt.name, tt.in, got, tt.url)
			}
		}
	}
}

func TestText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"no url here", "no url here"},
		{"fetch https://git.example.com/ops/fleet.git: 404", "fetch https://git.example.com/ops/fleet.git: 404"},
		{"ssh://git@git.example.com/ops/fleet.git", "ssh://git.example.com/ops/fleet.git"},
		{"https://oauth2:tok@git.example.com/x.git failed", "https://git.example.com/x.git failed"},
		{"git:pw via ssh://git:pw@h/x", "git:pw via ssh://h/x"},
		{`"https://h/a?token=abc&x=1"`, `"https://h/a?token=REDACTED&x=REDACTED"`},
		{"two: http://a:b@h1/ and http://h2/?k=v", "two: http://h1/ and http://h2/?k=REDACTED"},
		{"bad: https://u:pw@h/%zz end", "bad: " + Invalid + " end"},
		{"prometheus unreachable: http://prom:9090: connection refused", "prometheus unreachable: http://prom:9090: connection refused"},
		{"ask https://u:pw@prom:9090, then", "ask https://prom:9090, then"},
		{"bad: https://u:pw@h/%zz: end", "bad: " + Invalid + ": end"},
	}
	for _, tt := range tests {
		if got := Text(tt.in); got != tt.want {
			t.Errorf("Text(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzURL: whatever URL shows parses back without user information or fragment, its
// query values all hidden.
func FuzzURL(f *testing.F) {
	for _, s := range []string{"https://u:p@h/a?t=1#f", "ssh://git@h:22/x", "http://[::1", "https://h/a?x=%zz", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		shown := URL(raw)
		v, err := url.Parse(shown)
		if shown == Invalid || err != nil {
			return
		}
		if v.User != nil || v.Fragment != "" {
			t.Fatalf("%q shown as %q keeps user information or a fragment", raw, shown)
		}
		if v.RawQuery == hidden {
			return
		}
		q, _ := url.ParseQuery(v.RawQuery)
		for k, vals := range q {
			for _, val := range vals {
				if val != hidden {
					t.Fatalf("%q shown as %q keeps the value of %s", raw, shown, k)
				}
			}
		}
	})
}

// FuzzText: whatever free text shows holds no URL with user information or a query
// value, the punctuation kept after a URL included.
func FuzzText(f *testing.F) {
	for _, s := range []string{"ask http://u:p@prom:9090: refused", "see https://h/a?t=1, then", "x https://u:p@h/%zz: y", "http://h:1:2:3,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		shown := Text(s)
		for _, m := range urlPattern.FindAllString(shown, -1) {
			u, err := url.Parse(m)
			if err != nil {
				continue
			}
			if u.User != nil {
				t.Fatalf("%q shown as %q keeps user information", s, shown)
			}
			if q, err := url.ParseQuery(u.RawQuery); err == nil && u.RawQuery != hidden {
				for k, vals := range q {
					for _, v := range vals {
						if v != hidden {
							t.Fatalf("%q shown as %q keeps the value of %s", s, shown, k)
						}
					}
				}
			}
		}
	})
}
