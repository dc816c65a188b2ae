// Command demo is a small HTTP service that baton upgrades in its tests and demo.
//
// Its version and behaviour are baked in at build time, so a fleet repository can
// ship a release that fails its health check, or one that crashes after start, as an
// ordinary artifact:
//
//	go build -ldflags "-X main.version=2.0.0 -X main.mode=fail-health" ./examples/demo
//
// Flags override the baked values for manual use. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Set with -ldflags "-X main.name=value"; flags override them.
var (
	version    = "0.0.0-dev"
	mode       = modeOK
	crashAfter = "3s"
	startDelay = "2s"
)

// The modes a build can be baked with.
const (
	modeOK         = "ok"          // serve normally
	modeFailHealth = "fail-health" // /healthz answers 503; everything else works
	modeCrashAfter = "crash-after" // serve, then exit 1 after CrashAfter
	modeExit       = "exit"        // exit 2 at once, before listening
	modeSlowStart  = "slow-start"  // wait StartDelay before listening and READY
	modeFlaky      = "flaky"       // / answers 500 to 3% of requests; /healthz is fine
	modeSlow       = "slow"        // / takes 300 ms longer; /healthz is fine
	// fail-on-traffic: /healthz answers 503 once a client request was served (any
	// path but /healthz, /version and /metrics): healthy on its own port, failing
	// once a load balancer sends it clients, as a release broken by real traffic is.
	modeFailOnTraffic = "fail-on-traffic"
)

var modes = []string{modeOK, modeFailHealth, modeCrashAfter, modeExit, modeSlowStart, modeFlaky, modeSlow, modeFailOnTraffic}

// Defaults of the settings that are not baked in.
const (
	defaultListen          = "127.0.0.1:8080"
	defaultShutdownTimeout = 10 * time.Second
)

// Exit codes.
const (
	exitFailure = 1 // a runtime failure, or the crash of crash-after mode
	exitUsage   = 2 // bad flags or build values, and exit mode
)

// config is everything the service needs to run.
type config struct {
	Version         string
	Mode            string
	Listen          string        // used unless the process is socket-activated
	CrashAfter      time.Duration // crash-after mode
	StartDelay      time.Duration // slow-start mode
	RequestDelay    time.Duration // added to every request of /
	ShutdownTimeout time.Duration // how long in-flight requests may take after SIGTERM
}

// Validate reports the first setting that cannot work.
func (c config) Validate() error {
	switch {
	case c.Version == "":
		return errors.New("version is empty")
	case !validMode(c.Mode):
		return fmt.Errorf("unknown mode %q (want one of %v)", c.Mode, modes)
	case c.Listen == "":
		return errors.New("listen address is empty")
	case c.Mode == modeCrashAfter && c.CrashAfter <= 0:
		return fmt.Errorf("crash-after %s: must be positive", c.CrashAfter)
	case c.StartDelay < 0:
		return fmt.Errorf("start-delay %s: must not be negative", c.StartDelay)
	case c.RequestDelay < 0:
		return fmt.Errorf("request-delay %s: must not be negative", c.RequestDelay)
	case c.ShutdownTimeout <= 0:
		return fmt.Errorf("shutdown-timeout %s: must be positive", c.ShutdownTimeout)
	}
	return nil
}

func validMode(m string) bool {
	for _, v := range modes {
		if m == v {
			return true
		}
	}
	return false
}

// parseFlags returns the configuration given by the build values and args.
// Flag errors and -help are written to out.
func parseFlags(args []string, out io.Writer) (config, error) {
	baked, err := parseDuration("main.crashAfter", crashAfter)
	if err != nil {
		return config{}, err
	}
	delay, err := parseDuration("main.startDelay", startDelay)
	if err != nil {
		return config{}, err
	}

	var cfg config
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&cfg.Version, "version", version, "version to report")
	fs.StringVar(&cfg.Mode, "mode", mode, fmt.Sprintf("behaviour, one of %v", modes))
	fs.StringVar(&cfg.Listen, "listen", defaultListen, "address to listen on unless socket-activated")
	fs.DurationVar(&cfg.CrashAfter, "crash-after", baked, "crash-after mode: exit 1 this long after listening")
	fs.DurationVar(&cfg.StartDelay, "start-delay", delay, "slow-start mode: wait this long before listening")
	fs.DurationVar(&cfg.RequestDelay, "request-delay", 0, "latency added to every request of /")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", defaultShutdownTimeout, "how long in-flight requests may take after SIGTERM")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return cfg, nil
}

func parseDuration(name, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("build value %s: %w", name, err)
	}
	return d, nil
}

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		logger.Error("invalid configuration", "err", err)
		os.Exit(exitUsage)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err = run(ctx, cfg, logger, sdNotify(logger))
	stop()
	if err != nil {
		logger.Error("exiting", "version", cfg.Version, "mode", cfg.Mode, "err", err)
		if errors.Is(err, errExitMode) {
			os.Exit(exitUsage)
		}
		os.Exit(exitFailure)
	}
}
