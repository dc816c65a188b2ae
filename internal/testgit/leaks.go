package testgit

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/leakcheck"
)

// Main runs a package's tests and then fails the run when goroutines or
// child processes they started are still alive a few seconds later. Use it
// as: func TestMain(m *testing.M) { os.Exit(testgit.Main(m)) }.
func Main(m *testing.M) int {
	base := runtime.NumGoroutine()
	code := m.Run()
	if code != 0 || fuzzing() {
		return code // the fuzz engine keeps goroutines of its own
	}
	if err := waitNoLeaks(base, 5*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "testgit: leak after the tests:", err)
		return 1
	}
	return 0
}

func waitNoLeaks(base int, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		n := runtime.NumGoroutine()
		kids := leakcheck.Children()
		if n <= base && len(kids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			if len(kids) > 0 {
				return fmt.Errorf("child processes still running: %s", strings.Join(kids, ", "))
			}
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			return fmt.Errorf("%d goroutines, %d before the tests:\n%s", n, base, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fuzzing reports whether this run is a fuzzing run (go test -fuzz).
func fuzzing() bool {
	f := flag.Lookup("test.fuzz")
	return f != nil && f.Value.String() != ""
}
