package lease

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-retryablehttp"
)

// FleetLock protocol constants (Zincati's FleetLock, as served by airlock and others).
const (
	FleetlockHeader       = "fleet-lock-protocol" // sent with the value "true"
	FleetlockDefaultGroup = "default"
	// maxFleetlockBody bounds what is read of a response.
	maxFleetlockBody = 64 << 10
)

// Fleetlock is a client of a FleetLock server: POST {base}/v1/pre-reboot takes a slot
// of a group's semaphore, POST {base}/v1/steady-state gives it back. The agent holds
// the slot from before its first disruptive step until after commit or revert.
//
// What FleetLock cannot do that the etcd lease does (see docs/lease.md):
//   - no expiry: a holder that dies keeps its slot until it comes back and releases
//     it, or someone frees it on the server (with airlock: by hand in etcd);
//   - no fencing and no re-check: Check cannot ask the server whether the slot is still
//     held, so it reports what this process believes (held since Acquire returned);
//   - no fleet halt and no maxParallel from the fleet repository: the number of slots
//     is the server's setting.
//
// Set the exported fields before the first Acquire.
type Fleetlock struct {
	Logger  *slog.Logger  // default: discard
	MinWait time.Duration // first wait after the slot was refused (default 1s)
	MaxWait time.Duration // longest wait between tries (default 30s)

	base   string // without the trailing slash
	baseOK error  // why base is unusable
	id     string
	client *retryablehttp.Client

	mu     sync.Mutex
	group  string // the group of the last Acquire, "" before
	held   bool
	warned bool
}

// NewFleetlock makes the client of the server at baseURL (with or without a trailing
// slash) for host id. client nil means a retryablehttp client with a few quick retries
// of connection errors and 5xx answers.
func NewFleetlock(baseURL, id string, client *retryablehttp.Client) *Fleetlock {
	f := &Fleetlock{id: id, client: client}
	f.base = strings.TrimRight(baseURL, "/")
	u, err := url.Parse(f.base)
	switch {
	case err != nil:
		f.baseOK = fmt.Errorf("FleetLock URL: %w", err)
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		f.baseOK = fmt.Errorf("FleetLock URL %q: want http(s)://host[:port][/path]", baseURL)
	case u.RawQuery != "" || u.Fragment != "":
		f.baseOK = fmt.Errorf("FleetLock URL %q: no query or fragment", baseURL)
	}
	if f.client == nil {
		f.client = retryablehttp.NewClient()
		f.client.Logger = nil
		f.client.RetryMax = 3
		f.client.RetryWaitMin = 200 * time.Millisecond
		f.client.RetryWaitMax = 2 * time.Second
		f.client.HTTPClient.Timeout = 30 * time.Second
	}
	return f
}

func (f *Fleetlock) log() *slog.Logger {
	if f.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return f.Logger.With("lease", "fleetlock")
}

// Acquire takes a slot of group ("" means "default"), trying pre-reboot until the
// server answers 200. A refusal (409, 423, or any answer with a FleetLock error kind)
// means the group's slots are taken: it waits, with a growing jittered backoff, and
// tries again until ctx ends; so does a server that cannot be reached or answers 5xx.
// Any other answer (a 404 from something that is not a FleetLock server) is an error.
// Holding the slot already is a no-op.
func (f *Fleetlock) Acquire(ctx context.Context, group string) error {
	if f.baseOK != nil {
		return fmt.Errorf("acquire FleetLock slot: %w", f.baseOK)
	}
	if group == "" {
		group = FleetlockDefaultGroup
	}
	f.mu.Lock()
	if f.held && f.group == group {
		f.mu.Unlock()
		return nil
	}
	if f.held {
		f.mu.Unlock()
		return fmt.Errorf("acquire FleetLock slot of group %s: this host holds one of group %s; release it first", group, f.group)
	}
	f.group = group
	if !f.warned {
		f.warned = true
		f.log().Info("FleetLock slots do not expire and are not fenced: a holder that dies keeps its slot until it releases it or an operator frees it on the server")
	}
	f.mu.Unlock()

	log := f.log().With("group", group, "id", f.id)
	minWait, maxWait := f.MinWait, f.MaxWait
	if minWait <= 0 {
		minWait = time.Second
	}
	if maxWait < minWait {
		maxWait = max(30*time.Second, minWait)
	}
	wait := minWait
	for attempt := 1; ; attempt++ {
		status, kind, value, err := f.post(ctx, "pre-reboot", group)
		switch {
		case err == nil && status == http.StatusOK:
			f.mu.Lock()
			f.held = true
			f.mu.Unlock()
			log.Info("FleetLock slot acquired", "attempts", attempt)
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("acquire FleetLock slot of group %s: %w", group, ctx.Err())
		case err != nil:
			log.Warn("FleetLock server unreachable; waiting", "err", err)
		case status == http.StatusConflict || status == http.StatusLocked || kind != "":
			log.Info("FleetLock slot refused; waiting", "status", status, "kind", kind, "value", value)
		case status >= 500:
			log.Warn("FleetLock server error; waiting", "status", status)
		default:
			return fmt.Errorf("acquire FleetLock slot of group %s: %s answered HTTP %d, not the FleetLock protocol", group, f.base, status)
		}
		d := wait/2 + rand.N(wait/2+1)
		select {
		case <-ctx.Done():
			return fmt.Errorf("acquire FleetLock slot of group %s: %w", group, ctx.Err())
		case <-time.After(d):
		}
		wait = min(2*wait, maxWait)
	}
}

// Check returns nil while this process believes it holds a slot: from Acquire until
// Release. FleetLock cannot tell more: the server has no way to ask, a slot does not
// expire, and an operator who freed it on the server is not noticed.
func (f *Fleetlock) Check(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.held {
		return fmt.Errorf("check FleetLock slot: %w", ErrNotHeld)
	}
	return nil
}

// Release gives the slot back with steady-state. It is idempotent: it is sent even when
// this process does not believe it holds the slot (a slot taken before a crash is then
// freed), and a server's "not held" answer (200, or 423 from servers that refuse the
// unlock of a slot one does not hold) counts as released. Before any Acquire it is a
// no-op: the group is not known.
func (f *Fleetlock) Release(ctx context.Context) error {
	if f.baseOK != nil {
		return fmt.Errorf("release FleetLock slot: %w", f.baseOK)
	}
	f.mu.Lock()
	group, held := f.group, f.held
	f.mu.Unlock()
	if group == "" {
		return nil
	}
	status, kind, value, err := f.post(ctx, "steady-state", group)
	if err != nil {
		return fmt.Errorf("release FleetLock slot of group %s: %w", group, err)
	}
	switch status {
	case http.StatusOK:
	case http.StatusLocked:
		f.log().Info("FleetLock slot was not held by this host", "group", group, "kind", kind, "value", value)
	default:
		if kind != "" {
			return fmt.Errorf("release FleetLock slot of group %s: HTTP %d: %s: %s", group, status, kind, value)
		}
		return fmt.Errorf("release FleetLock slot of group %s: HTTP %d", group, status)
	}
	f.mu.Lock()
	f.held = false
	f.mu.Unlock()
	if held {
		f.log().Info("FleetLock slot released", "group", group)
	}
	return nil
}

// fleetlockRequest is the body of both calls.
type fleetlockRequest struct {
	ClientParams struct {
		ID    string `json:"id"`
		Group string `json:"group"`
	} `json:"client_params"`
}

// post sends one call and returns the status, and the error kind and value of a
// non-200 answer when it has them. err is a transport error (after the client's
// retries) or a 5xx the client gave up on.
func (f *Fleetlock) post(ctx context.Context, call, group string) (status int, kind, value string, err error) {
	var body fleetlockRequest
	body.ClientParams.ID, body.ClientParams.Group = f.id, group
	b, err := json.Marshal(body)
	if err != nil {
		return 0, "", "", err
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, f.base+"/v1/"+call, b)
	if err != nil {
		return 0, "", "", err
	}
	req.Header.Set(FleetlockHeader, "true")
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, maxFleetlockBody))
	if err != nil && resp.StatusCode != http.StatusOK {
		return 0, "", "", fmt.Errorf("read the answer to %s: %w", call, err)
	}
	if resp.StatusCode != http.StatusOK {
		kind, value, _ = ParseFleetlockError(rb)
	}
	return resp.StatusCode, kind, value, nil
}

// ParseFleetlockError reads a FleetLock error answer: a JSON object with a string
// "kind" (required, non-empty) and a string "value" (optional); other fields are
// ignored. Kind and value are returned as sent, valid UTF-8.
func ParseFleetlockError(body []byte) (kind, value string, err error) {
	if len(body) > maxFleetlockBody {
		return "", "", fmt.Errorf("FleetLock error: %d bytes, more than %d", len(body), maxFleetlockBody)
	}
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&fields); err != nil {
		return "", "", fmt.Errorf("FleetLock error: not a JSON object: %w", err)
	}
	if fields == nil {
		return "", "", errors.New("FleetLock error: not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", "", errors.New("FleetLock error: data after the JSON object")
	}
	raw, ok := fields["kind"]
	if !ok {
		return "", "", errors.New(`FleetLock error: no "kind"`)
	}
	if err := json.Unmarshal(raw, &kind); err != nil || kind == "" {
		return "", "", errors.New(`FleetLock error: "kind" is not a non-empty string`)
	}
	if raw, ok := fields["value"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &value); err != nil {
			return "", "", errors.New(`FleetLock error: "value" is not a string`)
		}
	}
	if !utf8.ValidString(kind) || !utf8.ValidString(value) {
		return "", "", errors.New("FleetLock error: not valid UTF-8")
	}
	return kind, value, nil
}
