package testfleetlock

import (
	"fmt"
	"slices"
)

// Semaphore is one group's semaphore as airlock keeps it in etcd: a number of slots and
// the sorted ids of the holders. It is a pure value; Server stores it.
type Semaphore struct {
	TotalSlots uint64   `json:"total_slots"`
	Holders    []string `json:"holders"`
}

// RecursiveLock adds id as a holder. An id that holds already holds again (nothing
// changes); when every slot is taken it fails with airlock's words.
func (s *Semaphore) RecursiveLock(id string) error {
	i, found := slices.BinarySearch(s.Holders, id)
	if found {
		return nil
	}
	if uint64(len(s.Holders)) >= s.TotalSlots {
		return fmt.Errorf("all %d semaphore slots currently locked", s.TotalSlots)
	}
	s.Holders = slices.Insert(s.Holders, i, id)
	return nil
}

// UnlockIfHeld removes id from the holders, if it is one. It reports whether it was.
func (s *Semaphore) UnlockIfHeld(id string) bool {
	i, found := slices.BinarySearch(s.Holders, id)
	if found {
		s.Holders = slices.Delete(s.Holders, i, i+1)
	}
	return found
}
