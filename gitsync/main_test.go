package gitsync

import (
	"os"
	"testing"

	"github.com/baton-fleet/baton/internal/testgit"
)

func TestMain(m *testing.M) { os.Exit(testgit.Main(m)) }
