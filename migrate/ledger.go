// Package migrate runs the data migrations of a release once for the whole fleet,
// from a ledger in etcd, under a fleet-wide lock bound to an etcd lease.
package migrate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-fleet/baton/events"
)

// States of a migration in the ledger. A migration the ledger does not hold is
// pending.
const (
	StatePending = "pending" // to run: never run, or an operator asked for a rerun
	StateRunning = "running" // started; interrupted when no runner holds the lock
	StateDone    = "done"
	StateFailed  = "failed"
	// StateUnreadable is what List says of a key that does not parse.
	StateUnreadable = "unreadable"
)

// Entry is one migration in the ledger, at <prefix>/migrations/<service>/<id>.
type Entry struct {
	Service  string    `json:"service"`
	ID       string    `json:"id"`
	Phase    string    `json:"phase"`
	Version  string    `json:"version"` // of the release that ran it
	State    string    `json:"state"`
	Host     string    `json:"host"`         // the runner's
	Start    time.Time `json:"start"`        // of the last run
	End      time.Time `json:"end,omitzero"` // of the last run, when it ended
	Checksum string    `json:"checksum"`     // of the rendered command (Checksum of spec.Migration.Canonical)
	// Rerunnable is the migration's rerunnable: as it was when it last started: when
	// it is interrupted, the next runner runs it again rather than halt.
	Rerunnable bool      `json:"rerunnable,omitempty"`
	Error      string    `json:"error,omitempty"`    // how the last run failed
	Output     string    `json:"output,omitempty"`   // the tail of the last run's output
	Resolved   *Resolved `json:"resolved,omitempty"` // an operator's word on it, the last
}

// Event is the rollout event of a migration that ran here and ended:
// events.MigrationDone or events.MigrationFailed, with its error and output's tail.
// The emitter sets the group and the commit.
func (e Entry) Event() events.Event {
	ev := events.Event{Time: e.End, Type: events.MigrationDone, Host: e.Host, Service: e.Service,
		Message: fmt.Sprintf("migration %s of %s %s done", e.ID, e.Service, e.Version),
		Fields:  map[string]string{"id": e.ID, "phase": e.Phase, "version": e.Version, "duration": e.End.Sub(e.Start).Round(time.Millisecond).String()}}
	if e.State == StateFailed {
		ev.Type = events.MigrationFailed
		ev.Message = fmt.Sprintf("migration %s of %s %s failed: %s", e.ID, e.Service, e.Version, e.Error)
		ev.Fields["error"], ev.Fields["output"] = e.Error, e.Output
	}
	return ev
}

// Resolved is an operator's word on a failed or interrupted migration.
type Resolved struct {
	As   string    `json:"as"` // StateDone: it completed; StatePending: run it again
	By   string    `json:"by"`
	Time time.Time `json:"time"`
	From string    `json:"from"` // the state it was in
}

// Checksum identifies a migration's rendered command: a migration that ran is never
// run with another, as Flyway refuses an edited script.
func Checksum(argv []string) string {
	h := sha256.New()
	for _, a := range argv {
		fmt.Fprintf(h, "%d:%s\x00", len(a), a)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Ledger reads and writes the migrations ledger under a prefix in etcd.
type Ledger struct {
	cli    *clientv3.Client
	prefix string
	now    func() time.Time
}

// NewLedger returns the ledger on cli under prefix (the fleet state's, e.g. "/baton").
func NewLedger(cli *clientv3.Client, prefix string) *Ledger {
	return &Ledger{cli: cli, prefix: strings.TrimSuffix(prefix, "/"), now: time.Now}
}

func (l *Ledger) clock() time.Time { return l.now() }

func (l *Ledger) key(service, id string) string {
	return l.prefix + "/migrations/" + service + "/" + id
}

// LockKey is the key of the fleet-wide migration lock: its value names the host
// that holds it, its etcd lease ends with that host.
func (l *Ledger) LockKey() string { return l.prefix + "/migration-lock" }

// parseEntry reads a ledger value. An entry that does not parse is kept, unreadable,
// so that it is shown and stops every runner.
func parseEntry(service, id string, value []byte) Entry {
	var e Entry
	if err := json.Unmarshal(value, &e); err != nil || !slices.Contains([]string{StatePending, StateRunning, StateDone, StateFailed}, e.State) {
		msg := "no known state"
		if err != nil {
			msg = err.Error()
		}
		return Entry{Service: service, ID: id, State: StateUnreadable, Error: "the ledger entry does not parse: " + msg}
	}
	e.Service, e.ID = service, id
	return e
}

// get reads one entry and its key's modification revision (0 when absent).
func (l *Ledger) get(ctx context.Context, service, id string) (*Entry, int64, error) {
	resp, err := l.cli.Get(ctx, l.key(service, id))
	if err != nil {
		return nil, 0, fmt.Errorf("read the ledger of %s: %w", service, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, nil
	}
	e := parseEntry(service, id, resp.Kvs[0].Value)
	return &e, resp.Kvs[0].ModRevision, nil
}

// List returns the ledger's entries of service, or of every service when it is "",
// by service and then in the order they started.
func (l *Ledger) List(ctx context.Context, service string) ([]Entry, error) {
	pfx := l.prefix + "/migrations/"
	if service != "" {
		pfx += service + "/"
	}
	resp, err := l.cli.Get(ctx, pfx, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read the migrations ledger: %w", err)
	}
	var out []Entry
	for _, kv := range resp.Kvs {
		svc, id, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), l.prefix+"/migrations/"), "/")
		if !ok {
			continue
		}
		out = append(out, parseEntry(svc, id, kv.Value))
	}
	sortEntries(out)
	return out, nil
}

// view reads, at one etcd revision, the host that holds the migration lock ("" when
// none does) and the entries of service, by id: whether a running migration was
// interrupted depends on both at once.
func (l *Ledger) view(ctx context.Context, service string) (string, map[string]*Entry, error) {
	pfx := l.prefix + "/migrations/" + service + "/"
	resp, err := l.cli.Txn(ctx).Then(clientv3.OpGet(l.LockKey()), clientv3.OpGet(pfx, clientv3.WithPrefix())).Commit()
	if err != nil {
		return "", nil, fmt.Errorf("read the ledger of %s: %w", service, err)
	}
	holder := ""
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		holder = string(kvs[0].Value)
	}
	entries := map[string]*Entry{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		id := strings.TrimPrefix(string(kv.Key), pfx)
		e := parseEntry(service, id, kv.Value)
		entries[id] = &e
	}
	return holder, entries, nil
}

// Holder returns the host that holds the migration lock, "" when none does.
func (l *Ledger) Holder(ctx context.Context) (string, error) {
	resp, err := l.cli.Get(ctx, l.LockKey())
	if err != nil {
		return "", fmt.Errorf("read the migration lock: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// ErrNotResolvable is returned by Resolve for a migration that needs no word.
var ErrNotResolvable = errors.New("nothing to resolve")

// resolve records in e (nil when the ledger does not hold it) an operator's word on
// it: as StateDone (it completed: the operator checked the data) or as StatePending
// (run it again: the next runner does, rerunnable or not). Only a failed or running
// migration takes one.
func resolve(e *Entry, service, id, as, by string, now time.Time) error {
	switch {
	case as != StateDone && as != StatePending:
		return fmt.Errorf("resolve as %q: only as done or pending", as)
	case e == nil:
		return fmt.Errorf("migration %s of %s is not in the ledger: it never started: %w", id, service, ErrNotResolvable)
	case e.State == StateDone || e.State == StatePending:
		return fmt.Errorf("migration %s of %s is %s: %w", id, service, e.State, ErrNotResolvable)
	}
	e.Resolved = &Resolved{As: as, By: by, Time: now.UTC(), From: e.State}
	e.State = as
	if as == StateDone && e.End.IsZero() {
		e.End = now.UTC()
	}
	return nil
}

// lockedOut is the error of Resolve for a running migration while holder holds the lock.
func lockedOut(service, id, holder string) error {
	return fmt.Errorf("migration %s of %s is running and %s holds the migration lock: it may be running it now; resolve it once the lock is gone", id, service, holder)
}

// Resolve records an operator's word on a failed or interrupted migration (see
// resolve). It refuses a migration that is running while a runner holds the lock.
func (l *Ledger) Resolve(ctx context.Context, service, id, as, by string) (Entry, error) {
	e, rev, err := l.get(ctx, service, id)
	if err != nil {
		return Entry{}, err
	}
	running := e != nil && e.State == StateRunning
	if err := resolve(e, service, id, as, by, l.now()); err != nil {
		return Entry{}, err
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(l.key(service, id)), "=", rev)}
	if running {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(l.LockKey()), "=", 0))
	}
	data, err := json.Marshal(e)
	if err != nil {
		return Entry{}, err
	}
	resp, err := l.cli.Txn(ctx).If(cmps...).Then(clientv3.OpPut(l.key(service, id), string(data))).Commit()
	if err != nil {
		return Entry{}, fmt.Errorf("resolve migration %s of %s: %w", id, service, err)
	}
	if !resp.Succeeded {
		if holder, _ := l.Holder(ctx); holder != "" {
			return Entry{}, lockedOut(service, id, holder)
		}
		return Entry{}, fmt.Errorf("migration %s of %s changed while resolving it; look again", id, service)
	}
	return *e, nil
}
