package main

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/baton-fleet/baton/internal/golden"
)

// TestValidateWarnings: a repository that every agent refuses by default, but that an
// agent may be configured to accept, passes with a warning that CI can see.
func TestValidateWarnings(t *testing.T) {
	code, stdout, stderr := runBinary(t, "validate", "testdata/insecure")
	got := fmt.Sprintf("exit %d\n--- stdout\n%s--- stderr\n%s", code, stdout, stderr)
	golden.Check(t, filepath.Join("testdata", "golden", "validate-insecure.txt"), []byte(got))
}
