package rollback

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/baton-fleet/baton/internal/atomicfile"
	"github.com/baton-fleet/baton/internal/commitid"
)

// QuarantineFile lists the commits that failed on this host.
const QuarantineFile = "quarantine.json"

// Quarantined is a commit that failed on this host: the agent does not try it again
// until a newer commit arrives or an operator runs `baton retry`.
type Quarantined struct {
	Commit string    `json:"commit"`
	Reason string    `json:"reason"`
	Time   time.Time `json:"time"`
}

// Quarantine returns the quarantined commits, oldest first.
func (s *Store) Quarantine() ([]Quarantined, error) {
	var q []Quarantined
	if _, err := readStateFile(s.Dir, QuarantineFile, "quarantine", &q); err != nil {
		return nil, err
	}
	return q, nil
}

// IsQuarantined returns the record of commit when it is quarantined.
func (s *Store) IsQuarantined(commit string) (*Quarantined, error) {
	q, err := s.Quarantine()
	if err != nil {
		return nil, err
	}
	for i := range q {
		if q[i].Commit == commit {
			return &q[i], nil
		}
	}
	return nil, nil
}

// AddQuarantine quarantines commit; quarantining it again updates the reason.
func (s *Store) AddQuarantine(commit, reason string) error {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	q, err := s.Quarantine()
	if err != nil {
		return err
	}
	kept := q[:0]
	for _, e := range q {
		if e.Commit != commit {
			kept = append(kept, e)
		}
	}
	return s.writeQuarantine(append(kept, Quarantined{Commit: commit, Reason: reason, Time: s.now()}))
}

// ClearQuarantine lifts the quarantine of commit, or of every commit when commit is "".
// It reports whether anything was lifted.
func (s *Store) ClearQuarantine(commit string) (bool, error) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	q, err := s.Quarantine()
	if err != nil {
		return false, err
	}
	return s.clearQuarantine(q, commit)
}

// ErrNotQuarantined is LiftQuarantine's error when no quarantined commit has the prefix.
var ErrNotQuarantined = errors.New("not quarantined on this host")

// LiftQuarantine lifts the quarantine of the commit that prefix names by the rule of
// commitid.Match (`baton retry`, through the agent or, when none answers, without it),
// and returns that commit. A prefix no quarantined commit has is ErrNotQuarantined, one
// that several have is commitid.ErrAmbiguous.
func (s *Store) LiftQuarantine(prefix string) (string, error) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	q, err := s.Quarantine()
	if err != nil {
		return "", err
	}
	ids := make([]string, len(q))
	for i, e := range q {
		ids[i] = e.Commit
	}
	commit, err := commitid.Match(prefix, ids)
	switch {
	case errors.Is(err, commitid.ErrNoMatch):
		return "", fmt.Errorf("commit %s: %w", prefix, ErrNotQuarantined)
	case err != nil:
		return "", err
	}
	_, err = s.clearQuarantine(q, commit)
	return commit, err
}

// clearQuarantine writes q without commit (without any commit when commit is ""),
// and reports whether that lifted anything. The caller holds qmu.
func (s *Store) clearQuarantine(q []Quarantined, commit string) (bool, error) {
	var kept []Quarantined
	for _, e := range q {
		if commit != "" && e.Commit != commit {
			kept = append(kept, e)
		}
	}
	if len(kept) == len(q) {
		return false, nil
	}
	return true, s.writeQuarantine(kept)
}

func (s *Store) writeQuarantine(q []Quarantined) error {
	if q == nil {
		q = []Quarantined{}
	}
	data, err := json.MarshalIndent(q, "", "  ")
	if err != nil {
		return fmt.Errorf("write quarantine: %w", err)
	}
	return atomicfile.Write(filepath.Join(s.Dir, QuarantineFile), append(data, '\n'), 0o644)
}
