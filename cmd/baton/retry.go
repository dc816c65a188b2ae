package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/baton-fleet/baton/agent"
	"github.com/baton-fleet/baton/rollback"
)

func newRetryCmd() *cobra.Command {
	var state string
	cmd := &cobra.Command{
		Use:   "retry COMMIT",
		Short: "Lift the quarantine of a commit that failed on this host, so the agent tries it again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store := &rollback.Store{Dir: state}
			q, err := store.Quarantine()
			if err != nil {
				return failed(err)
			}
			commit := args[0]
			for _, e := range q {
				if len(commit) >= 7 && len(commit) <= len(e.Commit) && e.Commit[:len(commit)] == commit {
					commit = e.Commit
				}
			}
			ok, err := store.ClearQuarantine(commit)
			if err != nil {
				return failed(err)
			}
			if !ok {
				return failed(fmt.Errorf("commit %s is not quarantined on this host", args[0]))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "lifted the quarantine of %s; the agent tries it at its next poll\n", commit)
			return nil
		},
	}
	cmd.Flags().StringVar(&state, "state", agent.DefaultStateDir, "the agent's state directory")
	return cmd
}
