package fleet

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-fleet/baton/internal/testetcd"
	"github.com/baton-fleet/baton/spec"
)

const (
	commitA = "aaaaaaa000000000000000000000000000000000"
	commitB = "bbbbbbb000000000000000000000000000000000"
	commitC = "ccccccc000000000000000000000000000000000"
)

func put(t *testing.T, cli *clientv3.Client, key, value string) {
	t.Helper()
	if _, err := cli.Put(context.Background(), key, value); err != nil {
		t.Fatal(err)
	}
}

// TestOneBadKeyStopsNoGate: values an operator's etcdctl or another version may
// leave are read tolerantly (maxParallel "2\n" is 2, as the lease reads it), and a
// record that does not parse is reported and skipped: the snapshot, and every
// gate that does not need that record, go on.
func TestOneBadKeyStopsNoGate(t *testing.T) {
	cli := testetcd.Start(t).Client(t)
	ctx := context.Background()
	s := NewStore(cli, "/baton")
	put(t, cli, "/baton/groups/web/maxParallel", "2\n")
	put(t, cli, "/baton/groups/db/maxParallel", "many")
	put(t, cli, "/baton/hosts/db-1", `{"host":"db-1","group":"db","commit":"`+commitA+`","state":"IDLE"}`)
	put(t, cli, "/baton/hosts/db-2", `{"host":"db-2",`) // cut short
	put(t, cli, "/baton/groups/api/failed/"+commitA, "halt")
	put(t, cli, "/baton/groups/web/canaries/"+commitB, `"web-1"`)
	put(t, cli, "/baton/groups/web/paused", "")

	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if got := snap.Groups["web"].Slots; got != 2 {
		t.Errorf("web slots = %d, want 2", got)
	}
	if got := snap.Groups["db"].Slots; got != 0 {
		t.Errorf("db slots = %d, want 0 (unreadable: no slot, as the lease reads it)", got)
	}
	var keys []string
	for _, p := range snap.Problems {
		keys = append(keys, p.Key)
	}
	want := []string{"/baton/groups/api/failed/" + commitA, "/baton/groups/db/maxParallel", "/baton/groups/web/canaries/" + commitB, "/baton/hosts/db-2"}
	if !slices.Equal(keys, want) {
		t.Errorf("problems = %+v\nwant keys %q", snap.Problems, want)
	}
	for _, p := range snap.Problems {
		if p.Err == "" {
			t.Errorf("problem %s says nothing", p.Key)
		}
	}
	// db-2 is unknown, so group db converged on A; api's unreadable halt halts.
	if v := snap.Gate(&spec.Group{Name: "app", After: []string{"db"}}, commitA, "app-1", time.Now()); !v.OK {
		t.Errorf("gate of a group after db = %+v", v)
	}
	if v := snap.Gate(&spec.Group{Name: "api"}, commitA, "api-1", time.Now()); !v.Halted || !strings.Contains(v.Why, "unreadable") {
		t.Errorf("gate under an unreadable halt = %+v, want halted", v)
	}
	if v := snap.Gate(&spec.Group{Name: "web"}, commitB, "web-2", time.Now()); v.OK || !strings.Contains(v.Why, "paused") {
		t.Errorf("gate under an empty pause = %+v, want paused", v)
	}
	// The claim on an unreadable canary list fails, and says why.
	if _, err := s.ClaimCanary(ctx, nil, "web", commitB, "web-2", 1); err == nil || !strings.Contains(err.Error(), "canary list") {
		t.Errorf("ClaimCanary on an unreadable list: %v", err)
	}
}

// TestSeenAndTouch: Touch is the heartbeat of a host and sets Seen alone: the
// time the host entered its state (which the canary pause counts from) stays. A
// host whose agent sends no heartbeat is never stale; one that stops sending is,
// after StaleAfter.
func TestSeenAndTouch(t *testing.T) {
	cli := testetcd.Start(t).Client(t)
	ctx := context.Background()
	s := NewStore(cli, "/baton")
	start := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	clock := start
	s.now = func() time.Time { return clock }
	read := func() Host {
		t.Helper()
		snap, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return snap.Hosts["web-1"]
	}

	if ok, err := s.Touch(ctx, "web-1"); ok || err != nil {
		t.Fatalf("Touch with no record = %v, %v; want false, nil", ok, err)
	}
	if err := s.PutHost(ctx, nil, Host{Host: "web-1", Group: "web", Commit: commitA, State: "IDLE"}); err != nil {
		t.Fatal(err)
	}
	clock = start.Add(StaleAfter + time.Hour)
	if h := read(); h.Stale(clock) {
		t.Errorf("a record with no heartbeat, %s old, is stale: %+v", StaleAfter+time.Hour, h)
	}
	if ok, err := s.Touch(ctx, "web-1"); !ok || err != nil {
		t.Fatalf("Touch = %v, %v", ok, err)
	}
	h := read()
	if h.Stale(clock) || !h.Seen.Equal(clock) || !h.LastSeen().Equal(clock) || !h.Time.Equal(start) || h.Commit != commitA {
		t.Errorf("record after Touch: %+v", h)
	}
	if !h.Stale(clock.Add(StaleAfter + time.Second)) {
		t.Errorf("a host silent for %s is not stale", StaleAfter+time.Second)
	}
	put(t, cli, "/baton/hosts/web-2", "{")
	if _, err := s.Touch(ctx, "web-2"); err == nil {
		t.Errorf("Touch of an unreadable record succeeded")
	}
}

// TestForget: a decommissioned host, or a dead canary, is removed with its slot
// key and its canary spots; its halts stay. A host in a transaction is refused
// unless forced.
func TestForget(t *testing.T) {
	cli := testetcd.Start(t).Client(t)
	ctx := context.Background()
	s := NewStore(cli, "/baton")
	if err := s.PutHost(ctx, nil, Host{Host: "web-1", Group: "web", Commit: commitA, Target: commitB, State: "SWITCHING"}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutHost(ctx, nil, Host{Host: "web-2", Group: "web", Commit: commitA, State: "IDLE"}); err != nil {
		t.Fatal(err)
	}
	put(t, cli, SlotKey("/baton", "web", "web-2"), "web-2")
	put(t, cli, SlotKey("/baton", "web", "web-3"), "web-3")
	for _, h := range []string{"web-1", "web-2"} {
		if ok, err := s.ClaimCanary(ctx, nil, "web", commitB, h, 2); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	if err := s.Fail(ctx, nil, "web", commitC, "web-1", "verify"); err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct{ host, want string }{
		{"web-1", "its record says SWITCHING to bbbbbbb"},
		{"web-2", "it holds or waits for a slot of web"},
		{"web-3", "it holds or waits for a slot of web"},
	} {
		if _, err := s.Forget(ctx, tt.host, false); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "--force") {
			t.Errorf("Forget(%s) = %v, want ErrBusy: %s", tt.host, err, tt.want)
		}
	}
	if _, err := s.Forget(ctx, "web-9", true); !errors.Is(err, ErrUnknownHost) {
		t.Errorf("Forget of an unknown host: %v", err)
	}

	f, err := s.Forget(ctx, "web-1", true)
	if err != nil {
		t.Fatal(err)
	}
	if !f.Record || f.Host.State != "SWITCHING" || len(f.Slots) != 0 || !slices.Equal(f.Canaries, []string{commitB}) {
		t.Errorf("forgot %+v", f)
	}
	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	web := snap.Groups["web"]
	if _, ok := snap.Hosts["web-1"]; ok || !slices.Equal(web.Canaries[commitB], []string{"web-2"}) || web.Failed[commitC].Host != "web-1" {
		t.Errorf("after forgetting web-1: hosts %v, web %+v", snap.Hosts, web)
	}
	// its canary spot is free for another host
	if ok, err := s.ClaimCanary(ctx, nil, "web", commitB, "web-4", 2); !ok || err != nil {
		t.Errorf("claim of the freed spot = %v, %v", ok, err)
	}

	f, err = s.Forget(ctx, "web-2", true)
	if err != nil || !slices.Equal(f.Slots, []string{"web"}) {
		t.Fatalf("Forget(web-2) = %+v, %v", f, err)
	}
	if f, err = s.Forget(ctx, "web-3", true); err != nil || f.Record || !slices.Equal(f.Slots, []string{"web"}) {
		t.Fatalf("Forget(web-3), a slot key and nothing else = %+v, %v", f, err)
	}
	resp, err := cli.Get(ctx, "/baton/groups/web/slots/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Errorf("slot keys left: %d, %v", resp.Count, err)
	}
	snap, _ = s.Snapshot(ctx)
	if !slices.Equal(snap.Groups["web"].Canaries[commitB], []string{"web-4"}) || len(snap.Hosts) != 0 {
		t.Errorf("after forgetting web-2: %+v %+v", snap.Groups["web"], snap.Hosts)
	}

	// An unreadable record is forgotten like any other.
	put(t, cli, "/baton/hosts/web-5", "{")
	if f, err := s.Forget(ctx, "web-5", false); err != nil || !f.Record {
		t.Errorf("Forget of an unreadable record = %+v, %v", f, err)
	}
}

// TestPrune: once the group converged past a halted commit the halt goes, with the
// canary spots and promotions of commits no host uses; nothing else does.
func TestPrune(t *testing.T) {
	cli := testetcd.Start(t).Client(t)
	ctx := context.Background()
	s := NewStore(cli, "/baton")
	order := map[string]int{commitA: 1, commitB: 2, commitC: 3}
	descends := func(anc, c string) (bool, error) { return order[anc] < order[c], nil }

	for _, h := range []string{"web-1", "web-2"} {
		if err := s.PutHost(ctx, nil, Host{Host: h, Group: "web", Commit: commitC, State: "IDLE"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutHost(ctx, nil, Host{Host: "db-1", Group: "db", Commit: commitA, State: "IDLE"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{commitA, commitB} {
		if _, err := s.ClaimCanary(ctx, nil, "web", c, "web-1", 1); err != nil {
			t.Fatal(err)
		}
		if err := s.Promote(ctx, "web", c, "ops"); err != nil {
			t.Fatal(err)
		}
		if err := s.Fail(ctx, nil, "web", c, "web-1", "verify"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Fail(ctx, nil, "db", commitB, "db-1", "verify"); err != nil { // db is still on A: B stays halted
		t.Fatal(err)
	}
	pruned, err := s.Prune(ctx, descends)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"/baton/groups/web/failed/" + commitA, "/baton/groups/web/failed/" + commitB,
		"/baton/groups/web/canaries/" + commitA, "/baton/groups/web/promoted/" + commitA,
	}
	if !slices.Equal(pruned, want) {
		t.Errorf("pruned\n %q\nwant\n %q", pruned, want)
	}
	snap, _ := s.Snapshot(ctx)
	if _, ok := snap.Groups["db"].Failed[commitB]; !ok {
		t.Errorf("the halt of db on B, which db has not passed, was pruned")
	}
	if pruned, err := s.Prune(ctx, descends); err != nil || len(pruned) != 0 {
		t.Errorf("a second Prune = %q, %v", pruned, err)
	}
}
