package sim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func newEtcd(seed uint64) (*Clock, *Etcd) {
	c := NewClock()
	return c, NewEtcd(c, rand.New(rand.NewPCG(seed, seed)))
}

// runTo runs the clock to d after Epoch.
func runTo(c *Clock, d time.Duration) { c.RunUntil(Epoch.Add(d)) }

func mustPut(t *testing.T, e *Etcd, key, value string, lease int64) int64 {
	t.Helper()
	rev, err := e.Put("admin", key, []byte(value), lease)
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return rev
}

func has(e *Etcd, key string) bool {
	kvs := e.Inspect(key)
	return len(kvs) > 0 && kvs[0].Key == key
}

func TestRevisions(t *testing.T) {
	_, e := newEtcd(1)
	if e.Revision() != 1 {
		t.Fatalf("empty cluster at revision %d, want 1", e.Revision())
	}
	steps := []struct {
		name    string
		ops     []Op
		wantRev int64
		key     string   // checked after the step, when not ""
		want    [3]int64 // its create revision, mod revision and version
	}{
		{"create a", []Op{OpPut("a", []byte("1"), 0)}, 2, "a", [3]int64{2, 2, 1}},
		{"update a", []Op{OpPut("a", []byte("2"), 0)}, 3, "a", [3]int64{2, 3, 2}},
		{"two puts, one revision", []Op{OpPut("b", nil, 0), OpPut("c", nil, 0)}, 4, "c", [3]int64{4, 4, 1}},
		{"read only", []Op{OpGet("", true)}, 4, "", [3]int64{}},
		{"delete missing", []Op{OpDelete("zz", false)}, 4, "", [3]int64{}},
		{"delete a", []Op{OpDelete("a", false)}, 5, "", [3]int64{}},
		{"recreate a", []Op{OpPut("a", []byte("3"), 0)}, 6, "a", [3]int64{6, 6, 1}},
		{"delete prefix", []Op{OpDelete("", true)}, 7, "", [3]int64{}},
	}
	for _, s := range steps {
		r, err := e.Txn("admin", nil, s.ops, nil)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if r.Revision != s.wantRev || e.Revision() != s.wantRev {
			t.Errorf("%s: header revision %d, cluster %d, want %d", s.name, r.Revision, e.Revision(), s.wantRev)
		}
		if s.key == "" {
			continue
		}
		kv, ok, _ := e.Get("admin", s.key)
		got := [3]int64{kv.CreateRevision, kv.ModRevision, kv.Version}
		if !ok || got != s.want {
			t.Errorf("%s: %s create, mod, version = %v (found %v), want %v", s.name, s.key, got, ok, s.want)
		}
	}
	if d := e.Dump(); d != "revision 7\n" {
		t.Errorf("Dump after deleting all:\n%s", d)
	}
}

func TestTxnCompare(t *testing.T) {
	_, e := newEtcd(1)
	l, _ := e.Grant("admin", 10*time.Second)
	mustPut(t, e, "k", "v", l) // rev 2
	mustPut(t, e, "k", "w", l) // rev 3, version 2
	tests := []struct {
		cmp  Cmp
		want bool
	}{
		{Compare("k", TargetCreate, Equal, 2), true},
		{Compare("k", TargetCreate, Equal, 3), false},
		{Compare("k", TargetMod, Equal, 3), true},
		{Compare("k", TargetMod, Less, 3), false},
		{Compare("k", TargetMod, Greater, 2), true},
		{Compare("k", TargetVersion, Equal, 2), true},
		{Compare("k", TargetVersion, NotEqual, 2), false},
		{Compare("k", TargetLease, Equal, l), true},
		{Compare("k", TargetLease, Equal, 0), false},
		{CompareValue("k", Equal, []byte("w")), true},
		{CompareValue("k", Less, []byte("x")), true},
		{CompareValue("k", Greater, []byte("w")), false},
		{Compare("missing", TargetCreate, Equal, 0), true},
		{Compare("missing", TargetVersion, Equal, 0), true},
		{Compare("missing", TargetLease, Equal, 0), true},
		{CompareValue("missing", Equal, nil), false},    // always false, as in etcd
		{CompareValue("missing", NotEqual, nil), false}, // likewise
	}
	for _, tt := range tests {
		r, err := e.Txn("admin", []Cmp{tt.cmp}, []Op{OpGet("k", false)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Succeeded != tt.want {
			t.Errorf("%+v: succeeded %v, want %v", tt.cmp, r.Succeeded, tt.want)
		}
		if r.Succeeded && len(r.Results) != 1 || !r.Succeeded && len(r.Results) != 0 {
			t.Errorf("%+v: %d results from the branch taken", tt.cmp, len(r.Results))
		}
	}
}

// A write fenced by the slot key's create revision fails once the key is recreated,
// even by the same host.
func TestFencedPut(t *testing.T) {
	_, e := newEtcd(1)
	slot := "/baton/groups/g/slots/h1"
	token := mustPut(t, e, slot, "h1", 0)
	fenced := func() bool {
		t.Helper()
		r, err := e.Txn("h1", []Cmp{Compare(slot, TargetCreate, Equal, token)},
			[]Op{OpPut("/baton/hosts/h1", []byte("x"), 0)}, []Op{OpGet(slot, false)})
		if err != nil {
			t.Fatal(err)
		}
		return r.Succeeded
	}
	if !fenced() {
		t.Fatal("fenced put failed while the slot is held")
	}
	mustPut(t, e, slot, "h1", 0) // a put keeps the create revision
	if !fenced() {
		t.Fatal("fenced put failed after the slot key was put again")
	}
	if _, err := e.Delete("h1", slot); err != nil {
		t.Fatal(err)
	}
	mustPut(t, e, slot, "h1", 0)
	if fenced() {
		t.Error("fenced put succeeded after the slot key was recreated")
	}
}

func TestGetOptions(t *testing.T) {
	_, e := newEtcd(1)
	for _, h := range []string{"c", "a", "d", "b"} { // created at 2, 3, 4, 5
		mustPut(t, e, "/s/"+h, h, 0)
	}
	mustPut(t, e, "/sx", "not under /s/", 0)
	keys := func(kvs []KV) string {
		var s []string
		for _, kv := range kvs {
			s = append(s, strings.TrimPrefix(kv.Key, "/s/"))
		}
		return strings.Join(s, ",")
	}
	get := func(mod func(*Op)) Op { op := OpGet("/s/", true); mod(&op); return op }
	tests := []struct {
		name  string
		op    Op
		want  string
		count int64
		more  bool
	}{
		{"by key", OpGet("/s/", true), "a,b,c,d", 4, false},
		{"one key", OpGet("/s/b", false), "b", 1, false},
		{"missing key", OpGet("/s/z", false), "", 0, false},
		{"by create", get(func(o *Op) { o.SortByCreate = true }), "c,a,d,b", 4, false},
		{"by create descending, 2", get(func(o *Op) { o.SortByCreate, o.Descend, o.Limit = true, true, 2 }), "b,d", 4, true},
		{"created at or before 4, descending", get(func(o *Op) { o.SortByCreate, o.Descend, o.MaxCreateRevision = true, true, 4 }), "d,a,c", 4, false},
		{"by key descending", get(func(o *Op) { o.Descend = true }), "d,c,b,a", 4, false},
		{"limit equal to count", get(func(o *Op) { o.Limit = 4 }), "a,b,c,d", 4, false},
	}
	for _, tt := range tests {
		r, err := e.Txn("admin", nil, []Op{tt.op}, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := r.Results[0]
		if keys(got.KVs) != tt.want || got.Count != tt.count || got.More != tt.more {
			t.Errorf("%s: %s count %d more %v, want %s count %d more %v", tt.name, keys(got.KVs), got.Count, got.More, tt.want, tt.count, tt.more)
		}
	}
	// Results are copies.
	kv, _, _ := e.Get("admin", "/s/a")
	kv.Value[0] = 'X'
	if again, _, _ := e.Get("admin", "/s/a"); string(again.Value) != "a" {
		t.Errorf("changing a result changed the store: %q", again.Value)
	}
}

// A read after a write in one Txn sees the write, as lease.Etcd's enqueue relies on.
func TestTxnReadsItsWrites(t *testing.T) {
	_, e := newEtcd(1)
	r, err := e.Txn("h1", []Cmp{Compare("/s/h1", TargetCreate, Equal, 0)},
		[]Op{OpPut("/s/h1", []byte("h1"), 0), OpGet("/s/", true)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kvs := r.Results[1].KVs
	if len(kvs) != 1 || kvs[0].CreateRevision != r.Revision {
		t.Errorf("read in the txn: %+v, want the key put at %d", kvs, r.Revision)
	}
}

func TestPutUnknownLease(t *testing.T) {
	_, e := newEtcd(1)
	if _, err := e.Put("h1", "k", nil, 42); !errors.Is(err, ErrLeaseNotFound) {
		t.Errorf("put with lease 42: %v, want ErrLeaseNotFound", err)
	}
	if has(e, "k") || e.Revision() != 1 {
		t.Errorf("the failed put was applied:\n%s", e.Dump())
	}
}

func TestLeaseExpiry(t *testing.T) {
	c, e := newEtcd(1)
	l, err := e.Grant("h1", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, e, "a", "", l)
	mustPut(t, e, "b", "", l)
	mustPut(t, e, "c", "", 0)
	mustPut(t, e, "d", "", l)
	mustPut(t, e, "d", "", 0) // unbound again
	runTo(c, 10*time.Second-time.Nanosecond)
	if !has(e, "a") || !has(e, "b") {
		t.Fatal("keys gone before the lease's TTL")
	}
	rev := e.Revision()
	runTo(c, 10*time.Second)
	if has(e, "a") || has(e, "b") || !has(e, "c") || !has(e, "d") {
		t.Fatalf("after expiry:\n%s", e.Dump())
	}
	if e.Revision() != rev+1 {
		t.Errorf("expiry took revisions %d..%d, want one", rev, e.Revision())
	}
	if _, err := e.KeepAlive("h1", l); !errors.Is(err, ErrLeaseNotFound) {
		t.Errorf("keep-alive of an expired lease: %v", err)
	}
	if err := e.Revoke("h1", l); !errors.Is(err, ErrLeaseNotFound) {
		t.Errorf("revoke of an expired lease: %v", err)
	}
}

func TestKeepAliveAndRevoke(t *testing.T) {
	c, e := newEtcd(1)
	l, _ := e.Grant("h1", 10*time.Second)
	mustPut(t, e, "a", "", l)
	runTo(c, 6*time.Second)
	if ttl, err := e.KeepAlive("h1", l); err != nil || ttl != 10*time.Second {
		t.Fatalf("keep-alive: %v %v", ttl, err)
	}
	runTo(c, 16*time.Second-time.Nanosecond)
	if !has(e, "a") {
		t.Fatal("key gone before the extended expiry")
	}
	runTo(c, 16*time.Second)
	if has(e, "a") {
		t.Fatal("key still there after the extended expiry")
	}
	// A keep-alive at the very instant of the expiry, before the clock's check of it,
	// finds the lease gone.
	var l1 int64
	c.After(10*time.Second, func() { // scheduled before the lease's check: runs first
		if _, err := e.KeepAlive("h1", l1); !errors.Is(err, ErrLeaseNotFound) {
			t.Errorf("keep-alive at the expiry: %v, want ErrLeaseNotFound", err)
		}
	})
	l1, _ = e.Grant("h1", 10*time.Second)
	mustPut(t, e, "a", "", l1)
	runTo(c, 26*time.Second)
	if has(e, "a") {
		t.Fatal("key still there after a keep-alive at the expiry")
	}
	l2, _ := e.Grant("h1", 10*time.Second)
	mustPut(t, e, "b", "", l2)
	if err := e.Revoke("h1", l2); err != nil || has(e, "b") {
		t.Fatalf("revoke: %v, key left %v", err, has(e, "b"))
	}
	if l2 != l1+1 {
		t.Errorf("lease IDs %d, %d: want consecutive", l1, l2)
	}
}

// keepAlive keeps lease id of client alive every period, on the clock, until it fails.
func keepAlive(c *Clock, e *Etcd, client string, id int64, period time.Duration) {
	var tick func()
	tick = func() {
		if _, err := e.KeepAlive(client, id); errors.Is(err, ErrLeaseNotFound) {
			return
		}
		c.After(period, tick)
	}
	c.After(period, tick)
}

func TestPartitionExpiresOnlyThatClientsLease(t *testing.T) {
	c, e := newEtcd(1)
	la, _ := e.Grant("a", 10*time.Second)
	lb, _ := e.Grant("b", 10*time.Second)
	mustPut(t, e, "/slots/a", "", la)
	mustPut(t, e, "/slots/b", "", lb)
	keepAlive(c, e, "a", la, 3*time.Second)
	keepAlive(c, e, "b", lb, 3*time.Second)
	runTo(c, 4*time.Second)
	e.Partition("a") // its last keep-alive arrived at 3s
	if _, _, err := e.Get("a", "/slots/a"); !errors.Is(err, ErrTimeout) {
		t.Errorf("read of a partitioned client: %v, want ErrTimeout", err)
	}
	runTo(c, 13*time.Second-time.Nanosecond)
	if !has(e, "/slots/a") {
		t.Fatal("a's key gone before its lease's TTL since its last keep-alive")
	}
	runTo(c, 13*time.Second)
	if has(e, "/slots/a") || !has(e, "/slots/b") {
		t.Fatalf("at 13s:\n%s", e.Dump())
	}
	runTo(c, time.Minute)
	e.Heal("a")
	if _, err := e.KeepAlive("a", la); !errors.Is(err, ErrLeaseNotFound) {
		t.Errorf("a's keep-alive after heal: %v, want ErrLeaseNotFound", err)
	}
	if !has(e, "/slots/b") {
		t.Error("b lost its key")
	}
}

func TestDownUpResetsExpiry(t *testing.T) {
	c, e := newEtcd(1)
	l, _ := e.Grant("h1", 10*time.Second)
	mustPut(t, e, "a", "", l)
	runTo(c, 5*time.Second)
	e.Down()
	_, _, errGet := e.Get("h1", "a")
	_, errKeep := e.KeepAlive("h1", l)
	_, errGrant := e.Grant("h1", time.Second)
	for i, err := range []error{errGet, errKeep, errGrant} {
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("request %d (get, keep-alive, grant) while down: %v, want ErrUnavailable", i, err)
		}
	}
	runTo(c, time.Minute)
	if !has(e, "a") {
		t.Fatal("lease expired while the cluster was down")
	}
	e.Up() // expires at 1m10s
	runTo(c, time.Minute+10*time.Second-time.Nanosecond)
	if !has(e, "a") {
		t.Fatal("key gone before TTL after Up")
	}
	runTo(c, time.Minute+10*time.Second)
	if has(e, "a") {
		t.Fatal("key still there TTL after Up")
	}
}

func TestLeaderChange(t *testing.T) {
	c, e := newEtcd(1)
	l, _ := e.Grant("h1", 10*time.Second)
	mustPut(t, e, "a", "", l)
	runTo(c, 8*time.Second)
	e.LeaderChange() // election until 9s; the lease then has its TTL: until 19s
	runTo(c, 8500*time.Millisecond)
	if _, err := e.Put("h1", "b", nil, 0); !errors.Is(err, ErrLeaderChanged) {
		t.Errorf("put during the election: %v, want ErrLeaderChanged", err)
	}
	runTo(c, 9*time.Second)
	if _, err := e.Put("h1", "b", nil, 0); err != nil {
		t.Errorf("put after the election: %v", err)
	}
	runTo(c, 19*time.Second-time.Nanosecond)
	if !has(e, "a") {
		t.Fatal("key gone before the reset expiry")
	}
	runTo(c, 19*time.Second)
	if has(e, "a") {
		t.Fatal("key still there after the reset expiry")
	}
}

// A keep-alive after a leader change may bring the expiry closer: etcd sets it to
// now+TTL.
func TestKeepAliveAfterLeaderChange(t *testing.T) {
	c, e := newEtcd(1)
	l, _ := e.Grant("h1", 10*time.Second)
	mustPut(t, e, "a", "", l)
	e.LeaderChange() // expiry 11s
	runTo(c, 1*time.Second)
	if _, err := e.KeepAlive("h1", l); err != nil { // expiry 11s again: the same
		t.Fatal(err)
	}
	runTo(c, 11*time.Second)
	if has(e, "a") {
		t.Fatal("key still there at now+TTL of the last keep-alive")
	}
}

func TestFailNext(t *testing.T) {
	tests := []struct {
		mode    FailMode
		applied bool
	}{
		{FailBeforeApply, false},
		{FailAfterApply, true},
	}
	for _, tt := range tests {
		_, e := newEtcd(1)
		e.Partition("h1")
		e.FailNext("h1", tt.mode)
		if _, err := e.Put("h1", "k", nil, 0); !errors.Is(err, ErrTimeout) {
			t.Fatalf("mode %d: partitioned put: %v", tt.mode, err)
		}
		e.Heal("h1")
		if _, err := e.Put("h2", "other", nil, 0); err != nil { // another client's request
			t.Fatalf("mode %d: %v", tt.mode, err)
		}
		if _, err := e.Put("h1", "k", nil, 0); !errors.Is(err, ErrTimeout) {
			t.Errorf("mode %d: put: %v, want ErrTimeout", tt.mode, err)
		}
		if has(e, "k") != tt.applied {
			t.Errorf("mode %d: applied %v, want %v", tt.mode, has(e, "k"), tt.applied)
		}
		if _, err := e.Put("h1", "k2", nil, 0); err != nil || !has(e, "k2") {
			t.Errorf("mode %d: the next request: %v", tt.mode, err)
		}
	}
	// A grant whose answer is lost leaves a lease the client does not know: it expires.
	c, e := newEtcd(1)
	e.FailNext("h1", FailAfterApply)
	if _, err := e.Grant("h1", 5*time.Second); !errors.Is(err, ErrTimeout) {
		t.Fatalf("grant: %v", err)
	}
	mustPut(t, e, "k", "", 1)
	runTo(c, 5*time.Second)
	if has(e, "k") {
		t.Error("the orphan lease did not expire")
	}
}

type delivery struct {
	at   time.Duration
	rev  int64
	what string
}

func record(c *Clock, got *[]delivery) func(int64, []Event) {
	return func(rev int64, evs []Event) {
		var s []string
		for _, ev := range evs {
			s = append(s, fmt.Sprintf("%d:%s", ev.Type, ev.KV.Key))
		}
		*got = append(*got, delivery{c.Elapsed(), rev, strings.Join(s, " ")})
	}
}

func TestWatch(t *testing.T) {
	c, e := newEtcd(7)
	var got, key []delivery
	e.Watch("w", "/s/", record(c, &got))
	e.WatchKey("w", "/s/a", record(c, &key))
	l, _ := e.Grant("admin", time.Minute)
	mustPut(t, e, "/s/a", "", l)   // revision 2 (a grant is none)
	mustPut(t, e, "/other", "", 0) // 3: not watched
	if _, err := e.Txn("admin", nil, []Op{OpPut("/s/b", nil, 0), OpPut("/s/ab", nil, 0)}, nil); err != nil {
		t.Fatal(err) // 4
	}
	runTo(c, time.Second) // all delivered
	e.Partition("w")
	mustPut(t, e, "/s/b", "", 0) // 5: held
	runTo(c, 2*time.Second)
	if err := e.Revoke("admin", l); err != nil {
		t.Fatal(err) // 6: held
	}
	e.Heal("w")
	mustPut(t, e, "/s/c", "", 0) // 7
	runTo(c, 3*time.Second)
	// The events of a revision in the order of its operations; 1 is a delete.
	want := []string{"2 0:/s/a", "4 0:/s/b 0:/s/ab", "5 0:/s/b", "6 1:/s/a", "7 0:/s/c"}
	var revs []string
	for i, d := range got {
		revs = append(revs, fmt.Sprintf("%d %s", d.rev, d.what))
		if i > 0 && d.at < got[i-1].at {
			t.Errorf("delivery %d at %v before the one before it", i, d.at)
		}
	}
	if !slices.Equal(revs, want) {
		t.Errorf("prefix watch got\n%q\nwant\n%q", revs, want)
	}
	for _, d := range got[:2] {
		if d.at < e.WatchDelay || d.at > e.WatchDelay+e.WatchJitter {
			t.Errorf("revision %d delivered at %v, want within the delay", d.rev, d.at)
		}
	}
	if got[2].at < 2*time.Second {
		t.Errorf("held revision 5 delivered at %v, during the partition", got[2].at)
	}
	if len(key) != 2 || key[0].rev != 2 || key[1].rev != 6 {
		t.Errorf("key watch got %v, want revisions 2 and 6", key)
	}
}

func TestWatchCancel(t *testing.T) {
	c, e := newEtcd(1)
	var got []delivery
	cancel := e.Watch("w", "", record(c, &got))
	mustPut(t, e, "a", "", 0)
	cancel() // before the delivery
	cancel()
	mustPut(t, e, "b", "", 0)
	runTo(c, time.Second)
	if len(got) != 0 {
		t.Errorf("cancelled watch got %v", got)
	}
}

// run is what a scenario did: the final Dump, the watch deliveries, the requests.
type run struct {
	dump     string
	trace    []delivery
	requests int
}

// scenario drives a small fleet for an hour on a seed: leases kept alive, slot keys,
// fenced writes, watches and faults drawn from the seed.
func scenario(seed uint64) run {
	c := NewClock()
	rng := rand.New(rand.NewPCG(seed, 0))
	e := NewEtcd(c, rng)
	var r run
	e.Watch("observer", "/baton/", func(rev int64, evs []Event) {
		r.trace = append(r.trace, delivery{c.Elapsed(), rev, evs[len(evs)-1].KV.Key})
	})
	hosts := []string{"h1", "h2", "h3", "h4", "h5"}
	for _, h := range hosts {
		runHost(c, e, rng, h, &r.requests)
	}
	for i := range 20 {
		h := hosts[rng.IntN(len(hosts))]
		at := time.Duration(rng.Int64N(int64(time.Hour)))
		c.After(at, func() {
			switch i % 4 {
			case 0:
				e.Partition(h)
				c.After(30*time.Second, func() { e.Heal(h) })
			case 1:
				e.FailNext(h, FailAfterApply)
			case 2:
				e.LeaderChange()
			case 3:
				e.Down()
				c.After(20*time.Second, e.Up)
			}
		})
	}
	c.RunUntil(Epoch.Add(time.Hour))
	r.dump = e.Dump()
	return r
}

// runHost is a host's loop on the clock: every few seconds it keeps its lease alive
// (granting one and putting its slot key when it has none) and writes its record
// fenced by its slot key. It counts its requests in requests.
func runHost(c *Clock, e *Etcd, rng *rand.Rand, h string, requests *int) {
	var id, token int64
	slot, record := "/baton/groups/g/slots/"+h, "/baton/hosts/"+h
	var tick func()
	tick = func() {
		c.After(time.Duration(2000+rng.IntN(2000))*time.Millisecond, tick)
		*requests += 2
		if id != 0 {
			if _, err := e.KeepAlive(h, id); errors.Is(err, ErrLeaseNotFound) {
				id = 0
			}
		}
		if id == 0 {
			*requests += 2
			l, err := e.Grant(h, 10*time.Second)
			if err != nil {
				return
			}
			id = l
			r, err := e.Txn(h, []Cmp{Compare(slot, TargetCreate, Equal, 0)}, []Op{OpPut(slot, []byte(h), id)}, nil)
			if err != nil || !r.Succeeded {
				return
			}
			token = r.Revision
		}
		value := strconv.AppendInt([]byte(`{"seen":`), int64(c.Elapsed()), 10)
		e.Txn(h, []Cmp{Compare(slot, TargetCreate, Equal, token)},
			[]Op{OpPut(record, append(value, '}'), 0), OpGet("/baton/groups/g/slots/", true)}, nil)
	}
	c.After(0, tick)
}

func TestDeterminism(t *testing.T) {
	a, b := scenario(42), scenario(42)
	if a.dump != b.dump || !slices.Equal(a.trace, b.trace) {
		t.Fatalf("seed 42 gave two runs:\n%s\n%s", a.dump, b.dump)
	}
	if len(a.trace) < 1000 {
		t.Errorf("only %d deliveries in an hour", len(a.trace))
	}
	if c := scenario(43); slices.Equal(a.trace, c.trace) {
		t.Error("seeds 42 and 43 gave the same trace")
	}
}

// BenchmarkScenario runs one hour of a five-host fleet per iteration (a request of
// each host every 2-4s, faults), and reports requests per second of real time.
func BenchmarkScenario(b *testing.B) {
	requests := 0
	for i := range b.N {
		requests += scenario(uint64(i)).requests
	}
	b.ReportMetric(float64(requests)/b.Elapsed().Seconds(), "requests/s")
	b.ReportMetric(float64(requests)/float64(b.N), "requests/op")
}

// BenchmarkTxn is one fenced write and one prefix read of a five-host line.
func BenchmarkTxn(b *testing.B) {
	_, e := newEtcd(1)
	for _, h := range []string{"h1", "h2", "h3", "h4", "h5"} {
		mustPutB(b, e, "/baton/groups/g/slots/"+h)
		mustPutB(b, e, "/baton/hosts/"+h)
	}
	cmps := []Cmp{Compare("/baton/groups/g/slots/h1", TargetCreate, Equal, 2)}
	ops := []Op{OpPut("/baton/hosts/h1", []byte(`{"commit":"abc"}`), 0), OpGet("/baton/groups/g/slots/", true)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Txn("h1", cmps, ops, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func mustPutB(b *testing.B, e *Etcd, key string) {
	if _, err := e.Put("admin", key, []byte(key), 0); err != nil {
		b.Fatal(err)
	}
}
