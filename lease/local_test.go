package lease

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestLocalExcludesAndIsIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lease.lock")
	a, b := &Local{Path: path, Poll: 5 * time.Millisecond}, &Local{Path: path, Poll: 5 * time.Millisecond}
	ctx := context.Background()
	if err := a.Check(ctx); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("Check before Acquire = %v, want ErrNotHeld", err)
	}
	if err := a.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := a.Acquire(ctx, "web"); err != nil {
		t.Fatalf("second Acquire by the holder: %v", err)
	}
	if err := a.Check(ctx); err != nil {
		t.Fatalf("Check while held: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := b.Acquire(short, "web"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire of a held lock = %v, want it to wait until the deadline", err)
	}
	got := make(chan error, 1)
	go func() { got <- b.Acquire(ctx, "web") }()
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("Acquire after the holder released: %v", err)
	}
	if err := a.Release(ctx); err != nil {
		t.Errorf("Release when not held: %v", err)
	}
	if err := b.Release(ctx); err != nil {
		t.Error(err)
	}
}
