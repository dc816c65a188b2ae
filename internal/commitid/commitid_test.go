package commitid

import (
	"errors"
	"strings"
	"testing"
)

func TestShort(t *testing.T) {
	tests := []struct{ in, want, orNone string }{
		{"", "", "none"},
		{"3f2a", "3f2a", "3f2a"},
		{"3f2a1c9", "3f2a1c9", "3f2a1c9"},
		{"3f2a1c9d", "3f2a1c9", "3f2a1c9"},
		{strings.Repeat("ab", 20), "abababa", "abababa"},
		{strings.Repeat("c", 64), "ccccccc", "ccccccc"},
		{"héllo wörld", "héllo w", "héllo w"}, // not an id: cut on characters
	}
	for _, tt := range tests {
		if got := Short(tt.in); got != tt.want {
			t.Errorf("Short(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if got := ShortOrNone(tt.in); got != tt.orNone {
			t.Errorf("ShortOrNone(%q) = %q, want %q", tt.in, got, tt.orNone)
		}
	}
}

func TestIsFullAndCheckPrefix(t *testing.T) {
	tests := []struct {
		in           string
		full, prefix bool
	}{
		{"", false, false},
		{"3f2a1c", false, false},
		{"3f2a1c9", false, true},
		{strings.Repeat("a", 39), false, true},
		{strings.Repeat("a", 40), true, true},
		{strings.Repeat("a", 64), true, true},
		{strings.Repeat("a", 65), false, false},
		{"3F2A1C9", false, false}, // callers lower-case what people type
		{"3f2a1cg", false, false},
		{"../../x", false, false},
		{strings.Repeat("é", 10), false, false},
	}
	for _, tt := range tests {
		if got := IsFull(tt.in); got != tt.full {
			t.Errorf("IsFull(%q) = %v, want %v", tt.in, got, tt.full)
		}
		if err := CheckPrefix(tt.in); (err == nil) != tt.prefix {
			t.Errorf("CheckPrefix(%q) = %v, want ok %v", tt.in, err, tt.prefix)
		}
	}
}

func TestMatch(t *testing.T) {
	a := "3f2a1c9d8e7f" + strings.Repeat("0", 28)
	b := "3f2a1c9d8e70" + strings.Repeat("1", 28)
	c := "9b8e7d6c5b4a" + strings.Repeat("2", 28)
	ids := []string{a, b, c, c}
	tests := []struct {
		name, prefix, want string
		err                error
	}{
		{"full id", a, a, nil},
		{"unique prefix", "9b8e7d6", c, nil},
		{"repeats count once", "9b8e7d6c5b4a", c, nil},
		{"ambiguous", "3f2a1c9", "", ErrAmbiguous},
		{"more digits", "3f2a1c9d8e7f", a, nil},
		{"no match", "0000000", "", ErrNoMatch},
		{"too short to match a prefix", "9b8e7d", "", ErrNoMatch},
		{"empty", "", "", ErrNoMatch},
		{"longer than every id", c + "0", "", ErrNoMatch},
	}
	for _, tt := range tests {
		got, err := Match(tt.prefix, ids)
		if got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("%s: Match(%q) = %q, %v; want %q, %v", tt.name, tt.prefix, got, err, tt.want, tt.err)
		}
	}
	// A short id that is itself a candidate matches exactly.
	if got, err := Match("c1", []string{"c1", "c12"}); got != "c1" || err != nil {
		t.Errorf("Match of an exact short id = %q, %v", got, err)
	}
	if _, err := Match("3f2a1c9", ids); err == nil || !strings.Contains(err.Error(), "3f2a1c9d8e70, 3f2a1c9d8e7f") {
		t.Errorf("ambiguous error %v does not name the candidates", err)
	}
}
