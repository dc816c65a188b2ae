package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/baton-fleet/baton/config"
	"github.com/baton-fleet/baton/events"
	"github.com/baton-fleet/baton/rollback"
	"github.com/baton-fleet/baton/units"
)

// Drift is how a managed unit differs from what baton installed.
type Drift struct {
	Unit   string `json:"unit"`
	Reason string `json:"reason"` // "modified", "missing", or "drop-in <dir>/<file>"
	// DropIn is the drop-in file, relative to the unit directory, when the drift is one.
	DropIn string `json:"-"`
}

// detectDrift compares the managed units in unitDir with the last good record: a unit
// file changed or removed by hand, or a drop-in directory (<unit>.d/, as `systemctl
// edit` creates) holding a file, is drift.
func detectDrift(unitDir string, lg *rollback.LastGood) []Drift {
	var out []Drift
	dir := units.Dir{Path: unitDir}
	for _, name := range slices.Sorted(maps.Keys(lg.Files)) {
		data, err := dir.Read(name)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			out = append(out, Drift{Unit: name, Reason: "missing"})
			continue
		case err != nil:
			out = append(out, Drift{Unit: name, Reason: "unreadable: " + err.Error()})
			continue
		case string(data) != lg.Files[name]:
			out = append(out, Drift{Unit: name, Reason: "modified"})
		}
		if entries, err := os.ReadDir(filepath.Join(unitDir, name+".d")); err == nil {
			for _, e := range entries {
				if !e.IsDir() {
					file := name + ".d/" + e.Name()
					out = append(out, Drift{Unit: name, Reason: "drop-in " + file, DropIn: file})
				}
			}
		}
	}
	return out
}

// watchUnits watches the unit directory and the drop-in directories of managed units
// and sends on changed, without blocking, when anything there changes. It returns
// when ctx ends. A watcher that cannot start is logged, and drift is then found only
// at each poll.
func (a *Agent) watchUnits(ctx context.Context, changed chan<- struct{}) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		a.log.Warn("watch unit files for drift", "err", err)
		return
	}
	defer w.Close()
	watched := map[string]bool{}
	watch := func(dir string) {
		if watched[dir] {
			return
		}
		if err := w.Add(dir); err == nil {
			watched[dir] = true
		}
	}
	watch(a.cfg.Paths.Units)
	if lg, err := a.store.LastGood(); err == nil {
		for name := range lg.Files {
			watch(filepath.Join(a.cfg.Paths.Units, name+".d"))
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			// A new drop-in directory: watch it too, so files written into it are seen.
			if ev.Has(fsnotify.Create) && strings.HasSuffix(ev.Name, ".d") {
				watch(ev.Name)
			}
			select {
			case changed <- struct{}{}:
			default:
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			a.log.Warn("watch unit files for drift", "err", err)
		}
	}
}

// checkDrift looks for drift when no transaction is open, reports what is new, and,
// with driftPolicy restore, puts back what baton installed (under the lease: the
// units are restarted).
func (a *Agent) checkDrift(ctx context.Context) {
	if txn, err := a.store.Load(); err != nil || txn != nil {
		return // baton itself is changing the units
	}
	lg, err := a.store.LastGood()
	if err != nil || len(lg.Files) == 0 {
		return
	}
	found := detectDrift(a.cfg.Paths.Units, lg)
	a.mu.Lock()
	before := a.drift
	a.drift = found
	a.mu.Unlock()
	seen := map[string]bool{}
	for _, d := range before {
		seen[d.Unit+" "+d.Reason] = true
	}
	drifted := map[string]bool{}
	for _, d := range found {
		drifted[d.Unit] = true
		if !seen[d.Unit+" "+d.Reason] {
			a.log.Warn("drift: a managed unit was changed outside baton", "unit", d.Unit, "reason", d.Reason)
			a.emit(events.DriftFound, lg.Revision, lg.Service(d.Unit), fmt.Sprintf("%s: %s", d.Unit, d.Reason), map[string]string{"unit": d.Unit})
		}
	}
	for name := range lg.Files {
		a.obs.metrics.Drift(name, drifted[name])
	}
	if len(found) == 0 || a.cfg.DriftPolicy != config.DriftRestore {
		return
	}
	if a.etcdDown != "" {
		return // the lease cannot be had; the next poll looks again
	}
	if err := a.restore(ctx, lg, found); err != nil {
		a.log.Error("restore drifted units", "err", err)
		return
	}
	a.log.Info("restored drifted units", "units", len(found))
	a.mu.Lock()
	a.drift = nil
	a.mu.Unlock()
	for _, d := range found {
		a.obs.metrics.Drift(d.Unit, false)
	}
}

// driftLeaseWait bounds the wait for the lease to restore drifted units: the group
// may be busy upgrading; the restore is tried again at the next poll.
const driftLeaseWait = 30 * time.Second

// restore writes back the recorded unit files, removes drop-ins of managed units,
// reloads systemd and restarts the services concerned, holding the lease.
func (a *Agent) restore(ctx context.Context, lg *rollback.LastGood, found []Drift) error {
	actx, cancel := context.WithTimeout(ctx, driftLeaseWait)
	a.notify.busy(driftLeaseWait + 2*etcdBound) // Acquire may withdraw from the line after its context
	err := a.lease.Acquire(actx, lg.Group)
	cancel()
	if err != nil {
		return fmt.Errorf("no slot of group %s within %v; trying again at the next poll: %w", lg.Group, driftLeaseWait, err)
	}
	defer a.releaseLease(ctx, a.log)
	a.notify.busy(stepBound)
	change := units.Change{Install: map[string][]byte{}}
	restart := map[string]bool{}
	for _, d := range found {
		if d.DropIn != "" {
			if err := os.Remove(filepath.Join(a.cfg.Paths.Units, d.DropIn)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		} else {
			change.Install[d.Unit] = []byte(lg.Files[d.Unit])
		}
		if svc := lg.Service(d.Unit); svc != "" {
			for _, r := range lg.Services[svc].Restart {
				restart[r] = true
			}
		}
	}
	change.Restart = slices.Sorted(maps.Keys(restart))
	owned := func(u string) bool { _, ok := lg.Files[u]; return ok }
	if err := a.systemd.Reload(ctx); err != nil { // so systemd forgets removed drop-ins
		return err
	}
	start := time.Now()
	err = a.systemd.Apply(ctx, a.unitDir, change, owned)
	a.log.Info("drift restore applied", "took", time.Since(start).Round(time.Millisecond), "restarted", change.Restart)
	return err
}
