package fleet

import (
	"os"
	"testing"

	"github.com/baton-fleet/baton/internal/testetcd"
)

func TestMain(m *testing.M) { os.Exit(testetcd.Main(m)) }
