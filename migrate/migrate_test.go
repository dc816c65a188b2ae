package migrate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testetcd"
	"github.com/baton-fleet/baton/internal/testpostgres"
	"github.com/baton-fleet/baton/internal/yamldoc"
	"github.com/baton-fleet/baton/spec"
)

const prefix = "/baton"

// fleetDB is a real etcd and a real PostgreSQL, with a table that each migration of
// the tests writes a row to.
type fleetDB struct {
	etcd *testetcd.Cluster
	pg   *testpostgres.Server
}

func newFleetDB(t *testing.T) *fleetDB {
	t.Helper()
	pg := testpostgres.Start(t)
	pg.Query(t, "CREATE TABLE runs (n serial PRIMARY KEY, what text NOT NULL); CREATE TABLE slow (s float NOT NULL); INSERT INTO slow VALUES (0)")
	return &fleetDB{etcd: testetcd.Start(t), pg: pg}
}

// runner is the runner of host, with a client of its own, as on a host of its own.
func (f *fleetDB) runner(t *testing.T, host string) *Runner {
	return &Runner{Ledger: NewLedger(f.etcd.Client(t), prefix), Host: host, LockTTL: 2 * time.Second}
}

// migration is a migration whose command runs sql with psql.
func (f *fleetDB) migration(id, sql string) spec.Migration {
	return spec.Migration{ID: id, Phase: spec.PhaseExpand, Command: f.pg.Command(sql), Timeout: yamldoc.Duration(time.Minute)}
}

// rows lists what the migrations wrote to runs, in order.
func (f *fleetDB) rows(t *testing.T) string {
	return strings.ReplaceAll(f.pg.Query(t, "SELECT coalesce(string_agg(what, ',' ORDER BY n), '') FROM runs"), "\n", ",")
}

func entry(t *testing.T, l Store, id string) Entry {
	t.Helper()
	e, _, err := l.get(context.Background(), "api", id)
	if err != nil || e == nil {
		t.Fatalf("ledger entry %s: %v, %v", id, e, err)
	}
	return *e
}

// TestRaceRunsOnce: five hosts run the same two migrations at once; each runs once,
// in order (a second run would fail: what is unique), and every host sees them done.
func TestRaceRunsOnce(t *testing.T) {
	f := newFleetDB(t)
	f.pg.Query(t, "CREATE UNIQUE INDEX runs_once ON runs (what)")
	ms := []spec.Migration{
		f.migration("0007-orders-status", "INSERT INTO runs (what) VALUES ('0007'); SELECT pg_sleep(0.3)"),
		f.migration("0008-orders-index", "INSERT INTO runs (what) VALUES ('0008')"),
	}
	start := make(chan struct{})
	errs := make([]error, 5)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ran []string
	for i := range errs {
		r := f.runner(t, fmt.Sprintf("web-%02d", i+1))
		r.Ran = func(e Entry) {
			mu.Lock()
			ran = append(ran, e.ID+" "+e.State)
			mu.Unlock()
		}
		wg.Go(func() {
			<-start
			errs[i] = r.Run(context.Background(), "api", "2.0.0", ms)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("runner %d: %v", i+1, err)
		}
	}
	if got := f.rows(t); got != "0007,0008" {
		t.Errorf("runs = %q, want each migration once, in order", got)
	}
	if got := strings.Join(ran, ","); got != "0007-orders-status done,0008-orders-index done" {
		t.Errorf("Ran was called for %q, want each migration once", got)
	}
	l := NewLedger(f.etcd.Client(t), prefix)
	list, err := l.List(context.Background(), "api")
	if err != nil || len(list) != 2 {
		t.Fatalf("List = %+v, %v", list, err)
	}
	for _, e := range list {
		if e.State != StateDone || e.Host != list[0].Host || e.Version != "2.0.0" || e.End.Before(e.Start) || e.Checksum == "" {
			t.Errorf("entry %+v", e)
		}
	}
	if h, _ := l.Holder(context.Background()); h != "" {
		t.Errorf("%s still holds the lock", h)
	}
}

// killedRunner starts a runner of migration 0007 in a child process, waits until the
// ledger says it runs, kills it with SIGKILL, and returns when it is dead. The
// migration sleeps as long as the slow table says, then writes its row.
func (f *fleetDB) killedRunner(t *testing.T, marker string) {
	t.Helper()
	f.pg.Query(t, "UPDATE slow SET s = 60")
	argv := f.migrationSQL(marker)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+strings.Join([]string{f.etcd.Endpoints()[0], prefix, "web-01", "2s", strings.Join(argv, "\x1f")}, "|"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	l := NewLedger(f.etcd.Client(t), prefix)
	deadline := time.Now().Add(30 * time.Second)
	for {
		e, _, err := l.get(context.Background(), "api", "0007-orders-status")
		if err == nil && e != nil && e.State == StateRunning && processRuns(marker) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child runner did not start the migration: %+v, %v", e, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killed = true
	// The migration dies with its runner (checks.Prober.DieWithAgent): nothing of it
	// runs on while the next runner decides.
	for end := time.Now().Add(5 * time.Second); processRuns(marker); {
		if time.Now().After(end) {
			t.Fatal("the migration's psql runs on after its runner was killed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (f *fleetDB) migrationSQL(marker string) []string {
	return f.pg.Command(fmt.Sprintf("SELECT pg_sleep(s), '%s' FROM slow; INSERT INTO runs (what) VALUES ('0007')", marker))
}

// processRuns reports whether a process runs whose command line holds marker.
func processRuns(marker string) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), marker) && !strings.Contains(string(b), childEnv) {
			return true
		}
	}
	return false
}

// TestKilledRunner: a runner killed mid-migration leaves the lock, which expires
// within its TTL; the next runner does not run the migration again (it is not
// rerunnable) and says where and when it was interrupted; an operator's --rerun
// lets it run, once.
func TestKilledRunner(t *testing.T) {
	f := newFleetDB(t)
	f.killedRunner(t, "marker-killed")
	l := NewLedger(f.etcd.Client(t), prefix)
	if h, _ := l.Holder(context.Background()); h != "web-01" {
		t.Fatalf("lock holder after the kill = %q, want web-01's lock left behind", h)
	}
	killedAt := time.Now()
	m := f.migration("0007-orders-status", "")
	m.Command = f.migrationSQL("marker-killed")
	// While the lock is held, the gate sees no halt: its holder may be running it.
	if h, err := f.runner(t, "web-03").Halted(context.Background(), "api", []spec.Migration{m}); h != nil || err != nil {
		t.Errorf("Halted while the killed runner's lock is held = %v, %v; want nil", h, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // 10 TTLs: a lock that never expires fails here
	defer cancel()
	err := f.runner(t, "web-02").Run(ctx, "api", "2.0.0", []spec.Migration{m})
	t.Logf("the next runner decided %v after the kill (lock TTL 2s)", time.Since(killedAt).Round(time.Millisecond))
	var halt *Halt
	if !errors.As(err, &halt) || halt.Kind != Interrupted {
		t.Fatalf("Run after the kill = %v, want an interrupted migration", err)
	}
	for _, want := range []string{"migration 0007-orders-status interrupted on web-01 at " + halt.Entry.Start.UTC().Format(time.RFC3339), "baton migration resolve api 0007-orders-status --done", "--rerun"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
	if got := f.rows(t); got != "" {
		t.Fatalf("runs = %q: the interrupted migration ran again", got)
	}
	// Asked again (every poll), it says the same, without waiting for any lock; so
	// does the gate, before a host takes its slot.
	if err := f.runner(t, "web-03").Run(context.Background(), "api", "2.0.0", []spec.Migration{m}); !errors.As(err, &halt) || halt.Kind != Interrupted {
		t.Fatalf("Run again = %v", err)
	}
	if h, err := f.runner(t, "web-03").Halted(context.Background(), "api", []spec.Migration{m}); h == nil || h.Kind != Interrupted || err != nil {
		t.Fatalf("Halted after the lock expired = %v, %v; want interrupted", h, err)
	}
	if _, err := l.Resolve(context.Background(), "api", "0007-orders-status", StatePending, "ops@admin"); err != nil {
		t.Fatal(err)
	}
	if h, err := f.runner(t, "web-03").Halted(context.Background(), "api", []spec.Migration{m}); h != nil || err != nil {
		t.Fatalf("Halted after --rerun = %v, %v; want nil", h, err)
	}
	f.pg.Query(t, "UPDATE slow SET s = 0")
	if err := f.runner(t, "web-02").Run(context.Background(), "api", "2.0.0", []spec.Migration{m}); err != nil {
		t.Fatalf("Run after --rerun: %v", err)
	}
	e := entry(t, l, "0007-orders-status")
	if got := f.rows(t); got != "0007" || e.State != StateDone || e.Host != "web-02" || e.Resolved == nil || e.Resolved.By != "ops@admin" || e.Resolved.From != StateRunning {
		t.Errorf("after the rerun: runs %q, entry %+v", got, e)
	}
}

// TestKilledRunnerRerunnable: a rerunnable migration is run again by the next runner.
func TestKilledRunnerRerunnable(t *testing.T) {
	f := newFleetDB(t)
	f.killedRunner(t, "marker-rerun")
	f.pg.Query(t, "UPDATE slow SET s = 0")
	m := f.migration("0007-orders-status", "")
	m.Command, m.Rerunnable = f.migrationSQL("marker-rerun"), true
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := f.runner(t, "web-02").Run(ctx, "api", "2.0.0", []spec.Migration{m}); err != nil {
		t.Fatalf("Run: %v", err)
	}
	e := entry(t, NewLedger(f.etcd.Client(t), prefix), "0007-orders-status")
	if got := f.rows(t); got != "0007" || e.State != StateDone || e.Host != "web-02" {
		t.Errorf("runs %q, entry %+v", got, e)
	}
}

// TestResolveDone: an operator who checked that an interrupted migration completed
// marks it done; it is not run again.
func TestResolveDone(t *testing.T) {
	f := newFleetDB(t)
	f.killedRunner(t, "marker-done")
	l := NewLedger(f.etcd.Client(t), prefix)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for l.waitFree(ctx) != nil {
		t.Fatal("the killed runner's lock did not expire")
	}
	if _, err := l.Resolve(ctx, "api", "0007-orders-status", StateDone, "ops@admin"); err != nil {
		t.Fatal(err)
	}
	m := f.migration("0007-orders-status", "")
	m.Command = f.migrationSQL("marker-done")
	if err := f.runner(t, "web-02").Run(ctx, "api", "2.0.0", []spec.Migration{m}); err != nil {
		t.Fatalf("Run after --done: %v", err)
	}
	if got := f.rows(t); got != "" {
		t.Errorf("runs = %q: a migration resolved as done ran", got)
	}
	if _, err := l.Resolve(ctx, "api", "0007-orders-status", StatePending, "ops"); !errors.Is(err, ErrNotResolvable) {
		t.Errorf("Resolve of a done migration = %v, want ErrNotResolvable", err)
	}
}

// waitFree waits until no runner holds the migration lock.
func (l *Ledger) waitFree(ctx context.Context) error {
	for {
		h, err := l.Holder(ctx)
		if err != nil || h == "" {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestResolveWhileLocked: a running migration whose runner holds the lock is not
// resolved: it may be running.
func TestResolveWhileLocked(t *testing.T) {
	f := newFleetDB(t)
	f.killedRunner(t, "marker-locked")
	l := NewLedger(f.etcd.Client(t), prefix)
	_, err := l.Resolve(context.Background(), "api", "0007-orders-status", StateDone, "ops")
	if err == nil || !strings.Contains(err.Error(), "web-01 holds the migration lock") {
		t.Errorf("Resolve while the lock is held = %v", err)
	}
	if _, err := l.Resolve(context.Background(), "api", "0099-none", StateDone, "ops"); !errors.Is(err, ErrNotResolvable) {
		t.Errorf("Resolve of a migration never started = %v", err)
	}
}

// TestLedgerSurvivesRestart: what the ledger says survives a restart of etcd; a
// done migration is not run again, and one whose command changed is refused.
func TestLedgerSurvivesRestart(t *testing.T) {
	f := newFleetDB(t)
	m := f.migration("0007-orders-status", "INSERT INTO runs (what) VALUES ('0007')")
	if err := f.runner(t, "web-01").Run(context.Background(), "api", "2.0.0", []spec.Migration{m}); err != nil {
		t.Fatal(err)
	}
	f.etcd.Stop(0)
	f.etcd.Restart(0)
	f.etcd.WaitLeader()
	l := NewLedger(f.etcd.Client(t), prefix)
	list, err := l.List(context.Background(), "")
	if err != nil || len(list) != 1 || list[0].State != StateDone || list[0].Checksum != Checksum(m.Command) {
		t.Fatalf("List after the restart = %+v, %v", list, err)
	}
	if err := f.runner(t, "web-02").Run(context.Background(), "api", "2.0.0", []spec.Migration{m}); err != nil {
		t.Fatal(err)
	}
	changed := f.migration("0007-orders-status", "INSERT INTO runs (what) VALUES ('0007 edited')")
	err = f.runner(t, "web-02").Run(context.Background(), "api", "2.0.1", []spec.Migration{changed})
	var halt *Halt
	if !errors.As(err, &halt) || halt.Kind != Changed || !strings.Contains(err.Error(), "ran on web-01 at") {
		t.Errorf("Run with an edited command = %v, want it refused", err)
	}
	if got := f.rows(t); got != "0007" {
		t.Errorf("runs = %q, want the migration once", got)
	}
}

// TestBackupFirst: the backup runs before the command; when it fails the command
// does not run and the migration halts until an operator asks for a rerun.
func TestBackupFirst(t *testing.T) {
	f := newFleetDB(t)
	m := f.migration("0007-orders-status", "INSERT INTO runs (what) VALUES ('command')")
	m.Backup = f.pg.Command("SELECT 1/0")
	r := f.runner(t, "web-01")
	err := r.Run(context.Background(), "api", "2.0.0", []spec.Migration{m})
	var halt *Halt
	if !errors.As(err, &halt) || halt.Kind != Failed || !strings.Contains(err.Error(), "backup:") || !strings.Contains(err.Error(), "division by zero") {
		t.Fatalf("Run with a failing backup = %v", err)
	}
	if got := f.rows(t); got != "" {
		t.Fatalf("runs = %q: the command ran after its backup failed", got)
	}
	if err := f.runner(t, "web-02").Run(context.Background(), "api", "2.0.0", []spec.Migration{m}); !errors.As(err, &halt) || halt.Kind != Failed || halt.Entry.Host != "web-01" {
		t.Fatalf("Run again = %v, want the failure on web-01 until resolved", err)
	}
	if _, err := r.Ledger.Resolve(context.Background(), "api", m.ID, StatePending, "ops"); err != nil {
		t.Fatal(err)
	}
	m.Backup = f.pg.Command("INSERT INTO runs (what) VALUES ('backup')")
	if err := r.Run(context.Background(), "api", "2.0.0", []spec.Migration{m}); err != nil {
		t.Fatal(err)
	}
	if got := f.rows(t); got != "backup,command" {
		t.Errorf("runs = %q, want the backup then the command", got)
	}
}

// TestTimeout: a migration past its timeout is killed and fails, with the reason.
func TestTimeout(t *testing.T) {
	f := newFleetDB(t)
	m := f.migration("0007-orders-status", "SELECT pg_sleep(30); INSERT INTO runs (what) VALUES ('late')")
	m.Timeout = yamldoc.Duration(300 * time.Millisecond)
	err := f.runner(t, "web-01").Run(context.Background(), "api", "2.0.0", []spec.Migration{m})
	var halt *Halt
	if !errors.As(err, &halt) || halt.Kind != Failed || !strings.Contains(err.Error(), "killed after the 300ms timeout") {
		t.Fatalf("Run = %v", err)
	}
	if got := f.rows(t); got != "" {
		t.Errorf("runs = %q", got)
	}
}

// TestUser: a migration runs as its user, as an exec check does; its output's tail
// is in the ledger.
func TestUser(t *testing.T) {
	if os.Geteuid() != 0 && os.Getenv("CI") != "true" {
		t.Skip("needs root, to run a command as another user")
	}
	f := newFleetDB(t)
	m := spec.Migration{ID: "whoami", Phase: spec.PhaseContract, Command: []string{"/usr/bin/id", "-un"}, User: "nobody", Timeout: yamldoc.Duration(10 * time.Second)}
	r := f.runner(t, "web-01")
	if err := r.Run(context.Background(), "api", "2.0.0", []spec.Migration{m}); err != nil {
		t.Fatal(err)
	}
	if e := entry(t, r.Ledger, "whoami"); strings.TrimSpace(e.Output) != "nobody" || e.Phase != spec.PhaseContract {
		t.Errorf("entry %+v, want the output of id -un as nobody", e)
	}
}

// TestLockLost: a runner cut off from etcd for longer than its lock's TTL loses the
// lock: its migration is killed, it writes nothing more (ErrLockLost), and the next
// runner finds the migration interrupted, not done.
func TestLockLost(t *testing.T) {
	c := testetcd.Start(t)
	proxy := testetcd.NewProxy(t, c.Endpoints()[0])
	cfg := c.ClientConfig()
	cfg.Endpoints = []string{proxy.URL()}
	cut := &Runner{Ledger: NewLedger(c.ClientWith(t, cfg), prefix), Host: "web-01", LockTTL: 2 * time.Second}
	marker := "lock-lost-" + fmt.Sprint(time.Now().UnixNano())
	m := spec.Migration{ID: "0007-orders-status", Phase: spec.PhaseExpand, Command: []string{"/bin/sh", "-c", "sleep 30 # " + marker}, Timeout: yamldoc.Duration(time.Minute)}
	done := make(chan error, 1)
	go func() { done <- cut.Run(context.Background(), "api", "2.0.0", []spec.Migration{m}) }()
	l := NewLedger(c.Client(t), prefix)
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if e, _, _ := l.get(context.Background(), "api", m.ID); e != nil && e.State == StateRunning && processRuns(marker) {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the migration did not start")
		}
	}
	proxy.Block()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the cut-off runner went on past its lock's TTL")
	}
	if !errors.Is(err, ErrLockLost) {
		t.Errorf("Run of the cut-off runner = %v, want ErrLockLost", err)
	}
	if processRuns(marker) {
		t.Error("the migration runs on after its runner lost the lock")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	next := &Runner{Ledger: l, Host: "web-02", LockTTL: 2 * time.Second}
	var halt *Halt
	if err := next.Run(ctx, "api", "2.0.0", []spec.Migration{m}); !errors.As(err, &halt) || halt.Kind != Interrupted || halt.Entry.Host != "web-01" {
		t.Errorf("Run of the next runner = %v, want the migration interrupted on web-01", err)
	}
	proxy.Unblock()
}

// TestWaitingForTheLock: a host whose migrations find the fleet-wide lock held by
// another host's (of another service, which may run for hours) is told who holds it
// while it waits, and told again once it holds the lock; its migration runs after
// the other's. (The agent keeps its watchdog quiet through that wait: it is not
// stuck.)
func TestWaitingForTheLock(t *testing.T) {
	f := newFleetDB(t)
	db := f.runner(t, "db-01")
	dbDone := make(chan error, 1)
	go func() {
		dbDone <- db.Run(context.Background(), "db", "3.0.0", []spec.Migration{
			f.migration("0001-big-table", "SELECT pg_sleep(1.5); INSERT INTO runs (what) VALUES ('db')"),
		})
	}()
	l := NewLedger(f.etcd.Client(t), prefix)
	deadline := time.Now().Add(30 * time.Second)
	for h, _ := l.Holder(context.Background()); h != "db-01"; h, _ = l.Holder(context.Background()) {
		if time.Now().After(deadline) {
			t.Fatal("db-01 never took the migration lock")
		}
		time.Sleep(20 * time.Millisecond)
	}
	var told []string
	err := f.runner(t, "web-02").RunWaiting(context.Background(), "api", "2.0.0",
		[]spec.Migration{f.migration("0007-orders-status", "INSERT INTO runs (what) VALUES ('api')")},
		func(holder string) { told = append(told, holder) })
	if err != nil {
		t.Fatal(err)
	}
	if err := <-dbDone; err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(told, ","); got != "db-01," {
		t.Errorf("waiting was told %q, want the holder and then \"\"", got)
	}
	if got := f.rows(t); got != "db,api" {
		t.Errorf("runs = %q, want db's migration and then api's", got)
	}
}
