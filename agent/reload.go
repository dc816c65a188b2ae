package agent

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"syscall"

	"github.com/fsnotify/fsnotify"

	"github.com/baton-fleet/baton/config"
)

// WatchConfig makes Run reload the configuration from file when it changes on disk or
// when the agent gets SIGHUP. Call it before Run.
func (a *Agent) WatchConfig(file string) { a.configFile = file }

// watchConfig sends on reload (buffered, of one) why the configuration should be read
// again: the file changed, or SIGHUP; until ctx ends. It watches the file's directory,
// so that editors that replace the file (write a temporary, rename it over) are seen
// too. A reason that comes while one is still waiting joins it: the one reload serves
// both, and its log line names both.
func (a *Agent) watchConfig(ctx context.Context, reload chan string) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var events chan fsnotify.Event
	if w, err := fsnotify.NewWatcher(); err != nil {
		a.log.Warn("watch the configuration file", "err", err)
	} else {
		defer w.Close()
		if err := w.Add(filepath.Dir(a.configFile)); err != nil {
			a.log.Warn("watch the configuration file", "file", a.configFile, "err", err)
		} else {
			events = w.Events
		}
	}
	send := func(why string) {
		select {
		case waiting := <-reload:
			if waiting != why {
				why = waiting + ", " + why
			}
		default:
		}
		reload <- why // this is the only sender, and the buffer is empty now
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			send("SIGHUP")
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if filepath.Clean(ev.Name) == filepath.Clean(a.configFile) && ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) != 0 {
				send("the file changed")
			}
		}
	}
}

// reload reads the configuration again. A file that does not validate is refused,
// with every error, and the running configuration stays. Of a good one, the settings
// that are safe to change on the fly take effect at once (repo.poll,
// repo.allowRewind, driftPolicy); a change to any other is reported as needing a
// restart.
func (a *Agent) reload(why string) {
	cfg, err := config.Load(a.configFile)
	if err == nil {
		// The files it names are checked again: a keyring or a token file may have
		// been made writable, or readable, by others since the start.
		err = cfg.CheckFiles()
	}
	if err != nil {
		a.log.Error("configuration not reloaded; keeping the current one", "why", why, "err", err)
		return
	}
	old := *a.cfg
	live := old
	live.Repo.Poll, live.Repo.AllowRewind, live.DriftPolicy = cfg.Repo.Poll, cfg.Repo.AllowRewind, cfg.DriftPolicy
	if live.Repo != cfg.Repo || !reflect.DeepEqual(live.Lease, cfg.Lease) || live.Listen != cfg.Listen ||
		live.Paths != cfg.Paths || live.Host != cfg.Host || !reflect.DeepEqual(live.Webhooks, cfg.Webhooks) || live.Statuses != cfg.Statuses {
		a.log.Warn("the configuration changed in settings that take effect at the next restart (systemctl restart baton)", "why", why)
	}
	// Only the main loop reads these three in a.cfg; other goroutines read settings
	// that never change while the agent runs, and the poll interval and the rewind
	// setting from their own copies (a.poll, the syncer's).
	a.cfg.Repo.Poll, a.cfg.Repo.AllowRewind, a.cfg.DriftPolicy = live.Repo.Poll, live.Repo.AllowRewind, live.DriftPolicy
	a.pollEvery.Store(int64(live.Repo.Poll.D()))
	if live.Repo.AllowRewind != old.Repo.AllowRewind {
		// Both rewind checks follow it: the fetch's and the applied commit's. A head
		// rejected under the old setting is judged again at the next poll.
		a.git.SetAllowRewind(live.Repo.AllowRewind)
		a.setStatus(func(s *Status) { s.Rejected, s.RejectReason = "", "" })
	}
	a.log.Info("configuration reloaded", "why", why, "poll", live.Repo.Poll, "allowRewind", live.Repo.AllowRewind, "driftPolicy", live.DriftPolicy)
}
