package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/baton-fleet/baton/examples"
	"github.com/baton-fleet/baton/plan"
	"github.com/baton-fleet/baton/rollback"
	"github.com/baton-fleet/baton/spec"
)

func newDemoCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Validate and plan the embedded example fleet",
		Long: `Demo runs baton on the example fleet built into the binary: it validates the
repository and shows the plan for a fresh web and db host. The live demo, a rolling
upgrade of real hosts behind a load balancer, is ./scripts/demo (as root).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			r, err := spec.Load(examples.Fleet())
			if err != nil {
				return failed(fmt.Errorf("the embedded example fleet is invalid: %w", err))
			}
			fmt.Fprintf(w, "== baton validate examples/fleet\n%s\n", summary(r))
			for _, host := range []string{"db-01", "web-01"} {
				hs, err := r.ForHost(host, "example", "/var/lib/baton")
				if err != nil {
					return failed(err)
				}
				p, err := plan.Compute(hs, &rollback.LastGood{}, "/nonexistent")
				if err != nil {
					return failed(err)
				}
				fmt.Fprintf(w, "\n== baton plan --host %s (a fresh host)\n", host)
				if err := p.WriteText(w); err != nil {
					return err
				}
			}
			fmt.Fprintln(w, "\nthe live demo, a rolling upgrade of three real systemd hosts behind HAProxy: ./scripts/demo (as root)")
			return nil
		},
	}
}
