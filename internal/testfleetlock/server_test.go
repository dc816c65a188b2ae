package testfleetlock

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
)

func TestSemaphore(t *testing.T) {
	s := &Semaphore{TotalSlots: 2, Holders: []string{}}
	for _, id := range []string{"b", "a", "b"} {
		if err := s.RecursiveLock(id); err != nil {
			t.Fatalf("RecursiveLock(%s): %v", id, err)
		}
	}
	if err := s.RecursiveLock("c"); err == nil || err.Error() != "all 2 semaphore slots currently locked" {
		t.Fatalf("RecursiveLock of a full semaphore = %v", err)
	}
	if !slices.Equal(s.Holders, []string{"a", "b"}) {
		t.Fatalf("holders %v", s.Holders)
	}
	if s.UnlockIfHeld("c") || !s.UnlockIfHeld("a") || !slices.Equal(s.Holders, []string{"b"}) {
		t.Fatalf("after unlocks: %v", s.Holders)
	}
}

// TestAnswers: the answers are airlock's, byte for byte, with its status codes.
func TestAnswers(t *testing.T) {
	s := Start(t, map[string]uint64{"web": 1})
	post := func(path, header, body string) (int, string, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, s.URL()+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if header != "" {
			req.Header.Set("fleet-lock-protocol", header)
		}
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	body := func(id, group string) string {
		return `{"client_params":{"id":"` + id + `","group":"` + group + `"}}`
	}
	for _, tt := range []struct {
		path, header, body string
		status             int
		answer             string
	}{
		{PreReboot, "true", body("a", "web"), 200, ""},
		{PreReboot, "true", body("a", "web"), 200, ""},
		{PreReboot, "true", body("b", "web"), 500, `{"kind":"failed_lock","value":"all 1 semaphore slots currently locked"}` + "\n"},
		{SteadyState, "true", body("b", "web"), 200, ""},
		{PreReboot, "true", body("a", "web_eu"), 400, `{"kind":"unknown_group","value":"unknown group \"web_eu\""}` + "\n"},
		{PreReboot, "", body("a", "web"), 400, `{"kind":"invalid_client_identity","value":"failed to validate client identity: wrong 'fleet-lock-protocol' header"}` + "\n"},
		{PreReboot, "true", body("", "web"), 400, `{"kind":"invalid_client_identity","value":"failed to validate client identity: empty client ID"}` + "\n"},
		{SteadyState, "true", body("a", ""), 400, `{"kind":"invalid_client_identity","value":"failed to validate client identity: empty client group"}` + "\n"},
		{SteadyState, "true", "", 400, `{"kind":"invalid_client_identity","value":"failed to validate client identity: EOF"}` + "\n"},
		{"/v1/other", "true", body("a", "web"), 404, "404 page not found\n"},
		{SteadyState, "true", body("a", "web"), 200, ""},
		{PreReboot, "true", body("b", "web"), 200, ""},
	} {
		status, ctype, answer := post(tt.path, tt.header, tt.body)
		if status != tt.status || answer != tt.answer {
			t.Errorf("%s %s: %d %q, want %d %q", tt.path, tt.body, status, answer, tt.status, tt.answer)
		}
		if status != 200 && ctype != "text/plain; charset=utf-8" {
			t.Errorf("%s %s: Content-Type %q", tt.path, tt.body, ctype)
		}
	}
	if h := s.Holders("web"); !slices.Equal(h, []string{"b"}) {
		t.Errorf("holders %v", h)
	}
	// Killed and started again: the semaphore is kept, as airlock's in etcd.
	s.Stop()
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if status, _, _ := post(PreReboot, "true", body("a", "web")); status != 500 {
		t.Errorf("pre-reboot of a after a restart: %d, want 500", status)
	}
	s.Wipe()
	if status, _, _ := post(PreReboot, "true", body("a", "web")); status != 200 {
		t.Errorf("pre-reboot of a after a wipe: %d, want 200", status)
	}
	if m := s.MostHolders("web"); m != 1 {
		t.Errorf("most holders %d", m)
	}
}
