package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestParseSeconds(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{in: "1", want: time.Second},
		{in: "600", want: 10 * time.Minute},
		{in: "", err: true},
		{in: "0", err: true},
		{in: "-1", err: true},
		{in: "601", err: true},
		{in: "1.5", err: true},
		{in: "5s", err: true},
		{in: " 5", err: true},
		{in: "99999999999999999999999", err: true},
		{in: "9223372036854775807", err: true}, // would overflow a Duration
	} {
		got, err := parseSeconds(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("parseSeconds(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

// FuzzParseSeconds: no input panics, and what is accepted is within the bounds.
func FuzzParseSeconds(f *testing.F) {
	for _, s := range []string{"1", "600", "0", "-1", "1e3", "9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseSeconds(s)
		if err == nil && (d < time.Second || d > maxDownload || d%time.Second != 0) {
			t.Fatalf("parseSeconds(%q) = %v", s, d)
		}
		if err != nil && len(err.Error()) > 200 {
			t.Fatalf("an error of %d bytes quotes the input whole", len(err.Error()))
		}
	})
}

// A download sends what its Content-Length promises, paced over the seconds asked.
func TestDownload(t *testing.T) {
	srv := httptest.NewServer(newHandler(config{Version: "1.2.3", Mode: modeOK}, "h"))
	defer srv.Close()
	start := time.Now()
	resp, err := srv.Client().Get(srv.URL + "/download?seconds=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || resp.StatusCode != 200 || n != downloadSize(time.Second) || resp.ContentLength != n {
		t.Errorf("download of 1 s: %s, %d bytes (Content-Length %d), %v; want 200 and %d bytes", resp.Status, n, resp.ContentLength, err, downloadSize(time.Second))
	}
	if took := time.Since(start); took < time.Second-downloadTick {
		t.Errorf("download of 1 s took %v", took)
	}
	if v := resp.Header.Get("X-Demo-Version"); v != "1.2.3" {
		t.Errorf("X-Demo-Version = %q", v)
	}
	for _, bad := range []string{"", "?seconds=0", "?seconds=x", "?seconds=601"} {
		resp, err := srv.Client().Get(srv.URL + "/download" + bad)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "want a whole number of seconds") {
			t.Errorf("/download%s: %s %q, want 400", bad, resp.Status, body)
		}
	}
}

// fail-on-traffic: healthy until a client request was served, whatever its answer;
// the checks' own requests do not count.
func TestFailOnTraffic(t *testing.T) {
	h := newHandler(config{Version: "1", Mode: modeFailOnTraffic}, "h")
	code := func(method, path string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		return rec.Code
	}
	for range 3 {
		if c := code("GET", "/healthz"); c != 200 {
			t.Fatalf("/healthz before any client: %d", c)
		}
		code("GET", "/version")
		code("GET", "/metrics")
	}
	if c := code("GET", "/cart"); c != http.StatusUnauthorized {
		t.Fatalf("/cart without a session: %d", c)
	}
	if c := code("GET", "/healthz"); c != http.StatusServiceUnavailable {
		t.Errorf("/healthz after a client: %d, want 503", c)
	}
}

// /metrics carries the process's resident memory, which bench-rollout sums over two
// colors.
func TestMetricsProcessMemory(t *testing.T) {
	rec := httptest.NewRecorder()
	newHandler(config{Version: "1", Mode: modeOK}, "h").ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), "\nprocess_resident_memory_bytes ") {
		t.Errorf("/metrics lacks process_resident_memory_bytes:\n%s", rec.Body)
	}
}
