package fleet

import (
	"strings"
	"testing"
)

func TestParseSlots(t *testing.T) {
	tests := []struct {
		in   string
		want int
		err  bool
	}{
		{"2", 2, false},
		{"2\n", 2, false}, // etcdctl put without -n
		{" 3 \r\n", 3, false},
		{"\t1", 1, false},
		{"+4", 4, false},
		{"0", 0, false}, // no slot: a stop, as the lease reads it
		{"007", 7, false},
		{"", 0, true},
		{"\n", 0, true},
		{"-1", 0, true},
		{"2.0", 0, true},
		{"1e3", 0, true},
		{"two", 0, true},
		{"2 2", 0, true},
		{"0x10", 0, true},
		{`"2"`, 0, true},
		{"99999999999999999999999", 0, true},
		{"2\x00", 0, true},
	}
	for _, tt := range tests {
		n, err := ParseSlots([]byte(tt.in))
		if (err != nil) != tt.err || n != tt.want {
			t.Errorf("ParseSlots(%q) = %d, %v; want %d, error %v", tt.in, n, err, tt.want, tt.err)
		}
		if err != nil && !strings.Contains(err.Error(), "is not a count of slots") {
			t.Errorf("ParseSlots(%q): error %q", tt.in, err)
		}
	}
}

func TestParseRecords(t *testing.T) {
	t.Run("host", func(t *testing.T) {
		for _, tt := range []struct {
			in  string
			err string
		}{
			{`{"host":"web-1","group":"web","commit":"c","state":"IDLE","time":"2026-11-25T12:00:00Z"}`, ""},
			{`{"host":"other","group":"web"}` + "\n", ""}, // the key names the host
			{`{"group":"web","future":{"x":1}}`, ""},
			{`null`, ""},
			{``, "unexpected end of JSON input"},
			{`{"group":3}`, "cannot unmarshal number"},
			{`{"time":"noon"}`, "cannot parse"},
			{`[1]`, "cannot unmarshal array"},
			{strings.Repeat("x", 500), `"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"...`},
		} {
			h, err := parseHost("web-1", []byte(tt.in))
			if !errLike(err, tt.err) {
				t.Errorf("parseHost(%q) = %+v, %v; want error %q", tt.in, h, err, tt.err)
			}
			if err == nil && h.Host != "web-1" {
				t.Errorf("parseHost(%q).Host = %q, want the key's", tt.in, h.Host)
			}
		}
	})
	t.Run("mark", func(t *testing.T) {
		for _, tt := range []struct {
			in, reason, err string
		}{
			{`{"by":"ops","reason":"incident 42","time":"2026-11-25T12:00:00Z"}`, "incident 42", ""},
			{``, "", ""},   // etcdctl put /baton/paused "": a pause with no reason
			{"\n", "", ""}, //
			{`pause`, "unreadable record", "invalid character"},
			{`{"reason":1}`, "unreadable record", "cannot unmarshal number"},
		} {
			m, err := parseMark([]byte(tt.in))
			if !errLike(err, tt.err) || m.Reason != tt.reason {
				t.Errorf("parseMark(%q) = %+v, %v; want reason %q, error %q", tt.in, m, err, tt.reason, tt.err)
			}
		}
	})
	t.Run("failure", func(t *testing.T) {
		f, err := parseFailure("c0ffee", []byte(`{"commit":"x","host":"web-1","reason":"verify"}`))
		if err != nil || f.Commit != "c0ffee" || f.Host != "web-1" {
			t.Errorf("parseFailure = %+v, %v", f, err)
		}
		f, err = parseFailure("c0ffee", []byte(`halted`))
		if err == nil || f.Commit != "c0ffee" || f.Reason != "the halt record is unreadable" {
			t.Errorf("parseFailure of a bad record = %+v, %v; want a halt that says so, and the error", f, err)
		}
	})
	t.Run("canaries", func(t *testing.T) {
		for _, tt := range []struct {
			in, err string
			n       int
		}{
			{`["web-1","web-2"]`, "", 2},
			{" [ ] \n", "", 0},
			{`null`, "", 0},
			{`"web-1"`, "cannot unmarshal string", 0},
			{`[1]`, "cannot unmarshal number", 0},
			{`[`, "unexpected end", 0},
		} {
			hosts, err := parseCanaries([]byte(tt.in))
			if !errLike(err, tt.err) || len(hosts) != tt.n {
				t.Errorf("parseCanaries(%q) = %q, %v; want %d hosts, error %q", tt.in, hosts, err, tt.n, tt.err)
			}
		}
	})
}

func errLike(err error, want string) bool {
	if want == "" {
		return err == nil
	}
	return err != nil && strings.Contains(err.Error(), want)
}

func FuzzParseSlots(f *testing.F) {
	for _, s := range []string{"2", "2\n", " 3 ", "-1", "+0", "1e3", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		n, err := ParseSlots(v)
		if err != nil {
			if n != 0 {
				t.Fatalf("ParseSlots(%q) = %d with an error", v, n)
			}
			return
		}
		if n < 0 {
			t.Fatalf("ParseSlots(%q) = %d", v, n)
		}
	})
}

// FuzzSnapshotAdd: any value under any key is read into a snapshot or reported,
// never a panic, and a bad value never leaves a halt or a pause out.
func FuzzSnapshotAdd(f *testing.F) {
	f.Add("hosts/web-1", []byte(`{"host":"web-1","group":"web","commit":"c","state":"IDLE"}`))
	f.Add("groups/web/maxParallel", []byte("2\n"))
	f.Add("groups/web/failed/c0ffee", []byte(`{"host":"web-1"}`))
	f.Add("groups/web/canaries/c0ffee", []byte(`["web-1"]`))
	f.Add("groups/web/promoted/c0ffee", []byte(`{}`))
	f.Add("groups/web/paused", []byte(`x`))
	f.Add("paused", []byte(``))
	f.Fuzz(func(t *testing.T, key string, v []byte) {
		snap := &Snapshot{Groups: map[string]*Group{}, Hosts: map[string]Host{}}
		parts := strings.Split(key, "/")
		_ = snap.add(parts, v)
		switch {
		case key == "paused" && snap.Paused == nil:
			t.Fatalf("a paused key %q does not pause", v)
		case len(parts) == 3 && parts[0] == "groups" && parts[2] == "paused" && snap.Groups[parts[1]].Paused == nil:
			t.Fatalf("a group paused key %q does not pause", v)
		case len(parts) == 4 && parts[0] == "groups" && parts[2] == "failed":
			if _, ok := snap.Groups[parts[1]].Failed[parts[3]]; !ok {
				t.Fatalf("a halt %q does not halt", v)
			}
		}
	})
}
