package events

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/baton-fleet/baton/internal/httpretry"
	"github.com/baton-fleet/baton/internal/redact"
)

// The headers of a webhook request.
const (
	HeaderEvent     = "X-Baton-Event"     // the event type
	HeaderDelivery  = "X-Baton-Delivery"  // one id per event, the same on every retry: receivers deduplicate on it
	HeaderSignature = "X-Baton-Signature" // "sha256=<hex HMAC-SHA256 of the body>", when the hook has a secret
)

// Defaults of a Sender; each has an Option.
const (
	DefaultQueueSize    = 256              // events waiting per hook; the oldest is dropped past it
	DefaultAttempts     = 5                // tries per event, the first included
	DefaultTimeout      = 10 * time.Second // per try
	DefaultRetryWaitMin = time.Second      // backoff between tries doubles from here...
	DefaultRetryWaitMax = 30 * time.Second // ...up to here
	DefaultFlushTimeout = 2 * time.Second  // time left to send what is queued when the Sender stops
)

// The outcomes of one event for one hook, as passed to the WithResult callback.
const (
	ResultSent    = "sent"    // the receiver answered 2xx
	ResultFailed  = "failed"  // every try failed, or the receiver refused it (4xx)
	ResultDropped = "dropped" // never sent: the queue was full, or the Sender stopped
)

// Webhook is one receiver of events.
type Webhook struct {
	URL    string
	Secret []byte // optional HMAC-SHA256 key: requests then carry X-Baton-Signature
}

// Option changes a default of a Sender.
type Option func(*Sender)

// WithQueueSize sets how many events wait per hook (DefaultQueueSize).
func WithQueueSize(n int) Option { return func(s *Sender) { s.queueSize = max(n, 1) } }

// WithAttempts sets how many times an event is tried, the first included (DefaultAttempts).
func WithAttempts(n int) Option { return func(s *Sender) { s.attempts = max(n, 1) } }

// WithTimeout sets how long one try may take, connection to response (DefaultTimeout).
func WithTimeout(d time.Duration) Option { return func(s *Sender) { s.timeout = d } }

// WithBackoff sets the wait between tries: it doubles from lo up to hi
// (DefaultRetryWaitMin, DefaultRetryWaitMax), a Retry-After header included.
func WithBackoff(lo, hi time.Duration) Option {
	return func(s *Sender) { s.waitMin, s.waitMax = lo, hi }
}

// WithFlushTimeout sets how long a stopping Sender keeps sending what is queued
// (DefaultFlushTimeout); 0 drops it at once.
func WithFlushTimeout(d time.Duration) Option { return func(s *Sender) { s.flush = d } }

// WithResult sets a function called with ResultSent, ResultFailed or ResultDropped for
// every event and hook, e.g. to count them in metrics. It must not block.
func WithResult(f func(result string)) Option { return func(s *Sender) { s.onResult = f } }

// Sender posts events as JSON to webhooks, in the background. Each hook has its own
// bounded queue and goroutine, so a slow or dead receiver delays nobody: Publish
// never blocks, and a full queue drops its oldest event. Delivery is at least once:
// a receiver that answers 2xx too late may see an event twice (same X-Baton-Delivery).
//
// Run starts the goroutines; Close, or the end of Run's context, stops them.
type Sender struct {
	hooks     []*hook
	log       *slog.Logger
	queueSize int
	attempts  int
	timeout   time.Duration
	waitMin   time.Duration
	waitMax   time.Duration
	flush     time.Duration
	onResult  func(string)

	mu      sync.RWMutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	done    chan struct{}
}

type hook struct {
	index  int
	url    string
	name   string // the URL redacted, for logs
	secret []byte
	client *retryablehttp.Client
	wake   chan struct{}

	mu    sync.Mutex
	queue queue

	sent, failed, dropped atomic.Uint64
}

type queued struct {
	event    Event
	delivery string
}

// NewSender returns a Sender for hooks; it sends nothing until Run. With no hooks,
// Publish does nothing.
func NewSender(hooks []Webhook, logger *slog.Logger, opts ...Option) *Sender {
	s := &Sender{
		log:       logger,
		queueSize: DefaultQueueSize,
		attempts:  DefaultAttempts,
		timeout:   DefaultTimeout,
		waitMin:   DefaultRetryWaitMin,
		waitMax:   DefaultRetryWaitMax,
		flush:     DefaultFlushTimeout,
	}
	for _, o := range opts {
		o(s)
	}
	for i, w := range hooks {
		h := &hook{
			index:  i,
			url:    w.URL,
			name:   redact.URLHost(w.URL), // many webhook services put the token in the path
			secret: bytes.Clone(w.Secret),
			wake:   make(chan struct{}, 1),
			queue:  queue{buf: make([]queued, s.queueSize)},
		}
		h.client = s.newClient()
		s.hooks = append(s.hooks, h)
	}
	return s
}

func (s *Sender) newClient() *retryablehttp.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	return &retryablehttp.Client{
		HTTPClient: &http.Client{
			Transport: transport,
			Timeout:   s.timeout,
			// A redirect is a failure: the event and its signature go only where configured.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		Logger:       nil, // its messages name the URL with its query; Sender logs instead
		RetryWaitMin: s.waitMin,
		RetryWaitMax: s.waitMax,
		RetryMax:     s.attempts - 1,
		CheckRetry:   retryablehttp.DefaultRetryPolicy, // errors, 429 and 5xx
		Backoff:      httpretry.Backoff,                // a Retry-After, however long, waits at most waitMax
		ErrorHandler: func(resp *http.Response, err error, tries int) (*http.Response, error) {
			if resp != nil {
				_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
				resp.Body.Close()
			}
			return nil, &deliveryError{tries: tries, resp: resp, err: err}
		},
	}
}

// Publish queues e for every hook and returns at once. The Sender keeps its own copy
// of e. Events published before Run wait for it; events published after Close are dropped.
func (s *Sender) Publish(e Event) {
	if len(s.hooks) == 0 {
		return
	}
	s.mu.RLock() // against Close: once it has run, nothing more is queued
	defer s.mu.RUnlock()
	q := queued{event: e.clone(), delivery: newDeliveryID()}
	for _, h := range s.hooks {
		if s.closed {
			s.count(h, ResultDropped)
			continue
		}
		h.mu.Lock()
		dropped := h.queue.push(q)
		h.mu.Unlock()
		if dropped {
			s.count(h, ResultDropped)
		}
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
}

// Run sends queued events until ctx ends or Close is called, then spends up to the
// flush timeout sending what is left, and returns once every goroutine has stopped.
// It is called once; it returns an error only if it was called before.
func (s *Sender) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("events sender: Run called twice")
	}
	s.started = true
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	s.cancel, s.done = cancel, make(chan struct{})
	s.mu.Unlock()
	defer close(s.done)
	defer cancel()

	var wg sync.WaitGroup
	for _, h := range s.hooks {
		wg.Go(func() { s.loop(ctx, h) })
	}
	wg.Wait()
	<-ctx.Done() // without hooks, Run still lasts as long as its context
	return nil
}

// Close stops Run, waits for its goroutines, and makes later Publish calls drop their
// events. Without Run, what is queued is dropped. It is safe to call more than once.
func (s *Sender) Close() error {
	s.mu.Lock()
	s.closed = true
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
		return nil
	}
	for _, h := range s.hooks { // Run never ran, and now never will
		h.mu.Lock()
		for {
			if _, ok := h.queue.pop(); !ok {
				break
			}
			s.count(h, ResultDropped)
		}
		h.mu.Unlock()
	}
	return nil
}

// running reports whether Run has started its goroutines.
func (s *Sender) running() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cancel != nil
}

// HookStats counts what happened to the events of one hook.
type HookStats struct {
	URL                   string // redacted
	Queued                int
	Sent, Failed, Dropped uint64
}

// Stats returns the counts of every hook, in the order given to NewSender.
func (s *Sender) Stats() []HookStats {
	out := make([]HookStats, 0, len(s.hooks))
	for _, h := range s.hooks {
		h.mu.Lock()
		n := h.queue.n
		h.mu.Unlock()
		out = append(out, HookStats{URL: h.name, Queued: n, Sent: h.sent.Load(), Failed: h.failed.Load(), Dropped: h.dropped.Load()})
	}
	return out
}

func (s *Sender) loop(ctx context.Context, h *hook) {
	for {
		if ctx.Err() != nil {
			s.drain(ctx, h)
			return
		}
		h.mu.Lock()
		q, ok := h.queue.pop()
		h.mu.Unlock()
		if !ok {
			select {
			case <-ctx.Done():
				s.drain(ctx, h)
				return
			case <-h.wake:
				continue
			}
		}
		if err := s.deliver(ctx, h, q); errors.Is(err, errStopped) {
			// Stopped mid-delivery: the event goes back for the flush.
			h.mu.Lock()
			if h.queue.pushFront(q) {
				s.count(h, ResultDropped)
			}
			h.mu.Unlock()
		}
	}
}

// drain sends what is queued for up to the flush timeout, and drops the rest.
func (s *Sender) drain(ctx context.Context, h *hook) {
	var fctx context.Context = ctx // already done: drops everything
	if s.flush > 0 {
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.flush)
		defer cancel()
		fctx = c
	}
	for {
		h.mu.Lock()
		q, ok := h.queue.pop()
		h.mu.Unlock()
		if !ok {
			return
		}
		if fctx.Err() != nil {
			s.count(h, ResultDropped)
			continue
		}
		if errors.Is(s.deliver(fctx, h, q), errStopped) {
			s.count(h, ResultDropped)
		}
	}
}

// deliver posts one event with retries and counts the outcome. It returns an error
// when the event was not accepted.
func (s *Sender) deliver(ctx context.Context, h *hook, q queued) error {
	body, err := json.Marshal(q.event)
	if err != nil {
		s.count(h, ResultFailed)
		s.log.Error("encode webhook event", "hook", h.index, "url", h.name, "event", q.event.Type, "err", err)
		return err
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, h.url, body)
	if err != nil {
		s.count(h, ResultFailed)
		s.log.Error("send webhook event: bad URL", "hook", h.index, "url", h.name, "event", q.event.Type)
		return errors.New("bad webhook URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "baton")
	req.Header.Set(HeaderEvent, q.event.Type)
	req.Header.Set(HeaderDelivery, q.delivery)
	if len(h.secret) > 0 {
		req.Header.Set(HeaderSignature, Sign(h.secret, body))
	}
	resp, err := h.client.Do(req)
	if err == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			err = &deliveryError{tries: 1, resp: resp}
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return errStopped // not a failure of the receiver
		}
		s.count(h, ResultFailed)
		s.log.Warn("send webhook event", "hook", h.index, "url", h.name, "event", q.event.Type, "delivery", q.delivery, "err", err)
		return err
	}
	s.count(h, ResultSent)
	s.log.Debug("sent webhook event", "hook", h.index, "url", h.name, "event", q.event.Type, "delivery", q.delivery)
	return nil
}

func (s *Sender) count(h *hook, result string) {
	switch result {
	case ResultSent:
		h.sent.Add(1)
	case ResultFailed:
		h.failed.Add(1)
	case ResultDropped:
		h.dropped.Add(1)
	}
	if s.onResult != nil {
		s.onResult(result)
	}
}

// errStopped is deliver's error when the Sender stopped during the delivery.
var errStopped = errors.New("sender stopped")

// deliveryError says why a hook did not take an event, without naming its URL.
type deliveryError struct {
	tries int
	resp  *http.Response
	err   error
}

func (e *deliveryError) Error() string {
	cause := "unexpected response"
	if e.resp != nil {
		cause = "status " + e.resp.Status
	}
	if e.err != nil {
		cause = e.err.Error()
		var ue *url.Error
		if errors.As(e.err, &ue) {
			cause = ue.Err.Error() // url.Error names the URL, query included
		}
	}
	return fmt.Sprintf("after %d tries: %s", e.tries, cause)
}

func (e *deliveryError) Unwrap() error { return e.err }

// Sign returns the X-Baton-Signature value of body: "sha256=" and the hex HMAC-SHA256
// of body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// VerifySignature reports whether header is the signature of body under secret, in
// constant time. Receivers written in Go can use it.
func VerifySignature(secret, body []byte, header string) bool {
	return hmac.Equal([]byte(header), []byte(Sign(secret, body)))
}

func newDeliveryID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// queue is a bounded FIFO that drops its oldest element when full.
type queue struct {
	buf  []queued
	head int
	n    int
}

// push appends q; it reports whether the oldest element was dropped to make room.
func (r *queue) push(q queued) (dropped bool) {
	if r.n == len(r.buf) {
		r.buf[r.head] = queued{}
		r.head = (r.head + 1) % len(r.buf)
		r.n--
		dropped = true
	}
	r.buf[(r.head+r.n)%len(r.buf)] = q
	r.n++
	return dropped
}

// pushFront puts q back at the head; when full, q itself is dropped (it is the oldest).
func (r *queue) pushFront(q queued) (dropped bool) {
	if r.n == len(r.buf) {
		return true
	}
	r.head = (r.head - 1 + len(r.buf)) % len(r.buf)
	r.buf[r.head] = q
	r.n++
	return false
}

func (r *queue) pop() (queued, bool) {
	if r.n == 0 {
		return queued{}, false
	}
	q := r.buf[r.head]
	r.buf[r.head] = queued{}
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return q, true
}
