package testgit

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// HTTPOption changes how ServeHTTP serves.
type HTTPOption func(*httpConfig)

type httpConfig struct {
	token  string
	outage *Outage
	wrap   func(http.Handler) http.Handler
}

// WithToken makes the server require HTTP basic auth whose password is token
// (any user name); other requests get 401.
func WithToken(token string) HTTPOption {
	return func(c *httpConfig) { c.token = token }
}

// WithOutage lets the test make the server fail while o says so.
func WithOutage(o *Outage) HTTPOption {
	return func(c *httpConfig) { c.outage = o }
}

// WithWrap puts wrap around the server's handler: a benchmark counts the requests,
// or bounds how many git processes serve at once, as a forge does.
func WithWrap(wrap func(http.Handler) http.Handler) HTTPOption {
	return func(c *httpConfig) { c.wrap = wrap }
}

// Outage makes a server fail on demand. The zero value is a server that works.
type Outage struct {
	mode       atomic.Int32
	retryAfter atomic.Value // string: the Retry-After of RateLimited
}

// OutageMode is how a failing server fails.
type OutageMode int32

const (
	Up          OutageMode = iota // serve normally
	Unavailable                   // answer 503 Service Unavailable
	HangUp                        // close the connection without an answer
	RateLimited                   // answer 429 Too Many Requests (see RateLimit)
)

// Set switches the outage mode; it takes effect on the next request.
func (o *Outage) Set(m OutageMode) { o.mode.Store(int32(m)) }

// RateLimit makes the server answer 429 Too Many Requests with retryAfter as its
// Retry-After header ("" for none), as a forge past its rate limit does.
func (o *Outage) RateLimit(retryAfter string) {
	o.retryAfter.Store(retryAfter)
	o.Set(RateLimited)
}

// Mode is the current outage mode.
func (o *Outage) Mode() OutageMode { return OutageMode(o.mode.Load()) }

// ServeHTTP serves repo's bare repository over git's smart HTTP protocol
// (git http-backend behind net/http/cgi) on a loopback port until the test
// ends. It returns the repository URL and a counter of the response body
// bytes served.
func ServeHTTP(t testing.TB, repo *Repo, opts ...HTTPOption) (string, *atomic.Int64) {
	t.Helper()
	var cfg httpConfig
	for _, o := range opts {
		o(&cfg)
	}
	execPath, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatalf("git --exec-path: %v", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend")
	cgiHandler := &cgi.Handler{
		Path: backend,
		Dir:  filepath.Dir(repo.Bare),
		Env: append(repo.Environ(),
			"GIT_PROJECT_ROOT="+filepath.Dir(repo.Bare),
			"GIT_HTTP_EXPORT_ALL=1",
		),
		Stderr: &logWriter{t: t, prefix: "git http-backend: "},
	}
	served := new(atomic.Int64)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cfg.outage != nil {
			switch cfg.outage.Mode() {
			case Unavailable:
				http.Error(w, "down for the test", http.StatusServiceUnavailable)
				return
			case HangUp:
				hangUp(w)
				return
			case RateLimited:
				if ra, _ := cfg.outage.retryAfter.Load().(string); ra != "" {
					w.Header().Set("Retry-After", ra)
				}
				http.Error(w, "rate limit exceeded", http.StatusTooManyRequests)
				return
			}
		}
		if cfg.token != "" {
			_, pass, ok := r.BasicAuth()
			if !ok || subtle.ConstantTimeCompare([]byte(pass), []byte(cfg.token)) != 1 {
				w.Header().Set("WWW-Authenticate", `Basic realm="testgit"`)
				http.Error(w, "bad credentials", http.StatusUnauthorized)
				return
			}
		}
		cgiHandler.ServeHTTP(&countingWriter{ResponseWriter: w, n: served}, r)
	})
	var handler http.Handler = h
	if cfg.wrap != nil {
		handler = cfg.wrap(h)
	}
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return srv.URL + "/" + filepath.Base(repo.Bare), served
}

func hangUp(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n.Add(int64(n))
	return n, err
}

func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logWriter sends what a server's child process prints to the test log.
type logWriter struct {
	t      testing.TB
	prefix string
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.t.Log(w.prefix + strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (m OutageMode) String() string {
	switch m {
	case Up:
		return "up"
	case Unavailable:
		return "unavailable"
	case HangUp:
		return "hang-up"
	case RateLimited:
		return "rate-limited"
	}
	return fmt.Sprintf("OutageMode(%d)", int32(m))
}
