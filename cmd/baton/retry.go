package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/baton-fleet/baton/api"
	"github.com/baton-fleet/baton/config"
	"github.com/baton-fleet/baton/fleet"
	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/rollback"
)

func newRetryCmd() *cobra.Command {
	var state, socket, configFile string
	cmd := &cobra.Command{
		Use:   "retry COMMIT",
		Short: "Lift the quarantine of a commit that failed on this host, so the agent tries it again",
		Long: `Retry asks the running agent, over its API socket, to lift the quarantine of COMMIT
(a full hash or a prefix of at least 7 digits); the agent tries it at once. When no
agent answers, it edits the state directory (--state) directly.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			commit := strings.ToLower(args[0])
			if err := commitid.CheckPrefix(commit); err != nil {
				return &exitError{code: 2, err: fmt.Errorf("%q: %w", args[0], err)}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), apiTimeout)
			defer cancel()
			// With the etcd lease, the commit also halted its group: lift that first.
			lifted := 0
			if cli, prefix, err := fleetClient(configFile); err == nil {
				n, err := fleet.NewStore(cli, prefix).Retry(ctx, commit)
				cli.Close()
				if err != nil {
					return failed(err)
				}
				lifted = n
				if n > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "lifted the halt on %s in %d group(s)\n", args[0], n)
				}
			}
			err := api.NewClient(socket).Retry(ctx, commit)
			if err == nil {
				fmt.Fprintf(cmd.OutOrStdout(), "lifted the quarantine of %s; the agent tries it now\n", args[0])
				return nil
			}
			if errors.Is(err, api.ErrNotFound) && lifted > 0 {
				return nil // not quarantined here; the group's halt was what held it
			}
			if errors.Is(err, api.ErrNotFound) || errors.Is(err, api.ErrInvalid) {
				return failed(err)
			}
			commit, err = (&rollback.Store{Dir: state}).LiftQuarantine(commit)
			if errors.Is(err, rollback.ErrNotQuarantined) && lifted > 0 {
				return nil // as with the agent: the group's halt was what held it
			}
			if err != nil {
				return failed(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "lifted the quarantine of %s; the agent tries it at its next poll\n", commit)
			return nil
		},
	}
	cmd.Flags().StringVar(&state, "state", config.DefaultStateDir, "the agent's state directory, when no agent answers")
	cmd.Flags().StringVar(&socket, "socket", config.DefaultAPISocket, "the agent's API socket")
	cmd.Flags().StringVar(&configFile, "config", config.DefaultPath, "the agent configuration (with the etcd lease, the group's halt is lifted too)")
	return cmd
}
