package release

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-fleet/baton/spec"
)

// A server's Retry-After is obeyed only up to the client's RetryWaitMax: a 503 asking
// for a year of patience must not hold the agent's loop.
func TestDownloadCapsRetryAfter(t *testing.T) {
	body := []byte("artifact")
	for _, retryAfter := range []string{
		"31536000",            // a year, in seconds
		"9223372036854775807", // overflows into a negative wait
		time.Now().AddDate(1, 0, 0).UTC().Format(http.TimeFormat),
	} {
		var calls atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if calls.Add(1) == 1 {
				w.Header().Set("Retry-After", retryAfter)
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return
			}
			w.Write(body)
		}))
		state := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r := rendered(state, spec.Artifact{URL: srv.URL + "/a", SHA256: sum(body), Name: "a"})
		start := time.Now()
		_, err := (&Stager{StateDir: state, Client: fastClient(), AllowInsecure: loopback}).Stage(ctx, r)
		cancel()
		srv.Close()
		if err != nil {
			t.Errorf("Retry-After %s: %v", retryAfter, err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("Retry-After %s: took %v", retryAfter, took)
		}
		if n := calls.Load(); n != 2 {
			t.Errorf("Retry-After %s: %d requests, want 2", retryAfter, n)
		}
	}
}

// The default client waits at most DefaultRetryWaitMax between attempts.
func TestDefaultClientCapsBackoff(t *testing.T) {
	c := (&Stager{StateDir: t.TempDir()}).client()
	resp := &http.Response{StatusCode: http.StatusServiceUnavailable, Header: http.Header{"Retry-After": {"31536000"}}}
	if got := c.Backoff(c.RetryWaitMin, c.RetryWaitMax, 1, resp); got != DefaultRetryWaitMax {
		t.Errorf("backoff after Retry-After of a year = %v, want %v", got, DefaultRetryWaitMax)
	}
}

// The attempts of one download, waits included, end at the RetryBudget.
func TestDownloadRetryBudget(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	c := fastClient()
	c.RetryMax = 1000
	c.RetryWaitMin, c.RetryWaitMax = 20*time.Millisecond, 20*time.Millisecond // 20 s in all without a budget
	state := t.TempDir()
	r := rendered(state, spec.Artifact{URL: srv.URL + "/a", SHA256: sum([]byte("x")), Name: "a"})
	start := time.Now()
	_, err := (&Stager{StateDir: state, Client: c, AllowInsecure: loopback, RetryBudget: 300 * time.Millisecond}).Stage(context.Background(), r)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("took %v, want the budget of 300ms", took)
	}
	if err == nil || !strings.Contains(err.Error(), "no answer within 300ms") {
		t.Errorf("err = %v, want the budget spent", err)
	}
	if errors.Is(err, context.Canceled) {
		t.Errorf("err = %v: a spent budget is not a cancellation", err)
	}
	if l := leftovers(t, state); l != nil {
		t.Errorf("left behind %q", l)
	}
}

// Every hop of a redirect obeys the policy of the artifact's URL.
func TestDownloadRedirects(t *testing.T) {
	body := []byte("artifact")
	var hits atomic.Int32
	// target serves the artifact; it answers on 127.0.0.1, also reached as localhost.
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write(body)
	}))
	defer target.Close()
	_, port, _ := net.SplitHostPort(target.Listener.Addr().String())
	tlsTarget := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write(body)
	}))
	defer tlsTarget.Close()
	redirect := func(tls bool, to func(r *http.Request) string) *httptest.Server {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, to(r), http.StatusFound) })
		if tls {
			return httptest.NewTLSServer(h)
		}
		return httptest.NewServer(h)
	}
	tests := []struct {
		name string
		from *httptest.Server
		want string // in the error; "" for a download
	}{
		{"http to an allowed host", redirect(false, func(*http.Request) string { return target.URL + "/a" }), ""},
		{"https to https", redirect(true, func(*http.Request) string { return tlsTarget.URL + "/a" }), ""},
		{"http to a host not allowed", redirect(false, func(*http.Request) string { return "http://localhost:" + port + "/a?token=t0ken" }),
			"redirect to http://localhost:" + port + "/a?token=REDACTED refused: plain http:// is refused"},
		{"https to http, to an allowed host", redirect(true, func(*http.Request) string { return target.URL + "/a" }),
			"redirect to " + target.URL + "/a refused: a downgrade from https:// to http://"},
		{"to another scheme", redirect(false, func(*http.Request) string { return "ftp://127.0.0.1/a" }),
			"redirect to ftp://127.0.0.1/a refused: the scheme must be http or https"},
		{"a loop", redirect(false, func(r *http.Request) string { return r.URL.Path + "x" }), "more than 10 redirects"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer tt.from.Close()
			hits.Store(0)
			c := fastClient()
			c.HTTPClient = tlsTarget.Client() // trusts both TLS test servers: they share a certificate
			state := t.TempDir()
			r := rendered(state, spec.Artifact{URL: tt.from.URL + "/a", SHA256: sum(body), Name: "a"})
			_, err := (&Stager{StateDir: state, Client: c, AllowInsecure: loopback}).Stage(context.Background(), r)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Stage: %v", err)
			case tt.want == "":
				return
			case err == nil || !strings.Contains(err.Error(), tt.want):
				t.Fatalf("Stage = %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "t0ken") {
				t.Errorf("the error shows the query: %v", err)
			}
			if n := hits.Load(); n != 0 {
				t.Errorf("the refused hop was fetched %d times", n)
			}
		})
	}
}

// The policy is a pure function of the URL and the hops before it.
func TestPolicyCheckRedirect(t *testing.T) {
	p := policy{allowInsecure: []string{"127.0.0.1", "mirror.lan"}}
	req := func(raw string) *http.Request {
		r, err := http.NewRequest(http.MethodGet, raw, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	chain := func(raws ...string) []*http.Request {
		var out []*http.Request
		for _, r := range raws {
			out = append(out, req(r))
		}
		return out
	}
	long := make([]string, maxRedirects)
	for i := range long {
		long[i] = fmt.Sprintf("https://h/%d", i)
	}
	tests := []struct {
		to   string
		via  []string
		want string
	}{
		{"https://cdn.example.com/a", []string{"https://releases.example.com/a"}, ""},
		{"http://mirror.lan/a", []string{"http://127.0.0.1/a"}, ""},
		{"http://localhost/a", []string{"http://127.0.0.1/a"}, "plain http:// is refused"},
		{"http://mirror.lan/a", []string{"https://releases.example.com/a"}, "downgrade"},
		{"http://mirror.lan/a", []string{"http://127.0.0.1/a", "https://releases.example.com/a"}, "downgrade"},
		{"file:///etc/shadow", []string{"https://releases.example.com/a"}, "the scheme must be http or https"},
		{"https://h/x", long, "more than 10 redirects"},
	}
	for _, tt := range tests {
		err := p.checkRedirect(req(tt.to), chain(tt.via...))
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s via %v: %v", tt.to, tt.via, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s via %v: %v, want %q", tt.to, tt.via, err, tt.want)
		}
	}
}

// What the release itself gets wrong is told apart from what the host or the network
// gets wrong: the agent quarantines the first and tries the second again later.
func TestStageErrorsSayWhetherTheArtifactIsBad(t *testing.T) {
	good := []byte("the artifact")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Write(good)
		case "/missing":
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	host = host[:strings.LastIndex(host, ":")]
	tests := []struct {
		name string
		url  string
		sum  string
		bad  bool
	}{
		{"sha256 mismatch", srv.URL + "/ok", strings.Repeat("0", 64), true},
		{"plain http not allowed", "http://not-allowed.invalid/x", sum(good), true},
		{"not found on the server", srv.URL + "/missing", sum(good), false},
		{"server down", "http://" + host + ":1/x", sum(good), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state := t.TempDir()
			s := &Stager{StateDir: state, Client: fastClient(), AllowInsecure: loopback, RetryBudget: 2 * time.Second}
			_, err := s.Stage(t.Context(), rendered(state, spec.Artifact{URL: tt.url, SHA256: tt.sum, Name: "app"}))
			if err == nil {
				t.Fatal("Stage succeeded")
			}
			if got := errors.Is(err, ErrBadArtifact); got != tt.bad {
				t.Errorf("errors.Is(%v, ErrBadArtifact) = %v, want %v", err, got, tt.bad)
			}
		})
	}
}
