package strictjson

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

type record struct {
	Commit string `json:"commit"`
	N      int    `json:"n"`
}

func TestDecode(t *testing.T) {
	for _, tt := range []struct {
		name, in string
		want     string // "" for none; errTrailing for ErrTrailing; else a part of the error
	}{
		{"one object", `{"commit":"a","n":1}`, ""},
		{"blanks around", " \n{\"commit\":\"a\"}\n\t", ""},
		{"unknown field", `{"commit":"a","extra":1}`, `unknown field "extra"`},
		{"two values", `{"commit":"a"}{"commit":"b"}`, "errTrailing"},
		{"garbage after", `{"commit":"a"} x`, "errTrailing"},
		{"wrong type", `{"n":"1"}`, "cannot unmarshal"},
		{"empty", ``, "EOF"},
		{"cut short", `{"commit":"a"`, "unexpected EOF"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var r record
			err := Decode([]byte(tt.in), &r)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Decode(%q): %v", tt.in, err)
			case tt.want == "errTrailing" && !errors.Is(err, ErrTrailing):
				t.Errorf("Decode(%q) = %v, want ErrTrailing", tt.in, err)
			case tt.want != "" && tt.want != "errTrailing" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Decode(%q) = %v, want an error holding %q", tt.in, err, tt.want)
			}
		})
	}
}

// FuzzDecode: Decode never panics, and what it accepts holds one value that encodes
// back to a record it reads again to the same thing.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"commit":"a","n":1}`))
	f.Add([]byte(`{"commit":"a"} {}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var r record
		if Decode(data, &r) != nil {
			return
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var again record
		if err := Decode(b, &again); err != nil || again != r {
			t.Fatalf("%+v read back as %+v (%v)", r, again, err)
		}
	})
}
