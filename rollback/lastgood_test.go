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
		}}
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
