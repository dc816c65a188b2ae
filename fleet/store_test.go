package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/internal/testetcd"
	"github.com/baton-fleet/baton/spec"
)

func TestStoreAgainstEtcd(t *testing.T) {
	cli := testetcd.Start(t).Client(t)
	ctx := context.Background()
	s := NewStore(cli, "/baton")
	const c = "c0ffee0000000000000000000000000000000000"

	// a slot key, as the etcd lease writes it, fences host writes
	slot := SlotKey("/baton", "web", "web-1")
	resp, err := cli.Put(ctx, slot, "")
	if err != nil {
		t.Fatal(err)
	}
	fence := &Fence{Key: slot, Token: resp.Header.Revision}
	if err := s.PutHost(ctx, fence, Host{Host: "web-1", Group: "web", Commit: c, State: "IDLE"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Fail(ctx, fence, "web", c, "web-1", "verify: check health failed"); err != nil {
		t.Fatal(err)
	}
	stale := &Fence{Key: slot, Token: resp.Header.Revision - 1}
	if err := s.PutHost(ctx, stale, Host{Host: "web-1", Group: "web", Commit: "bad"}); !errors.Is(err, ErrFenced) {
		t.Fatalf("a write with a stale fencing token: %v, want ErrFenced", err)
	}
	if err := s.Pause(ctx, "db", "ops", "incident 42"); err != nil {
		t.Fatal(err)
	}
	if err := s.Promote(ctx, "web", c, "ops"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/baton/groups/web/maxParallel", "2"); err != nil {
		t.Fatal(err)
	}

	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	web := snap.Groups["web"]
	if h := snap.Hosts["web-1"]; h.Commit != c || h.Group != "web" {
		t.Errorf("host record = %+v", h)
	}
	if web.Failed[c].Host != "web-1" || web.Slots != 2 || len(web.Holders) != 1 || web.Holders[0] != "web-1" {
		t.Errorf("group web = %+v", web)
	}
	if _, ok := web.Promoted[c]; !ok || snap.Groups["db"].Paused == nil || snap.Groups["db"].Paused.Reason != "incident 42" {
		t.Errorf("marks not read back: web %+v, db %+v", web, snap.Groups["db"])
	}
	g := &spec.Group{Name: "web"}
	if v := snap.Gate(g, c, "web-2", snap.Groups["web"].Failed[c].Time); !v.Halted {
		t.Errorf("Gate after a failure = %+v, want halted", v)
	}

	n, err := s.Retry(ctx, c[:8])
	if err != nil || n != 1 {
		t.Fatalf("Retry = %d, %v", n, err)
	}
	if err := s.Resume(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	snap, _ = s.Snapshot(ctx)
	if len(snap.group("web").Failed) != 0 || snap.group("db").Paused != nil {
		t.Errorf("after retry and resume: web %+v db %+v", snap.group("web"), snap.group("db"))
	}
}

// TestRetryByPrefix: baton retry names a halt by a prefix of its commit, which must
// name one commit of those the groups are halted on.
func TestRetryByPrefix(t *testing.T) {
	cli := testetcd.Start(t).Client(t)
	ctx := context.Background()
	s := NewStore(cli, "/baton")
	a := "c0ffee0a" + strings.Repeat("0", 32)
	b := "c0ffee0b" + strings.Repeat("0", 32)
	for _, f := range []struct{ group, commit string }{{"web", a}, {"db", a}, {"db", b}} {
		if err := s.Fail(ctx, nil, f.group, f.commit, "h1", "check failed"); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		prefix string
		want   int
		err    error
	}{
		{"c0ffee0", 0, commitid.ErrAmbiguous},
		{"c0ffee", 0, nil}, // shorter than a prefix may be: names nothing
		{"c0ffee0a", 2, nil},
		{"c0ffee0a", 0, nil},
		{b, 1, nil},
	}
	for _, tt := range tests {
		n, err := s.Retry(ctx, tt.prefix)
		if n != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("Retry(%s) = %d, %v; want %d, %v", tt.prefix, n, err, tt.want, tt.err)
		}
	}
}

// TestClaimCanaryIsExact: however many hosts race for the canary spots, exactly
// `canary` of them get one.
func TestClaimCanaryIsExact(t *testing.T) {
	cli := testetcd.Start(t).Client(t)
	s := NewStore(cli, "/baton")
	const c = "c0ffee0000000000000000000000000000000000"
	var mu sync.Mutex
	var won []string
	var wg sync.WaitGroup
	for i := range 12 {
		host := "web-" + string(rune('a'+i))
		wg.Go(func() {
			ok, err := s.ClaimCanary(context.Background(), nil, "web", c, host, 3)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				won = append(won, host)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(won) != 3 {
		t.Fatalf("%d hosts claimed a canary spot, want 3: %v", len(won), won)
	}
	again, err := s.ClaimCanary(context.Background(), nil, "web", c, won[0], 3)
	if err != nil || !again {
		t.Errorf("a canary claiming again = %v, %v; want its spot back", again, err)
	}
	resp, _ := cli.Get(context.Background(), "/baton/groups/web/canaries/"+c, clientv3.WithCountOnly())
	if resp.Count != 1 {
		t.Errorf("canary key count = %d", resp.Count)
	}
}

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

// A halt also names the releases the failing commit changed: a later commit that
// changes something else still finds the group halted on them, and baton retry of the
// first commit lifts both.
func TestHaltOnReleases(t *testing.T) {
	cli := testetcd.Start(t).Client(t)
	ctx := t.Context()
	s := NewStore(cli, "/baton")
	const c1 = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1"
	bad := Release{Service: "api", Version: "2.0.0", Fingerprint: "0123456789abcdef"}
	fixed := Release{Service: "api", Version: "2.0.1", Fingerprint: "fedcba9876543210"}
	other := Release{Service: "db", Version: "1.0.0", Fingerprint: "00000000000000aa"}
	if err := s.Fail(ctx, nil, "web", c1, "web-1", "verify: check health failed", bad); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Problems) != 0 {
		t.Fatalf("problems reading the halt: %v", snap.Problems)
	}
	f, ok := snap.BadRelease("web", []Release{other, bad})
	if !ok || f.Commit != c1 || f.Host != "web-1" || f.Release != "api 2.0.0" {
		t.Fatalf("BadRelease = %+v, %v; want the halt of c1 on api 2.0.0", f, ok)
	}
	if f, ok := snap.BadRelease("web", []Release{fixed, other}); ok {
		t.Errorf("a fixed release is halted: %+v", f)
	}
	if f, ok := snap.BadRelease("db", []Release{bad}); ok {
		t.Errorf("another group is halted: %+v", f)
	}
	if _, err := s.Retry(ctx, c1[:8]); err != nil {
		t.Fatal(err)
	}
	snap, err = s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := snap.BadRelease("web", []Release{bad}); ok {
		t.Errorf("baton retry did not lift the halt on the release: %+v", f)
	}
}

// TestCanaryPauseOnOwnClock: the canary's clock is a day ahead and another's a day
// behind; the pause counts from when this host's Store first saw the canary run the
// commit, on this host's clock, and a heartbeat does not restart it.
func TestCanaryPauseOnOwnClock(t *testing.T) {
	cli := testetcd.Start(t).Client(t)
	ctx := context.Background()
	const c, old = "c0ffee0000000000000000000000000000000000", "01d0000000000000000000000000000000000000"
	start := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	clock := start
	here := NewStore(cli, "/baton")
	here.now = func() time.Time { return clock }
	ahead, behind := NewStore(cli, "/baton"), NewStore(cli, "/baton")
	ahead.now = func() time.Time { return clock.Add(24 * time.Hour) }
	behind.now = func() time.Time { return clock.Add(-24 * time.Hour) }
	g := &spec.Group{Name: "web", Rollout: spec.Rollout{MaxParallel: 1, Canary: 2, CanaryPause: spec.Pause{After: 10 * time.Minute}}}
	for _, h := range []string{"web-1", "web-3"} {
		if ok, err := here.ClaimCanary(ctx, nil, "web", c, h, 2); err != nil || !ok {
			t.Fatalf("ClaimCanary(%s) = %v, %v", h, ok, err)
		}
	}
	put := func(s *Store, host, commit string) {
		t.Helper()
		if err := s.PutHost(ctx, nil, Host{Host: host, Group: "web", Commit: commit, State: "IDLE"}); err != nil {
			t.Fatal(err)
		}
	}
	gate := func() Verdict {
		t.Helper()
		snap, err := here.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return snap.Gate(g, c, "web-2", clock)
	}
	put(ahead, "web-1", c)
	put(behind, "web-3", old)
	if v := gate(); v.OK {
		t.Fatalf("Gate with a canary still on the old commit = %+v", v)
	}
	clock = clock.Add(time.Minute)
	put(behind, "web-3", c) // its record says it committed a day ago
	if v, want := gate(), "the canaries run c0ffee0; canary pause until 2026-11-25T12:11:00Z"; v.OK || v.Why != want {
		t.Fatalf("Gate as the last canary commits = %+v, want %q", v, want)
	}
	clock = clock.Add(9 * time.Minute)
	if _, err := ahead.Touch(ctx, "web-1"); err != nil {
		t.Fatal(err)
	}
	if v := gate(); v.OK {
		t.Errorf("Gate 9 minutes into the pause = %+v", v)
	}
	clock = clock.Add(time.Minute)
	if v := gate(); !v.OK {
		t.Errorf("Gate once the pause is over, on this host's clock = %+v", v)
	}
}

// TestSnapshotBounded: a fleet of 10,000 hosts, each with its record and a heartbeat's
// worth of result text, some of them upgrading (a slot each), is read well within the
// bounds of a Snapshot; a state past either bound is not read, and the error names the
// prefix and the limit. Nothing that reads the state (the gate, Prune) then goes on.
func TestSnapshotBounded(t *testing.T) {
	cli := testetcd.Start(t).Client(t)
	ctx := t.Context()
	s := NewStore(cli, "/baton")

	const hosts, groups = 10_000, 20
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	var ops []clientv3.Op
	flush := func() {
		t.Helper()
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
		ops = ops[:0]
	}
	for i := range hosts {
		name, group := fmt.Sprintf("web-%05d", i), fmt.Sprintf("g%02d", i%groups)
		h := Host{Host: name, Group: group, Commit: commitA, Target: commitB, State: "VERIFYING", Time: now, Seen: now,
			Result: "committed upgrade " + commitid.Short(commitA) + " -> " + commitid.Short(commitB) + ": 3 services restarted, 12 checks passed"}
		data, err := json.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, clientv3.OpPut("/baton/hosts/"+name, string(data)))
		if i/groups%10 == 0 { // a tenth of each group holds a slot
			ops = append(ops, clientv3.OpPut(SlotKey("/baton", group, name), ""))
		}
		if len(ops) >= 100 {
			flush()
		}
	}
	flush()
	for g := range groups {
		group := fmt.Sprintf("g%02d", g)
		ops = append(ops, clientv3.OpPut("/baton/groups/"+group+"/maxParallel", "50"))
		data, _ := json.Marshal(Failure{Commit: commitB, Host: "web-00001", Reason: "verify: check health failed: " + strings.Repeat("x", 200), Time: now})
		ops = append(ops, clientv3.OpPut("/baton/groups/"+group+"/failed/"+commitB, string(data)))
	}
	flush()

	all, err := cli.Get(ctx, "/baton/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	size := 0
	for _, kv := range all.Kvs {
		size += len(kv.Key) + len(kv.Value)
	}
	t.Logf("%d hosts: %d keys, %d bytes; the bounds are %d keys, %d bytes", hosts, len(all.Kvs), size, SnapshotMaxKeys, SnapshotMaxBytes)
	if len(all.Kvs)*4 > SnapshotMaxKeys || size*4 > SnapshotMaxBytes {
		t.Errorf("a fleet of %d hosts is within a factor of 4 of the bounds", hosts)
	}
	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatalf("Snapshot of %d hosts: %v", hosts, err)
	}
	if len(snap.Hosts) != hosts || len(snap.Problems) != 0 || len(snap.Groups["g07"].Holders) != hosts/groups/10 {
		t.Fatalf("Snapshot of %d hosts read %d hosts, %d holders of g07, problems %v", hosts, len(snap.Hosts), len(snap.Groups["g07"].Holders), snap.Problems)
	}

	// Past the bound on keys: etcd sends no more than the limit, and nothing is read.
	s.maxKeys = int64(len(all.Kvs) - 1)
	_, err = s.Snapshot(ctx)
	want := fmt.Sprintf("read fleet state: /baton/ holds %d keys, over the limit of %d; list them with etcdctl get --prefix --keys-only /baton/ and delete what baton does not write (baton fleet forget a host gone for good)", len(all.Kvs), len(all.Kvs)-1)
	if err == nil || err.Error() != want {
		t.Errorf("Snapshot over the key limit: %v\nwant %s", err, want)
	}
	s.maxKeys = SnapshotMaxKeys

	// Past the bound on bytes: a writer that is not baton adds values of 1 MiB.
	for i := range 4 {
		put(t, cli, fmt.Sprintf("/baton/junk/%d", i), strings.Repeat("j", 1<<20))
	}
	s.maxBytes = int64(size + 3<<20)
	_, err = s.Snapshot(ctx)
	want = fmt.Sprintf("read fleet state: the %d keys under /baton/ hold %d bytes, over the limit of %d; list them with etcdctl get --prefix --keys-only /baton/ and delete what baton does not write (baton fleet forget a host gone for good)",
		len(all.Kvs)+4, size+4*(len("/baton/junk/0")+1<<20), size+3<<20)
	if err == nil || err.Error() != want {
		t.Errorf("Snapshot over the byte limit: %v\nwant %s", err, want)
	}
	// What reads the state stops there: the gate gets no snapshot, Prune deletes nothing.
	pruned, err := s.Prune(ctx, func(string, string) (bool, error) { return true, nil })
	if err == nil || len(pruned) != 0 {
		t.Errorf("Prune over the byte limit = %v, %v; want an error and nothing deleted", pruned, err)
	}
	if resp, err := cli.Get(ctx, "/baton/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != int64(len(all.Kvs)+4) {
		t.Errorf("the state holds %v keys after Prune (%v), want %d", resp, err, len(all.Kvs)+4)
	}
}

// Ping says whether etcd answers, and fails once it does not.
func TestPing(t *testing.T) {
	c := testetcd.Start(t)
	s := NewStore(c.Client(t), "/baton")
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping with etcd up: %v", err)
	}
	c.Stop(0)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping with etcd stopped succeeded")
	}
}
