package yamldoc

import (
	"errors"
	"strings"
	"testing"
	"time"
)

type inner struct {
	MaxParallel int    `yaml:"maxParallel"`
	Pause       string `yaml:"pause"`
}

type outer struct {
	Name  string   `yaml:"name"`
	Hosts []string `yaml:"hosts"`
	Inner inner    `yaml:"inner"`
	Items []inner  `yaml:"items"`
	Flag  bool     `yaml:"flag"`
	Meta  any      `yaml:"meta"` // decodes anything: where an alias bomb would explode
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{"unknown field with suggestion", "name: a\ninner:\n  maxParalel: 2\n",
			[]string{`f.yaml:3: unknown field "maxParalel" (did you mean "maxParallel"?)`}},
		{"unknown field lists known", "zzzzzz: 1\n",
			[]string{`f.yaml:1: unknown field "zzzzzz"; known fields: flag, hosts, inner, items, meta, name`}},
		{"unknown field in a list item", "items:\n  - maxParallel: 1\n  - bogus: 2\n",
			[]string{`f.yaml:3: unknown field "bogus"; known fields: maxParallel, pause`}},
		{"wrong type", "name: a\ninner: {maxParallel: many}\n",
			[]string{`f.yaml:2: expected an integer, got string "many"`}},
		{"scalar for a list", "hosts: web-*\n",
			[]string{`f.yaml:1: expected a list, got string "web-*"`}},
		{"every error, not just the first", "hosts: x\nflag: 3\nnope: 1\n",
			[]string{
				`f.yaml:1: expected a list, got string "x"`,
				`f.yaml:2: expected true or false, got integer "3"`,
				`f.yaml:3: unknown field "nope"; known fields: flag, hosts, inner, items, meta, name`,
			}},
		{"duplicate key", "name: a\nname: b\n",
			[]string{`f.yaml:2: mapping key "name" already defined at line 1`}},
		{"syntax error", "name: a\n  hosts: [\n",
			[]string{`f.yaml:2: mapping values are not allowed in this context`}},
		{"two documents", "name: a\n---\nname: b\n",
			[]string{`f.yaml:2: more than one YAML document; a file holds exactly one`}},
		{"binary", "name: a\nflag: \x00\x01\n",
			[]string{`f.yaml:2: not UTF-8 text (binary data?)`}},
		{"top level list", "- a\n- b\n",
			[]string{`f.yaml:1: expected a mapping, got a list`}},
		{"alias bomb", aliasBomb(), []string{`f.yaml: too many alias expansions (a YAML alias bomb?)`}},
		{"unknown anchor", "name: a\nhosts:\n  - *web 00\n",
			[]string{`f.yaml:3: unknown anchor 'web' referenced`}},
		{"unknown anchor after a line break in a flow list", "name: a\nhosts: [b,\n*web]\n",
			[]string{`f.yaml:3: unknown anchor 'web' referenced`}},
		{"control character", "name: a\nhosts: [b\x0c]\n",
			[]string{`f.yaml:2: control characters are not allowed`}},
		{"bad directive on the first line", "%\n",
			[]string{`f.yaml:1: could not find expected directive name`}},
		{"a scalar over lines for the document", "0\n\n0",
			[]string{`f.yaml:1: expected a mapping, got string "0\n0"`}},
		{"unknown anchor in a flow list", "name: a\nhosts: [b,*web]\n",
			[]string{`f.yaml:2: unknown anchor 'web' referenced`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v outer
			_, err := Decode("f.yaml", []byte(tt.in), &v)
			if err == nil {
				t.Fatalf("Decode: no error, want %q", tt.want)
			}
			got := strings.Split(err.Error(), "\n")
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("Decode errors:\n got: %q\nwant: %q", got, tt.want)
			}
		})
	}
}

func aliasBomb() string {
	var b strings.Builder
	b.WriteString("a: &a [x, x, x, x, x, x, x, x, x]\n")
	prev := "a"
	for _, n := range []string{"b", "c", "d", "e", "f", "g", "h", "i"} {
		b.WriteString(n + ": &" + n + " [")
		for i := range 9 {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*" + prev)
		}
		b.WriteString("]\n")
		prev = n
	}
	return "name: x\nitems: []\nmeta:\n" + indent(b.String())
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n  ") + "\n"
}

func TestDecodeTooLarge(t *testing.T) {
	var v outer
	_, err := Decode("big.yaml", []byte("name: "+strings.Repeat("x", MaxSize)), &v)
	if err == nil || !strings.HasPrefix(err.Error(), "big.yaml: file is ") {
		t.Fatalf("Decode of an oversized file: %v", err)
	}
}

func TestDocAtAndHas(t *testing.T) {
	in := "name: a\nhosts:\n  - web-1\n  - web-2\ninner:\n  maxParallel: 3\n  pause:\n"
	var v outer
	doc, err := Decode("f.yaml", []byte(in), &v)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path []any
		line int
		has  bool
	}{
		{[]any{"name"}, 1, true},
		{[]any{"hosts", 1}, 4, true},
		{[]any{"inner", "maxParallel"}, 6, true},
		{[]any{"inner", "pause"}, 7, false}, // null counts as absent
		{[]any{"inner", "missing"}, 5, false},
		{[]any{"hosts", 7}, 2, false},
	} {
		if got := doc.At(tt.path...).Line; got != tt.line {
			t.Errorf("At(%v).Line = %d, want %d", tt.path, got, tt.line)
		}
		if got := doc.Has(tt.path...); got != tt.has {
			t.Errorf("Has(%v) = %v, want %v", tt.path, got, tt.has)
		}
	}
	if got := doc.At("inner", "maxParallel").Errorf("bad %d", 1).Error(); got != "f.yaml:6: bad 1" {
		t.Errorf("Errorf = %q", got)
	}
}

func TestDocKeys(t *testing.T) {
	in := "colors:\n  zeta: {port: 1}\n  alpha: {port: 2}\nlist: [a]\nempty:\n"
	var v struct {
		Colors map[string]struct {
			Port int `yaml:"port"`
		} `yaml:"colors"`
		List  []string `yaml:"list"`
		Empty any      `yaml:"empty"`
	}
	doc, err := Decode("f.yaml", []byte(in), &v)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path []any
		want string
	}{
		{[]any{"colors"}, "zeta alpha"}, // the order of the file
		{nil, "colors list empty"},
		{[]any{"list"}, ""},
		{[]any{"empty"}, ""},
		{[]any{"missing"}, ""},
	} {
		if got := strings.Join(doc.Keys(tt.path...), " "); got != tt.want {
			t.Errorf("Keys(%v) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("name: a\ninner: {maxParallel: 2}\nitems: [{pause: x}]\n"))
	f.Add([]byte("a: &a [1]\nb: *a\n"))
	f.Add([]byte("- 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var v outer
		start := time.Now()
		doc, err := Decode("f.yaml", data, &v)
		if doc == nil {
			t.Fatal("Decode returned a nil Doc")
		}
		if err != nil && !strings.HasPrefix(err.Error(), "f.yaml") {
			t.Fatalf("error does not name the file: %v", err)
		}
		// Every error has its line but an alias bomb's, which is the whole document's.
		var list Errors
		if errors.As(err, &list) {
			for _, e := range list {
				if e.Line < 1 && !strings.Contains(e.Msg, "alias bomb") {
					t.Fatalf("error without a line: %v", e)
				}
			}
		}
		_ = doc.At("inner", "maxParallel")
		if time.Since(start) > 10*time.Second {
			t.Fatalf("Decode took %v", time.Since(start))
		}
	})
}

func TestDuration(t *testing.T) {
	type withDur struct {
		D Duration `yaml:"d"`
	}
	for in, want := range map[string]string{
		"d: 10s":     "10s",
		"d: 0":       "0s",
		"d: 1h30m":   "1h30m0s",
		"d: 30":      `f.yaml:1: invalid duration "30": expected a number with a unit, such as 500ms, 10s or 5m`,
		"d: -1s":     `f.yaml:1: invalid duration "-1s": must not be negative`,
		"d: [1s]":    "f.yaml:1: expected a duration such as 10s, got a list",
		"\nd: ten s": `f.yaml:2: invalid duration "ten s": expected a number with a unit, such as 500ms, 10s or 5m`,
	} {
		var v withDur
		_, err := Decode("f.yaml", []byte(in), &v)
		got := v.D.String()
		if err != nil {
			got = err.Error()
		}
		if got != want {
			t.Errorf("Decode(%q) = %q, want %q", in, got, want)
		}
	}
}
