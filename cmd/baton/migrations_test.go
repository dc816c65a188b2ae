package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/golden"
	"github.com/baton-fleet/baton/internal/testetcd"
	"github.com/baton-fleet/baton/internal/yamldoc"
	"github.com/baton-fleet/baton/migrate"
	"github.com/baton-fleet/baton/spec"
)

func TestWriteMigrations(t *testing.T) {
	start := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	list := []migrate.Entry{
		{Service: "api", ID: "0007-orders-status", Phase: "expand", Version: "2.0.0", State: "done", Host: "web-01", Start: start, End: start.Add(3 * time.Second)},
		{Service: "api", ID: "0008-orders-index", Phase: "expand", Version: "2.0.0", State: "failed", Host: "web-01", Start: start.Add(time.Minute), End: start.Add(2 * time.Minute),
			Error: "/usr/bin/psql: exit status 3: ERROR:  relation \"orders_idx\" already exists", Output: "BEGIN\nERROR:  relation \"orders_idx\" already exists\n"},
		{Service: "billing", ID: "12", Phase: "contract", Version: "5.1.0", State: "running", Host: "bill-02", Start: start.Add(time.Hour)},
		{Service: "billing", ID: "13", Phase: "contract", Version: "5.1.0", State: "running", Host: "bill-02", Start: start.Add(time.Hour), Rerunnable: true},
		{Service: "billing", ID: "11", Phase: "expand", Version: "5.1.0", State: "pending", Host: "bill-01", Start: start.Add(-time.Hour),
			Resolved: &migrate.Resolved{As: "pending", By: "ops@bastion", Time: start.Add(-time.Minute), From: "running"}},
	}
	var out bytes.Buffer
	if err := writeMigrations(&out, list, ""); err != nil {
		t.Fatal(err)
	}
	out.WriteString("----\n")
	if err := writeMigrations(&out, list[2:3], "bill-02"); err != nil {
		t.Fatal(err)
	}
	out.WriteString("----\n")
	if err := writeMigrations(&out, nil, ""); err != nil {
		t.Fatal(err)
	}
	out.WriteString("---- below baton fleet: what halts a rollout\n")
	writeMigrationHalts(&out, list, "")
	writeMigrationHalts(&out, list[:1], "") // nothing
	golden.Check(t, "testdata/golden/migrations.txt", out.Bytes())
}

// TestMigrationsCommands runs the built binary against a real etcd: it lists what
// runners left in the ledger, and resolves a failed migration for a rerun.
func TestMigrationsCommands(t *testing.T) {
	c := testetcd.Start(t)
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	conf := "repo: {url: \"https://git.example.com/ops/fleet.git\"}\nlease:\n  backend: etcd\n  etcd: {endpoints: [\"" + c.Endpoints()[0] + "\"], prefix: /baton}\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &migrate.Runner{Ledger: migrate.NewLedger(c.Client(t), "/baton"), Host: "web-01", LockTTL: 2 * time.Second}
	ms := []spec.Migration{
		{ID: "0007-orders-status", Phase: spec.PhaseExpand, Command: []string{"/bin/true"}, Timeout: yamldoc.Duration(10 * time.Second)},
		{ID: "0008-orders-index", Phase: spec.PhaseExpand, Command: []string{"/bin/sh", "-c", "echo relation exists >&2; exit 3"}, Timeout: yamldoc.Duration(10 * time.Second)},
	}
	if err := r.Run(context.Background(), "api", "2.0.0", ms); err == nil {
		t.Fatal("the failing migration did not fail")
	}

	code, stdout, stderr := runBinary(t, "migrations", "api", "--config", cfg)
	for _, want := range []string{"0007-orders-status  expand  2.0.0    done    web-01", "0008-orders-index   expand  2.0.0    failed  web-01", "api 0008-orders-index: /bin/sh: exit status 3: relation exists\n    relation exists"} {
		if code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("baton migrations: exit %d, %s%s\nwant it to hold %q", code, stdout, stderr, want)
		}
	}
	if code, out, errOut := runBinary(t, "migration", "resolve", "api", "0008-orders-index", "--config", cfg); code != 2 || !strings.Contains(errOut, "give one of --done, --rerun") {
		t.Errorf("resolve without --done or --rerun: exit %d, %s%s", code, out, errOut)
	}
	if code, out, errOut := runBinary(t, "migration", "resolve", "api", "0007-orders-status", "--done", "--config", cfg); code != 1 || !strings.Contains(errOut, "migration 0007-orders-status of api is done: nothing to resolve") {
		t.Errorf("resolve of a done migration: exit %d, %s%s", code, out, errOut)
	}
	code, stdout, stderr = runBinary(t, "migration", "resolve", "api", "0008-orders-index", "--rerun", "--config", cfg)
	if code != 0 || !strings.HasPrefix(stdout, "migration 0008-orders-index of api (failed on web-01) marked to run again") {
		t.Errorf("resolve --rerun: exit %d, %s%s", code, stdout, stderr)
	}
	code, stdout, stderr = runBinary(t, "migrations", "--json", "--config", cfg)
	var got struct {
		Lock       string
		Migrations []migrate.Entry
	}
	if err := json.Unmarshal([]byte(stdout), &got); code != 0 || err != nil || len(got.Migrations) != 2 {
		t.Fatalf("baton migrations --json: exit %d, %v: %s%s", code, err, stdout, stderr)
	}
	if e := got.Migrations[1]; e.ID != "0008-orders-index" || e.State != migrate.StatePending || e.Resolved == nil || e.Resolved.From != migrate.StateFailed {
		t.Errorf("after --rerun: %+v", e)
	}
	ms[1].Command = []string{"/bin/true"}
	if err := r.Run(context.Background(), "api", "2.0.0", ms); err != nil {
		t.Fatalf("Run after --rerun: %v", err)
	}
}

// TestMigrationsLocal: with the local lease the commands read and resolve the host's
// own ledger in its state directory.
func TestMigrationsLocal(t *testing.T) {
	state := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	conf := "repo: {url: \"https://git.example.com/ops/fleet.git\"}\npaths: {state: " + state + "}\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &migrate.Runner{Ledger: migrate.NewLocal(filepath.Join(state, migrate.LocalDir)), Host: "h1"}
	m := spec.Migration{ID: "0001-init", Phase: spec.PhaseExpand, Command: []string{"/bin/false"}, Timeout: yamldoc.Duration(10 * time.Second)}
	if err := r.Run(context.Background(), "api", "1.0.0", []spec.Migration{m}); err == nil {
		t.Fatal("the failing migration did not fail")
	}
	code, stdout, stderr := runBinary(t, "migrations", "--config", cfg)
	if code != 0 || !strings.Contains(stdout, "api      0001-init  expand  1.0.0    failed  h1") {
		t.Errorf("baton migrations: exit %d, %s%s", code, stdout, stderr)
	}
	code, stdout, stderr = runBinary(t, "migration", "resolve", "api", "0001-init", "--done", "--config", cfg)
	if code != 0 || !strings.Contains(stdout, "marked done") {
		t.Errorf("resolve --done: exit %d, %s%s", code, stdout, stderr)
	}
	if err := r.Run(context.Background(), "api", "1.0.0", []spec.Migration{m}); err != nil {
		t.Errorf("Run after --done: %v", err)
	}
}
