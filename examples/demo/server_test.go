package main

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHandler(t *testing.T) {
	tests := []struct {
		mode, method, path string
		wantStatus         int
		wantBody           string
	}{
		{modeOK, "GET", "/healthz", 200, "ok\n"},
		{modeOK, "GET", "/version", 200, "1.2.3\n"},
		{modeOK, "GET", "/", 200, "hello from web-01 version 1.2.3\n"},
		{modeOK, "GET", "/other", 404, "404 page not found\n"},
		{modeOK, "POST", "/healthz", 405, "Method Not Allowed\n"},
		{modeFailHealth, "GET", "/healthz", 503, "unhealthy\n"},
		{modeFailHealth, "GET", "/version", 200, "1.2.3\n"},
		{modeFailHealth, "GET", "/", 200, "hello from web-01 version 1.2.3\n"},
		{modeCrashAfter, "GET", "/healthz", 200, "ok\n"},
	}
	for _, tt := range tests {
		h := newHandler(config{Version: "1.2.3", Mode: tt.mode}, "web-01")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
		if rec.Code != tt.wantStatus || rec.Body.String() != tt.wantBody {
			t.Errorf("%s: %s %s = %d %q, want %d %q", tt.mode, tt.method, tt.path, rec.Code, rec.Body, tt.wantStatus, tt.wantBody)
		}
		if got := rec.Header().Get("X-Demo-Version"); got != "1.2.3" {
			t.Errorf("%s: %s %s: X-Demo-Version = %q, want 1.2.3", tt.mode, tt.method, tt.path, got)
		}
	}
}

func TestHandlerRequestDelay(t *testing.T) {
	const delay = 100 * time.Millisecond
	srv := httptest.NewServer(newHandler(config{Version: "1", Mode: modeOK, RequestDelay: delay}, "h"))
	defer srv.Close()
	start := time.Now()
	resp, err := srv.Client().Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if took := time.Since(start); took < delay {
		t.Errorf("GET / took %s, want at least %s", took, delay)
	}
	if string(body) != "hello from h version 1\n" {
		t.Errorf("GET / = %q", body)
	}
}

func TestParseFlags(t *testing.T) {
	defaults := config{
		Version:         "0.0.0-dev",
		Mode:            modeOK,
		Listen:          defaultListen,
		CrashAfter:      3 * time.Second,
		StartDelay:      2 * time.Second,
		ShutdownTimeout: defaultShutdownTimeout,
	}
	tests := []struct {
		name    string
		baked   map[*string]string
		args    []string
		want    func(*config)
		wantErr string
	}{
		{name: "defaults", want: func(*config) {}},
		{
			name:  "build values",
			baked: map[*string]string{&version: "2.0.0", &mode: modeCrashAfter, &crashAfter: "1s", &startDelay: "5s"},
			want: func(c *config) {
				c.Version, c.Mode, c.CrashAfter, c.StartDelay = "2.0.0", modeCrashAfter, time.Second, 5*time.Second
			},
		},
		{
			name:  "flags override build values",
			baked: map[*string]string{&version: "2.0.0", &mode: modeFailHealth, &crashAfter: "1s"},
			args:  []string{"--version", "2.0.1", "--mode", "ok", "--crash-after", "4s", "--listen", "127.0.0.1:9", "--request-delay", "50ms", "--shutdown-timeout", "1s"},
			want: func(c *config) {
				c.Version, c.Mode, c.CrashAfter, c.Listen = "2.0.1", modeOK, 4*time.Second, "127.0.0.1:9"
				c.RequestDelay, c.ShutdownTimeout = 50*time.Millisecond, time.Second
			},
		},
		{name: "bad build duration", baked: map[*string]string{&crashAfter: "soon"}, wantErr: "main.crashAfter"},
		{name: "bad flag", args: []string{"--nope"}, wantErr: "nope"},
		{name: "extra argument", args: []string{"serve"}, wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for p, v := range tt.baked {
				old := *p
				*p = v
				t.Cleanup(func() { *p = old })
			}
			got, err := parseFlags(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := defaults
			tt.want(&want)
			if got != want {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	valid := config{Version: "1", Mode: modeOK, Listen: defaultListen, CrashAfter: time.Second, ShutdownTimeout: time.Second}
	tests := []struct {
		name    string
		change  func(*config)
		wantErr string
	}{
		{"valid", func(*config) {}, ""},
		{"other mode", func(c *config) { c.Mode = modeSlowStart }, ""},
		{"empty version", func(c *config) { c.Version = "" }, "version"},
		{"unknown mode", func(c *config) { c.Mode = "wobbly" }, `unknown mode "wobbly"`},
		{"flaky", func(c *config) { c.Mode = modeFlaky }, ""},
		{"empty listen", func(c *config) { c.Listen = "" }, "listen"},
		{"zero crash-after", func(c *config) { c.Mode, c.CrashAfter = modeCrashAfter, 0 }, "crash-after"},
		{"negative start-delay", func(c *config) { c.StartDelay = -time.Second }, "start-delay"},
		{"negative request-delay", func(c *config) { c.RequestDelay = -time.Second }, "request-delay"},
		{"zero shutdown-timeout", func(c *config) { c.ShutdownTimeout = 0 }, "shutdown-timeout"},
	}
	for _, tt := range tests {
		c := valid
		tt.change(&c)
		err := c.Validate()
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: err = %v, want one containing %q", tt.name, err, tt.wantErr)
		}
	}
}

// TestHandlerFlakyAndMetrics: flaky mode answers 3 of every 100 requests of / with
// 500 while /healthz stays fine, and /metrics counts them by code, for the host.
func TestHandlerFlakyAndMetrics(t *testing.T) {
	h := newHandler(config{Version: "1.2.3", Mode: modeFlaky}, "web-01")
	get := func(path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec
	}
	codes := map[int]int{}
	for range 200 {
		codes[get("/").Code]++
		if c := get("/healthz").Code; c != 200 {
			t.Fatalf("flaky: /healthz = %d", c)
		}
	}
	if codes[500] != 6 || codes[200] != 194 {
		t.Errorf("flaky: codes of 200 requests = %v, want 6 500s and 194 200s", codes)
	}
	body := get("/metrics").Body.String()
	for _, want := range []string{
		`http_requests_total{code="200",host="web-01"} 194`,
		`http_requests_total{code="500",host="web-01"} 6`,
		`http_request_duration_seconds_count{host="web-01"} 200`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %s:\n%s", want, body)
		}
	}
}

// TestHandlerSlow: slow mode adds 300 ms to every request of /; /healthz still answers.
func TestHandlerSlow(t *testing.T) {
	srv := httptest.NewServer(newHandler(config{Version: "1", Mode: modeSlow}, "h"))
	defer srv.Close()
	took := func(path string) time.Duration {
		start := time.Now()
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("slow: GET %s = %s", path, resp.Status)
		}
		return time.Since(start)
	}
	if d := took("/"); d < slowDelay {
		t.Errorf("slow: GET / took %s, want at least %s", d, slowDelay)
	}
	took("/healthz")
}
