package drain

import (
	"flag"
	"os"
	"testing"

	"github.com/baton-fleet/baton/internal/testgit"
)

// TestMain fails the run when a test leaves a goroutine or a child process (an
// HAProxy, a command) behind. Not when fuzzing: the fuzzing engine's own signal
// goroutine would count as a leak.
func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		os.Exit(m.Run())
	}
	os.Exit(testgit.Main(m))
}
