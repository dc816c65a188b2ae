package migrate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/baton-fleet/baton/checks"
	"github.com/baton-fleet/baton/spec"
)

// DefaultLockTTL is the TTL of the migration lock's lease when Runner.LockTTL is 0:
// a runner that dies holds the lock at most this long.
const DefaultLockTTL = 15 * time.Second

// ErrLockLost is returned when the runner's lease ended while it held the lock
// (etcd unreachable for longer than the TTL): the migration it ran was killed, and
// is left running in the ledger, interrupted.
var ErrLockLost = errors.New("the migration lock's lease ended")

// ExecFunc runs argv as user ("": as the runner) within timeout and returns the tail
// of its output. The default is checks.Prober's Exec, with DieWithAgent set.
type ExecFunc func(ctx context.Context, argv []string, user string, timeout time.Duration) (string, error)

// Store is a migrations ledger: Ledger, in etcd, for a fleet; Local, in a directory,
// for a host with the local lease, which is its whole fleet.
type Store interface {
	// List returns the entries of service, or of every service when it is "".
	List(ctx context.Context, service string) ([]Entry, error)
	// Holder returns the host that holds the migration lock, "" when none does.
	Holder(ctx context.Context) (string, error)
	// Resolve records an operator's word on a failed or interrupted migration.
	Resolve(ctx context.Context, service, id, as, by string) (Entry, error)

	view(ctx context.Context, service string) (holder string, entries map[string]*Entry, err error)
	get(ctx context.Context, service, id string) (*Entry, int64, error)
	// lock takes the migration lock for host, calling waiting with the holder each
	// time it finds the lock held by another and waits for it.
	lock(ctx context.Context, host string, ttl time.Duration, waiting func(holder string)) (held, error)
	clock() time.Time
}

// held is the migration lock as its holder has it.
type held interface {
	// put writes e if the lock is still held and the entry was last written at rev
	// (0: absent), and returns the entry's new revision.
	put(ctx context.Context, rev int64, e Entry) (int64, error)
	// ctx returns a context of parent that ends if the lock is lost, and its cancel.
	ctx(parent context.Context) (context.Context, context.CancelFunc)
	lost() bool
	release()
}

// Runner runs migrations from the ledger. Its fields are set before the first Run.
type Runner struct {
	Ledger  Store
	Host    string        // this host, recorded in the lock and the ledger
	LockTTL time.Duration // of the lock's etcd lease; default DefaultLockTTL
	Exec    ExecFunc      // default: checks.Prober{User, DieWithAgent}.Exec
	Logger  *slog.Logger  // default: discard
	// Ran, when set, is called with the ledger entry of each migration this runner
	// ran, once it ended (done or failed) and was written: for events and metrics.
	Ran func(Entry)
}

// Run runs the migrations ms of one phase of service at version (rendered, in file
// order) that the ledger does not hold as done, each once for the whole fleet:
//   - holding the fleet-wide migration lock, an etcd key bound to a lease of LockTTL
//     that this process keeps alive, so that it is released within the TTL however
//     the process ends; every ledger write is fenced by it;
//   - for each: write it running, run its backup then its command (each within its
//     timeout, as its user, killed when this process dies), write it done or failed.
//
// It returns nil when every migration is done, a *Halt when one failed, was
// interrupted and is not rerunnable, or ran with another command; a *Halt halts the
// service's rollout until an operator resolves it. Any other error (etcd, ctx,
// ErrLockLost) leaves the ledger as it is, for a later Run.
func (r *Runner) Run(ctx context.Context, service, version string, ms []spec.Migration) error {
	return r.RunWaiting(ctx, service, version, ms, nil)
}

// RunWaiting is Run, calling waiting (when not nil) with the holder when it finds
// the migration lock held by another host and waits for it (that host's own
// migrations may run for hours), and with "" once it holds the lock after a wait.
func (r *Runner) RunWaiting(ctx context.Context, service, version string, ms []spec.Migration, waiting func(holder string)) error {
	if todo, err := r.pending(ctx, service, ms); err != nil || !todo {
		return err
	}
	ttl := r.LockTTL
	if ttl <= 0 {
		ttl = DefaultLockTTL
	}
	waited := false
	lock, err := r.Ledger.lock(ctx, r.Host, ttl, func(holder string) {
		waited = true
		r.logger().Info("waiting for the migration lock", "holder", holder, "service", service)
		if waiting != nil {
			waiting(holder)
		}
	})
	if err != nil {
		return err
	}
	defer lock.release()
	if waited && waiting != nil {
		waiting("")
	}
	for _, m := range ms {
		if err := r.runOne(ctx, lock, service, version, m); err != nil {
			return err
		}
	}
	return nil
}

// Halted returns the *Halt that the ledger holds against the migrations ms of
// service, nil when it holds none: what Run would return before it takes the lock. A
// host asks before it takes its group's slot, so that a halted rollout waits at the
// gate and goes on at the first poll after an operator resolves the halt.
func (r *Runner) Halted(ctx context.Context, service string, ms []spec.Migration) (*Halt, error) {
	_, err := r.pending(ctx, service, ms)
	var halt *Halt
	if errors.As(err, &halt) {
		return halt, nil
	}
	return nil, err
}

// pending reports whether some migration of ms needs the lock: one not done. It
// returns a *Halt found without it, so that a host does not take the lock to learn
// what the ledger says already: a changed command, a failure, an interruption (a
// running entry while no runner holds the lock: runners write running only under
// it; both read at one revision).
func (r *Runner) pending(ctx context.Context, service string, ms []spec.Migration) (bool, error) {
	holder, entries, err := r.Ledger.view(ctx, service)
	if err != nil {
		return false, err
	}
	todo := false
	for _, m := range ms {
		run, halt := decide(entries[m.ID], m.Rerunnable, sumOf(m))
		if halt != nil && (halt.Kind != Interrupted || holder == "") {
			return false, halt
		}
		todo = todo || run || halt != nil
	}
	return todo, nil
}

// runOne runs one migration under lock, as the ledger decides.
func (r *Runner) runOne(ctx context.Context, lock held, service, version string, m spec.Migration) error {
	e, rev, err := r.Ledger.get(ctx, service, m.ID)
	if err != nil {
		return err
	}
	sum := sumOf(m)
	run, halt := decide(e, m.Rerunnable, sum)
	if halt != nil {
		return halt
	}
	if !run {
		return nil
	}
	log := r.logger().With("service", service, "migration", m.ID, "phase", m.Phase)
	cur := Entry{Service: service, ID: m.ID, Phase: m.Phase, Version: version, State: StateRunning, Host: r.Host, Start: r.Ledger.clock().UTC(), Checksum: sum, Rerunnable: m.Rerunnable}
	if e != nil {
		cur.Resolved = e.Resolved
	}
	if rev, err = lock.put(ctx, rev, cur); err != nil {
		return err
	}
	log.Info("migration started", "rerun", e != nil && e.State == StateRunning)
	runCtx, stop := lock.ctx(ctx)
	out, runErr := r.execute(runCtx, m)
	stop()
	if lock.lost() {
		return fmt.Errorf("migration %s of %s: %w", m.ID, service, ErrLockLost)
	}
	if runErr != nil && ctx.Err() != nil {
		return ctx.Err() // stopped, not failed: left running, interrupted
	}
	cur.End, cur.Output, cur.State = r.Ledger.clock().UTC(), out, StateDone
	if runErr != nil {
		cur.State, cur.Error = StateFailed, runErr.Error()
	}
	if _, err := lock.put(ctx, rev, cur); err != nil {
		return err
	}
	if r.Ran != nil {
		r.Ran(cur)
	}
	if runErr != nil {
		log.Error("migration failed", "err", runErr)
		return &Halt{Kind: Failed, Entry: cur}
	}
	log.Info("migration done", "took", cur.End.Sub(cur.Start))
	return nil
}

// execute runs the backup, when there is one, then the command.
func (r *Runner) execute(ctx context.Context, m spec.Migration) (string, error) {
	exec := r.Exec
	if exec == nil {
		exec = proberExec
	}
	if len(m.Backup) > 0 {
		if out, err := exec(ctx, m.Backup, m.User, m.Timeout.D()); err != nil {
			return out, fmt.Errorf("backup: %w", err)
		}
	}
	return exec(ctx, m.Command, m.User, m.Timeout.D())
}

// sumOf is the checksum of m's command the ledger records: of its canonical
// rendering (spec.Migration.Canonical), the same on every host, when it has one.
func sumOf(m spec.Migration) string {
	if m.Canonical != nil {
		return Checksum(m.Canonical)
	}
	return Checksum(m.Command)
}

func proberExec(ctx context.Context, argv []string, user string, timeout time.Duration) (string, error) {
	return (&checks.Prober{User: user, DieWithAgent: true}).Exec(ctx, argv, timeout)
}

func (r *Runner) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}
