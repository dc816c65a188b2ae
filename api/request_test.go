package api

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
)

func TestParseRetry(t *testing.T) {
	tests := []struct {
		body string
		want string
		err  string
	}{
		{`{"commit":"abcdef0"}`, "abcdef0", ""},
		{`{"commit":"ABCDEF0123"}`, "abcdef0123", ""},
		{" \n{\"commit\": \"1a2b3c4d5e6f708192a3b4c5d6e7f80910a1b2c3\"}\n", "1a2b3c4d5e6f708192a3b4c5d6e7f80910a1b2c3", ""},
		{`{"commit":"` + strings.Repeat("f", 64) + `"}`, strings.Repeat("f", 64), ""},
		{`{"commit":"` + strings.Repeat("f", 65) + `"}`, "", "7 to 64 hex digits"},
		{`{"commit":"abcdef"}`, "", "7 to 64 hex digits"},
		{`{"commit":""}`, "", "7 to 64 hex digits"},
		{`{"commit":null}`, "", "commit is required"},
		{`{}`, "", "commit is required"},
		{``, "", "empty request body"},
		{`   `, "", "empty request body"},
		{`null`, "", "not a JSON object"},
		{`"abcdef0"`, "", "not a JSON object"},
		{`{"commit":"abcdef0"`, "", "unexpected EOF"},
		{`{"commit":"abcdef0"}x`, "", "data after the JSON object"},
		{`{"commit":"abcdef0"}{"commit":"abcdef0"}`, "", "data after the JSON object"},
		{`{"commit":"abcdef0","x":1}`, "", `unknown field "x"`},
		{`{"Commit":"abcdef0"}`, "abcdef0", ""}, // encoding/json matches field names without case
		{`{"commit":"abcdef0","commit":"1234567"}`, "1234567", ""},
		{`{"commit":"abc def0"}`, "", "hex digits"},
		{`{"commit":"abcdef0\u0000"}`, "", "hex digits"},
		{`{"commit":"../../etc"}`, "", "hex digits"},
		{`{"commit":["abcdef0"]}`, "", "cannot unmarshal array"},
		{"{\"commit\":\"\xff\xfe\xfd\xfc\xfb\xfa\xf9\"}", "", "hex digits"},
		{`{"commit":"` + strings.Repeat("a", 5000) + `"}`, "", "over 4096 bytes"},
	}
	for _, tt := range tests {
		got, err := parseRetry([]byte(tt.body))
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("parseRetry(%.50q): %v", tt.body, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("parseRetry(%.50q) = %q, %v; want an error with %q", tt.body, got, err, tt.err)
		case err != nil && !errors.Is(err, ErrInvalid):
			t.Errorf("parseRetry(%.50q): %v does not wrap ErrInvalid", tt.body, err)
		case got != tt.want:
			t.Errorf("parseRetry(%.50q) = %q, want %q", tt.body, got, tt.want)
		}
	}
}

func TestParseRollback(t *testing.T) {
	tests := []struct {
		body string
		want string
		err  string
	}{
		{``, "", ""},
		{" \n", "", ""},
		{`{}`, "", ""},
		{`{"to":""}`, "", ""},
		{`{"to":"ABCDEF0"}`, "abcdef0", ""},
		{`{"to":"` + strings.Repeat("0", 40) + `"}`, strings.Repeat("0", 40), ""},
		{`{"to":"abc"}`, "", "7 to 64 hex digits"},
		{`{"to":"../../etc/x"}`, "", "hex digits"},
		{`{"to":7}`, "", "cannot unmarshal number"},
		{`{"to":"abcdef0","force":true}`, "", `unknown field "force"`},
		{`{"to":"abcdef0"} {}`, "", "data after the JSON object"},
		{`null`, "", "not a JSON object"},
		{`{`, "", "unexpected EOF"},
	}
	for _, tt := range tests {
		got, err := parseRollback([]byte(tt.body))
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("parseRollback(%.50q): %v", tt.body, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("parseRollback(%.50q) = %q, %v; want an error with %q", tt.body, got, err, tt.err)
		case err != nil && !errors.Is(err, ErrInvalid):
			t.Errorf("parseRollback(%.50q): %v does not wrap ErrInvalid", tt.body, err)
		case err == nil && got != tt.want:
			t.Errorf("parseRollback(%.50q) = %q, want %q", tt.body, got, tt.want)
		}
	}
}

func FuzzParseRollback(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"to":"abcdef0"}`, `{"to":""}`, `{"to":"x"}`, `null`, `{"to":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		to, err := parseRollback(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if to != "" && !hexCommit.MatchString(to) {
			t.Fatalf("accepted commit %q", to)
		}
		again, _ := json.Marshal(RollbackRequest{To: to})
		if got, err := parseRollback(again); err != nil || got != to {
			t.Fatalf("round trip of %q: %q, %v", to, got, err)
		}
	})
}

func TestParseEmpty(t *testing.T) {
	for body, ok := range map[string]bool{
		"": true, " \r\n\t": true, "{}": true, " { } ": true,
		"{\"a\":1}": false, "null": false, "[]": false, "{}{}": false, "{": false, "x": false,
	} {
		if err := parseEmpty([]byte(body)); (err == nil) != ok {
			t.Errorf("parseEmpty(%q): %v", body, err)
		}
	}
}

var hexCommit = regexp.MustCompile(`^[0-9a-f]{7,64}$`)

func FuzzParseRetry(f *testing.F) {
	for _, s := range []string{`{"commit":"abcdef0"}`, `{"commit":"ABCDEF0"}`, `{}`, ``, `null`, `{"commit":"x"}`, `{"commit":"abcdef0"} {}`, `{"commit":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		commit, err := parseRetry(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			if commit != "" {
				t.Fatalf("error %v with commit %q", err, commit)
			}
			return
		}
		if !hexCommit.MatchString(commit) {
			t.Fatalf("accepted commit %q", commit)
		}
		// What the client sends for it parses back to itself.
		again, _ := json.Marshal(RetryRequest{Commit: commit})
		if got, err := parseRetry(again); err != nil || got != commit {
			t.Fatalf("round trip of %q: %q, %v", commit, got, err)
		}
	})
}

func FuzzParseEmpty(f *testing.F) {
	for _, s := range []string{``, `{}`, ` {} `, `{"a":1}`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := parseEmpty(data); err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("error %v does not wrap ErrInvalid", err)
		}
	})
}
