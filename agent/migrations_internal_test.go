package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/core"
	"github.com/baton-fleet/baton/fleet"
	"github.com/baton-fleet/baton/internal/testetcd"
	"github.com/baton-fleet/baton/internal/yamldoc"
	"github.com/baton-fleet/baton/lease"
	"github.com/baton-fleet/baton/migrate"
	"github.com/baton-fleet/baton/rollback"
	"github.com/baton-fleet/baton/spec"
)

// A transaction that ends before its switch (a migration halted in the ledger, say)
// leaves the host's record IDLE at the commit it runs, with why: its LEASED record
// said where it was going, which the other hosts' requirement checks take for what it
// may serve. It used to stay LEASED, going, until the host's next transaction.
func TestAbortedTransactionRecordsIdle(t *testing.T) {
	c := testetcd.Start(t)
	cli := c.Client(t)
	ctx := t.Context()
	a := fleetAgent(t, cli, "h1")
	a.tlog = &txnLog{}
	txn := &rollback.Txn{ID: "t1", Host: "h1", Group: "web", From: "aaaaaaa", To: "bbbbbbb",
		Target: rollback.LastGood{Services: map[string]rollback.ServiceRecord{"api": {Version: "2.2.0", Requires: map[string]string{"db": "<3.0.0"}}}}}
	if err := a.lease.Acquire(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []rollback.State{rollback.Prepared, rollback.Staged, rollback.Leased} {
		if err := a.store.Save(txn, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.record(ctx, txn, rollback.Leased, txn.From, ""); err != nil {
		t.Fatal(err)
	}
	if h := hostRecord(t, cli, "h1"); h.State != "LEASED" || h.Going["api"].Version != "2.2.0" {
		t.Fatalf("record under the lease = %+v", h)
	}
	why := "migration 0004-fails of api failed on h2"
	a.end(ctx, &work{txn: txn, log: a.log}, core.Step{Do: core.Done, Outcome: &core.Outcome{Kind: core.Aborted, Step: "migrate", Reason: why}})
	h := hostRecord(t, cli, "h1")
	if h.State != "IDLE" || h.Commit != txn.From || h.Target != "" || h.Going != nil || h.Result != "aborted: "+why {
		t.Errorf("record after the abort = %+v, want IDLE at %s, going nowhere, saying why", h, txn.From)
	}
	if u := (&fleet.Snapshot{Hosts: map[string]fleet.Host{"h1": h}}).Unmet("h2", map[string]fleet.Run{"db": {Version: "3.0.0"}}, h.Time); u != nil {
		t.Errorf("the aborted target still holds back db 3.0.0: %s", u)
	}
}

// A host that commits while another still runs an older version leaves the contract
// migrations to a later look: its next poll at the same commit runs them once the
// other moved, rather than wait for the next commit (the last host to commit may have
// failed to: etcd out of reach, say).
func TestContractAgainAtThePoll(t *testing.T) {
	c := testetcd.Start(t)
	cli := c.Client(t)
	ctx := t.Context()
	a := fleetAgent(t, cli, "h1")
	ran := filepath.Join(t.TempDir(), "ran")
	a.migrations = &migrate.Runner{Ledger: migrate.NewLedger(cli, lease.DefaultEtcdPrefix), Host: "h1", LockTTL: 2 * time.Second}
	api := &spec.Rendered{Service: spec.Service{Name: "api", Version: "2.0.0", Migrations: []spec.Migration{
		{ID: "0008-drop-status-text", Phase: spec.PhaseContract, Command: []string{"/bin/sh", "-c", "echo x >>" + ran}, Timeout: yamldoc.Duration(10 * time.Second)},
	}}}
	hs := &spec.HostSpec{Host: "h1", Revision: "bbbbbbb", Services: []*spec.Rendered{api}}
	put := func(host, version string) {
		t.Helper()
		h := fleet.Host{Host: host, Group: "web", Commit: "c", State: "IDLE", Runs: map[string]fleet.Run{"api": {Version: version}}}
		if err := a.fleet.store.PutHost(ctx, nil, h); err != nil {
			t.Fatal(err)
		}
	}
	runs := func() int {
		b, _ := os.ReadFile(ran)
		return strings.Count(string(b), "x")
	}
	put("h1", "2.0.0")
	put("h2", "1.9.0")
	a.contract(ctx, hs)
	if runs() != 0 || a.contracts.due != hs {
		t.Fatalf("contract while h2 runs api 1.9.0: %d runs, due %v", runs(), a.contracts.due)
	}
	a.contractAgain(ctx, "ccccccc") // the host moved on: not this commit's any more
	a.contractAgain(ctx, hs.Revision)
	if runs() != 0 {
		t.Fatal("the contract migration ran while h2 runs api 1.9.0")
	}
	put("h2", "2.0.0")
	a.contractAgain(ctx, hs.Revision)
	a.contractAgain(ctx, hs.Revision)
	if runs() != 1 || a.contracts.due != nil {
		t.Errorf("once h2 moved: %d runs, due %v; want it run once, nothing due", runs(), a.contracts.due)
	}
}
