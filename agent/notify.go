package agent

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// ErrRestartRequested is returned by Run when the package manager asked for a restart
// (a new binary was installed) and the agent has reached an idle moment. The
// command exits with RestartExitCode, which baton.service restarts.
var ErrRestartRequested = errors.New("restart requested by the package manager")

// RestartExitCode is the exit status that asks systemd to start the agent again.
const RestartExitCode = 75

// RestartMarker, under the runtime directory, is created by the package's
// post-install script when it upgrades baton while a transaction is open.
const RestartMarker = "restart-requested"

// DefaultRuntimeDir is where the agent looks for RestartMarker.
const DefaultRuntimeDir = "/run/baton"

// notifier speaks sd_notify to systemd: READY once the state is loaded, STATUS with
// each phase, WATCHDOG while the main loop is alive, STOPPING at the end. Without
// NOTIFY_SOCKET (not run by systemd) it does nothing.
type notifier struct {
	mu       sync.Mutex
	beat     time.Time     // the main loop's last sign of life
	busyTill time.Time     // a long step in the main loop may run until then
	interval time.Duration // systemd's watchdog interval, 0 when it has none
}

func (n *notifier) send(state string) { _, _ = daemon.SdNotify(false, state) }

// alive records that the main loop is turning.
func (n *notifier) alive() {
	n.mu.Lock()
	n.beat = time.Now()
	n.mu.Unlock()
}

// busy declares that the main loop is in a step that may take up to d (a download,
// a lease wait, a verification), so that the watchdog keeps quiet that long and no
// longer. A zero d ends the declaration.
func (n *notifier) busy(d time.Duration) {
	n.mu.Lock()
	n.beat = time.Now()
	n.busyTill = n.beat.Add(d)
	n.mu.Unlock()
}

// watchdog pings systemd at half its WatchdogSec, but only while the main loop has
// shown life within the interval or is inside a declared long step: a loop stuck
// anywhere else stops the pings, and systemd restarts the agent.
func (n *notifier) watchdog(ctx context.Context) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return
	}
	n.mu.Lock()
	n.interval = interval
	n.mu.Unlock()
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n.mu.Lock()
			ok := now.Sub(n.beat) < interval || now.Before(n.busyTill)
			n.mu.Unlock()
			if ok {
				n.send(daemon.SdNotifyWatchdog)
			}
		}
	}
}

// watchdogInterval is systemd's watchdog interval, 0 when it has none (or not yet).
func (n *notifier) watchdogInterval() time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.interval
}

// restartRequested reports, and consumes, the package manager's restart request.
func restartRequested(runtimeDir string) bool {
	p := filepath.Join(runtimeDir, RestartMarker)
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) || err != nil {
		return false
	}
	_ = os.Remove(p)
	return true
}
