package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-fleet/baton/config"
	"github.com/baton-fleet/baton/fleet"
	"github.com/baton-fleet/baton/migrate"
)

// withLedger runs f with the migrations ledger of the agent configuration named by
// the --config flag: in etcd with the etcd lease, in the state directory with the
// local lease.
func withLedger(cmd *cobra.Command, f func(ctx context.Context, l migrate.Store) error) error {
	file, _ := cmd.Flags().GetString("config")
	cfg, err := config.Load(file)
	if err != nil {
		return failed(fmt.Errorf("%s: %w", file, err))
	}
	if cfg.Lease.Backend == config.LeaseLocal {
		ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
		defer cancel()
		if err := f(ctx, migrate.NewLocal(filepath.Join(cfg.Paths.State, migrate.LocalDir))); err != nil {
			return failed(err)
		}
		return nil
	}
	return withFleet(cmd, func(ctx context.Context, _ *fleet.Store, cli *clientv3.Client, prefix string) error {
		return f(ctx, migrate.NewLedger(cli, prefix))
	})
}

func newMigrationsCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "migrations [SERVICE] [--json]",
		Short: "List the migrations ledger: each migration that started, where, when, and how it ended",
		Long: `Migrations lists the ledger of data migrations, of SERVICE or of every service:
in etcd with the etcd lease (under the lease's prefix, migrations/<service>/<id>), in
the state directory with the local lease (migrations/<service>/<id>.json). For each
migration: its phase, the version that ran it, its state, the host that ran it, when
it started and ended, and, for one that failed, its error and the tail of its output.
A migration that is running while no runner holds the migration lock was
interrupted: its runner died. A migration that never started is not listed.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			service := ""
			if len(args) == 1 {
				service = args[0]
			}
			return withLedger(cmd, func(ctx context.Context, l migrate.Store) error {
				list, err := l.List(ctx, service)
				if err != nil {
					return err
				}
				holder, err := l.Holder(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(cmd.OutOrStdout(), struct {
						Lock       string          `json:"lock"` // the host that holds the migration lock
						Migrations []migrate.Entry `json:"migrations"`
					}{holder, list})
				}
				return writeMigrations(cmd.OutOrStdout(), list, holder)
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the ledger as JSON")
	return cmd
}

// writeMigrations prints the ledger for a person; holder holds the migration lock.
func writeMigrations(w io.Writer, list []migrate.Entry, holder string) error {
	if len(list) == 0 {
		fmt.Fprintln(w, "no migration has started")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(list) > 0 {
		fmt.Fprintln(tw, "SERVICE\tID\tPHASE\tVERSION\tSTATE\tHOST\tSTART\tEND")
	}
	var notes []string
	for _, e := range list {
		state := e.State
		if interrupted(e, holder) {
			state = "INTERRUPTED"
		}
		if n := haltNote(e, holder); n != "" {
			notes = append(notes, n)
		}
		if r := e.Resolved; r != nil {
			notes = append(notes, fmt.Sprintf("%s %s: resolved as %s by %s at %s (it was %s)", e.Service, e.ID, r.As, r.By, r.Time.Format(time.RFC3339), r.From))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Service, e.ID, e.Phase, e.Version, state, e.Host, when(e.Start), when(e.End))
	}
	if holder != "" {
		fmt.Fprintf(tw, "\nthe migration lock is held by %s\n", holder)
	}
	if len(notes) > 0 {
		fmt.Fprintln(tw, "\n"+strings.Join(notes, "\n"))
	}
	return tw.Flush()
}

// interrupted reports whether e is running while no runner holds the migration lock:
// its runner died.
func interrupted(e migrate.Entry, holder string) bool {
	return e.State == migrate.StateRunning && holder == ""
}

// haltNote says what an operator does about e when it stops its service's rollout (a
// failed migration, with its output's tail; an interrupted one that is not
// rerunnable; an unreadable entry), or what happens next for an interrupted one that
// is; "" otherwise.
func haltNote(e migrate.Entry, holder string) string {
	switch {
	case interrupted(e, holder) && e.Rerunnable:
		return fmt.Sprintf("%s %s: interrupted on %s; it is rerunnable: the next host that needs it runs it again", e.Service, e.ID, e.Host)
	case interrupted(e, holder):
		return fmt.Sprintf("%s %s: interrupted on %s; check the data, then baton migration resolve %s %s --done or --rerun", e.Service, e.ID, e.Host, e.Service, e.ID)
	case e.State == migrate.StateFailed || e.State == migrate.StateUnreadable:
		return fmt.Sprintf("%s %s: %s%s", e.Service, e.ID, e.Error, outputTail(e.Output))
	}
	return ""
}

// writeLedgerHalts reads the ledger l and prints its halts (writeMigrationHalts).
func writeLedgerHalts(ctx context.Context, w io.Writer, l *migrate.Ledger) error {
	list, err := l.List(ctx, "")
	if err != nil {
		return err
	}
	holder, err := l.Holder(ctx)
	if err != nil {
		return err
	}
	writeMigrationHalts(w, list, holder)
	return nil
}

// writeMigrationHalts prints, below the fleet, the migrations in the ledger that stop
// their service's rollout in every group, as the hosts that wait for them say it
// (migrate.Halt), with a failed one's output's tail. It prints nothing when none does.
func writeMigrationHalts(w io.Writer, list []migrate.Entry, holder string) {
	var halts []string
	for _, e := range list {
		var kind string
		switch {
		case interrupted(e, holder) && !e.Rerunnable:
			kind = migrate.Interrupted
		case e.State == migrate.StateFailed:
			kind = migrate.Failed
		case e.State == migrate.StateUnreadable:
			kind = migrate.Unreadable
		default:
			continue
		}
		h := &migrate.Halt{Kind: kind, Entry: e}
		halts = append(halts, h.Error()+outputTail(e.Output))
	}
	if len(halts) > 0 {
		fmt.Fprintf(w, "\nHALTED BY A MIGRATION (baton migrations for the ledger)\n%s\n", strings.Join(halts, "\n"))
	}
}

// outputTail is the last lines of a migration's output, indented.
func outputTail(out string) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if out == "" {
		return ""
	}
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return "\n    " + strings.Join(lines, "\n    ")
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func newMigrationCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "migration", Short: "Operator's tools for the migrations ledger"}
	var done, rerun bool
	resolve := &cobra.Command{
		Use:   "resolve SERVICE ID --done|--rerun",
		Short: "Settle a failed or interrupted migration: it completed (--done), or run it again (--rerun)",
		Long: `Resolve records an operator's word on a migration that failed or was interrupted,
after checking the data it migrates: --done when it completed (it is not run again),
--rerun when it is to run again (the next host that needs it runs it, rerunnable or
not). The rollout of its service then goes on. It refuses a migration that is done,
one that never started, and one that is running while a runner holds the lock.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if done == rerun {
				return &exitError{code: 2, err: errors.New("give one of --done, --rerun")}
			}
			as := migrate.StatePending
			if done {
				as = migrate.StateDone
			}
			return withLedger(cmd, func(ctx context.Context, l migrate.Store) error {
				e, err := l.Resolve(ctx, args[0], args[1], as, operator())
				if err != nil {
					return err
				}
				what := "done: it is not run again"
				if !done {
					what = "to run again, by the next host that needs it"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "migration %s of %s (%s on %s) marked %s\n", e.ID, e.Service, e.Resolved.From, e.Host, what)
				return nil
			})
		},
	}
	resolve.Flags().BoolVar(&done, "done", false, "the migration completed: mark it done")
	resolve.Flags().BoolVar(&rerun, "rerun", false, "run the migration again")
	cmd.AddCommand(resolve)
	return cmd
}
