package testetcd

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/leakcheck"
)

// Main is the TestMain of every package that starts a Cluster:
//
//	func TestMain(m *testing.M) { os.Exit(testetcd.Main(m)) }
//
// In a member's (or a gRPC proxy's) child process it runs that instead of the tests. Otherwise it
// runs the tests and then fails the run when goroutines or child processes they
// started are still alive a few seconds later.
func Main(m *testing.M) int {
	if code, ok := runIfChild(); ok {
		return code
	}
	canRunMembers.Store(true)
	base := len(goroutines())
	code := m.Run()
	if code != 0 {
		return code
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		gs := goroutines()
		kids := leakcheck.Children()
		if len(gs) <= base && len(kids) == 0 {
			return 0
		}
		if time.Now().After(deadline) {
			if len(kids) > 0 {
				fmt.Fprintln(os.Stderr, "testetcd: child processes still running after the tests:", strings.Join(kids, ", "))
			} else {
				fmt.Fprintf(os.Stderr, "testetcd: %d goroutines after the tests, %d before:\n%s\n", len(gs), base, strings.Join(gs, "\n\n"))
			}
			return 1
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// goroutines returns the stacks of the live goroutines, less os/signal's loop: once
// started (by the fuzzing engine, say) it lives as long as the process.
func goroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var gs []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "os/signal.signal_recv") {
			gs = append(gs, g)
		}
	}
	return gs
}
