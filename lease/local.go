// Package lease lets one host of a group upgrade at a time (or N): local, etcd, fleetlock.
package lease

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// ErrNotHeld is returned by Check when the caller does not hold the lease.
var ErrNotHeld = errors.New("lease not held")

// Local is the lease of a single host: an exclusive lock (flock) on a file, so that
// two processes on the host never upgrade at once. The kernel drops it when its holder
// dies, so a crashed agent never blocks the next one. It serves one host and the demo.
type Local struct {
	Path string // the lock file, e.g. <state>/lease.lock
	// Poll is how often Acquire retries a lock another process holds (default 100ms).
	Poll time.Duration

	mu sync.Mutex
	f  *os.File
}

// Acquire takes the lock, waiting until it is free or ctx ends. Taking a lock this
// Local already holds is a no-op.
func (l *Local) Acquire(ctx context.Context, group string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		return nil
	}
	f, err := os.OpenFile(l.Path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("acquire local lease: %w", err)
	}
	poll := l.Poll
	if poll <= 0 {
		poll = 100 * time.Millisecond
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return fmt.Errorf("acquire local lease %s: %w", l.Path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return fmt.Errorf("acquire local lease %s: %w", l.Path, ctx.Err())
		case <-time.After(poll):
		}
	}
	l.f = f
	return nil
}

// Check reports whether the lock is still held: ErrNotHeld when it is not.
func (l *Local) Check(context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return ErrNotHeld
	}
	return nil
}

// Release lets the lock go. Releasing a lock not held is a no-op.
func (l *Local) Release(context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	l.f.Close()
	l.f = nil
	if err != nil {
		return fmt.Errorf("release local lease: %w", err)
	}
	return nil
}
