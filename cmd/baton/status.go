package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/baton-fleet/baton/agent"
	"github.com/baton-fleet/baton/api"
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
	cmd.Flags().StringVar(&socket, "socket", agent.DefaultAPISocket, "the agent's API socket")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the state as JSON")
	return cmd
}

func newSyncCmd() *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "sync",
		Short: "Make the agent poll the fleet repository now",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), apiTimeout)
			defer cancel()
			if err := api.NewClient(socket).Sync(ctx); err != nil {
				return failed(err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "the agent polls now")
			return nil
		},
	}
	cmd.Flags().StringVar(&socket, "socket", agent.DefaultAPISocket, "the agent's API socket")
	return cmd
}
