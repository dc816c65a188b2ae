package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/baton-fleet/baton/internal/httpserve"
)

// Defaults for Options.
const (
	DefaultMaxBody  = 1 << 20 // GitHub caps its payloads at 25 MB; a push to a fleet repository is a few KiB
	DefaultRemember = 4096    // delivery ids kept to refuse a replay
	// maxSecret bounds the secret file read.
	maxSecret = 4096
)

// Options configure a Receiver.
type Options struct {
	// SecretFile holds the secret shared with the forge (trimmed of surrounding
	// space). It is read at every delivery, so that it can be rotated without a
	// restart; a delivery that comes while it cannot be read is refused (503).
	SecretFile string
	// Repo is the URL of the repository the agent follows (repo.url): a push to
	// any other repository is refused.
	Repo string
	// Branch is the branch the agent follows: a push to another is answered 202
	// and does nothing.
	Branch string
	// MaxBody bounds a delivery's body; DefaultMaxBody when zero.
	MaxBody int64
	// Remember is how many delivery ids are kept; DefaultRemember when zero.
	Remember int
	// Push is called for each accepted push to Repo's Branch, from the request's
	// goroutine; it must not block.
	Push func(forge Forge, p Push)
	// Result, when set, is called with the outcome of each delivery: "fetch",
	// "ignored" or "refused" (for a metric).
	Result func(result string)
	Logger *slog.Logger
}

// Receiver is the http.Handler for webhook deliveries. It is safe for
// concurrent use.
type Receiver struct {
	opts Options
	log  *slog.Logger
	seen *deliveries
}

// New returns a Receiver. It checks that the secret file reads, so that a
// listener that could accept no delivery does not start.
func New(o Options) (*Receiver, error) {
	if o.MaxBody <= 0 {
		o.MaxBody = DefaultMaxBody
	}
	if o.Remember <= 0 {
		o.Remember = DefaultRemember
	}
	if o.Push == nil {
		o.Push = func(Forge, Push) {}
	}
	if o.Result == nil {
		o.Result = func(string) {}
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if _, err := readSecret(o.SecretFile); err != nil {
		return nil, err
	}
	return &Receiver{opts: o, log: log.With("listener", "webhook"), seen: newDeliveries(o.Remember)}, nil
}

// readSecret reads the shared secret: one line, not empty.
func readSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("webhook secret: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSecret+1))
	if err != nil {
		return nil, fmt.Errorf("webhook secret: %w", err)
	}
	if len(data) > maxSecret {
		return nil, fmt.Errorf("webhook secret %s: over %d bytes", path, maxSecret)
	}
	s := bytes.TrimSpace(data)
	if len(s) == 0 {
		return nil, fmt.Errorf("webhook secret %s: empty", path)
	}
	return s, nil
}

// refusal is a delivery turned away: the status the forge sees and the reason, in
// the answer and on one log line.
type refusal struct {
	status int
	why    string
}

func refuse(status int, format string, args ...any) *refusal {
	return &refusal{status: status, why: fmt.Sprintf(format, args...)}
}

// delivery is a request once its forge is known.
type delivery struct {
	forge Forge
	id    string
	event string
	body  []byte
}

// ServeHTTP answers one delivery: 202 for a push that makes the agent fetch, or
// that needs nothing (another branch, a ping, another event), and an error status
// for a refused one: 405 not a POST, 413 a body over MaxBody, 400 no forge's headers
// or a body that does not parse, 401 a missing or wrong signature or token, 409 a
// delivery id already seen, 403 another repository, 503 the secret unreadable.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	answer, ref := r.handle(req)
	if ref != nil {
		r.opts.Result("refused")
		r.log.Warn("webhook delivery refused", "status", ref.status, "reason", ref.why, "from", remoteHost(req))
		http.Error(w, ref.why, ref.status)
		return
	}
	if answer == answerFetch {
		r.opts.Result("fetch")
	} else {
		r.opts.Result("ignored")
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusAccepted)
	fmt.Fprintln(w, answer)
}

func remoteHost(req *http.Request) string {
	if h, _, err := net.SplitHostPort(req.RemoteAddr); err == nil {
		return h
	}
	return req.RemoteAddr
}

// handle decides on one delivery: what to answer, or why it is refused. The
// signature is checked before the delivery id is remembered, so that no one
// without the secret can spend the id of a delivery to come.
func (r *Receiver) handle(req *http.Request) (string, *refusal) {
	if req.Method != http.MethodPost {
		return "", refuse(http.StatusMethodNotAllowed, "%s: deliveries are POSTed", req.Method)
	}
	d, ref := readDelivery(req, r.opts.MaxBody)
	if ref != nil {
		return "", ref
	}
	secret, err := readSecret(r.opts.SecretFile)
	if err != nil {
		r.log.Error("read the webhook secret", "err", err)
		return "", refuse(http.StatusServiceUnavailable, "the receiver cannot read its secret")
	}
	if ref := authenticate(d.forge, req.Header, d.body, secret); ref != nil {
		return "", ref
	}
	if !r.seen.add(string(d.forge) + "/" + d.id) {
		return "", refuse(http.StatusConflict, "%s delivery %s already received (a replay)", d.forge, d.id)
	}
	if !isPushEvent(d.forge, d.event) {
		r.log.Info("webhook delivery ignored", "forge", d.forge, "delivery", d.id, "event", d.event)
		return fmt.Sprintf("ignored: event %q is not a push", d.event), nil
	}
	p, err := ParsePush(d.forge, d.body)
	if err != nil {
		return "", refuse(http.StatusBadRequest, "%s delivery %s: %v", d.forge, d.id, err)
	}
	if !sameRepo(r.opts.Repo, p.Repos) {
		return "", refuse(http.StatusForbidden, "%s delivery %s: a push to %s, not to the repository this agent follows", d.forge, d.id, printable(p.Repos[0]))
	}
	if b := p.Branch(); b != r.opts.Branch {
		// Answered 2xx: a push to another branch is no fault of the hook, and
		// GitLab disables a hook that keeps failing.
		r.log.Info("webhook push ignored: another branch", "forge", d.forge, "delivery", d.id, "ref", printable(p.Ref), "branch", r.opts.Branch)
		return fmt.Sprintf("ignored: %s is not refs/heads/%s", printable(p.Ref), r.opts.Branch), nil
	}
	r.log.Info("webhook push: fetching now", "forge", d.forge, "delivery", d.id, "branch", r.opts.Branch, "after", printable(shortID(p.After)))
	r.opts.Push(d.forge, p)
	return answerFetch, nil
}

// answerFetch is the answer to a push that makes the fleet fetch.
const answerFetch = "fetching now"

// readDelivery tells the forge from the headers and reads the body, up to max.
func readDelivery(req *http.Request, max int64) (delivery, *refusal) {
	h := req.Header
	var d delivery
	switch {
	case h.Get("X-Gitea-Event") != "" || h.Get("X-Forgejo-Event") != "":
		d = delivery{forge: Gitea, id: first(h, "X-Gitea-Delivery", "X-Forgejo-Delivery"), event: first(h, "X-Gitea-Event", "X-Forgejo-Event")}
	case h.Get("X-GitHub-Event") != "":
		d = delivery{forge: GitHub, id: h.Get("X-GitHub-Delivery"), event: h.Get("X-GitHub-Event")}
	case h.Get("X-Gitlab-Event") != "":
		d = delivery{forge: GitLab, id: first(h, "X-Gitlab-Event-UUID", "X-Gitlab-Webhook-UUID", "Idempotency-Key"), event: h.Get("X-Gitlab-Event")}
	default:
		return d, refuse(http.StatusBadRequest, "no X-GitHub-Event, X-Gitea-Event or X-Gitlab-Event header: not a webhook delivery this receiver reads")
	}
	if d.id == "" {
		return d, refuse(http.StatusBadRequest, "%s delivery without a delivery id header: replays could not be told apart", d.forge)
	}
	if len(d.id) > 128 || !printableASCII(d.id) {
		return d, refuse(http.StatusBadRequest, "%s delivery id is not a short printable string", d.forge)
	}
	if req.ContentLength > max {
		return d, refuse(http.StatusRequestEntityTooLarge, "%s delivery %s: body of %d bytes, over the limit of %d", d.forge, d.id, req.ContentLength, max)
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, max+1))
	if err != nil {
		return d, refuse(http.StatusBadRequest, "%s delivery %s: read the body: %v", d.forge, d.id, err)
	}
	if int64(len(body)) > max {
		return d, refuse(http.StatusRequestEntityTooLarge, "%s delivery %s: body over the limit of %d bytes", d.forge, d.id, max)
	}
	d.body = body
	return d, nil
}

func first(h http.Header, names ...string) string {
	for _, n := range names {
		if v := h.Get(n); v != "" {
			return v
		}
	}
	return ""
}

// authenticate checks a delivery against the secret: GitHub signs the body with
// HMAC-SHA256 in X-Hub-Signature-256 ("sha256=<hex>"), Gitea and Forgejo in
// X-Gitea-Signature (or X-Forgejo-Signature, "<hex>"), and GitLab sends the secret
// itself in X-Gitlab-Token. Every comparison takes constant time.
func authenticate(forge Forge, h http.Header, body, secret []byte) *refusal {
	switch forge {
	case GitLab:
		token := h.Get("X-Gitlab-Token")
		if token == "" {
			return refuse(http.StatusUnauthorized, "gitlab delivery without X-Gitlab-Token")
		}
		if subtle.ConstantTimeCompare([]byte(token), secret) != 1 {
			return refuse(http.StatusUnauthorized, "gitlab delivery: X-Gitlab-Token is not the secret")
		}
		return nil
	case GitHub:
		sig, ok := strings.CutPrefix(h.Get("X-Hub-Signature-256"), "sha256=")
		if !ok {
			return refuse(http.StatusUnauthorized, "github delivery without X-Hub-Signature-256 (set a secret on the hook)")
		}
		return checkHMAC(forge, "X-Hub-Signature-256", sig, body, secret)
	default:
		name := "X-Gitea-Signature"
		sig := h.Get(name)
		if sig == "" {
			name = "X-Forgejo-Signature"
			sig = h.Get(name)
		}
		if sig == "" {
			return refuse(http.StatusUnauthorized, "gitea delivery without X-Gitea-Signature (set a secret on the hook)")
		}
		return checkHMAC(forge, name, sig, body, secret)
	}
}

func checkHMAC(forge Forge, header, sig string, body, secret []byte) *refusal {
	got, err := hex.DecodeString(sig)
	if err != nil || len(got) != sha256.Size {
		return refuse(http.StatusUnauthorized, "%s delivery: %s is not a SHA-256 in hex", forge, header)
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	if !hmac.Equal(got, m.Sum(nil)) {
		return refuse(http.StatusUnauthorized, "%s delivery: %s does not match the body and the secret", forge, header)
	}
	return nil
}

func isPushEvent(forge Forge, event string) bool {
	switch forge {
	case GitLab:
		return event == "Push Hook"
	default:
		return event == "push"
	}
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// printable bounds s, taken from a body, for an answer or a log line.
func printable(s string) string {
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

func shortID(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// deliveries remembers the last n delivery ids.
type deliveries struct {
	mu    sync.Mutex
	ids   map[string]bool
	order []string // a ring of ids, oldest at next
	next  int
}

func newDeliveries(n int) *deliveries {
	return &deliveries{ids: make(map[string]bool, n), order: make([]string, n)}
}

// add remembers id, forgetting the oldest when full; false when id was known.
func (d *deliveries) add(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ids[id] {
		return false
	}
	if old := d.order[d.next]; old != "" {
		delete(d.ids, old)
	}
	d.order[d.next] = id
	d.ids[id] = true
	d.next = (d.next + 1) % len(d.order)
	return true
}

// Serve answers deliveries on l until ctx ends, then closes l. The server's
// timeouts bound a slow client.
func Serve(ctx context.Context, l net.Listener, h http.Handler, logger *slog.Logger) error {
	logger.Info("receiving webhooks", "addr", l.Addr().String())
	srv := httpserve.Server(h)
	srv.MaxHeaderBytes = 64 << 10
	if err := httpserve.Run(ctx, l, srv); err != nil {
		return fmt.Errorf("serve webhooks: %w", err)
	}
	return nil
}
