package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/baton-fleet/baton/agent"
	"github.com/baton-fleet/baton/config"
	"github.com/baton-fleet/baton/internal/redact"
)

func newAgentCmd() *cobra.Command {
	var configFile, logFormat string
	cmd := &cobra.Command{
		Use:   "agent [--config FILE]",
		Short: "Run the agent: follow the fleet repository and upgrade this host",
		Long: `Agent runs baton on this host, as the baton.service unit does: it polls the fleet
repository, and when the host's services change it stages their artifacts, takes the
group's lease, switches the units, verifies them, and commits or reverts. A crash at
any step is finished on the next start. It stops on SIGTERM or SIGINT.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(logFormat)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			cfg, err := config.Load(configFile)
			if err != nil {
				printErrors(cmd.ErrOrStderr(), "", err)
				return failed(fmt.Errorf("%s is not valid", configFile))
			}
			a, err := agent.New(cfg, version, logger)
			if err != nil {
				return failed(err)
			}
			a.WatchConfig(configFile)
			logger.Info("baton agent starting", "version", version, "repo", redact.URL(cfg.Repo.URL), "branch", cfg.Repo.Branch)
			err = a.Run(cmd.Context())
			if errors.Is(err, agent.ErrRestartRequested) {
				logger.Info("baton agent exiting to be restarted", "status", agent.RestartExitCode)
				return &exitError{code: agent.RestartExitCode, err: errors.New("")}
			}
			if err != nil {
				return failed(err)
			}
			logger.Info("baton agent stopped")
			return nil
		},
	}
	cmd.Flags().StringVar(&configFile, "config", config.DefaultPath, "the agent configuration file")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "log format on stderr: text (logfmt) or json")
	return cmd
}

func newValidateConfigCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate-config [FILE]",
		Short: "Check an agent configuration file; print every error as file:line: message",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			file := config.DefaultPath
			if len(args) == 1 {
				file = args[0]
			}
			cfg, err := config.Load(file)
			if err != nil {
				printErrors(cmd.ErrOrStderr(), "", err)
				return failed(fmt.Errorf("%s is not valid", file))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: host %s follows %s (branch %s) with the %s lease\n", cfg.Host, redact.URL(cfg.Repo.URL), cfg.Repo.Branch, cfg.Lease.Backend)
			return nil
		},
	}
}

func newLogger(format string) (*slog.Logger, error) {
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, nil)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", format)
}
