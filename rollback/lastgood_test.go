package rollback

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLastGoodRoundTrip(t *testing.T) {
	dir := t.TempDir()
	empty, err := ReadLastGood(dir)
	if err != nil || empty.Revision != "" || len(empty.Owned()) != 0 {
		t.Fatalf("ReadLastGood on a new host = %+v, %v; want an empty record", empty, err)
	}
	lg := &LastGood{Revision: "3f2a1c", Host: "web-01", Group: "web", Time: time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC),
		Services: map[string]ServiceRecord{
			"api": {Version: "1.4.3", Release: "1.4.3-bb2e6f6c", Units: []string{"api.socket", "api.service"}},
			"kv":  {Version: "2.0.1", Release: "2.0.1-0a1b2c3d", Units: []string{"kv.service"}},
		},
		History: []string{strings.Repeat("a", 40), strings.Repeat("b", 64)}}
	if err := WriteLastGood(dir, lg); err != nil {
		t.Fatal(err)
	}
	got, err := ReadLastGood(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, lg) {
		t.Errorf("read back %+v, want %+v", got, lg)
	}
	if owned := strings.Join(got.Owned(), " "); owned != "api.service api.socket kv.service" {
		t.Errorf("Owned = %s", owned)
	}
}

func TestReadLastGoodRefusesBadRecords(t *testing.T) {
	for name, content := range map[string]string{
		"not json":      "{",
		"unknown field": `{"revision":"x","extra":1}`,
		"bad unit":      `{"services":{"api":{"units":["../../etc/passwd"]}}}`,
		"bad history":   `{"revision":"x","history":["../../x"]}`,
		"short history": `{"revision":"x","history":["3f2a1c4"]}`,
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, LastGoodFile), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadLastGood(dir); err == nil || !strings.Contains(err.Error(), LastGoodFile) {
			t.Errorf("%s: ReadLastGood = %v, want an error naming the file", name, err)
		}
	}
}

func TestNextHistory(t *testing.T) {
	rev := func(c string) string { return strings.Repeat(c, 40) }
	tests := []struct {
		name string
		lg   LastGood
		want []string
	}{
		{"fresh host", LastGood{}, nil},
		{"first commit", LastGood{Revision: rev("1")}, []string{rev("1")}},
		{"newest first", LastGood{Revision: rev("3"), History: []string{rev("2"), rev("1")}}, []string{rev("3"), rev("2"), rev("1")}},
		// After a rollback from 2 to 1, the host's history holds 2 already.
		{"no repeats", LastGood{Revision: rev("1"), History: []string{rev("2"), rev("1")}}, []string{rev("1"), rev("2")}},
		{"bounded", LastGood{Revision: rev("c"), History: []string{rev("b"), rev("a"), rev("9"), rev("8"), rev("7"), rev("6"), rev("5"), rev("4"), rev("3"), rev("2")}},
			[]string{rev("c"), rev("b"), rev("a"), rev("9"), rev("8"), rev("7"), rev("6"), rev("5"), rev("4"), rev("3")}},
	}
	for _, tt := range tests {
		if got := tt.lg.NextHistory(); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: NextHistory = %v, want %v", tt.name, got, tt.want)
		}
	}
}
