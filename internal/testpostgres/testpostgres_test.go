package testpostgres

import (
	"os"
	"strconv"
	"syscall"
	"testing"
)

// TestStart: a server answers queries and keeps what they write; once the test's
// cleanup ran, its process is gone.
func TestStart(t *testing.T) {
	var pid int
	t.Run("server", func(t *testing.T) {
		s := Start(t)
		s.Query(t, "CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2)")
		if got := s.Query(t, "SELECT sum(n) FROM t"); got != "3" {
			t.Errorf("sum = %q, want 3", got)
		}
		if got := s.Query(t, "SHOW port"); got != strconv.Itoa(s.Port) {
			t.Errorf("port = %s, want %d", got, s.Port)
		}
		pid = s.cmd.Process.Pid
	})
	if pid == 0 {
		return // skipped
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("postgres (pid %d) still runs after its test", pid)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
		t.Errorf("/proc/%d still exists", pid)
	}
}
