package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/baton-fleet/baton/internal/yamldoc"
	"github.com/baton-fleet/baton/spec"
)

func newValidateCmd() *cobra.Command {
	return withVerify(&cobra.Command{
		Use:   "validate [DIR]",
		Short: "Check a fleet repository; print every error as file:line: message",
		Long: `Validate reads the fleet repository in DIR (default: the current directory) as an
agent would: fleet.yaml, every services/*/service.yaml and unit file. It renders every
template and parses every unit file. It checks that the repository's own versions are
in every requires: range, and that some order of upgrades across the groups exists
(it names the cycle when none does; baton plan --fleet shows the order). It prints every problem, not just the first, and
exits 1 if there is any; on a good repository it prints a one-line summary and exits 0.
What agents refuse by default but may be configured to accept (an artifact over plain
http://, which needs the host in the agent's artifacts.allowInsecure) is printed as
"warning: file:line: message" on stderr, and does not change the exit status.
Run it in the repository's CI and in a pre-receive hook.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := "."
			if len(args) == 1 {
				dir = args[0]
			}
			if info, err := os.Stat(dir); err != nil || !info.IsDir() {
				return &exitError{code: 2, err: fmt.Errorf("%s is not a directory", dir)}
			}
			r, err := spec.Load(os.DirFS(dir))
			if err != nil {
				printErrors(cmd.ErrOrStderr(), dir, err)
				return failed(errors.New(""))
			}
			printWarnings(cmd.ErrOrStderr(), dir, r.Warnings())
			fmt.Fprintln(cmd.OutOrStdout(), summary(r))
			return nil
		},
	})
}

// printErrors prints each error of a repository, its file named as the user named
// the repository: relative to the current directory.
func printErrors(w io.Writer, dir string, err error) {
	var list yamldoc.Errors
	if !errors.As(err, &list) {
		fmt.Fprintln(w, err)
		return
	}
	for _, e := range list {
		e.File = filepath.Join(dir, e.File)
		fmt.Fprintln(w, e)
	}
	fmt.Fprintf(w, "%d error(s)\n", len(list))
}

// printWarnings prints each warning as "warning: file:line: message", its file named
// as printErrors names it.
func printWarnings(w io.Writer, dir string, list yamldoc.Errors) {
	for _, e := range list {
		e.File = filepath.Join(dir, e.File)
		fmt.Fprintln(w, "warning:", e)
	}
}

func summary(r *spec.Repo) string {
	var groups, patterns []string
	for _, g := range r.Fleet.Groups {
		groups = append(groups, g.Name)
		patterns = append(patterns, g.Hosts...)
	}
	services := make([]string, 0, len(r.Services))
	for name := range r.Services {
		services = append(services, name)
	}
	slices.Sort(services)
	freeze := ""
	if r.Fleet.Freeze {
		freeze = "; frozen"
	}
	return fmt.Sprintf("ok: %d groups (%s), %d services (%s), hosts %s%s",
		len(groups), strings.Join(groups, ", "), len(services), strings.Join(services, ", "), strings.Join(patterns, " "), freeze)
}
