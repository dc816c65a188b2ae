package checks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/baton-fleet/baton/spec"
)

// Prober runs checks once each. The zero value is ready to use.
type Prober struct {
	// User, when set, runs exec checks (and Exec's commands) as this user, with its
	// primary and supplementary groups, looked up with os/user. It needs root. A
	// check's own exec.user takes precedence.
	User string
	// HTTPClient makes the requests of HTTP checks. Nil: a client that keeps no
	// connection between probes, ignores proxy variables and follows at most 3
	// redirects (then the redirect itself is the answer checked).
	HTTPClient *http.Client
	// DieWithAgent has the kernel kill Exec's command (SIGKILL) when the process
	// that runs it dies, however it dies: a data migration must not run on after its
	// runner, whose lock then expires and lets another runner start.
	DieWithAgent bool
}

// maxRedirects is how many redirects the default HTTP client follows.
const maxRedirects = 3

// Probe runs one check once with a zero Prober.
func Probe(ctx context.Context, c spec.Check) Result {
	return (&Prober{}).Probe(ctx, c)
}

// Probe runs one check once, bounded by c.Timeout and ctx:
//   - http: GET c.HTTP.URL; passes when the status is c.HTTP.Status and the first
//     64 KiB of the body contain c.HTTP.Contains;
//   - tcp: passes when c.TCP.Address accepts a connection;
//   - exec: runs c.Exec.Command as Exec does, as c.Exec.User when set (else as
//     p.User); passes when it exits 0. A user that cannot be looked up fails the
//     check, naming the user in Err and Output.
//
// Knobs left at zero take spec's defaults.
func (p *Prober) Probe(ctx context.Context, c spec.Check) Result {
	c = withDefaults(c)
	r := Result{Check: checkName(c), At: time.Now()}
	timeout := c.Timeout.D()
	var err error
	switch {
	case c.HTTP != nil:
		r.Output, err = p.probeHTTP(ctx, c.HTTP, timeout)
	case c.TCP != nil:
		r.Output, err = probeTCP(ctx, c.TCP.Address, timeout)
	case c.Exec != nil:
		q := p
		if c.Exec.User != "" {
			cp := *p
			cp.User = c.Exec.User
			q = &cp
		}
		r.Output, err = q.Exec(ctx, c.Exec.Command, timeout)
	default:
		err = errors.New("the check has none of http, tcp, exec")
	}
	r.Duration = time.Since(r.At)
	r.OK = err == nil
	if err != nil {
		r.Err = err.Error()
	}
	return r
}

func (p *Prober) httpClient() *http.Client {
	if p.HTTPClient != nil {
		return p.HTTPClient
	}
	return &http.Client{
		Transport: &http.Transport{
			DisableKeepAlives:  true,
			DisableCompression: true,
		},
		CheckRedirect: func(_ *http.Request, via []*http.Request) error {
			if len(via) > maxRedirects {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
}

func (p *Prober) probeHTTP(ctx context.Context, h *spec.HTTPCheck, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fail := func(format string, a ...any) error {
		return fmt.Errorf("GET %s: %s", h.URL, fmt.Sprintf(format, a...))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.URL, nil)
	if err != nil {
		return "", fail("%v", err)
	}
	req.Header.Set("User-Agent", "baton-check")
	resp, err := p.httpClient().Do(req)
	if err != nil {
		msg := describe(ctx, err, timeout)
		return msg, fail("%s", msg)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyRead))
	out := resp.Proto + " " + resp.Status + "\n" + printable(body[:min(len(body), maxBodyShow)])
	switch {
	case err != nil:
		return out, fail("read body: %s", describe(ctx, err, timeout))
	case resp.StatusCode != h.Status:
		return out, fail("status %d, want %d", resp.StatusCode, h.Status)
	case !bytes.Contains(body, []byte(h.Contains)):
		return out, fail("body does not contain %q", h.Contains)
	}
	return out, nil
}

func probeTCP(ctx context.Context, addr string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		msg := fmt.Sprintf("connect %s: %s", addr, describe(ctx, err, timeout))
		return msg, errors.New(msg)
	}
	out := fmt.Sprintf("connected to %s from %s", conn.RemoteAddr(), conn.LocalAddr())
	conn.Close()
	return out, nil
}

// describe says why a request or dial bounded by ctx failed, in a few words.
func describe(ctx context.Context, err error, timeout time.Duration) string {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Sprintf("no answer within %s", timeout)
	case ctx.Err() != nil:
		return "canceled"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return uerr.Err.Error()
	}
	return err.Error()
}
