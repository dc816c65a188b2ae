package testfleet

import (
	"testing"

	"github.com/baton-fleet/baton/internal/testetcd"
)

// Main is the TestMain of every package whose tests boot hosts with this package:
//
//	func TestMain(m *testing.M) { os.Exit(testfleet.Main(m)) }
//
// It is testetcd.Main (etcd members as child processes, and the check that no
// goroutine or child process outlives the tests), then removes the binaries Build made.
func Main(m *testing.M) int {
	code := testetcd.Main(m)
	testBuilds.remove()
	return code
}
