package agent

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-fleet/baton/config"
	"github.com/baton-fleet/baton/fleet"
	"github.com/baton-fleet/baton/internal/testetcd"
	"github.com/baton-fleet/baton/internal/yamldoc"
	"github.com/baton-fleet/baton/lease"
	"github.com/baton-fleet/baton/rollback"
	"github.com/baton-fleet/baton/spec"
)

// fleetAgent is an agent with only what its fleet-state code needs: the etcd lease and
// store of host on cli.
func fleetAgent(t *testing.T, cli *clientv3.Client, host string) *Agent {
	t.Helper()
	cfg := &config.Config{Host: host}
	log := slog.New(slog.DiscardHandler)
	obs, err := newObservers(cfg, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	l := lease.NewEtcd(cli, lease.EtcdOptions{Host: host, TTL: lease.MinEtcdTTL, Logger: log})
	t.Cleanup(func() { l.Close() })
	return &Agent{cfg: cfg, log: log, obs: obs, lease: l, store: &rollback.Store{Dir: t.TempDir()},
		fleet: &fleetState{store: fleet.NewStore(cli, lease.DefaultEtcdPrefix), lease: l, prefix: lease.DefaultEtcdPrefix}}
}

func hostRecord(t *testing.T, cli *clientv3.Client, host string) fleet.Host {
	t.Helper()
	snap, err := fleet.NewStore(cli, lease.DefaultEtcdPrefix).Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return snap.Hosts[host]
}

// The writes of a transaction under the lease are fenced by the slot the host acquired,
// also once its hold lapsed: etcd refuses them when the slot is gone. They used to be
// fenced by Token, which is 0 after a lapse, and a zero token wrote unfenced.
func TestTransactionRecordsAreFenced(t *testing.T) {
	c := testetcd.Start(t)
	cli := c.Client(t)
	ctx := t.Context()
	a := fleetAgent(t, cli, "h1")
	txn := &rollback.Txn{ID: "t1", Host: "h1", Group: "web", From: "aaaaaaa", To: "bbbbbbb"}

	if err := a.record(ctx, txn, rollback.Switching, txn.From, ""); !errors.Is(err, fleet.ErrFenced) {
		t.Fatalf("record SWITCHING with no slot acquired = %v, want ErrFenced", err)
	}
	if h := hostRecord(t, cli, "h1"); h.State != "" {
		t.Fatalf("a record with no slot was written: %+v", h)
	}
	if err := a.lease.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := a.record(ctx, txn, rollback.Leased, txn.From, ""); err != nil {
		t.Fatal(err)
	}
	// An operator frees the slot (or it expired), another host takes it, and this
	// host's Check learns it: Token is 0 from then on.
	if err := lease.ReleaseHost(ctx, cli, lease.DefaultEtcdPrefix, "web", "h1"); err != nil {
		t.Fatal(err)
	}
	b := fleetAgent(t, cli, "h2")
	if err := b.lease.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := a.lease.Check(ctx); !errors.Is(err, lease.ErrNotHeld) {
		t.Fatalf("Check after the slot was taken = %v, want ErrNotHeld", err)
	}
	if err := a.mayswitch(ctx, txn); err == nil {
		t.Fatal("mayswitch passed after the slot was taken")
	}
	if err := a.record(ctx, txn, rollback.Switching, txn.From, ""); !errors.Is(err, fleet.ErrFenced) {
		t.Fatalf("record SWITCHING after the slot was taken = %v, want ErrFenced", err)
	}
	if h := hostRecord(t, cli, "h1"); h.State != "LEASED" {
		t.Fatalf("the fenced-out write went through: record %+v", h)
	}
	// The end of a transaction is the host's own word about itself: written anyway.
	if err := a.record(ctx, txn, rollback.Committed, txn.To, "upgraded"); err != nil {
		t.Fatalf("record IDLE after the slot was taken: %v", err)
	}
	if h := hostRecord(t, cli, "h1"); h.State != "IDLE" || h.Commit != txn.To {
		t.Fatalf("record after the end = %+v, want IDLE at %s", h, txn.To)
	}
	// The new holder's own fenced writes go through.
	if err := b.mayswitch(ctx, txn); err != nil {
		t.Fatalf("mayswitch of the holder: %v", err)
	}
}

// A halt that etcd does not take is retried until it is written; the caller (which
// releases the slot after it) waits meanwhile. It used to be one write, logged when it
// failed, and the slot was released anyway: the next host started the bad commit.
func TestHaltIsRetriedUntilWritten(t *testing.T) {
	c := testetcd.Start(t)
	p := testetcd.NewProxy(t, c.Members()[0].ClientURL)
	cfg := c.ClientConfig()
	cfg.Endpoints = []string{p.URL()}
	a := fleetAgent(t, c.ClientWith(t, cfg), "h1")
	cli := c.Client(t)
	const commit = "cccccccccccccccccccccccccccccccccccccccc"

	p.Block()
	done := make(chan bool, 1)
	go func() { done <- a.haltCommit(t.Context(), "web", commit, "check health failed") }()
	select {
	case ok := <-done:
		t.Fatalf("haltCommit returned %v while etcd was unreachable", ok)
	case <-time.After(2 * etcdCallTimeout):
	}
	if st := a.Status(); !strings.Contains(st.Phase, "halting group web") {
		t.Errorf("phase while the halt waits = %q", st.Phase)
	}
	p.Unblock()
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("haltCommit gave up")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("haltCommit did not return after etcd came back")
	}
	snap, err := fleet.NewStore(cli, lease.DefaultEtcdPrefix).Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := snap.Groups["web"].Failed[commit]; !ok {
		t.Fatalf("no halt recorded: %+v", snap.Groups["web"])
	}

	// Stopping while it cannot be written: it returns false, and the caller leaves the
	// transaction FAILED for the next start.
	p.Block()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if a.haltCommit(ctx, "web", "dddddddddddddddddddddddddddddddddddddddd", "x") {
		t.Fatal("haltCommit reported success while etcd was unreachable")
	}
}

// An idle agent's heartbeat keeps its record alive (fleet.Host.Seen), and writes the
// record anew once an operator forgot the host.
func TestHeartbeat(t *testing.T) {
	c := testetcd.Start(t)
	cli := c.Client(t)
	a := fleetAgent(t, cli, "h1")
	a.store = &rollback.Store{Dir: t.TempDir()}
	const commit = "cccccccccccccccccccccccccccccccccccccccc"
	if err := a.store.SetLastGood(&rollback.LastGood{Revision: commit, Host: "h1", Group: "web"}); err != nil {
		t.Fatal(err)
	}
	a.heartbeat(t.Context())
	if h := hostRecord(t, cli, "h1"); h.State != "IDLE" || h.Commit != commit {
		t.Fatalf("record after the first heartbeat of a host with none = %+v, want IDLE at %s", h, commit)
	}
	a.fleet.lastBeat = time.Time{}
	a.heartbeat(t.Context())
	if h := hostRecord(t, cli, "h1"); h.Seen.IsZero() {
		t.Fatalf("record after a heartbeat = %+v, want Seen set", h)
	}
	// Within heartbeatEvery nothing is written.
	before := hostRecord(t, cli, "h1").Seen
	a.heartbeat(t.Context())
	if after := hostRecord(t, cli, "h1").Seen; !after.Equal(before) {
		t.Errorf("a second heartbeat within %v wrote: %v -> %v", heartbeatEvery, before, after)
	}
}

// A host that recorded its switch and lost its slot holds the next holder's gate.
func TestGateWaitsForAHostSilentSinceItsSwitch(t *testing.T) {
	c := testetcd.Start(t)
	cli := c.Client(t)
	ctx := t.Context()
	const from, to = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	g := &spec.Group{Name: "web"}
	g.Rollout.HealthyDeadline = yamldoc.Duration(30 * time.Second)
	silent, next := fleetAgent(t, cli, "h2"), fleetAgent(t, cli, "h1")
	txn := func(host string) *rollback.Txn {
		return &rollback.Txn{ID: host, Host: host, Group: "web", From: from, To: to}
	}
	if err := silent.lease.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := silent.mayswitch(ctx, txn("h2")); err != nil {
		t.Fatal(err)
	}
	// h2 dies: its slot goes (here at once), h1 takes the slot.
	if err := lease.ReleaseHost(ctx, cli, lease.DefaultEtcdPrefix, "web", "h2"); err != nil {
		t.Fatal(err)
	}
	if err := next.lease.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	v, err := next.gate(ctx, g, txn("h1"))
	if err != nil {
		t.Fatal(err)
	}
	if v.OK || !strings.Contains(v.Why, "for h2: switched (to bbbbbbb or an earlier commit) and silent since") {
		t.Fatalf("gate of the next holder = %+v, want a wait for h2", v)
	}
}

// No transaction starts while one is open: a new PREPARED would overwrite the only
// record of what to revert. (The loop used to go on after a recovery that failed, and
// its next poll wrote PREPARED over a SWITCHING.)
func TestNoTransactionStartsWhileOneIsOpen(t *testing.T) {
	cfg := &config.Config{Host: "h1"}
	log := slog.New(slog.DiscardHandler)
	obs, err := newObservers(cfg, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{cfg: cfg, log: log, obs: obs, store: &rollback.Store{Dir: t.TempDir()}}
	open := &rollback.Txn{ID: "t1", Host: "h1", Group: "web", From: "aaaaaaa", To: "bbbbbbb"}
	if err := a.store.Save(open, rollback.Switching); err != nil {
		t.Fatal(err)
	}
	a.reconcile(t.Context(), "cccccccccccccccccccccccccccccccccccccccc") // a nil git: anything past the guard panics
	if st := a.Status(); !strings.Contains(st.Phase, "an interrupted transaction is open") {
		t.Errorf("phase = %q, want the open transaction named", st.Phase)
	}
	got, err := a.store.Load()
	if err != nil || got == nil || got.ID != "t1" || got.State != rollback.Switching {
		t.Fatalf("open transaction after reconcile = %+v, %v; want t1 still SWITCHING", got, err)
	}
}
