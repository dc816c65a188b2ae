// Command baton upgrades a fleet's systemd units from a git repository, one host at a
// time, and reverts what fails its checks.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=... -X main.date=...".
var (
	version = "dev"
	commit  = "unknown"
	date    = "unknown"
)

// exitError ends the program with a code, after its message (if any) is printed.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line args and returns the exit code: 0 on success, 1 when
// the command found a problem (a bad repository, say), 2 on a usage error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil && ee.err.Error() != "" {
			fmt.Fprintln(stderr, "baton:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "baton:", err)
	return 2
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "baton",
		Short:         "Upgrade a fleet's systemd units from git, one host at a time, without downtime",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newValidateCmd(), newPlanCmd(), newAgentCmd(), newValidateConfigCmd(), newRetryCmd(), newRollbackCmd(), newStatusCmd(), newSyncCmd(), newDemoCmd(), newVersionCmd(), newManCmd())
	root.AddCommand(fleetCommands()...)
	return root
}

// writeJSON writes v as indented JSON, for --json: <, > and & as they are (in a
// range such as >=2.0.0, say), not escaped for HTML.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// failed wraps an error from a command that ran and found a problem: exit code 1.
func failed(err error) error { return &exitError{code: 1, err: err} }
