package events

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"
)

func ev(i int) Event {
	return Event{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Type: UpgradeStarted, Host: "web-01", Message: fmt.Sprint(i)}
}

func messages(es []Event) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Message)
	}
	return out
}

func TestRing(t *testing.T) {
	tests := []struct {
		name  string
		size  int
		added int
		last  int
		want  []string
	}{
		{"empty", 3, 0, 0, nil},
		{"empty, asking for some", 3, 0, 2, nil},
		{"partly filled, all", 3, 2, 0, []string{"0", "1"}},
		{"partly filled, more than held", 3, 2, 5, []string{"0", "1"}},
		{"partly filled, last one", 3, 2, 1, []string{"1"}},
		{"exactly full", 3, 3, 0, []string{"0", "1", "2"}},
		{"wrapped: oldest forgotten", 3, 5, 0, []string{"2", "3", "4"}},
		{"wrapped, last two", 3, 5, 2, []string{"3", "4"}},
		{"wrapped many times", 3, 100, -1, []string{"97", "98", "99"}},
		{"size 0 keeps one", 0, 4, 0, []string{"3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRing(tt.size)
			for i := range tt.added {
				r.Add(ev(i))
			}
			got := messages(r.Last(tt.last))
			if !slices.Equal(got, tt.want) {
				t.Errorf("Last(%d) = %q, want %q", tt.last, got, tt.want)
			}
		})
	}
}

func TestRingCopies(t *testing.T) {
	r := NewRing(2)
	e := ev(0)
	e.Fields = map[string]string{"step": "verify"}
	r.Add(e)
	e.Fields["step"] = "changed by the caller"
	got := r.Last(0)
	if got[0].Fields["step"] != "verify" {
		t.Fatalf("the ring shares the caller's map: %q", got[0].Fields["step"])
	}
	got[0].Fields["step"] = "changed by a reader"
	if r.Last(0)[0].Fields["step"] != "verify" {
		t.Fatal("the ring shares its map with a reader")
	}
}

func TestRingConcurrent(t *testing.T) {
	r := NewRing(16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 1000 {
			r.Add(ev(i))
		}
	}()
	for range 100 {
		if n := len(r.Last(0)); n > 16 {
			t.Fatalf("ring holds %d events, more than its size", n)
		}
	}
	<-done
	if got := messages(r.Last(1)); !slices.Equal(got, []string{"999"}) {
		t.Fatalf("last = %q", got)
	}
}

func TestEventJSON(t *testing.T) {
	e := Event{
		Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Type: UpgradeFailed, Host: "web-01", Group: "web",
		Commit: "0123456789abcdef0123456789abcdef01234567", Service: "api", Message: "check health failed",
		Fields: map[string]string{"step": "verify"},
	}
	data, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"time":"2026-01-02T03:04:05Z","type":"upgrade.failed","host":"web-01","group":"web",` +
		`"commit":"0123456789abcdef0123456789abcdef01234567","service":"api","message":"check health failed","fields":{"step":"verify"}}`
	if string(data) != want {
		t.Errorf("got  %s\nwant %s", data, want)
	}
}
