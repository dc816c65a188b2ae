package quieturl

import (
	"strings"
	"testing"
)

func TestSplit(t *testing.T) {
	tests := []struct {
		raw, scheme, userinfo string
		ok                    bool
	}{
		{"https://git.example.com/a.git", "https", "", true},
		{"HTTPS://tok:en@git.example.com/a.git?x#y", "https", "tok:en", true},
		{"ssh://git@host:22/a.git", "ssh", "git", true},
		{"git@host:a.git", "", "", false},
		{"/srv/a.git", "", "", false},
		{"1http://x", "", "", false},
	}
	for _, tt := range tests {
		scheme, userinfo, ok := Split(tt.raw)
		if scheme != tt.scheme || userinfo != tt.userinfo || ok != tt.ok {
			t.Errorf("Split(%q) = %q %q %v, want %q %q %v", tt.raw, scheme, userinfo, ok, tt.scheme, tt.userinfo, tt.ok)
		}
	}
}

// Parse never quotes what it could not parse.
func TestParseIsQuiet(t *testing.T) {
	for _, raw := range []string{"https://user:s3cret@host:port/x", "https://s3cret@ho st/x", "https://host/%zz-s3cret", "https://host/\x7fs3cret"} {
		u, why := Parse(raw)
		if u != nil || why == "" || strings.Contains(why, "s3cret") {
			t.Errorf("Parse(%q) = %v, %q: want a reason without the URL", raw, u, why)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("https://user:s3cret@host/x")
	f.Fuzz(func(t *testing.T, raw string) {
		if _, why := Parse(raw); why != "" && len(raw) > 8 && strings.Contains(why, raw) {
			t.Fatalf("Parse quoted its input: %q", why)
		}
	})
}

func TestLoopback(t *testing.T) {
	for host, want := range map[string]bool{"localhost": true, "127.0.0.1": true, "::1": true, "127.8.9.1": true, "10.0.0.1": false, "example.com": false} {
		if Loopback(host) != want {
			t.Errorf("Loopback(%q) = %v", host, !want)
		}
	}
}
