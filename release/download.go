package release

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/baton-fleet/baton/internal/httpretry"
	"github.com/baton-fleet/baton/internal/redact"
	"github.com/baton-fleet/baton/spec"
)

// Settings of the default HTTP client.
const (
	DefaultRetryMax              = 4                // retries after the first attempt
	DefaultRetryWaitMin          = time.Second      // the wait between attempts doubles from here...
	DefaultRetryWaitMax          = 30 * time.Second // ...up to here, a Retry-After included
	DefaultResponseHeaderTimeout = 30 * time.Second // from the request sent to the response headers
	DefaultStallTimeout          = 60 * time.Second // a download that receives nothing this long fails
	// DefaultRetryBudget bounds a download's attempts, from the first request to the
	// response headers that start the body, waits and redirects included.
	DefaultRetryBudget = 5 * time.Minute
	// maxRedirects is how many redirects one attempt follows, as net/http does.
	maxRedirects = 10
)

// errStalled cancels a download that stopped receiving data.
var errStalled = fmt.Errorf("no data received for %s", DefaultStallTimeout)

// newClient is the client a Stager without one uses: retries with the library's
// exponential backoff (RetryMax 4, 1s to 30s), bounded dial, TLS handshake and
// response header times, and no overall timeout, which a large download could not
// meet; Stager.download fails a stalled one instead. The library's own logger is
// silenced; retries are logged to log, with the URL's secrets redacted.
func newClient(log *slog.Logger) *retryablehttp.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = DefaultResponseHeaderTimeout
	c := retryablehttp.NewClient()
	c.HTTPClient = &http.Client{Transport: t}
	c.Logger = nil
	c.RetryMax = DefaultRetryMax
	c.RetryWaitMin, c.RetryWaitMax = DefaultRetryWaitMin, DefaultRetryWaitMax
	c.RequestLogHook = func(_ retryablehttp.Logger, req *http.Request, attempt int) {
		if attempt > 0 {
			log.Warn("retry artifact download", "url", redact.ParsedURL(req.URL), "attempt", attempt+1)
		}
	}
	return c
}

// bounded returns a client that does what c does, but whose waits between attempts
// never exceed c.RetryWaitMax (however long a server's Retry-After) and whose every
// redirect obeys p: the Stager's policy holds whichever client it was given.
func bounded(c *retryablehttp.Client, p policy) *retryablehttp.Client {
	hc := &http.Client{}
	if c.HTTPClient != nil {
		*hc = *c.HTTPClient
	}
	hc.CheckRedirect = p.checkRedirect
	retry := c.CheckRetry
	if retry == nil {
		retry = retryablehttp.DefaultRetryPolicy
	}
	return &retryablehttp.Client{
		HTTPClient:   hc,
		Logger:       c.Logger,
		RetryWaitMin: c.RetryWaitMin,
		RetryWaitMax: c.RetryWaitMax,
		RetryMax:     c.RetryMax,
		// A refused redirect is the policy's answer, not a failure to retry.
		CheckRetry: func(ctx context.Context, resp *http.Response, err error) (bool, error) {
			if _, ok := errors.AsType[*refusedURL](err); ok {
				return false, err
			}
			return retry(ctx, resp, err)
		},
		Backoff:         httpretry.Capped(c.Backoff),
		RequestLogHook:  c.RequestLogHook,
		ResponseLogHook: c.ResponseLogHook,
		ErrorHandler:    c.ErrorHandler,
		PrepareRetry:    c.PrepareRetry,
	}
}

// policy says where artifacts may come from: http or https, and plain http only from
// the hosts of allowInsecure (the agent's artifacts.allowInsecure). It holds for the
// artifact's URL and for every redirect after it.
type policy struct {
	allowInsecure []string
}

// refusedURL is the error of a URL, or a redirect to one, that the policy refuses. Its
// text shows the URL redacted.
type refusedURL struct {
	url      string // redacted
	redirect bool
	why      string
}

func (e *refusedURL) Error() string {
	if e.redirect {
		return fmt.Sprintf("redirect to %s refused: %s", e.url, e.why)
	}
	return e.why
}

// check refuses u when the policy does not allow it.
func (p policy) check(u *url.URL) *refusedURL {
	refuse := func(format string, args ...any) *refusedURL {
		return &refusedURL{url: redact.ParsedURL(u), why: fmt.Sprintf(format, args...)}
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return refuse("the scheme must be http or https")
	case u.Host == "":
		return refuse("the URL has no host")
	case u.Scheme == "http" && !slices.Contains(p.allowInsecure, u.Hostname()):
		return refuse("plain http:// is refused; use https://, or name the host %s in the agent's artifacts.allowInsecure", u.Hostname())
	}
	return nil
}

// checkRedirect is the http.Client's CheckRedirect: every hop obeys the policy, and a
// chain that reached https never goes back to http, whatever host it names.
func (p policy) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return &refusedURL{url: redact.ParsedURL(req.URL), redirect: true, why: fmt.Sprintf("more than %d redirects", maxRedirects)}
	}
	if e := p.check(req.URL); e != nil {
		e.redirect = true
		return e
	}
	if req.URL.Scheme == "http" {
		for _, r := range via {
			if r.URL.Scheme == "https" {
				return &refusedURL{url: redact.ParsedURL(req.URL), redirect: true, why: "a downgrade from https:// to http://"}
			}
		}
	}
	return nil
}

// download fetches artifact a into f, no more than max bytes, and checks its SHA-256.
// It returns the URL as errors may show it and the size.
func (s *Stager) download(ctx context.Context, a spec.Artifact, i int, f *os.File, max int64) (string, int64, error) {
	want, ok := wantSHA256(a.SHA256)
	if !ok {
		return "", 0, fmt.Errorf("artifact %d: sha256 %q is not 64 hex digits", i+1, a.SHA256)
	}
	u, err := url.Parse(a.URL)
	if err != nil {
		return "", 0, fmt.Errorf("artifact %d: the URL does not parse", i+1) // the error would show the URL
	}
	where := redact.ParsedURL(u)
	if e := s.policy().check(u); e != nil {
		return where, 0, badArtifact{fmt.Errorf("artifact %s: %s", where, e.why)}
	}
	fail := func(err error) (string, int64, error) {
		if e, ok := errors.AsType[*refusedURL](err); ok {
			return where, 0, badArtifact{fmt.Errorf("download %s: %s", where, e)} // the error around it names the hop unredacted
		}
		return where, 0, fmt.Errorf("download %s: %w", where, scrub(err, a.URL, u))
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	resp, err := s.get(ctx, cancel, u)
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return where, 0, fmt.Errorf("download %s: %s", where, resp.Status)
	}
	if resp.ContentLength > max {
		return where, 0, badArtifact{fmt.Errorf("download %s: %d bytes is over the limit of %d", where, resp.ContentLength, max)}
	}
	stall := time.AfterFunc(DefaultStallTimeout, func() { cancel(errStalled) })
	defer stall.Stop()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(&stallReader{r: resp.Body, t: stall}, max+1))
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			err = cause
		}
		return fail(err)
	}
	if n > max {
		return where, 0, badArtifact{fmt.Errorf("download %s: over the limit of %d bytes", where, max)}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return where, 0, badArtifact{fmt.Errorf("artifact %s: sha256 mismatch: got %s, want %s", where, got, want)}
	}
	return where, n, nil
}

// wantSHA256 returns the digest an artifact declares, in lower case, and
// whether it is 64 hex digits.
func wantSHA256(s string) (string, bool) {
	want := strings.ToLower(s)
	if len(want) != sha256.Size*2 {
		return "", false
	}
	if _, err := hex.DecodeString(want); err != nil {
		return "", false
	}
	return want, true
}

// get sends the request for u and returns the response once its headers are
// in. Retries included, it gives up after RetryBudget by cancelling ctx with
// cancel, the cause being what the error says; the body is read under ctx too.
func (s *Stager) get(ctx context.Context, cancel context.CancelCauseFunc, u *url.URL) (*http.Response, error) {
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	budget := cmp.Or(s.RetryBudget, DefaultRetryBudget)
	giveUp := time.AfterFunc(budget, func() { cancel(fmt.Errorf("no answer within %s, retries included", budget)) })
	resp, err := s.client().Do(req)
	if !giveUp.Stop() && err == nil {
		resp.Body.Close()
		err = context.Cause(ctx)
	}
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && errors.Is(err, context.Canceled) {
			err = cause
		}
		return nil, err
	}
	return resp, nil
}

// stallReader pushes its timer back whenever data arrives.
type stallReader struct {
	r io.Reader
	t *time.Timer
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.t.Reset(DefaultStallTimeout)
	}
	return n, err
}

// scrubbed is an error whose text had a URL's secrets removed; it unwraps to the
// original, so that errors.Is still finds context.Canceled and the like.
type scrubbed struct {
	msg string
	err error
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }

// scrub removes every spelling of u (as given, as net/http and retryablehttp print it)
// from err's text, replacing it with redact.ParsedURL(u).
func scrub(err error, raw string, u *url.URL) error {
	msg := err.Error()
	safe := redact.ParsedURL(u)
	spellings := []string{raw, u.String(), u.Redacted()}
	if u.User != nil {
		name := u.User.Username()
		spellings = append(spellings,
			strings.Replace(u.String(), u.User.String()+"@", name+":***@", 1),   // net/http
			strings.Replace(u.String(), u.User.String()+"@", name+":xxxxx@", 1), // retryablehttp
		)
	}
	for _, s := range spellings {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, safe)
		}
	}
	if msg == err.Error() {
		return err
	}
	return &scrubbed{msg: msg, err: err}
}
