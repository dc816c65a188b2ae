package rollback

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-fleet/baton/internal/commitid"
)

func TestParseStateFile(t *testing.T) {
	type rec struct {
		A string `json:"a"`
		B int    `json:"b,omitempty"`
	}
	tests := []struct {
		name, in string
		want     rec
		ok       bool
	}{
		{"record", `{"a":"x","b":2}`, rec{A: "x", B: 2}, true},
		{"white space after", "{\"a\":\"x\"}\n\n", rec{A: "x"}, true},
		{"missing field: zero", `{}`, rec{}, true},
		{"unknown field: a newer baton's", `{"a":"x","c":1}`, rec{}, false},
		{"a second record", `{"a":"x"}{"a":"y"}`, rec{}, false},
		{"garbage after", `{"a":"x"} x`, rec{}, false},
		{"truncated", `{"a":"x`, rec{}, false},
		{"empty", ``, rec{}, false},
		{"wrong type", `{"a":1}`, rec{}, false},
	}
	for _, tt := range tests {
		var got rec
		err := parseStateFile([]byte(tt.in), &got)
		if (err == nil) != tt.ok || tt.ok && got != tt.want {
			t.Errorf("%s: parseStateFile(%q) = %+v, %v; want %+v, ok %v", tt.name, tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestLiftQuarantine(t *testing.T) {
	a := "3f2a1c9d8e7f" + strings.Repeat("0", 28)
	b := "3f2a1c9d8e70" + strings.Repeat("1", 28)
	c := "9b8e7d6c5b4a" + strings.Repeat("2", 28)
	tests := []struct {
		name, prefix, want string
		err                error
		left               int
	}{
		{"full id", a, a, nil, 2},
		{"unique prefix", "9b8e7d6", c, nil, 2},
		{"ambiguous", "3f2a1c9", "", commitid.ErrAmbiguous, 3},
		{"not quarantined", "0123456", "", ErrNotQuarantined, 3},
		{"too short", "9b8e7d", "", ErrNotQuarantined, 3},
	}
	for _, tt := range tests {
		s := &Store{Dir: t.TempDir()}
		for _, id := range []string{a, b, c} {
			if err := s.AddQuarantine(id, "failed"); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.LiftQuarantine(tt.prefix)
		if got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("%s: LiftQuarantine(%q) = %q, %v; want %q, %v", tt.name, tt.prefix, got, err, tt.want, tt.err)
		}
		if q, _ := s.Quarantine(); len(q) != tt.left {
			t.Errorf("%s: %d quarantined after, want %d", tt.name, len(q), tt.left)
		}
	}
}

func TestStateFilesRefuseDataAfterTheRecord(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	for _, name := range []string{LastGoodFile, TxnFile, QuarantineFile} {
		content := `{}`
		if name == QuarantineFile {
			content = `[]`
		}
		if err := os.WriteFile(filepath.Join(s.Dir, name), []byte(content+content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.LastGood(); err == nil || !strings.Contains(err.Error(), LastGoodFile) {
		t.Errorf("LastGood = %v, want an error naming %s", err, LastGoodFile)
	}
	if _, err := s.Load(); err == nil || !strings.Contains(err.Error(), TxnFile) {
		t.Errorf("Load = %v, want an error naming %s", err, TxnFile)
	}
	if _, err := s.Quarantine(); err == nil || !strings.Contains(err.Error(), QuarantineFile) {
		t.Errorf("Quarantine = %v, want an error naming %s", err, QuarantineFile)
	}
}

// FuzzParseStateFile feeds the three state files' records to the reader: it must not
// panic, and what it accepts must write out and read back to the same bytes.
func FuzzParseStateFile(f *testing.F) {
	for _, s := range []string{
		`{}`, `[]`, `null`,
		`{"revision":"` + strings.Repeat("a", 40) + `","services":{"api":{"version":"1","release":"1-ab","units":["api.service"]}},"files":{"api.service":"[Service]\n"},"history":[]}`,
		`{"id":"t1","state":"SWITCHING","target":{"revision":"b"},"history":[{"state":"PREPARED","at":"2026-11-25T12:00:00Z"}]}`,
		`[{"commit":"c1","reason":"check failed","time":"2026-11-25T12:00:00Z"}]`,
		`{"id":"t1","bogus":true}`, `{} {}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		roundTrip(t, data, func() any { return new(LastGood) })
		roundTrip(t, data, func() any { return new(Txn) })
		roundTrip(t, data, func() any { return new([]Quarantined) })
	})
}

func roundTrip(t *testing.T, data []byte, newRecord func() any) {
	v := newRecord()
	if parseStateFile(data, v) != nil {
		return
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("%T read from %q does not write out: %v", v, data, err)
	}
	again := newRecord()
	if err := parseStateFile(out, again); err != nil {
		t.Fatalf("%T written as %q does not read back: %v", v, out, err)
	}
	if out2, _ := json.Marshal(again); !bytes.Equal(out, out2) {
		t.Fatalf("%T read back as %q, written as %q", v, out2, out)
	}
}
