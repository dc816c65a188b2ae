package migrate

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testetcd"
	"github.com/baton-fleet/baton/internal/yamldoc"
	"github.com/baton-fleet/baton/spec"
)

// BenchmarkRunDone: what a host pays, at each look, for a release whose migrations
// (10 of them) are all done: one etcd read of the lock and the ledger, no lock taken.
func BenchmarkRunDone(b *testing.B) {
	c := testetcd.Start(b)
	r := &Runner{Ledger: NewLedger(c.Client(b), "/baton"), Host: "web-01", LockTTL: 2 * time.Second}
	var ms []spec.Migration
	for i := range 10 {
		ms = append(ms, spec.Migration{ID: fmt.Sprintf("%04d", i), Phase: spec.PhaseExpand, Command: []string{"/bin/true", fmt.Sprint(i)}, Timeout: yamldoc.Duration(10 * time.Second)})
	}
	if err := r.Run(context.Background(), "api", "2.0.0", ms); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := r.Run(context.Background(), "api", "2.0.0", ms); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRunOne: one migration run from start to end by one host: the lock taken
// and given back, three ledger writes, the command (/bin/true) run.
func BenchmarkRunOne(b *testing.B) {
	c := testetcd.Start(b)
	r := &Runner{Ledger: NewLedger(c.Client(b), "/baton"), Host: "web-01", LockTTL: 2 * time.Second}
	i := 0
	for b.Loop() {
		i++
		m := spec.Migration{ID: fmt.Sprintf("%06d", i), Phase: spec.PhaseExpand, Command: []string{"/bin/true"}, Timeout: yamldoc.Duration(10 * time.Second)}
		if err := r.Run(context.Background(), "api", "2.0.0", []spec.Migration{m}); err != nil {
			b.Fatal(err)
		}
	}
}
