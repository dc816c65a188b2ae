package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"

	"github.com/go-git/go-git/v5"
	"github.com/spf13/cobra"

	"github.com/baton-fleet/baton/plan"
	"github.com/baton-fleet/baton/rollback"
	"github.com/baton-fleet/baton/spec"
)

type planFlags struct {
	repo, host, state, units, revision string
	json, exitCode, fleet              bool
}

func newPlanCmd() *cobra.Command {
	var f planFlags
	cmd := &cobra.Command{
		Use:   "plan --repo DIR (--host NAME [--state DIR] | --fleet)",
		Short: "Show what an agent on a host would change, or (--fleet) the order a rollout moves the groups in",
		Long: `Plan resolves the host's group and services in the fleet repository at --repo,
renders their unit files for that host, and compares them with what the agent recorded
in --state and what lies in --units. Changed unit files are shown as unified diffs.
With --json it prints the plan for machines; with --exit-code it exits 3 when there
are changes.

With --fleet it shows instead the steps a rollout of the repository takes across the
fleet: which groups move together, after which (their after: and the services they
require, see requires: in service.yaml), the versions of each service that may run
side by side while a step moves (old+V), and where the expand and contract
migrations run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := spec.Load(os.DirFS(f.repo))
			if err != nil {
				printErrors(cmd.ErrOrStderr(), f.repo, err)
				return failed(errors.New(""))
			}
			if f.fleet && f.host != "" {
				return &exitError{code: 2, err: errors.New("--fleet plans every group; leave --host out")}
			}
			if f.fleet {
				return runFleetPlan(cmd.OutOrStdout(), r, f)
			}
			if f.host == "" {
				return &exitError{code: 2, err: errors.New(`required flag(s) "host" not set`)}
			}
			return runPlan(cmd.OutOrStdout(), r, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.repo, "repo", ".", "the fleet repository's directory")
	fl.StringVar(&f.host, "host", "", "the host to plan for (required without --fleet)")
	fl.StringVar(&f.state, "state", "/var/lib/baton", "the agent's state directory")
	fl.StringVar(&f.units, "units", "/etc/systemd/system", "the directory the agent installs unit files into")
	fl.StringVar(&f.revision, "revision", "", "the revision to show (default: the repository's HEAD commit)")
	fl.BoolVar(&f.json, "json", false, "print the plan as JSON")
	fl.BoolVar(&f.exitCode, "exit-code", false, "exit 3 when the plan has changes")
	fl.BoolVar(&f.fleet, "fleet", false, "show the steps of a rollout across the fleet's groups")
	return cmd
}

func runPlan(w io.Writer, r *spec.Repo, f planFlags) error {
	// Release paths are rendered into unit files: they must be absolute.
	state, err := filepath.Abs(f.state)
	if err != nil {
		return failed(err)
	}
	f.state = state
	rev := f.revision
	if rev == "" {
		rev = headCommit(f.repo)
	}
	hs, err := r.ForHost(f.host, rev, f.state)
	if err != nil {
		return failed(err)
	}
	have, err := rollback.ReadLastGood(f.state)
	if err != nil {
		return failed(err)
	}
	p, err := plan.Compute(hs, have, f.units)
	if err != nil {
		return failed(err)
	}
	if f.json {
		err = writeJSON(w, p)
	} else {
		err = p.WriteText(w)
	}
	if err != nil {
		return err
	}
	if f.exitCode && p.Changed() {
		return &exitError{code: 3, err: errors.New("")}
	}
	return nil
}

func runFleetPlan(w io.Writer, r *spec.Repo, f planFlags) error {
	rev := f.revision
	if rev == "" {
		rev = headCommit(f.repo)
	}
	p, err := plan.Fleet(r, rev)
	if err != nil {
		return failed(err)
	}
	if f.json {
		return writeJSON(w, p)
	}
	return p.WriteText(w, r)
}

// headCommit is the commit the repository's HEAD points at, or "working-tree" when
// dir is not in a git repository (or HEAD points at nothing yet).
func headCommit(dir string) string {
	repo, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{DetectDotGit: true})
	if err != nil {
		return "working-tree"
	}
	head, err := repo.Head()
	if err != nil {
		return "working-tree"
	}
	return head.Hash().String()
}
