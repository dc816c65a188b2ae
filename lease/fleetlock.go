package lease

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/baton-fleet/baton/internal/atomicfile"
	"github.com/baton-fleet/baton/internal/httpretry"
)

// FleetLock protocol constants (Zincati's FleetLock, as served by airlock and others).
const (
	FleetlockHeader       = "fleet-lock-protocol" // sent with the value "true"
	FleetlockDefaultGroup = "default"
	// maxFleetlockBody bounds what is read of a response.
	maxFleetlockBody = 64 << 10
	// maxFleetlockGroup bounds a group name.
	maxFleetlockGroup = 255
)

// Defaults of Fleetlock's settings.
const (
	// DefaultFleetlockPoll is the interval between tries while the slots are taken:
	// each wait is drawn from [Poll, 1.5*Poll), so a waiter sends at most one request
	// a second and holds the slot within 1.5 s of its release.
	DefaultFleetlockPoll = time.Second
	// DefaultFleetlockMaxWait caps every wait: the backoff after the server failed to
	// answer, and a Retry-After the server asks for.
	DefaultFleetlockMaxWait = 15 * time.Second
	// DefaultFleetlockRequestTimeout bounds one request, answer included.
	DefaultFleetlockRequestTimeout = 10 * time.Second
	// fleetlockRemind is how often an unchanged wait is logged again.
	fleetlockRemind = 5 * time.Minute
)

// ErrFleetlockRefused is wrapped by every *FleetlockError.
var ErrFleetlockRefused = errors.New("FleetLock server refused the request")

// FleetlockError is an answer of the server that trying again cannot change: an unknown
// group, a request it cannot read (airlock: HTTP 400 unknown_group,
// invalid_client_identity), or an answer outside the protocol (a 404 from something
// that is not a FleetLock server). Kind and Value are the server's words; Kind is ""
// when the answer had none.
type FleetlockError struct {
	Call   string // "pre-reboot" or "steady-state"
	URL    string // the server's base URL
	Status int
	Kind   string
	Value  string
}

func (e *FleetlockError) Error() string {
	if e.Kind == "" {
		return fmt.Sprintf("%s: %s answered HTTP %d, not the FleetLock protocol", e.Call, e.URL, e.Status)
	}
	return fmt.Sprintf("%s: the FleetLock server refused: HTTP %d %s: %s", e.Call, e.Status, e.Kind, e.Value)
}

// Unwrap makes errors.Is(err, ErrFleetlockRefused) true.
func (e *FleetlockError) Unwrap() error { return ErrFleetlockRefused }

// Fleetlock is a client of a FleetLock server: POST {base}/v1/pre-reboot takes a slot
// of a group's semaphore, POST {base}/v1/steady-state gives it back. The agent holds
// the slot from before its first disruptive step until after commit or revert.
//
// A slot of FleetLock never expires, so this client makes sure it is given back:
//   - before the first pre-reboot it writes MarkPath, "this host may hold a slot of
//     this group on this server", and removes it once steady-state succeeded; a
//     Release after a restart (recovery) reads it and frees a slot left behind;
//   - a Release that fails goes on in the background until the server answers 200,
//     so an idle agent does not hold the group forever because the server was down
//     at the moment of release.
//
// What FleetLock cannot do that the etcd lease does (see docs/lease.md): no expiry of
// a dead holder's slot, no fencing and no re-check (Check reports what this process
// believes), no fleet halt and no maxParallel from the fleet repository.
//
// Set the exported fields before the first Acquire or Release; Close stops the
// background release.
type Fleetlock struct {
	Logger *slog.Logger // default: discard
	// MarkPath is the file that records a slot this host may hold, e.g.
	// <state>/fleetlock-slot.json. "" keeps nothing on disk (a crash then leaks the slot).
	MarkPath       string
	Poll           time.Duration // default DefaultFleetlockPoll
	MaxWait        time.Duration // default DefaultFleetlockMaxWait
	RequestTimeout time.Duration // default DefaultFleetlockRequestTimeout

	base   string // without the trailing slash
	baseOK error  // why base is unusable
	id     string
	client *http.Client

	mu     sync.Mutex
	loaded bool           // the mark was read
	slot   *fleetlockSlot // the slot this host may hold: marked, or being acquired
	held   bool           // the server answered 200 to pre-reboot and no Release followed
	bg     *releaser      // the release going on in the background
	warned bool
}

// fleetlockSlot is what MarkPath records: enough to give the slot back after a restart,
// even when the configuration changed since.
type fleetlockSlot struct {
	URL   string `json:"url"`
	ID    string `json:"id"`
	Group string `json:"group"`
}

// NewFleetlock makes the client of the server at baseURL (with or without a trailing
// slash) for host id. client nil means a plain HTTP client; the client's redirects are
// not followed either way (an answer 3xx is not the protocol). Each request is tried
// once: Acquire and Release decide when to try again.
func NewFleetlock(baseURL, id string, client *http.Client) *Fleetlock {
	f := &Fleetlock{id: id, base: strings.TrimRight(baseURL, "/"), baseOK: CheckFleetlockURL(baseURL)}
	if client == nil {
		client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	c := *client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	f.client = &c
	return f
}

// CheckFleetlockURL says why raw cannot be the base URL of a FleetLock server: it is
// http(s)://host[:port][/path], without credentials, query or fragment (the protocol
// appends /v1/pre-reboot to it).
func CheckFleetlockURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return errors.New("FleetLock URL: not a valid URL")
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return errors.New("FleetLock URL: want http(s)://host[:port][/path]")
	case u.User != nil:
		return errors.New("FleetLock URL: no credentials in the URL")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(raw, "#"):
		return errors.New("FleetLock URL: no query or fragment: the protocol appends /v1/pre-reboot to it")
	}
	return nil
}

// CheckFleetlockGroup says why g cannot be a FleetLock group. The protocol asks
// clients for [a-zA-Z0-9.-]+, but servers accept any non-empty label (airlock takes
// its groups from its configuration and escapes them into its etcd keys), so only
// what no server could match is refused: empty, longer than 255 bytes, not UTF-8,
// spaces and control characters.
func CheckFleetlockGroup(g string) error {
	switch {
	case g == "":
		return errors.New("empty")
	case len(g) > maxFleetlockGroup:
		return fmt.Errorf("%d bytes, more than %d", len(g), maxFleetlockGroup)
	case !utf8.ValidString(g):
		return errors.New("not valid UTF-8")
	case strings.ContainsFunc(g, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }):
		return fmt.Errorf("%q has spaces or control characters", g)
	}
	return nil
}

func (f *Fleetlock) log() *slog.Logger {
	if f.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return f.Logger.With("lease", "fleetlock")
}

func (f *Fleetlock) policy() fleetlockPolicy {
	p := fleetlockPolicy{poll: f.Poll, maxWait: f.MaxWait}
	if p.poll <= 0 {
		p.poll = DefaultFleetlockPoll
	}
	if p.maxWait <= 0 {
		p.maxWait = DefaultFleetlockMaxWait
	}
	p.maxWait = max(p.maxWait, p.poll*3/2)
	return p
}

// Acquire takes a slot of group ("" means "default"), trying pre-reboot until the
// server answers 200 or ctx ends:
//   - the slots are taken (airlock: 500 failed_lock; others: 409, 423): it tries
//     again after Poll, jittered;
//   - the server cannot be reached or fails to answer (5xx, 408, 429): it logs the
//     kind and value of the answer, if any, and backs off, up to MaxWait (a
//     Retry-After is obeyed up to MaxWait too);
//   - any other answer (400 unknown_group or invalid_client_identity, a 404 from
//     something that is not a FleetLock server): it returns a *FleetlockError at once.
//
// Holding the slot already is a no-op. A release of this group still going on in the
// background is stopped: the slot is taken again (the server answers 200 to the id
// that holds); one of another group is finished first.
func (f *Fleetlock) Acquire(ctx context.Context, group string) error {
	if f.baseOK != nil {
		return fmt.Errorf("acquire FleetLock slot: %w", f.baseOK)
	}
	if group == "" {
		group = FleetlockDefaultGroup
	}
	if err := CheckFleetlockGroup(group); err != nil {
		return fmt.Errorf("acquire FleetLock slot: group: %w", err)
	}
	f.stopBackground()
	f.mu.Lock()
	f.loadMark()
	held, old := f.held, f.slot
	if !f.warned {
		f.warned = true
		f.log().Info("FleetLock slots do not expire and are not fenced: a holder that dies keeps its slot until it releases it or an operator frees it on the server")
	}
	f.mu.Unlock()
	want := fleetlockSlot{URL: f.base, ID: f.id, Group: group}
	switch {
	case held && *old == want:
		return nil
	case held:
		return fmt.Errorf("acquire FleetLock slot of group %s: this host holds one of group %s; release it first", group, old.Group)
	case old != nil && *old != want:
		// A slot left behind by an earlier run, elsewhere: give it back first.
		if err := f.releaseUntil(ctx, *old); err != nil {
			return fmt.Errorf("acquire FleetLock slot of group %s: %w", group, err)
		}
	}
	// Persist, then act: from the first pre-reboot on, this host may hold the slot.
	if err := f.mark(&want); err != nil {
		return fmt.Errorf("acquire FleetLock slot of group %s: %w", group, err)
	}
	log := f.log().With("group", group, "id", f.id)
	start := time.Now()
	var w fleetlockWaiter
	for attempt := 1; ; attempt++ {
		a := f.call(ctx, "pre-reboot", want)
		o := a.outcome()
		switch {
		case o == granted:
			f.mu.Lock()
			f.held = true
			f.mu.Unlock()
			log.Info("FleetLock slot acquired", "attempts", attempt, "waited", time.Since(start).Round(time.Millisecond))
			return nil
		case o == refused:
			// The server will not give this id a slot of this group: none is held.
			f.unmark(log)
			return fmt.Errorf("acquire FleetLock slot of group %s: %w", group, a.refusal("pre-reboot", want.URL))
		case ctx.Err() != nil:
			return fmt.Errorf("acquire FleetLock slot of group %s: %w", group, ctx.Err())
		}
		d := w.next(f.policy(), o, a.retryAfter, randJitter)
		w.report(log, a, o, d, attempt, time.Since(start))
		if err := sleepCtx(ctx, d); err != nil {
			return fmt.Errorf("acquire FleetLock slot of group %s: %w", group, err)
		}
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

// Release gives back the slot this host may hold: the one of the last Acquire, or,
// after a restart, the one MarkPath records. With neither it is a no-op. It sends
// steady-state once (the server answers 200 whether or not the id held a slot; a 423
// "not held" of other servers counts as released too). When that fails it returns the
// error and goes on trying in the background, backing off up to MaxWait, until the
// server answers 200 or Acquire or Close stops it; MarkPath stays until then, so a
// restart tries again.
//
// Give it a context that is not cancelled by the agent's shutdown, with a deadline:
// a cancelled context fails the first try at once (the background goes on).
func (f *Fleetlock) Release(ctx context.Context) error {
	f.stopBackground()
	f.mu.Lock()
	f.loadMark()
	slot, held := f.slot, f.held
	f.mu.Unlock()
	if slot == nil {
		return nil
	}
	log := f.log().With("group", slot.Group, "id", slot.ID)
	if slot.URL != f.base {
		log.Info("releasing a FleetLock slot taken from another server", "server", slot.URL)
	}
	a := f.call(ctx, "steady-state", *slot)
	if a.released() {
		f.released(log, a, held, 1)
		return nil
	}
	err := a.failure("steady-state", slot.URL)
	f.background(*slot, held, a)
	return fmt.Errorf("release FleetLock slot of group %s: %w (retrying in the background)", slot.Group, err)
}

// Close stops the release going on in the background, if any, and waits for it.
// MarkPath keeps the slot for the next start.
func (f *Fleetlock) Close() error {
	f.stopBackground()
	return nil
}

// Releasing reports whether a release is going on in the background.
func (f *Fleetlock) Releasing() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bg != nil
}

// released records that the server answered steady-state.
func (f *Fleetlock) released(log *slog.Logger, a fleetlockAnswer, held bool, tries int) {
	f.mu.Lock()
	f.held = false
	f.mu.Unlock()
	f.unmark(log)
	switch {
	case a.status != http.StatusOK:
		log.Info("FleetLock slot was not held by this host", "status", a.status, "kind", a.kind, "value", a.value)
	case held || tries > 1:
		log.Info("FleetLock slot released", "tries", tries)
	default:
		log.Info("FleetLock slot this host may have held is released")
	}
}

// releaseUntil sends steady-state for slot until it succeeds or ctx ends.
func (f *Fleetlock) releaseUntil(ctx context.Context, slot fleetlockSlot) error {
	log := f.log().With("group", slot.Group, "id", slot.ID)
	var w fleetlockWaiter
	for tries := 1; ; tries++ {
		a := f.call(ctx, "steady-state", slot)
		if a.released() {
			f.released(log, a, false, tries)
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("release FleetLock slot of group %s first: %w", slot.Group, a.failure("steady-state", slot.URL))
		}
		d := w.next(f.policy(), serverTrouble, a.retryAfter, randJitter)
		w.report(log, a, serverTrouble, d, tries, 0)
		if err := sleepCtx(ctx, d); err != nil {
			return fmt.Errorf("release FleetLock slot of group %s first: %w", slot.Group, err)
		}
	}
}

// releaser is a release going on in the background.
type releaser struct {
	stop chan struct{} // closed to stop it between tries
	done chan struct{} // closed when it returned
}

// background goes on releasing slot after the first try failed with a.
func (f *Fleetlock) background(slot fleetlockSlot, held bool, a fleetlockAnswer) {
	r := &releaser{stop: make(chan struct{}), done: make(chan struct{})}
	f.mu.Lock()
	f.bg = r
	f.mu.Unlock()
	log := f.log().With("group", slot.Group, "id", slot.ID)
	go func() {
		defer close(r.done)
		defer func() {
			f.mu.Lock()
			if f.bg == r {
				f.bg = nil
			}
			f.mu.Unlock()
		}()
		var w fleetlockWaiter
		w.said, w.saidAt = w.key(a, serverTrouble), time.Now() // Release returned this one
		for tries := 2; ; tries++ {
			d := w.next(f.policy(), serverTrouble, a.retryAfter, randJitter)
			w.report(log, a, serverTrouble, d, tries-1, 0)
			select {
			case <-r.stop:
				return
			case <-time.After(d):
			}
			// Not cancelled by stop: a steady-state sent must not be overtaken by the
			// pre-reboot of the Acquire that stops this, so the request runs its course.
			a = f.call(context.Background(), "steady-state", slot)
			if a.released() {
				f.released(log, a, held, tries)
				return
			}
		}
	}()
}

// stopBackground stops the background release, if any, and waits until it returned.
func (f *Fleetlock) stopBackground() {
	f.mu.Lock()
	r := f.bg
	f.bg = nil
	f.mu.Unlock()
	if r != nil {
		close(r.stop)
		<-r.done
	}
}

// loadMark reads MarkPath once, the first time the slot matters. Called with mu held.
func (f *Fleetlock) loadMark() {
	if f.loaded {
		return
	}
	f.loaded = true
	if f.MarkPath == "" {
		return
	}
	b, err := os.ReadFile(f.MarkPath)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	var s fleetlockSlot
	if err == nil {
		err = json.Unmarshal(b, &s)
	}
	if err != nil || s.URL == "" || s.ID == "" || s.Group == "" {
		// Unreadable: assume the configured server and id held a slot of an unknown
		// group; nothing can be released, so say so and leave the file for an operator.
		f.log().Error("cannot read the record of a FleetLock slot this host may hold; free it on the server if it is held, then remove the file", "file", f.MarkPath, "err", err)
		return
	}
	f.slot = &s
	f.log().Info("this host may hold a FleetLock slot taken before it stopped", "group", s.Group, "server", s.URL)
}

// mark records s as a slot this host may hold, on disk before anything is sent.
func (f *Fleetlock) mark(s *fleetlockSlot) error {
	f.mu.Lock()
	same := f.slot != nil && *f.slot == *s
	f.mu.Unlock()
	if f.MarkPath != "" && !same {
		b, err := json.Marshal(s)
		if err != nil {
			return err
		}
		if err := atomicfile.Write(f.MarkPath, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("record the FleetLock slot before taking it: %w", err)
		}
	}
	f.mu.Lock()
	f.slot = s
	f.mu.Unlock()
	return nil
}

// unmark forgets the slot: the server answered that this host holds none.
func (f *Fleetlock) unmark(log *slog.Logger) {
	f.mu.Lock()
	f.slot, f.held = nil, false
	f.mu.Unlock()
	if f.MarkPath == "" {
		return
	}
	if err := os.Remove(f.MarkPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		// The next start sends one steady-state too many: harmless.
		log.Warn("remove the record of the released FleetLock slot", "err", err)
	}
}

// fleetlockRequest is the body of both calls.
type fleetlockRequest struct {
	ClientParams struct {
		ID    string `json:"id"`
		Group string `json:"group"`
	} `json:"client_params"`
}

// fleetlockAnswer is what one call got back.
type fleetlockAnswer struct {
	err         error // no answer: the request failed or timed out
	status      int
	kind, value string        // of an error answer that carries them
	retryAfter  time.Duration // the server's Retry-After, 0 without one
}

// call sends one request to slot's server for slot's id and group, bounded by
// RequestTimeout. It is never retried here.
func (f *Fleetlock) call(ctx context.Context, call string, slot fleetlockSlot) fleetlockAnswer {
	var body fleetlockRequest
	body.ClientParams.ID, body.ClientParams.Group = slot.ID, slot.Group
	b, err := json.Marshal(body)
	if err != nil {
		return fleetlockAnswer{err: err}
	}
	timeout := f.RequestTimeout
	if timeout <= 0 {
		timeout = DefaultFleetlockRequestTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, slot.URL+"/v1/"+call, bytes.NewReader(b))
	if err != nil {
		return fleetlockAnswer{err: err}
	}
	req.Header.Set(FleetlockHeader, "true")
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		return fleetlockAnswer{err: err}
	}
	defer resp.Body.Close()
	a := fleetlockAnswer{status: resp.StatusCode}
	a.retryAfter, _ = httpretry.RetryAfter(resp.Header.Get("Retry-After"), time.Now())
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, maxFleetlockBody))
	if a.status != http.StatusOK {
		a.kind, a.value, _ = ParseFleetlockError(rb)
	}
	return a
}

// outcome of an answer to a call, and what the caller does next.
type outcome int

const (
	granted       outcome = iota // 200
	slotsTaken                   // an answer: every slot is taken; poll
	serverTrouble                // no answer, or the server failed to give one; back off
	refused                      // an answer that trying again cannot change
)

// busyKinds are the error kinds that say "every slot is taken": airlock's (also sent
// when its etcd transaction failed, which is worth trying again too) and the one of the
// FleetLock specification's example.
var busyKinds = map[string]bool{"failed_lock": true, "failed_lock_semaphore_full": true}

func (a fleetlockAnswer) outcome() outcome {
	switch {
	case a.err != nil:
		return serverTrouble
	case a.status == http.StatusOK:
		return granted
	case busyKinds[a.kind], a.status == http.StatusConflict, a.status == http.StatusLocked:
		return slotsTaken
	case a.status == http.StatusRequestTimeout, a.status == http.StatusTooManyRequests, a.status >= 500:
		return serverTrouble
	}
	return refused
}

// released reports whether a steady-state answer means the slot is free.
func (a fleetlockAnswer) released() bool {
	return a.err == nil && (a.status == http.StatusOK || a.status == http.StatusLocked)
}

// refusal is the error of a refused answer.
func (a fleetlockAnswer) refusal(call, base string) *FleetlockError {
	return &FleetlockError{Call: call, URL: base, Status: a.status, Kind: a.kind, Value: a.value}
}

// failure is the error of any answer that is not a success.
func (a fleetlockAnswer) failure(call, base string) error {
	switch {
	case a.err != nil:
		return fmt.Errorf("%s: %w", call, a.err)
	case a.outcome() == refused:
		return a.refusal(call, base)
	case a.kind != "":
		return fmt.Errorf("%s: HTTP %d %s: %s", call, a.status, a.kind, a.value)
	}
	return fmt.Errorf("%s: HTTP %d", call, a.status)
}

// fleetlockPolicy is how long to wait between tries.
type fleetlockPolicy struct {
	poll    time.Duration // while the slots are taken
	maxWait time.Duration // the cap of every wait
}

// fleetlockWaiter paces one wait: the backoff after trouble, and its log lines.
type fleetlockWaiter struct {
	troubles int // tries in a row that met trouble
	said     string
	saidAt   time.Time
}

// next is the wait after an answer of outcome o that asked for retryAfter. While the
// slots are taken it is drawn from [poll, 1.5*poll), however long the wait lasted:
// the hold of the slot's holder does not slow its handoff. After trouble it doubles
// from poll, jittered. A Retry-After longer than that is obeyed; every wait is at
// least poll and at most maxWait. jitter(d) returns a duration in [0, d).
func (w *fleetlockWaiter) next(p fleetlockPolicy, o outcome, retryAfter time.Duration, jitter func(time.Duration) time.Duration) time.Duration {
	var d time.Duration
	if o == slotsTaken {
		w.troubles = 0
		d = p.poll + jitter(p.poll/2)
	} else {
		w.troubles++
		base := p.poll << min(w.troubles-1, 20)
		if base <= 0 || base > p.maxWait {
			base = p.maxWait
		}
		d = base + jitter(base/2)
	}
	d = max(d, retryAfter, p.poll)
	return min(d, p.maxWait)
}

// report logs what a try met: once when it changes, again every fleetlockRemind, and
// at debug level in between.
func (w *fleetlockWaiter) report(log *slog.Logger, a fleetlockAnswer, o outcome, d time.Duration, tries int, waited time.Duration) {
	var msg string
	level := slog.LevelWarn
	args := []any{"tries", tries, "retry_in", d.Round(time.Millisecond)}
	if waited > 0 {
		args = append(args, "waited", waited.Round(time.Second))
	}
	switch {
	case a.err != nil:
		msg = "FleetLock server unreachable; trying again"
		args = append(args, "err", a.err)
	case o == slotsTaken:
		msg, level = "FleetLock slots taken; waiting", slog.LevelInfo
		args = append(args, "status", a.status, "kind", a.kind, "value", a.value)
	case a.kind != "":
		msg = "FleetLock server failed to answer; trying again"
		args = append(args, "status", a.status, "kind", a.kind, "value", a.value)
	default:
		msg = "FleetLock server error; trying again"
		args = append(args, "status", a.status)
	}
	key := w.key(a, o)
	if now := time.Now(); key != w.said || now.Sub(w.saidAt) >= fleetlockRemind {
		w.said, w.saidAt = key, now
	} else {
		level = slog.LevelDebug
	}
	log.Log(context.Background(), level, msg, args...)
}

// key names the situation an answer shows, for report to say each once.
func (w *fleetlockWaiter) key(a fleetlockAnswer, o outcome) string {
	if a.err != nil {
		return "unreachable" // error texts vary (ports, timings); the situation does not
	}
	return fmt.Sprint(o, a.status, a.kind, a.value)
}

func randJitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
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
