// Package agent runs the loop on one host: sync -> plan -> apply -> verify -> commit | roll back.
// The decisions are the core's (package core); the agent performs them against systemd,
// etcd, the disk and HTTP. Its configuration is package config's.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/baton-fleet/baton/api"
	"github.com/baton-fleet/baton/checks"
	"github.com/baton-fleet/baton/config"
	"github.com/baton-fleet/baton/core"
	"github.com/baton-fleet/baton/gitsync"
	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/lease"
	"github.com/baton-fleet/baton/migrate"
	"github.com/baton-fleet/baton/release"
	"github.com/baton-fleet/baton/rollback"
	"github.com/baton-fleet/baton/sharedhead"
	"github.com/baton-fleet/baton/units"
)

// Lease is what the agent needs of a fleet lease: held around every disruptive step,
// re-checked before each. Implementations: lease.Local, and the fleet backends.
type Lease interface {
	// Acquire blocks until the host holds a slot of group's lease, or ctx ends.
	// Acquiring a lease already held is a no-op.
	Acquire(ctx context.Context, group string) error
	// Check returns an error when the lease is no longer certainly held.
	Check(ctx context.Context) error
	// Release gives the slot back; releasing a lease not held is a no-op.
	Release(ctx context.Context) error
}

// gateSaid is a verdict of a Prometheus gate, as last reported.
type gateSaid struct {
	held bool
	said string
}

// FailpointEnv names an environment variable for crash tests: set to a transaction
// state, the agent kills itself (SIGKILL) right after persisting that state (with
// "+cutover", such as VERIFYING+cutover, only once a bluegreen transaction moved its
// clients to the new color); set to HANG, its main loop blocks for good once it is
// ready (for watchdog tests).
const FailpointEnv = "BATON_FAILPOINT"

// Bounds of the main loop's waits. Each wait is bounded, and declared to the watchdog
// (notifier.busy) when it may outlast the watchdog's interval.
const (
	// pollTimeout bounds one poll of the repository.
	pollTimeout = 5 * time.Minute
	// etcdBound is the longest one etcd request of the agent takes: the client's
	// deadline for every request (lease.NewClient).
	etcdBound = lease.DefaultEtcdCallTimeout
	// stepBound is how long one step of a transaction that touches the host (a drain,
	// a switch, a revert, the commit) may keep the main loop from turning before the
	// watchdog ends the agent: systemd's own job timeouts end a stuck restart sooner.
	stepBound = 10 * time.Minute
)

// Agent is the loop on one host: sync -> plan -> apply -> verify -> commit | roll back.
type Agent struct {
	cfg     *config.Config
	log     *slog.Logger
	store   *rollback.Store
	git     *gitsync.Syncer
	unitDir units.Dir
	stager  *release.Stager
	lease   Lease
	clock   checks.Clock

	fleet      *fleetState     // nil without the etcd backend
	migrations *migrate.Runner // runs the releases' data migrations once for the fleet; nil with FleetLock
	contracts  contracts       // the contract migrations left to run at the applied commit
	// promSaid is what the group's Prometheus gate said last (see Agent.promGate).
	promSaid  gateSaid
	trouble   core.Backoff   // a commit this host could not carry out, and when to try again
	systemd   *units.Systemd // set by Run
	failpoint rollback.State

	mu     sync.Mutex
	status Status
	wake   chan struct{}

	head       *sharedhead.Shared // nil unless the head is shared (repo.sharedHead)
	statuses   *statusReporter    // nil unless statuses are posted (statuses)
	pollNow    atomic.Bool        // SyncNow asked for a poll: the next turn polls whatever the shared head says
	fleetPoll  chan struct{}      // SyncNow asked the fleet's fetcher to poll (fetchForFleet)
	pollEvery  atomic.Int64       // repo.poll, a time.Duration: reloaded by the loop, read by the fetcher and the API too
	groupWaits atomic.Bool        // the host's group waits for another (after:), by the last commit loaded: it fetches a new head within repo.splay
	publishErr string             // why the last publish of the shared head failed, "" when it worked; fetchForFleet's

	notify       notifier
	runtimeDir   string // where the package manager leaves RestartMarker
	version      string
	obs          *observers
	last         *api.Result      // the outcome of the last transaction, for the API
	drift        []Drift          // managed units changed outside baton, as last seen
	configFile   string           // reloaded on change and on SIGHUP; "" to never reload
	signedOnly   bool             // apply only commits signed by trusted keys
	tlog         *txnLog          // the open transaction, on every log line
	rollbackTo   *rollbackRequest // an operator's baton rollback, for the loop to run
	rollingBack  bool             // the loop has taken a rollback and not finished it
	lastRollback *api.Result      // how the last rollback ended
	etcdDown     string           // why etcd did not answer the last look, "" when it did
	etcdPhase    string           // the phase that said so
}

// Status is what the agent is doing, for logs, sd_notify and the local API.
type Status struct {
	Phase        string    `json:"phase"`
	Group        string    `json:"group"`
	Tracked      string    `json:"tracked"`  // the branch head last fetched
	Applied      string    `json:"applied"`  // the last good revision
	Rejected     string    `json:"rejected"` // the last commit refused as bad input
	RejectReason string    `json:"rejectReason,omitempty"`
	LastResult   string    `json:"lastResult"`
	FetchError   string    `json:"fetchError,omitempty"`
	FetchedAt    time.Time `json:"fetchedAt"` // the last poll
	FetchedOK    time.Time `json:"fetchedOK"` // the last poll that worked
}

// New builds an agent from a validated configuration; version is baton's, for the
// status and the metrics. It does no I/O beyond creating the state directory and
// reading webhook secrets; Run connects to systemd and the repository.
func New(cfg *config.Config, version string, logger *slog.Logger) (*Agent, error) {
	if err := cfg.CheckFiles(); err != nil {
		return nil, err
	}
	state := cfg.Paths.State
	if err := os.MkdirAll(state, 0o755); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	tlog := &txnLog{}
	logger = slog.New(tlog.handler(logger.Handler())).With("host", cfg.Host)
	syncOpts := syncOptions(cfg, state)
	git, err := gitsync.New(syncOpts, logger)
	if err != nil {
		return nil, err
	}
	if syncOpts.Verify.Enabled() {
		// Load the keys once now, so a bad keyring stops the start with its reason.
		if _, err := gitsync.NewVerifier(syncOpts.Verify); err != nil {
			return nil, fmt.Errorf("repo.verify: %w", err)
		}
	}
	obs, err := newObservers(cfg, version, logger)
	if err != nil {
		return nil, err
	}
	l, fs, ledger, err := newLease(cfg, logger)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg:        cfg,
		log:        logger,
		store:      &rollback.Store{Dir: state},
		git:        git,
		unitDir:    units.Dir{Path: cfg.Paths.Units},
		stager:     &release.Stager{StateDir: state, Logger: logger, AllowInsecure: cfg.Artifacts.AllowInsecure},
		lease:      l,
		fleet:      fs,
		clock:      checks.RealClock,
		failpoint:  rollback.State(os.Getenv(FailpointEnv)),
		wake:       make(chan struct{}, 1),
		fleetPoll:  make(chan struct{}, 1),
		runtimeDir: DefaultRuntimeDir,
		version:    version,
		signedOnly: syncOpts.Verify.Enabled(),
		obs:        obs,
		tlog:       tlog,
	}
	if ledger != nil {
		a.migrations = &migrate.Runner{Ledger: ledger, Host: cfg.Host, Logger: logger, Ran: a.migrationRan}
		if e := cfg.Lease.Etcd; e != nil {
			a.migrations.LockTTL = e.TTL.D()
		}
	}
	a.pollEvery.Store(int64(cfg.Repo.Poll.D()))
	a.head = newSharedHead(cfg, fs, a)
	if a.statuses, err = newStatusReporter(cfg, a); err != nil {
		return nil, fmt.Errorf("statuses: %w", err)
	}
	return a, nil
}

// syncOptions are the options of the fleet repository's syncer: cfg.Repo, as
// gitsync takes them, with its clone in the state directory.
func syncOptions(cfg *config.Config, state string) gitsync.Options {
	v := cfg.Repo.Verify
	return gitsync.Options{
		URL:    cfg.Repo.URL,
		Branch: cfg.Repo.Branch,
		Dir:    filepath.Join(state, "repo.git"),
		Auth: gitsync.Auth{
			TokenFile: cfg.Repo.Auth.TokenFile, TokenUser: cfg.Repo.Auth.TokenUser,
			SSHKeyFile: cfg.Repo.Auth.SSHKeyFile, KnownHostsFile: cfg.Repo.Auth.KnownHostsFile,
		},
		AllowRewind: cfg.Repo.AllowRewind,
		Verify: gitsync.VerifyOptions{
			OpenPGPKeyring: v.OpenPGPKeyring, SSHAllowedSigners: v.SSHAllowedSigners,
			Release: gitsync.ReleaseSigners{OpenPGPKeyring: v.Release.OpenPGPKeyring, SSHAllowedSigners: v.Release.SSHAllowedSigners},
			Branch:  cfg.Repo.Branch,
		},
		MaxFetch: int64(cfg.Repo.MaxFetch),
	}
}

// Status returns a copy of what the agent is doing.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status
}

func (a *Agent) setStatus(f func(*Status)) {
	a.mu.Lock()
	f(&a.status)
	a.mu.Unlock()
}

// phase records what the agent is doing now and logs it.
func (a *Agent) phase(format string, args ...any) {
	p := fmt.Sprintf(format, args...)
	a.setStatus(func(s *Status) { s.Phase = p })
	a.notify.send("STATUS=" + p)
	a.notify.alive()
	a.log.Info(p)
}

// SyncNow makes the loop poll at once instead of at its next tick. On the fleet's
// fetcher it makes the poll for the fleet go at once too (fetchForFleet), even
// while the loop is in a transaction.
func (a *Agent) SyncNow() {
	a.pollNow.Store(true)
	wakeUp(a.wake)
	if a.head != nil && a.head.Fetcher() {
		wakeUp(a.fleetPoll)
	}
}

// wakeUp sends on c, a channel buffered for one, unless a wake-up waits there
// already.
func wakeUp(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// poll is repo.poll as it is now (reload changes it).
func (a *Agent) poll() time.Duration { return time.Duration(a.pollEvery.Load()) }

// Run connects to systemd, finishes any transaction a crash left open, then polls the
// repository and upgrades the host until ctx ends. It returns nil when ctx ends, an
// error when systemd cannot be reached at the start, and ErrRestartRequested when the
// package manager asked for a restart and the agent is idle. A failed upgrade, a bad
// commit or a fetch error is reported and the loop goes on.
//
// On SIGTERM (ctx ends) mid-transaction the agent stops at a resumable point: before
// SWITCHING it aborts, in SWITCHING it finishes the revert, in VERIFYING it leaves the
// transaction for the next start to verify again.
func (a *Agent) Run(ctx context.Context) error {
	sd, err := units.Connect(ctx)
	if err != nil {
		return fmt.Errorf("connect to systemd: %w", err)
	}
	defer sd.Close()
	a.systemd = sd
	bg, stop := a.startBackground()
	defer stop()
	a.start(ctx)
	return a.loop(ctx, bg)
}

// background is what the agent's background goroutines wake its loop with: a change
// under the unit directory, and a changed configuration file.
type background struct {
	drift  chan struct{}
	reload chan string
}

// startBackground starts the watchdog, the servers, the watchers of units and of the
// configuration, the shared head, the push receiver and the statuses, and returns the
// channels they wake the loop with and the function that stops them all.
func (a *Agent) startBackground() (background, func()) {
	bg := background{drift: make(chan struct{}, 1), reload: make(chan string, 1)}
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	wg.Go(func() { a.notify.watchdog(ctx) })
	waitServers := a.serve(ctx)
	wg.Go(func() { a.watchUnits(ctx, bg.drift) })
	if a.configFile != "" {
		wg.Go(func() { a.watchConfig(ctx, bg.reload) })
	}
	wg.Go(func() { a.runSharedHead(ctx) })
	wg.Go(func() { a.fetchForFleet(ctx) })
	wg.Go(func() { a.receiveWebhooks(ctx) })
	wg.Go(func() { a.reportStatuses(ctx) })
	return bg, func() {
		a.notify.send(daemon.SdNotifyStopping)
		// etcd: a held slot expires after the TTL, or is resumed by the next start.
		// FleetLock: the background release stops; the slot record outlives it, and the
		// next start gives the slot back.
		if c, ok := a.lease.(io.Closer); ok {
			_ = c.Close()
		}
		cancel()
		wg.Wait()
		waitServers()
	}
}

// start loads the agent's state, tells systemd it is ready, and finishes the
// transaction a crash left open.
func (a *Agent) start(ctx context.Context) {
	a.notify.alive()
	if lg, err := a.store.LastGood(); err == nil {
		a.setStatus(func(s *Status) { s.Applied, s.Group = lg.Revision, lg.Group })
		a.obs.metrics.Host(a.cfg.Host, lg.Group)
		a.obs.metrics.Info(lg.Revision, "")
	}
	// The state is loaded: systemd may consider the agent started. Finishing an
	// interrupted transaction can wait long for the lease, so it comes after.
	a.notify.send(daemon.SdNotifyReady)
	if err := a.resumeOpen(ctx); err != nil {
		a.log.Error("recover the open transaction", "err", err)
	}
	if lg, err := a.store.LastGood(); err == nil && lg.Revision != "" {
		a.notify.busy(2 * etcdBound)
		a.recordIdle(ctx, lg.Group, lg.Revision, "")
		if a.cfg.Repo.Splay > 0 {
			a.learnGroup(ctx, lg.Revision)
		}
	}
	a.phase("idle at %s", commitid.ShortOrNone(a.Status().Applied))
}

// loop polls and reconciles until ctx ends (nil) or the package asks for a restart.
func (a *Agent) loop(ctx context.Context, bg background) error {
	var backoff time.Duration
	for {
		a.notify.busy(0) // the loop turns: alive, and any long step declared has ended
		if restartRequested(a.runtimeDir) {
			a.log.Info("the package was upgraded; restarting now that no upgrade is open")
			return ErrRestartRequested
		}
		a.hang()
		err := a.tick(ctx)
		a.checkDrift(ctx)
		wait := afterPoll(&backoff, err, a.nextPoll())
		if ctx.Err() != nil || !a.sleep(ctx, bg, wait) {
			return nil
		}
	}
}

// sleep waits until the next poll, at most wait (and the watchdog's slice), checking
// drift as the unit directory changes; a reload, a wake-up or the end of the wait ends
// it. It is false when ctx ended.
func (a *Agent) sleep(ctx context.Context, bg background, wait time.Duration) bool {
	timer := time.NewTimer(min(wait, a.watchdogSlice()))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-bg.drift:
			time.Sleep(100 * time.Millisecond) // let an editor finish writing
			a.checkDrift(ctx)
			a.notify.alive()
		case why := <-bg.reload:
			time.Sleep(100 * time.Millisecond) // let an editor finish writing
			a.reload(why)
			return true
		case <-a.wake:
			return true
		case <-timer.C:
			return true
		}
	}
}

// watchdogSlice bounds one sleep of the main loop so that it shows life to the
// watchdog while it waits for the next poll.
func (a *Agent) watchdogSlice() time.Duration {
	if d := a.notify.watchdogInterval(); d > 0 {
		return d / 3
	}
	return time.Hour
}

// afterPoll is the wait before the next poll, wait when the last one worked
// (err nil). After a failed one it is a backoff, doubled at each failure in a row
// (*backoff, reset by a poll that worked), or the wait the git server asked for
// when that is longer, up to wait: the fleet's fetcher still confirms its head to
// the others meanwhile (gitsync answers for the server, without asking it).
func afterPoll(backoff *time.Duration, err error, wait time.Duration) time.Duration {
	if err == nil {
		*backoff = 0
		return wait
	}
	*backoff = nextBackoff(*backoff, wait)
	return max(*backoff, min(gitsync.RetryIn(err), wait))
}

// nextBackoff doubles the wait after a fetch error, from 1s up to the poll interval,
// with jitter so that a fleet does not hammer a recovering server in step.
func nextBackoff(prev, limit time.Duration) time.Duration {
	next := max(time.Second, 2*prev)
	next = min(next, limit)
	return next/2 + rand.N(next/2+1)
}

// tick polls the repository once and moves the host toward its head. Its error is a
// fetch error; everything else is reported in the status and the log.
func (a *Agent) tick(ctx context.Context) error {
	if req := a.takeRollback(); req != nil {
		a.operatorRollback(ctx, req)
	}
	pctx, cancel := context.WithTimeout(ctx, pollTimeout)
	a.notify.busy(pollTimeout + time.Minute)
	u, polled, err := a.fetch(pctx)
	cancel()
	a.notify.busy(0)
	if polled {
		a.notePoll(u, err)
	}
	if err != nil && u.Commit == "" {
		return err
	}
	if ctx.Err() != nil {
		return nil
	}
	head := a.git.Head()
	if !a.fleetAnswers(ctx, head) {
		return err
	}
	a.reconcile(ctx, head)
	a.heartbeat(ctx)
	st := a.Status()
	a.obs.metrics.Info(st.Applied, st.Tracked)
	return err
}

// notePoll records a poll of the repository, the loop's or the fleet's fetcher's,
// in the status, the metrics and the log.
func (a *Agent) notePoll(u gitsync.Update, err error) {
	now := time.Now()
	if err != nil {
		a.setStatus(func(s *Status) { s.FetchError, s.FetchedAt = err.Error(), now })
		a.obs.metrics.FetchError()
		a.log.Warn("fetch the fleet repository", "err", err)
		if errors.Is(err, gitsync.ErrRewound) {
			a.setStatus(func(s *Status) { s.LastResult = "refused: " + err.Error() })
		}
		return
	}
	a.setStatus(func(s *Status) { s.FetchError, s.FetchedAt, s.FetchedOK, s.Tracked = "", now, now, u.Commit })
	a.obs.metrics.FetchOK(now)
	if u.Changed {
		a.log.Info("new commit", "commit", commitid.ShortOrNone(u.Commit), "previous", commitid.ShortOrNone(u.Previous), "fetched", u.Fetched)
	}
}

// fleetAnswers looks whether etcd answers, when the agent would need it to move to
// head (with the etcd backend, a commit it has not applied). While etcd does not
// answer, the host stays as it is: no upgrade starts, the phase says why, and the
// loop polls on. The look is one read of one small key, bounded by etcdBound; the
// first look that fails and the first that works again are logged.
func (a *Agent) fleetAnswers(ctx context.Context, head string) bool {
	if a.fleet == nil {
		return true
	}
	st := a.Status()
	if head == "" || head == st.Applied || head == st.Rejected {
		if a.etcdDown != "" && st.Phase == a.etcdPhase {
			a.idle() // nothing waits for etcd any more
		}
		return true
	}
	cctx, cancel := context.WithTimeout(ctx, etcdBound)
	a.notify.busy(2 * etcdBound)
	err := a.fleet.store.Ping(cctx)
	cancel()
	a.notify.busy(0)
	if err == nil {
		if a.etcdDown != "" {
			a.log.Info("etcd answers again; going on", "was", a.etcdDown)
			a.etcdDown = ""
			// The record written at the start, or at the end of a revert, may not have
			// reached etcd: the other hosts must not take this host for one in flight.
			if lg, err := a.store.LastGood(); err == nil && lg.Revision != "" {
				a.notify.busy(2 * etcdBound)
				a.recordIdle(ctx, lg.Group, lg.Revision, "")
				a.notify.busy(0)
			}
		}
		return true
	}
	if ctx.Err() != nil {
		return false
	}
	why := err.Error()
	if a.etcdDown == "" {
		a.log.Warn("etcd does not answer: keeping this host as it is until it does", "commit", commitid.ShortOrNone(head), "err", why)
	}
	a.etcdDown = why
	if p := fmt.Sprintf("%s (%s); %s waits, this host stays at %s", etcdDownPhase, why, commitid.ShortOrNone(head), commitid.ShortOrNone(st.Applied)); st.Phase != p {
		a.phase("%s", p)
		a.etcdPhase = p
	}
	return false
}

// etcdDownPhase starts the phase of an agent that waits for etcd.
const etcdDownPhase = "waiting for etcd: it does not answer"

// hang blocks the main loop for good when the failpoint is HANG, for watchdog tests.
func (a *Agent) hang() {
	if a.failpoint == "HANG" {
		a.log.Warn("failpoint: blocking the main loop")
		select {}
	}
}

// hit is called with each state a transaction enters, right after it is persisted.
// It tells the watchdog that a step touching the host may now keep the main loop
// busy up to stepBound (a verification declares its own bound; the loop's next turn
// ends the declaration), and kills the agent at the failpoint state, for crash tests.
func (a *Agent) hit(txn *rollback.Txn, state rollback.State) {
	switch state {
	case rollback.Draining, rollback.Switching, rollback.RollingBack, rollback.Committed:
		a.notify.busy(stepBound)
	}
	if a.failpoint != "" && (a.failpoint == state || (txn.CutOver && a.failpoint == state+"+cutover")) {
		a.log.Warn("failpoint: killing the agent", "state", state)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}
