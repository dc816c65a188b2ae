package chaos

import (
	"os"
	"testing"

	"github.com/baton-fleet/baton/internal/testfleet"
)

func TestMain(m *testing.M) { os.Exit(testfleet.Main(m)) }
