package migrate

import (
	"fmt"
	"time"
)

// Kinds of Halt.
const (
	Failed      = "failed"      // the migration or its backup failed or timed out
	Interrupted = "interrupted" // its runner died mid-run, and it is not rerunnable
	Changed     = "changed"     // it ran with another command than the release's
	Unreadable  = "unreadable"  // its ledger entry does not parse
)

// Halt is why a release's migrations stop: the service's rollout halts in every
// group until an operator acts (the error says how). Run returns it as an error.
type Halt struct {
	Kind     string
	Entry    Entry  // the migration as the ledger holds it
	Checksum string // of the release's command, for Changed
}

func (h *Halt) Error() string {
	e := h.Entry
	at := e.Start.UTC().Format(time.RFC3339)
	resolve := fmt.Sprintf("baton migration resolve %s %s", e.Service, e.ID)
	switch h.Kind {
	case Failed:
		return fmt.Sprintf("migration %s of %s failed on %s at %s: %s; fix the cause, then %s --rerun", e.ID, e.Service, e.Host, at, e.Error, resolve)
	case Interrupted:
		return fmt.Sprintf("migration %s interrupted on %s at %s (%s %s): it is not rerunnable, so it is not run again; check the database, then %s --done if it completed, or --rerun", e.ID, e.Host, at, e.Service, e.Version, resolve)
	case Changed:
		return fmt.Sprintf("migration %s of %s ran on %s at %s with another command (checksum %.12s, the release's is %.12s): a migration that ran is never changed; restore it, and put the change in a migration of its own id", e.ID, e.Service, e.Host, at, e.Checksum, h.Checksum)
	}
	return fmt.Sprintf("migration %s of %s: %s; fix or delete the key with etcdctl", e.ID, e.Service, e.Error)
}

// decide is what a runner does with one migration given its ledger entry (nil when
// absent) and the checksum of the release's command: run it (rerun when it was
// interrupted and is rerunnable), skip it (done), or halt.
func decide(e *Entry, rerunnable bool, sum string) (run bool, halt *Halt) {
	if e == nil {
		return true, nil
	}
	switch e.State {
	case StatePending:
		return true, nil
	case StateDone:
		if e.Checksum != sum {
			return false, &Halt{Kind: Changed, Entry: *e, Checksum: sum}
		}
		return false, nil
	case StateRunning:
		switch {
		case e.Checksum != sum:
			return false, &Halt{Kind: Changed, Entry: *e, Checksum: sum}
		case rerunnable:
			return true, nil
		}
		return false, &Halt{Kind: Interrupted, Entry: *e}
	case StateFailed:
		return false, &Halt{Kind: Failed, Entry: *e}
	}
	return false, &Halt{Kind: Unreadable, Entry: *e}
}
