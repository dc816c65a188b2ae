package lease

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The tests of the line's pure part: no etcd. Answers are made as etcd makes them.

var web = keysFor("/baton", "web", "h2")

// slotKV is the slot key of host in the group web.
func slotKV(host string, create, lease int64) *mvccpb.KeyValue {
	return &mvccpb.KeyValue{Key: []byte(web.slots + host), CreateRevision: create, Lease: lease}
}

func maxKV(value string) *mvccpb.KeyValue {
	return &mvccpb.KeyValue{Key: []byte(web.max), Value: []byte(value)}
}

// answer is etcd's answer to a get of kvs (nil kvs: no key).
func answer(kvs ...*mvccpb.KeyValue) *etcdserverpb.ResponseOp {
	var found []*mvccpb.KeyValue
	for _, kv := range kvs {
		if kv != nil {
			found = append(found, kv)
		}
	}
	return &etcdserverpb.ResponseOp{Response: &etcdserverpb.ResponseOp_ResponseRange{
		ResponseRange: &etcdserverpb.RangeResponse{Kvs: found, Count: int64(len(found))},
	}}
}

func TestKeysFor(t *testing.T) {
	for _, prefix := range []string{"/baton", "/baton/", ""} {
		k := keysFor(prefix, "web", "h1")
		want := groupKeys{group: "web", slots: "/baton/groups/web/slots/", slot: "/baton/groups/web/slots/h1", max: "/baton/groups/web/maxParallel"}
		if k != want {
			t.Errorf("keysFor(%q) = %+v, want %+v", prefix, k, want)
		}
	}
}

func TestCheckName(t *testing.T) {
	for _, name := range []string{"web", "web-01", "h.example.com", "..a"} {
		if err := checkName("host", name); err != nil {
			t.Errorf("checkName(%q) = %v, want nil", name, err)
		}
	}
	for _, name := range []string{"", ".", "..", "a/b", "a b", "a\tb", "a\nb", "a\rb"} {
		if err := checkName("host", name); err == nil {
			t.Errorf("checkName(%q) = nil, want an error", name)
		}
	}
}

func TestRank(t *testing.T) {
	keys := []SlotKey{{"c", 30}, {"a", 10}, {"d", 40}, {"b", 20}}
	tests := []struct {
		name string
		keys []SlotKey
		n    int
		want string // host:holding, in line order
	}{
		{"no keys", nil, 1, ""},
		{"one slot", keys, 1, "a:true b:false c:false d:false"},
		{"two slots", keys, 2, "a:true b:true c:false d:false"},
		{"more slots than keys", keys, 9, "a:true b:true c:true d:true"},
		{"no slot: N unreadable or 0", keys, 0, "a:false b:false c:false d:false"},
		{"one key", []SlotKey{{"a", 7}}, 1, "a:true"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.keys)
			hs := Rank(in, tt.n)
			var got []string
			for i, h := range hs {
				got = append(got, fmt.Sprintf("%s:%v", h.Host, h.Holding))
				if i > 0 && h.CreateRevision <= hs[i-1].CreateRevision {
					t.Errorf("not in line order: %v", hs)
				}
			}
			if g := strings.Join(got, " "); g != tt.want {
				t.Errorf("Rank(%v, %d) = %s, want %s", tt.keys, tt.n, g, tt.want)
			}
			if !slices.Equal(in, tt.keys) {
				t.Errorf("Rank changed its argument: %v", in)
			}
		})
	}
}

func TestParseSlots(t *testing.T) {
	tests := []struct {
		kv      *mvccpb.KeyValue
		want    int
		wantErr bool
	}{
		{nil, DefaultSlots, false},
		{maxKV("3"), 3, false},
		{maxKV(" 2\n"), 2, false},
		{maxKV("0"), 0, false},
		{maxKV("-1"), 0, true},
		{maxKV("two"), 0, true},
		{maxKV(""), 0, true},
	}
	for _, tt := range tests {
		n, err := parseSlots(tt.kv)
		if n != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("parseSlots(%v) = %d, %v; want %d, error %v", tt.kv, n, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseLine(t *testing.T) {
	rs := []*etcdserverpb.ResponseOp{
		answer(slotKV("h1", 5, 1), slotKV("h3", 8, 3), slotKV("h2", 12, 2)),
		answer(maxKV("2")),
	}
	hs, n := parseLine(web, rs)
	want := []Holder{{"h1", 5, true}, {"h3", 8, true}, {"h2", 12, false}}
	if !slices.Equal(hs, want) || n != 2 {
		t.Errorf("parseLine = %v, %d; want %v, 2", hs, n, want)
	}
	hs, n = parseLine(web, []*etcdserverpb.ResponseOp{answer(slotKV("h1", 5, 1)), answer(maxKV("x"))})
	if want := []Holder{{"h1", 5, false}}; !slices.Equal(hs, want) || n != 0 {
		t.Errorf("parseLine with N unreadable = %v, %d; want %v, 0", hs, n, want)
	}
	if hs, n = parseLine(web, []*etcdserverpb.ResponseOp{answer(), answer()}); hs != nil || n != DefaultSlots {
		t.Errorf("parseLine of no keys = %v, %d; want none, %d", hs, n, DefaultSlots)
	}
}

func TestReadOps(t *testing.T) {
	for _, tt := range []struct {
		token, maxCreate int64
	}{{0, 0}, {1, 0}, {2, 1}, {42, 41}} {
		ops := readOps(web, tt.token, 3)
		if len(ops) != 3 {
			t.Fatalf("readOps made %d ops, want 3", len(ops))
		}
		own, n, ahead := ops[0], ops[1], ops[2]
		if string(own.KeyBytes()) != web.slot || own.RangeBytes() != nil {
			t.Errorf("first op gets %q..%q, want the key %q", own.KeyBytes(), own.RangeBytes(), web.slot)
		}
		if string(n.KeyBytes()) != web.max || n.RangeBytes() != nil {
			t.Errorf("second op gets %q..%q, want the key %q", n.KeyBytes(), n.RangeBytes(), web.max)
		}
		if string(ahead.KeyBytes()) != web.slots || !ahead.IsOptsWithPrefix() || !ahead.IsKeysOnly() || !ahead.IsSortSet() {
			t.Errorf("third op gets %q, want the keys under %q, keys only, sorted", ahead.KeyBytes(), web.slots)
		}
		if ahead.Limit() != 3 || ahead.MaxCreateRev() != tt.maxCreate {
			t.Errorf("token %d: limit %d, max create revision %d; want 3, %d", tt.token, ahead.Limit(), ahead.MaxCreateRev(), tt.maxCreate)
		}
	}
}

func TestParseView(t *testing.T) {
	own := slotKV("h2", 20, 2)
	tests := []struct {
		name      string
		rs        []*etcdserverpb.ResponseOp
		token     int64
		wantOwn   bool
		wantN     int
		wantNErr  bool
		wantAhead []string
		holds     bool
	}{
		{"first in line, N missing",
			[]*etcdserverpb.ResponseOp{answer(own), answer(), answer()}, 20,
			true, 1, false, nil, true},
		{"one ahead, one slot",
			[]*etcdserverpb.ResponseOp{answer(own), answer(maxKV("1")), answer(slotKV("h1", 10, 1))}, 20,
			true, 1, false, []string{"h1"}, false},
		{"one ahead, two slots",
			[]*etcdserverpb.ResponseOp{answer(own), answer(maxKV("2")), answer(slotKV("h1", 10, 1))}, 20,
			true, 2, false, []string{"h1"}, true},
		{"N unreadable grants none",
			[]*etcdserverpb.ResponseOp{answer(own), answer(maxKV("many")), answer()}, 20,
			true, 0, true, nil, false},
		{"a key put in the same transaction: its own key is left out of ahead",
			[]*etcdserverpb.ResponseOp{answer(own), answer(), answer(own, slotKV("h1", 10, 1))}, 20,
			true, 1, false, []string{"h1"}, false},
		{"key gone",
			[]*etcdserverpb.ResponseOp{answer(), answer(maxKV("3")), answer(slotKV("h3", 15, 3), slotKV("h1", 10, 1))}, 20,
			false, 3, false, []string{"h3", "h1"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := parseView(99, tt.rs, tt.token)
			var ahead []string
			for _, kv := range v.ahead {
				ahead = append(ahead, strings.TrimPrefix(string(kv.Key), web.slots))
			}
			if v.rev != 99 || (v.own != nil) != tt.wantOwn || v.n != tt.wantN || (v.nErr != nil) != tt.wantNErr || !slices.Equal(ahead, tt.wantAhead) {
				t.Errorf("parseView = rev %d, own %v, n %d, nErr %v, ahead %v; want rev 99, own %v, n %d, nErr %v, ahead %v",
					v.rev, v.own != nil, v.n, v.nErr, ahead, tt.wantOwn, tt.wantN, tt.wantNErr, tt.wantAhead)
			}
			if got := v.holds(); got != tt.holds {
				t.Errorf("holds() = %v, want %v", got, tt.holds)
			}
		})
	}
}

func TestViewOurs(t *testing.T) {
	tests := []struct {
		name    string
		own     *mvccpb.KeyValue
		wantErr string
	}{
		{"ours", slotKV("h2", 20, 2), ""},
		{"gone", nil, "slot key gone"},
		{"recreated", slotKV("h2", 25, 2), "slot key recreated (creation revision 25, token 20)"},
		{"another lease", slotKV("h2", 20, 0xab), "slot key taken over by another etcd lease (ab)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := view{own: tt.own}.ours(20, clientv3.LeaseID(2))
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.wantErr {
				t.Errorf("ours = %q, want %q", got, tt.wantErr)
			}
		})
	}
}

// TestHoldsIsRank checks that a waiter decides its hold as Rank ranks the line: for
// every host of a line and every N, the view that readOps and parseView make of the
// line holds exactly when Rank marks the host holding. etcd's answer is made from the
// ops as etcd makes it: keys created before MaxCreateRev, newest first, up to Limit.
func TestHoldsIsRank(t *testing.T) {
	line := []SlotKey{{"h4", 31}, {"h1", 7}, {"h3", 22}, {"h2", 12}, {"h5", 40}}
	kvs := map[string]*mvccpb.KeyValue{}
	for i, k := range line {
		kvs[k.Host] = slotKV(k.Host, k.CreateRevision, int64(i+1))
	}
	answerOp := func(op clientv3.Op) *etcdserverpb.ResponseOp {
		var got []*mvccpb.KeyValue
		for _, k := range line {
			if op.MaxCreateRev() == 0 || k.CreateRevision <= op.MaxCreateRev() {
				got = append(got, kvs[k.Host])
			}
		}
		slices.SortFunc(got, func(a, b *mvccpb.KeyValue) int { return cmp.Compare(b.CreateRevision, a.CreateRevision) })
		return answer(got[:min(len(got), int(op.Limit()))]...)
	}
	for n := range 7 {
		for _, h := range Rank(line, n) {
			limit := max(n, DefaultSlots) // as Etcd.read reads
			ops := readOps(keysFor("/baton", "web", h.Host), h.CreateRevision, limit)
			rs := []*etcdserverpb.ResponseOp{answer(kvs[h.Host]), answer(maxKV(fmt.Sprint(n))), answerOp(ops[2])}
			if got := parseView(50, rs, h.CreateRevision).holds(); got != h.Holding {
				t.Errorf("N %d, %s (revision %d): the view holds %v, Rank says %v", n, h.Host, h.CreateRevision, got, h.Holding)
			}
		}
	}
}

func TestSameLine(t *testing.T) {
	h1, h3 := slotKV("h1", 10, 1), slotKV("h3", 15, 3)
	base := view{own: slotKV("h2", 20, 2), n: 1, ahead: []*mvccpb.KeyValue{h3, h1}}
	with := func(f func(v *view)) view {
		v := base
		v.ahead = slices.Clone(base.ahead)
		f(&v)
		return v
	}
	tests := []struct {
		name string
		b    view
		want bool
	}{
		{"the same", with(func(*view) {}), true},
		{"a key beyond the N nearest left", with(func(v *view) { v.ahead = v.ahead[:1] }), true},
		{"the nearest key left", with(func(v *view) { v.ahead = []*mvccpb.KeyValue{h1} }), false},
		{"the nearest key recreated", with(func(v *view) { v.ahead[0] = slotKV("h3", 17, 3) }), false},
		{"N changed", with(func(v *view) { v.n = 2 }), false},
		{"now holds", with(func(v *view) { v.ahead = nil }), false},
		{"own key gone", with(func(v *view) { v.own = nil }), false},
		{"own key recreated", with(func(v *view) { v.own = slotKV("h2", 21, 2) }), false},
		{"own key on another lease", with(func(v *view) { v.own = slotKV("h2", 20, 9) }), false},
	}
	for _, tt := range tests {
		if got := sameLine(base, tt.b); got != tt.want {
			t.Errorf("%s: sameLine = %v, want %v", tt.name, got, tt.want)
		}
	}
}
