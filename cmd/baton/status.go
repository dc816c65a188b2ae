package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/baton-fleet/baton/api"
	"github.com/baton-fleet/baton/config"
	"github.com/baton-fleet/baton/sharedhead"
)

// apiTimeout bounds every call to the local API.
const apiTimeout = 10 * time.Second

func newStatusCmd() *cobra.Command {
	var socket string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show what this host runs and what its agent is doing, and why the last upgrade stopped",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), apiTimeout)
			defer cancel()
			st, err := api.NewClient(socket).State(ctx)
			if err != nil {
				return failed(err)
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(w, st)
			}
			f, isFile := w.(*os.File)
			color := isFile && term.IsTerminal(int(f.Fd())) && os.Getenv("NO_COLOR") == ""
			return api.WriteTable(w, st, color)
		},
	}
	cmd.Flags().StringVar(&socket, "socket", config.DefaultAPISocket, "the agent's API socket")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the state as JSON")
	return cmd
}

func newSyncCmd() *cobra.Command {
	var socket, configFile string
	var fleetWide bool
	cmd := &cobra.Command{
		Use:   "sync [--fleet]",
		Short: "Make the agent poll the fleet repository now; with --fleet, every agent of the fleet",
		Long: `Make the agent poll the fleet repository now.

With --fleet, ask the fleet's elected fetcher (repo.sharedHead, with the etcd backend)
to poll now: it publishes the head it finds, and every agent fetches it at once. This is
what a push webhook does; run it from a CI job after a push when the forge cannot reach
the agents.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), apiTimeout)
			defer cancel()
			if fleetWide {
				return syncFleet(ctx, cmd, configFile)
			}
			if err := api.NewClient(socket).Sync(ctx); err != nil {
				return failed(err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "the agent polls now")
			return nil
		},
	}
	cmd.Flags().StringVar(&socket, "socket", config.DefaultAPISocket, "the agent's API socket")
	cmd.Flags().BoolVar(&fleetWide, "fleet", false, "ask the fleet's fetcher to poll, so that every agent fetches the new head (etcd backend)")
	cmd.Flags().StringVar(&configFile, "config", config.DefaultPath, "with --fleet: the agent configuration (for its lease.etcd settings and branch)")
	return cmd
}

// syncFleet writes the sync request that the fleet's fetcher watches.
func syncFleet(ctx context.Context, cmd *cobra.Command, file string) error {
	cfg, err := config.Load(file)
	if err != nil {
		return failed(fmt.Errorf("%s: %w", file, err))
	}
	if !cfg.Repo.SharedHead {
		return failed(fmt.Errorf("%s: repo.sharedHead is off (it needs lease.backend etcd): no fetcher polls for the fleet; run baton sync on each host", file))
	}
	cli, prefix, err := configClient(file, cfg)
	if err != nil {
		return failed(err)
	}
	defer cli.Close()
	if err := sharedhead.RequestSync(ctx, cli, prefix, cfg.Repo.Branch, sharedhead.Sync{By: operator(), Why: "baton sync --fleet"}); err != nil {
		return failed(err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "the fleet's fetcher polls %s now; every agent fetches what it finds\n", cfg.Repo.Branch)
	return nil
}
