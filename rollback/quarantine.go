package rollback

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/baton-fleet/baton/internal/atomicfile"
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
	file := filepath.Join(s.Dir, QuarantineFile)
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read quarantine: %w", err)
	}
	var q []Quarantined
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&q); err != nil {
		return nil, fmt.Errorf("read quarantine %s: %w", file, err)
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

// ClearQuarantine lifts the quarantine of commit (`baton retry`), or of every commit
// when commit is "". It reports whether anything was lifted.
func (s *Store) ClearQuarantine(commit string) (bool, error) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	q, err := s.Quarantine()
	if err != nil {
		return false, err
	}
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
