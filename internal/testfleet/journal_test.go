package testfleet

import (
	"testing"
	"time"
)

func TestParseJournal(t *testing.T) {
	journal := `time=2025-03-01T10:00:00.000Z level=INFO msg="upgrade committed" commit=aaaaaaa group=web txn=1 took=1s steps="PREPARED=1ms SWITCHING=1s"
time=2025-03-01T10:00:09.250Z level=INFO msg="upgrade committed" commit=abcdef1 group=web txn=2 took=7.5s steps="PREPARED=3ms STAGED=120ms DRAINING=250ms SWITCHING=310ms VERIFYING=6.2s COMMITTED=15ms"
time=2025-03-01T10:01:02.5Z level=ERROR msg="upgrade failed; reverting" commit=1234567 group=web txn=3 step=VERIFYING reason="check health failed 3 times" output=""
`
	l, ok := findLine(journal, "upgrade committed", "abcdef1234")
	if !ok {
		t.Fatal("no committed line for abcdef1")
	}
	got := parseSteps(l)
	want := map[string]time.Duration{"PREPARED": 3 * time.Millisecond, "STAGED": 120 * time.Millisecond,
		"DRAINING": 250 * time.Millisecond, "SWITCHING": 310 * time.Millisecond, "VERIFYING": 6200 * time.Millisecond, "COMMITTED": 15 * time.Millisecond}
	if len(got) != len(want) {
		t.Fatalf("steps: got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("steps[%s]: got %v, want %v", k, got[k], v)
		}
	}
	l, ok = findLine(journal, "upgrade failed; reverting", "1234567")
	if !ok {
		t.Fatal("no reverting line")
	}
	at, ok := parseTime(l)
	if want := time.Date(2025, 3, 1, 10, 1, 2, 500e6, time.UTC); !ok || !at.Equal(want) {
		t.Errorf("time: got %v %v, want %v", at, ok, want)
	}
	if _, ok := findLine(journal, "upgrade committed", "fffffff"); ok {
		t.Error("found a line for a commit the journal does not name")
	}
}

func TestParseJournalColors(t *testing.T) {
	journal := `time=2025-03-01T10:00:05.000Z level=INFO msg="the load balancer sends new clients to the new color" commit=abcdef1 group=web txn=2 service=demo color=green took=2.234181ms
time=2025-03-01T10:00:07.000Z level=INFO msg="the load balancer sends the clients back to the old color" commit=abcdef1 group=web txn=2 service=demo color=blue clientsMoved=true took=1.66ms
time=2025-03-01T10:00:08.000Z level=INFO msg="the load balancer sends the clients back to the old color" commit=1234567 group=web txn=3 service=demo color=blue clientsMoved=false took=1ms
time=2025-03-01T10:00:09.000Z level=INFO msg="the load balancer sends new clients to the new color" commit=fffffff group=web txn=4 service=demo color=green took=soon
`
	l, ok := findLine(journal, "the load balancer sends new clients to the new color", "abcdef1")
	if took, ok2 := parseTook(l); !ok || !ok2 || took != 2234181*time.Nanosecond {
		t.Errorf("switch: %v %v %v", took, ok, ok2)
	}
	l, _ = findLine(journal, "the load balancer sends new clients to the new color", "fffffff")
	if took, ok := parseTook(l); ok {
		t.Errorf("took=soon parsed as %v", took)
	}
	if took, ok := parseTook("msg=x"); ok {
		t.Errorf("no took= parsed as %v", took)
	}
}
