package rollback

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestTxnSaveLoadEnd(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	s := &Store{Dir: t.TempDir(), Now: func() time.Time { return now }}
	if txn, err := s.Load(); txn != nil || err != nil {
		t.Fatalf("Load when idle = %v, %v; want nil, nil", txn, err)
	}
	txn := &Txn{ID: "t1", From: "aaa", To: "bbb", Restart: []string{"api.service"},
		Target: LastGood{Revision: "bbb", Services: map[string]ServiceRecord{"api": {Version: "2", Units: []string{"api.service"}}},
			Files: map[string]string{"api.service": "[Service]\nExecStart=/bin/true\n"}}}
	for _, st := range []State{Prepared, Staged, Leased, Switching, Verifying, Committed} {
		now = now.Add(time.Second)
		if err := s.Save(txn, st); err != nil {
			t.Fatal(err)
		}
		got, err := s.Load()
		if err != nil {
			t.Fatal(err)
		}
		if got.State != st || !got.Updated.Equal(now) || !reflect.DeepEqual(got.Target, txn.Target) {
			t.Fatalf("after Save(%s) Load = %+v", st, got)
		}
	}
	if err := s.End(); err != nil {
		t.Fatal(err)
	}
	if txn, err := s.Load(); txn != nil || err != nil {
		t.Fatalf("Load after End = %v, %v", txn, err)
	}
	if err := s.End(); err != nil {
		t.Errorf("End when idle: %v", err)
	}
}

func TestTxnLoadRefusesBadRecords(t *testing.T) {
	for name, content := range map[string]string{
		"truncated":     `{"id":"t1","state":"SWIT`,
		"unknown field": `{"id":"t1","bogus":true}`,
		"bad unit name": `{"id":"t1","target":{"files":{"../../etc/shadow":"x"}}}`,
	} {
		s := &Store{Dir: t.TempDir()}
		if err := os.WriteFile(filepath.Join(s.Dir, TxnFile), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Load(); err == nil || !strings.Contains(err.Error(), TxnFile) {
			t.Errorf("%s: Load = %v, want an error naming %s", name, err, TxnFile)
		}
	}
}

func TestStateTouched(t *testing.T) {
	for st, want := range map[State]bool{Prepared: false, Staged: false, Leased: false, Draining: false,
		Switching: true, Verifying: true, Committed: true, RollingBack: true, Failed: true} {
		if st.Touched() != want {
			t.Errorf("%s.Touched() = %v", st, !want)
		}
	}
}

func TestQuarantine(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	if q, err := s.IsQuarantined("c1"); q != nil || err != nil {
		t.Fatalf("IsQuarantined on a fresh host = %v, %v", q, err)
	}
	for _, c := range []string{"c1", "c2", "c1"} {
		if err := s.AddQuarantine(c, "check health failed on "+c); err != nil {
			t.Fatal(err)
		}
	}
	q, _ := s.Quarantine()
	if len(q) != 2 || q[0].Commit != "c2" || q[1].Commit != "c1" {
		t.Fatalf("quarantine = %+v, want c2 then c1 once", q)
	}
	if ok, err := s.ClearQuarantine("c9"); ok || err != nil {
		t.Errorf("ClearQuarantine(unknown) = %v, %v", ok, err)
	}
	if ok, _ := s.ClearQuarantine("c1"); !ok {
		t.Error("ClearQuarantine(c1) lifted nothing")
	}
	if r, _ := s.IsQuarantined("c1"); r != nil {
		t.Error("c1 still quarantined")
	}
	if r, _ := s.IsQuarantined("c2"); r == nil || r.Reason != "check health failed on c2" {
		t.Errorf("c2 = %+v", r)
	}
	if ok, _ := s.ClearQuarantine(""); !ok {
		t.Error("ClearQuarantine(all) lifted nothing")
	}
	if q, _ := s.Quarantine(); len(q) != 0 {
		t.Errorf("after clearing all: %+v", q)
	}
}
