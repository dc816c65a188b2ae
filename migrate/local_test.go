package migrate

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/yamldoc"
	"github.com/baton-fleet/baton/spec"
)

// localMigration counts its runs in a file, then sleeps as long as another file says.
func localMigration(dir, marker string) spec.Migration {
	script := "echo run >> " + filepath.Join(dir, "runs") + "; sleep $(cat " + filepath.Join(dir, "slow") + ") # " + marker
	return spec.Migration{ID: "0007-orders-status", Phase: spec.PhaseExpand, Command: []string{"/bin/sh", "-c", script}, Timeout: yamldoc.Duration(time.Minute)}
}

func runs(t *testing.T, dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "runs"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return strings.Count(string(b), "run")
}

// TestLocalRunsOnce: with the local lease the host's ledger is its own: a migration
// runs once, and an agent started again finds it done.
func TestLocalRunsOnce(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "slow"), []byte("0"), 0o644)
	m := localMigration(dir, "local-once")
	for range 2 {
		r := &Runner{Ledger: NewLocal(filepath.Join(dir, "state", "migrations")), Host: "h1"}
		if err := r.Run(context.Background(), "api", "2.0.0", []spec.Migration{m}); err != nil {
			t.Fatal(err)
		}
	}
	if n := runs(t, dir); n != 1 {
		t.Errorf("the migration ran %d times", n)
	}
	list, err := NewLocal(filepath.Join(dir, "state", "migrations")).List(context.Background(), "")
	if err != nil || len(list) != 1 || list[0].State != StateDone || list[0].Host != "h1" || list[0].Checksum != Checksum(m.Command) {
		t.Errorf("List = %+v, %v", list, err)
	}
}

// TestLocalKilledRunner: an agent killed mid-migration leaves it running; its lock
// goes with it at once, and the next runner says it was interrupted and does not run
// it again; --rerun lets it run.
func TestLocalKilledRunner(t *testing.T) {
	dir := t.TempDir()
	ledger := filepath.Join(dir, "migrations")
	os.WriteFile(filepath.Join(dir, "slow"), []byte("60"), 0o644)
	m := localMigration(dir, "local-killed-"+filepath.Base(dir))
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+strings.Join([]string{"local:" + ledger, "", "h1", "2s", strings.Join(m.Command, "\x1f")}, "|"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := NewLocal(ledger)
	for end := time.Now().Add(20 * time.Second); runs(t, dir) == 0 || !processRuns("local-killed-"+filepath.Base(dir)); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("the child runner did not start the migration")
		}
	}
	if h, _ := l.Holder(context.Background()); h != "h1" {
		t.Errorf("holder while the child runs = %q, want h1", h)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	for end := time.Now().Add(5 * time.Second); processRuns("local-killed-" + filepath.Base(dir)); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the migration runs on after its runner was killed")
		}
	}
	if h, _ := l.Holder(context.Background()); h != "" {
		t.Errorf("holder after the kill = %q: the kernel drops an flock with its holder", h)
	}
	r := &Runner{Ledger: l, Host: "h1"}
	err := r.Run(context.Background(), "api", "2.0.0", []spec.Migration{m})
	var halt *Halt
	if !errors.As(err, &halt) || halt.Kind != Interrupted || !strings.Contains(err.Error(), "migration 0007-orders-status interrupted on h1 at ") {
		t.Fatalf("Run after the kill = %v", err)
	}
	if n := runs(t, dir); n != 1 {
		t.Fatalf("the interrupted migration ran %d times", n)
	}
	if _, err := l.Resolve(context.Background(), "api", m.ID, StatePending, "ops"); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "slow"), []byte("0"), 0o644)
	if err := r.Run(context.Background(), "api", "2.0.0", []spec.Migration{m}); err != nil {
		t.Fatalf("Run after --rerun: %v", err)
	}
	if n := runs(t, dir); n != 2 {
		t.Errorf("after --rerun the migration ran %d times in all, want 2", n)
	}
	if _, err := l.Resolve(context.Background(), "api", m.ID, StateDone, "ops"); !errors.Is(err, ErrNotResolvable) {
		t.Errorf("Resolve of a done migration = %v", err)
	}
}

// TestLocalNames: a name from the command line never leaves the ledger's directory.
func TestLocalNames(t *testing.T) {
	l := NewLocal(t.TempDir())
	for _, tt := range [][2]string{{"..", "x"}, {"api", "../../etc/passwd"}, {"api/..", "x"}, {"", "x"}, {".lock", "x"}, {"api", ".x"}} {
		if _, err := l.Resolve(context.Background(), tt[0], tt[1], StateDone, "ops"); err == nil || errors.Is(err, ErrNotResolvable) {
			t.Errorf("Resolve(%q, %q) = %v, want the name refused", tt[0], tt[1], err)
		}
	}
}
