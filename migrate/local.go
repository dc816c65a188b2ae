package migrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/baton-fleet/baton/internal/atomicfile"
	"github.com/baton-fleet/baton/lease"
)

// Local is the ledger of a host with the local lease, which is its whole fleet: each
// entry a file, Dir/<service>/<id>.json, written whole (temp file, fsync, rename); the
// lock an flock on Dir/.lock, which the kernel drops when its holder dies, however it
// dies. Dir is <state>/migrations; the lock is Dir/.lock.
type Local struct {
	Dir string
	now func() time.Time
}

// LocalDir is the directory of the Local ledger in the agent's state directory.
const LocalDir = "migrations"

// NewLocal returns the ledger in dir (<state>/LocalDir).
func NewLocal(dir string) *Local { return &Local{Dir: dir, now: time.Now} }

func (l *Local) clock() time.Time { return l.now() }

// lockPath is the lock file: a name no service has.
func (l *Local) lockPath() string { return filepath.Join(l.Dir, ".lock") }

// file is the path of an entry; a name that could leave Dir is refused.
func (l *Local) file(service, id string) (string, error) {
	for _, n := range []string{service, id} {
		if n == "" || strings.HasPrefix(n, ".") || strings.ContainsAny(n, `/\`) {
			return "", fmt.Errorf("%q is not a service or migration name", n)
		}
	}
	return filepath.Join(l.Dir, service, id+".json"), nil
}

func (l *Local) get(_ context.Context, service, id string) (*Entry, int64, error) {
	path, err := l.file(service, id)
	if err != nil {
		return nil, 0, err
	}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, 0, nil
	case err != nil:
		return nil, 0, fmt.Errorf("read the ledger of %s: %w", service, err)
	}
	e := parseEntry(service, id, data)
	return &e, 1, nil
}

func (l *Local) view(ctx context.Context, service string) (string, map[string]*Entry, error) {
	holder, err := l.Holder(ctx)
	if err != nil {
		return "", nil, err
	}
	list, err := l.list(service)
	if err != nil {
		return "", nil, err
	}
	entries := map[string]*Entry{}
	for i := range list {
		entries[list[i].ID] = &list[i]
	}
	return holder, entries, nil
}

// List returns the entries of service, or of every service when it is "", by
// service and then in the order they started.
func (l *Local) List(_ context.Context, service string) ([]Entry, error) {
	var out []Entry
	services := []string{service}
	if service == "" {
		dirs, err := os.ReadDir(l.Dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("read the migrations ledger: %w", err)
		}
		services = nil
		for _, d := range dirs {
			if d.IsDir() {
				services = append(services, d.Name())
			}
		}
	}
	for _, s := range services {
		list, err := l.list(s)
		if err != nil {
			return nil, err
		}
		out = append(out, list...)
	}
	sortEntries(out)
	return out, nil
}

// list reads the entries of one service.
func (l *Local) list(service string) ([]Entry, error) {
	files, err := os.ReadDir(filepath.Join(l.Dir, service))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the ledger of %s: %w", service, err)
	}
	var out []Entry
	for _, f := range files {
		id, ok := strings.CutSuffix(f.Name(), ".json")
		if !ok || !f.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(l.Dir, service, f.Name()))
		if err != nil {
			return nil, fmt.Errorf("read the ledger of %s: %w", service, err)
		}
		out = append(out, parseEntry(service, id, data))
	}
	return out, nil
}

// Holder returns the host that holds the migration lock (this host), "" when no
// process holds it.
func (l *Local) Holder(context.Context) (string, error) {
	f, err := os.Open(l.lockPath())
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the migration lock: %w", err)
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	if err == nil {
		return "", nil // closing f lets it go
	}
	if !errors.Is(err, syscall.EWOULDBLOCK) {
		return "", fmt.Errorf("read the migration lock: %w", err)
	}
	host, _ := os.ReadFile(l.lockPath())
	if len(host) == 0 {
		return "?", nil
	}
	return string(host), nil
}

// Resolve records an operator's word on a failed or interrupted migration (see
// resolve), holding the lock: it refuses while a runner holds it.
func (l *Local) Resolve(ctx context.Context, service, id, as, by string) (Entry, error) {
	if holder, err := l.Holder(ctx); err != nil || holder != "" {
		if err != nil {
			return Entry{}, err
		}
		return Entry{}, lockedOut(service, id, holder)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	h, err := l.lock(ctx, by, 0, nil)
	if err != nil {
		return Entry{}, err
	}
	defer h.release()
	e, rev, err := l.get(ctx, service, id)
	if err != nil {
		return Entry{}, err
	}
	if err := resolve(e, service, id, as, by, l.now()); err != nil {
		return Entry{}, err
	}
	if _, err := h.put(ctx, rev, *e); err != nil {
		return Entry{}, err
	}
	return *e, nil
}

func (l *Local) lock(ctx context.Context, host string, _ time.Duration, _ func(string)) (held, error) {
	if err := os.MkdirAll(l.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("take the migration lock: %w", err)
	}
	lk := &lease.Local{Path: l.lockPath()}
	if err := lk.Acquire(ctx, ""); err != nil {
		return nil, fmt.Errorf("take the migration lock: %w", err)
	}
	if err := os.WriteFile(l.lockPath(), []byte(host), 0o600); err != nil {
		_ = lk.Release(context.Background())
		return nil, fmt.Errorf("take the migration lock: %w", err)
	}
	return &localLock{l: l, lk: lk}, nil
}

// localLock is the flock of a Local ledger, as its holder has it: it is never lost.
type localLock struct {
	l  *Local
	lk *lease.Local
}

func (h *localLock) put(_ context.Context, _ int64, e Entry) (int64, error) {
	path, err := h.l.file(e.Service, e.ID)
	if err != nil {
		return 0, err
	}
	data, err := json.Marshal(e)
	if err == nil {
		err = os.MkdirAll(filepath.Dir(path), 0o700)
	}
	if err == nil {
		err = atomicfile.Write(path, data, 0o600)
	}
	if err != nil {
		return 0, fmt.Errorf("write the ledger entry of migration %s of %s: %w", e.ID, e.Service, err)
	}
	return 1, nil
}

func (h *localLock) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithCancel(parent)
}

func (h *localLock) lost() bool { return false }

func (h *localLock) release() {
	_ = os.WriteFile(h.l.lockPath(), nil, 0o600)
	_ = h.lk.Release(context.Background())
}

// sortEntries orders entries by service, then by when they started.
func sortEntries(list []Entry) {
	slices.SortStableFunc(list, func(a, b Entry) int {
		if c := strings.Compare(a.Service, b.Service); c != 0 {
			return c
		}
		return a.Start.Compare(b.Start)
	})
}
