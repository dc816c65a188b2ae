package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/baton-fleet/baton/api"
	"github.com/baton-fleet/baton/config"
	"github.com/baton-fleet/baton/internal/commitid"
)

func newRollbackCmd() *cobra.Command {
	var socket, to string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "rollback [--to COMMIT]",
		Short: "Put this host back on the revision it ran before, under the group's lease",
		Long: `Rollback asks the running agent to revert this host to an earlier revision it ran:
the newest one that is not quarantined, or --to COMMIT (a full hash or a prefix of at
least 7 digits) from the host's history. The agent runs it as an upgrade: it stages the
old release, waits for the group's lease, drains, switches, verifies, and reverts again
if the old revision fails its checks.

The revision the host leaves is quarantined on this host and, with the etcd lease,
halted in its group, so that no host starts it again; ` + "`baton retry COMMIT`" + ` lifts both.

Rollback waits until the agent is done and prints each step; --wait=false returns as
soon as the agent has taken the request.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			to = strings.ToLower(to)
			if to != "" {
				if err := api.CheckCommit(to); err != nil {
					return &exitError{code: 2, err: fmt.Errorf("--to %q: %w", to, err)}
				}
			}
			c := api.NewClient(socket)
			ctx, cancel := context.WithTimeout(cmd.Context(), apiTimeout)
			ans, err := c.Rollback(ctx, to)
			cancel()
			if err != nil {
				return failed(err)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "rolling back %s -> %s under the group's lease\n", commitid.Short(ans.From), commitid.Short(ans.To))
			if !wait {
				return nil
			}
			ctx, cancel = context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			res, err := waitRollback(ctx, c, ans, w)
			if err != nil {
				return failed(err)
			}
			if res.Outcome != api.OutcomeRolledBack {
				why := res.Outcome
				if res.Message != "" {
					why += ": " + res.Message
				}
				return failed(fmt.Errorf("the rollback to %s did not happen: %s", commitid.Short(ans.To), why))
			}
			fmt.Fprintf(w, "rolled back %s -> %s\n", commitid.Short(ans.From), commitid.Short(ans.To))
			return nil
		},
	}
	cmd.Flags().StringVar(&socket, "socket", config.DefaultAPISocket, "the agent's API socket")
	cmd.Flags().StringVar(&to, "to", "", "the revision to go back to (default: the newest earlier one not quarantined)")
	cmd.Flags().BoolVar(&wait, "wait", true, "wait until the rollback ends, printing its steps")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "how long to wait (waiting for the lease may take long)")
	return cmd
}

// waitRollback follows the agent's state until the rollback ans ends, printing each
// phase once, and returns how it ended.
func waitRollback(ctx context.Context, c *api.Client, ans api.RollbackAnswer, w io.Writer) (*api.Result, error) {
	gaveUp := func(err error) error {
		return fmt.Errorf("stopped waiting (%w); the agent goes on: see baton status", err)
	}
	last := ""
	for {
		st, err := c.State(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, gaveUp(ctx.Err())
			}
			return nil, err
		}
		if st.Phase != last {
			fmt.Fprintf(w, "  %s\n", st.Phase)
			last = st.Phase
		}
		if r := st.LastRollback; r != nil && r.Request == ans.Request {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return nil, gaveUp(ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}
