package main

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/baton-fleet/baton/internal/golden"
)

// TestValidateWarnings: a repository that every agent refuses by default, but that an
// agent may be configured to accept, passes with a warning that CI can see.
func TestValidateWarnings(t *testing.T) {
	cmd := exec.Command(binary, "validate", "testdata/insecure")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("exit %d\n--- stdout\n%s--- stderr\n%s", code, stdout.String(), stderr.String())
	golden.Check(t, filepath.Join("testdata", "golden", "validate-insecure.txt"), []byte(got))
}
