package drain

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/baton-fleet/baton/internal/atomicfile"
)

// found is what Drain found of a server before it changed it, kept in a file of
// its own under HAProxy.StateDir: Undrain, in this process or in the next one after
// a crash, puts the server back as it was, and only once.
type found struct {
	Addr    string `json:"addr"`
	Backend string `json:"backend"`
	Server  string `json:"server"`
	// State is the server's settable admin state when Drain first saw it: "ready",
	// "drain" or "maint" (see settable).
	State string    `json:"state"`
	Time  time.Time `json:"time"`
	// Restored is set once the server was put back in State (by Undrain, or by a
	// Drain that failed): a later Undrain has nothing to undo.
	Restored bool `json:"restored,omitempty"`
}

// settable is the part of an admin state that `set server ... state` sets and
// that Undrain restores: "maint" (forced maintenance, which "disabled" in the
// config sets too), "drain" (forced drain) or "ready". Maintenance or drain
// inherited from a tracked server, or from a failed resolution, is HAProxy's own
// and comes and goes by itself.
func settable(a AdminState) string {
	switch {
	case a&AdminForcedMaint != 0:
		return "maint"
	case a&AdminForcedDrain != 0:
		return "drain"
	}
	return "ready"
}

// parseFound reads a record that recordFound wrote. It is strict: a record
// that does not say which state to restore is refused, not guessed at.
func parseFound(data []byte) (found, error) {
	var f found
	if err := json.Unmarshal(data, &f); err != nil {
		return found{}, err
	}
	switch f.State {
	case "ready", "drain", "maint":
	default:
		return found{}, fmt.Errorf("state %q is not ready, drain or maint", clip(f.State))
	}
	return f, nil
}

// foundPath names the record of this server: one file per runtime API address,
// backend and server, named by a digest of the three so that any names make a
// valid file name.
func (h *HAProxy) foundPath() string {
	sum := sha256.Sum256([]byte(h.Addr + "\x00" + h.Backend + "\x00" + h.Server))
	return filepath.Join(h.StateDir, "haproxy-"+hex.EncodeToString(sum[:8])+".json")
}

// readFound returns the server's record; ok is false when there is none.
func (h *HAProxy) readFound() (f found, ok bool, err error) {
	p := h.foundPath()
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return found{}, false, nil
	}
	if err != nil {
		return found{}, false, err
	}
	if f, err = parseFound(data); err != nil {
		return found{}, false, fmt.Errorf("read %s: %w", p, err)
	}
	return f, true, nil
}

func (h *HAProxy) writeFound(f found) error {
	if err := os.MkdirAll(h.StateDir, 0o700); err != nil {
		return err
	}
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return atomicfile.Write(h.foundPath(), append(data, '\n'), 0o600)
}

// recordFound persists the state Drain finds the server in, before Drain changes
// anything, and returns the state to restore. An earlier record that was not
// restored stands while the server is still in drain or maint, the states a Drain
// leaves it in: that Drain (interrupted, or never undrained) found the state that
// counts, and "maint" now is baton's own. Otherwise (none, restored, or the server
// was set since) the state found now is recorded. With no StateDir nothing is
// recorded.
func (h *HAProxy) recordFound(now AdminState) (string, error) {
	state := settable(now)
	if h.StateDir == "" {
		return state, nil
	}
	old, ok, err := h.readFound()
	if err != nil {
		h.logger().Warn("the state found by an earlier drain is unreadable; recording the state found now", "err", err, "found", state)
	}
	if ok && !old.Restored && state != "ready" {
		if old.State != state {
			h.logger().Info("an earlier drain was not undone: keeping the state it found", "found", old.State, "now", state)
		}
		return old.State, nil
	}
	f := found{Addr: h.Addr, Backend: h.Backend, Server: h.Server, State: state, Time: time.Now().UTC()}
	if err := h.writeFound(f); err != nil {
		return "", fmt.Errorf("record the state found: %w", err)
	}
	return state, nil
}

// markRestored records that the server is back in the state found.
func (h *HAProxy) markRestored(f found) error {
	f.Restored = true
	if err := h.writeFound(f); err != nil {
		return fmt.Errorf("record the state restored: %w", err)
	}
	return nil
}
