package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-fleet/baton/config"
	"github.com/baton-fleet/baton/fleet"
	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/lease"
	"github.com/baton-fleet/baton/migrate"
)

// fleetClient connects to the etcd of the agent configuration in file.
func fleetClient(file string) (*clientv3.Client, string, error) {
	cfg, err := config.Load(file)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", file, err)
	}
	return configClient(file, cfg)
}

// configClient connects to the etcd of cfg, the agent configuration in file.
func configClient(file string, cfg *config.Config) (*clientv3.Client, string, error) {
	if cfg.Lease.Backend != config.LeaseEtcd || cfg.Lease.Etcd == nil {
		return nil, "", fmt.Errorf("%s: lease.backend is %s; the fleet state needs etcd", file, cfg.Lease.Backend)
	}
	e := cfg.Lease.Etcd
	cli, err := lease.NewClient(lease.EtcdClientConfig{
		Endpoints: e.Endpoints, Username: e.Username, PasswordFile: e.PasswordFile,
		TLS: lease.EtcdTLS{CAFile: e.TLS.CAFile, CertFile: e.TLS.CertFile, KeyFile: e.TLS.KeyFile},
	})
	return cli, e.Prefix, err
}

// withFleet runs f with the fleet store of the configuration named by the --config flag.
func withFleet(cmd *cobra.Command, f func(ctx context.Context, s *fleet.Store, cli *clientv3.Client, prefix string) error) error {
	file, _ := cmd.Flags().GetString("config")
	cli, prefix, err := fleetClient(file)
	if err != nil {
		return failed(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
	defer cancel()
	if err := f(ctx, fleet.NewStore(cli, prefix), cli, prefix); err != nil {
		return failed(err)
	}
	return nil
}

func operator() string {
	if u, err := user.Current(); err == nil {
		host, _ := os.Hostname()
		return u.Username + "@" + host
	}
	return "unknown"
}

func newFleetCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "fleet [--json]",
		Short: "Show the fleet: groups, lease holders, hosts and their commits, halted commits, pauses",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withFleet(cmd, func(ctx context.Context, s *fleet.Store, cli *clientv3.Client, prefix string) error {
				snap, err := s.Snapshot(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(cmd.OutOrStdout(), snap)
				}
				if err := writeFleet(cmd.OutOrStdout(), snap, time.Now()); err != nil {
					return err
				}
				return writeLedgerHalts(ctx, cmd.OutOrStdout(), migrate.NewLedger(cli, prefix))
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the fleet state as JSON")
	cmd.AddCommand(newForgetCmd())
	return cmd
}

func newForgetCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "forget HOST [--force]",
		Short: "Remove a host that is gone for good from the fleet state: its record, its lease slot key and its canary spots",
		Long: `Forget removes HOST from the fleet state in etcd: its record (so that it no longer
holds back the groups that run after its own, nor shows in baton fleet), its slot
key in every group's lease, and the canary spots it took (another host may take
them). The halts it recorded stay: they are the release's. It refuses while the
host's record says it is in a transaction, or it holds or waits for a lease slot,
unless --force: forget a host in a transaction only when it is known down. A live
agent writes its record again at its next heartbeat.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withFleet(cmd, func(ctx context.Context, s *fleet.Store, _ *clientv3.Client, _ string) error {
				f, err := s.Forget(ctx, args[0], force)
				if err != nil {
					return err
				}
				writeForgotten(cmd.OutOrStdout(), args[0], f, operator())
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "forget the host even if it is in a transaction or has a lease slot key")
	return cmd
}

// writeForgotten says what Forget removed.
func writeForgotten(w io.Writer, host string, f fleet.Forgotten, by string) {
	var what []string
	if f.Record {
		rec := "its record"
		if f.Host.Group != "" {
			rec += fmt.Sprintf(" (group %s, %s at %s", f.Host.Group, f.Host.State, commitid.Short(f.Host.Commit))
			if f.Host.Target != "" {
				rec += " to " + commitid.Short(f.Host.Target)
			}
			rec += ")"
		}
		what = append(what, rec)
	}
	for _, g := range f.Slots {
		what = append(what, "its slot key in group "+g)
	}
	for _, c := range f.Canaries {
		what = append(what, "its canary spot for "+commitid.Short(c))
	}
	fmt.Fprintf(w, "forgot %s (by %s): %s\n", host, by, strings.Join(what, "; "))
}

// writeFleet prints the fleet state for a person, judging at now which hosts are
// stale (not seen for fleet.StaleAfter).
func writeFleet(w io.Writer, snap *fleet.Snapshot, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if snap.Paused != nil {
		fmt.Fprintf(tw, "FLEET PAUSED by %s at %s: %s\n\n", snap.Paused.By, snap.Paused.Time.Format(time.RFC3339), snap.Paused.Reason)
	}
	fmt.Fprintln(tw, "GROUP\tSLOTS\tHOLDERS\tSTATE")
	for _, name := range slices.Sorted(maps.Keys(snap.Groups)) {
		g := snap.Groups[name]
		state := "running"
		if g.Paused != nil {
			state = "paused by " + g.Paused.By
		}
		var halts []string
		for _, c := range slices.Sorted(maps.Keys(g.Failed)) {
			f := g.Failed[c]
			halts = append(halts, fmt.Sprintf("HALTED on %s (failed on %s: %s)", commitid.Short(c), f.Host, f.Reason))
		}
		if len(halts) > 0 {
			state = strings.Join(halts, "; ")
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", name, g.Slots, strings.Join(g.Holders, ","), state)
	}
	fmt.Fprintln(tw, "\nHOST\tGROUP\tCOMMIT\tSTATE\tTARGET\tSINCE\tSEEN\tRESULT")
	stale := 0
	for _, name := range slices.Sorted(maps.Keys(snap.Hosts)) {
		h := snap.Hosts[name]
		seen := h.LastSeen().Format(time.RFC3339)
		if h.Stale(now) {
			seen += " STALE"
			stale++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Host, h.Group, commitid.Short(h.Commit), h.State, commitid.Short(h.Target),
			h.Time.Format(time.RFC3339), seen, h.Result)
	}
	if stale > 0 {
		fmt.Fprintf(tw, "\n%d host(s) not seen for %gh: they hold back no group's after:; baton fleet forget HOST if gone for good\n", stale, fleet.StaleAfter.Hours())
	}
	if len(snap.Problems) > 0 {
		fmt.Fprintln(tw, "\nUNREADABLE KEY\tSKIPPED BECAUSE")
		for _, p := range snap.Problems {
			fmt.Fprintf(tw, "%s\t%s\n", printable(p.Key), p.Err)
		}
	}
	return tw.Flush()
}

// printable quotes s when it holds anything but printable characters: a key of
// etcd is any bytes.
func printable(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

func newPauseCmd(pause bool) *cobra.Command {
	var reason string
	use, short := "resume [GROUP]", "Let a group (or the whole fleet) start upgrades again"
	if pause {
		use, short = "pause [GROUP]", "Stop a group (or the whole fleet) from starting upgrades; those in flight finish"
	}
	cmd := &cobra.Command{
		Use: use, Short: short, Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			group := ""
			if len(args) == 1 {
				group = args[0]
			}
			return withFleet(cmd, func(ctx context.Context, s *fleet.Store, _ *clientv3.Client, _ string) error {
				what := "the fleet"
				if group != "" {
					what = "group " + group
				}
				if pause {
					if err := s.Pause(ctx, group, operator(), reason); err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "paused %s\n", what)
					return nil
				}
				if err := s.Resume(ctx, group); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "resumed %s\n", what)
				return nil
			})
		},
	}
	if pause {
		cmd.Flags().StringVar(&reason, "reason", "", "why, shown in baton fleet and baton status")
	}
	return cmd
}

func newPromoteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "promote GROUP COMMIT",
		Short: "Let a group go on past its canaries with COMMIT",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withFleet(cmd, func(ctx context.Context, s *fleet.Store, _ *clientv3.Client, _ string) error {
				commit, err := resolveCommit(ctx, s, args[0], args[1])
				if err != nil {
					return err
				}
				if err := s.Promote(ctx, args[0], commit, operator()); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "promoted %s in group %s\n", commitid.Short(commit), args[0])
				return nil
			})
		},
	}
}

// resolveCommit expands a commit prefix (commitid.Match) with the commits the group's
// hosts run or go to; a full id no host knows yet is taken as it is.
func resolveCommit(ctx context.Context, s *fleet.Store, group, prefix string) (string, error) {
	prefix = strings.ToLower(prefix)
	if err := commitid.CheckPrefix(prefix); err != nil {
		return "", &exitError{code: 2, err: fmt.Errorf("%q: %w", prefix, err)}
	}
	snap, err := s.Snapshot(ctx)
	if err != nil {
		return "", err
	}
	var known []string
	for _, h := range snap.Hosts {
		if h.Group == group {
			known = append(known, h.Commit, h.Target)
		}
	}
	c, err := commitid.Match(prefix, known)
	switch {
	case errors.Is(err, commitid.ErrNoMatch) && commitid.IsFull(prefix):
		return prefix, nil
	case errors.Is(err, commitid.ErrNoMatch):
		return "", fmt.Errorf("no host of group %s knows a commit %s; give all 40 digits", group, prefix)
	}
	return c, err
}

func newLeaseCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "lease", Short: "Operator's tools for the fleet lease"}
	var host, group string
	release := &cobra.Command{
		Use:   "release --group GROUP --host HOST",
		Short: "Free the lease slot of a dead host: the last resort when its agent cannot come back within the TTL",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if host == "" || group == "" {
				return &exitError{code: 2, err: errors.New("--group and --host are required")}
			}
			return withFleet(cmd, func(ctx context.Context, _ *fleet.Store, cli *clientv3.Client, prefix string) error {
				if err := lease.ReleaseHost(ctx, cli, prefix, group, host); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "released the %s slot of %s (by %s)\n", group, host, operator())
				return nil
			})
		},
	}
	release.Flags().StringVar(&host, "host", "", "the host whose slot to free")
	release.Flags().StringVar(&group, "group", "", "its group")
	cmd.AddCommand(release)
	return cmd
}

// fleetCommands are the commands that read or steer the fleet state in etcd; they
// take the agent configuration for the etcd settings.
func fleetCommands() []*cobra.Command {
	cmds := []*cobra.Command{newFleetCmd(), newPauseCmd(true), newPauseCmd(false), newPromoteCmd(), newLeaseCmd(), newMigrationsCmd(), newMigrationCmd()}
	for _, c := range cmds {
		c.PersistentFlags().String("config", config.DefaultPath, "the agent configuration (for its lease.etcd settings)")
	}
	return cmds
}
