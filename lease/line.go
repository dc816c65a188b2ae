package lease

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-fleet/baton/fleet"
)

// The line of a group as the etcd lease sees it: its keys, what one read at one
// revision says about a host's place in it, and the ranking of slot keys into holders.
// Nothing here calls etcd; etcd.go does, with the requests made here, and hands back
// the answers to be read here.

// groupKeys are the keys of one group and host.
type groupKeys struct {
	group string
	slots string // <prefix>/groups/<group>/slots/
	slot  string // slots + host
	max   string // <prefix>/groups/<group>/maxParallel
}

func keysFor(prefix, group, host string) groupKeys {
	g := cleanPrefix(prefix) + "/groups/" + group + "/"
	return groupKeys{group: group, slots: g + "slots/", slot: g + "slots/" + host, max: g + "maxParallel"}
}

func cleanPrefix(p string) string {
	p = strings.TrimRight(p, "/")
	if p == "" {
		return DefaultEtcdPrefix
	}
	return p
}

// checkName refuses a group or host name that would not stay one key segment.
func checkName(what, s string) error {
	if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/ \t\r\n") {
		return fmt.Errorf("%s %q is not usable in an etcd key", what, s)
	}
	return nil
}

// SlotKey is one slot key of a group: the host it is for and its creation revision.
type SlotKey struct {
	Host           string
	CreateRevision int64
}

// Holder is one slot key of a group, in line order.
type Holder struct {
	Host           string
	CreateRevision int64 // its fencing token
	Holding        bool  // among the first N: holds a slot; otherwise waits
}

// Rank puts a group's slot keys in line order, oldest creation revision first, and
// marks the first n as holding a slot: a key holds one when fewer than n keys were
// created before it. n of 0 (an unreadable maxParallel) grants none. This is the rule
// the etcd lease grants its slots by (a waiter's view.holds is its own key's row).
func Rank(keys []SlotKey, n int) []Holder {
	line := slices.Clone(keys)
	slices.SortStableFunc(line, func(a, b SlotKey) int { return cmp.Compare(a.CreateRevision, b.CreateRevision) })
	var hs []Holder
	for i, k := range line {
		hs = append(hs, Holder{Host: k.Host, CreateRevision: k.CreateRevision, Holding: i < n})
	}
	return hs
}

// lineOps read all of a group's slot keys, oldest first, and its N.
func lineOps(k groupKeys) []clientv3.Op {
	return []clientv3.Op{
		clientv3.OpGet(k.slots, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend)),
		clientv3.OpGet(k.max),
	}
}

// parseLine reads the responses of lineOps from rs: the group's holders in line order
// and its N (0 when unreadable).
func parseLine(k groupKeys, rs []*etcdserverpb.ResponseOp) ([]Holder, int) {
	var keys []SlotKey
	for _, kv := range rs[0].GetResponseRange().Kvs {
		keys = append(keys, SlotKey{Host: strings.TrimPrefix(string(kv.Key), k.slots), CreateRevision: kv.CreateRevision})
	}
	n, _ := parseSlots(first(rs[1]))
	return Rank(keys, n), n
}

// view is what one read at one revision says about this host's place in line.
type view struct {
	rev   int64
	own   *mvccpb.KeyValue   // this host's slot key, nil when missing
	n     int                // the group's N
	nErr  error              // why N is unreadable (N is then 0)
	ahead []*mvccpb.KeyValue // the slot keys created before ours, nearest first, at most limit
}

// holds says whether the key is among the first N: with ahead read up to a limit of at
// least N, fewer than N keys ahead means fewer than N in all.
func (v view) holds() bool { return v.n > 0 && len(v.ahead) < v.n }

// ours returns nil when the key is still the one this host put, bound to its session.
func (v view) ours(token int64, lease clientv3.LeaseID) error {
	switch {
	case v.own == nil:
		return errors.New("slot key gone")
	case v.own.CreateRevision != token:
		return fmt.Errorf("slot key recreated (creation revision %d, token %d)", v.own.CreateRevision, token)
	case clientv3.LeaseID(v.own.Lease) != lease:
		return fmt.Errorf("slot key taken over by another etcd lease (%x)", v.own.Lease)
	}
	return nil
}

// readOps read the key, N and up to limit keys ahead of token (all keys when token is
// 0, for a key put in the same transaction: it is then the newest).
func readOps(k groupKeys, token int64, limit int) []clientv3.Op {
	opts := []clientv3.OpOption{
		clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend),
		clientv3.WithLimit(int64(limit)),
	}
	if token > 1 {
		opts = append(opts, clientv3.WithMaxCreateRev(token-1))
	}
	return []clientv3.Op{clientv3.OpGet(k.slot), clientv3.OpGet(k.max), clientv3.OpGet(k.slots, opts...)}
}

// parseView reads the responses of readOps from rs.
func parseView(rev int64, rs []*etcdserverpb.ResponseOp, token int64) view {
	v := view{rev: rev, own: first(rs[0])}
	v.n, v.nErr = parseSlots(first(rs[1]))
	for _, kv := range rs[2].GetResponseRange().Kvs {
		if kv.CreateRevision < token {
			v.ahead = append(v.ahead, kv)
		}
	}
	return v
}

// first is the first key a get answered, nil when none.
func first(r *etcdserverpb.ResponseOp) *mvccpb.KeyValue {
	if kvs := r.GetResponseRange().Kvs; len(kvs) > 0 {
		return kvs[0]
	}
	return nil
}

// parseSlots reads N from the maxParallel key: DefaultSlots when it is missing, 0 (no
// slot granted) when it is not a count.
func parseSlots(kv *mvccpb.KeyValue) (int, error) {
	if kv == nil {
		return DefaultSlots, nil
	}
	n, err := fleet.ParseSlots(kv.Value) // as the fleet view reads it
	if err != nil {
		return 0, fmt.Errorf("%s = %q is not a count of slots; no slot is granted", kv.Key, kv.Value)
	}
	return n, nil
}

// sameLine says whether b shows the host waiting on the same keys as a does.
func sameLine(a, b view) bool {
	if a.n != b.n || b.holds() || a.own == nil || b.own == nil ||
		a.own.CreateRevision != b.own.CreateRevision || a.own.Lease != b.own.Lease {
		return false
	}
	for i := range min(a.n, len(a.ahead)) {
		if string(a.ahead[i].Key) != string(b.ahead[i].Key) || a.ahead[i].CreateRevision != b.ahead[i].CreateRevision {
			return false
		}
	}
	return true
}
