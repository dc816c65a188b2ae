package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-fleet/baton/internal/commitid"
)

// ErrUnknownHost is returned by Forget when the fleet state holds nothing of the host.
var ErrUnknownHost = errors.New("the fleet state holds nothing of this host")

// ErrBusy is returned by Forget, without force, when the host is in a transaction.
var ErrBusy = errors.New("the host is in a transaction")

// Forgotten is what Forget removed.
type Forgotten struct {
	Host     Host     // the record removed (zero when there was none)
	Record   bool     // a record was removed
	Slots    []string // the groups whose slot key of the host was removed
	Canaries []string // the commits whose canary spot of the host was freed
}

// Forget removes a host from the fleet state: its record, its slot key in every
// group, and its canary spots; the halts it recorded stay (they are the release's,
// not the host's). Without force it refuses (ErrBusy) while the host's record says
// it is in a transaction or it has a slot key (it holds or waits for a slot). All
// of it is removed at once, and only if none of it changed since it was read: a
// host that writes meanwhile is judged again. An agent that is alive writes its
// record again at its next heartbeat or step.
func (s *Store) Forget(ctx context.Context, host string, force bool) (Forgotten, error) {
	for {
		snap, err := s.Snapshot(ctx)
		if err != nil {
			return Forgotten{}, err
		}
		out, cmps, ops := s.forgetOps(snap, host)
		if len(ops) == 0 {
			return Forgotten{}, fmt.Errorf("forget %s: %w", host, ErrUnknownHost)
		}
		if !force {
			if why := busy(out); why != "" {
				return Forgotten{}, fmt.Errorf("forget %s: %w: %s; --force forgets it anyway", host, ErrBusy, why)
			}
		}
		err = s.txn(ctx, nil, cmps, ops...)
		if errors.Is(err, errConflict) {
			continue
		}
		if err != nil {
			return Forgotten{}, fmt.Errorf("forget %s: %w", host, err)
		}
		return out, nil
	}
}

// busy says why a host about to be forgotten looks in a transaction, or "".
func busy(f Forgotten) string {
	var why []string
	if f.Record && f.Host.Busy() {
		w := "its record says " + f.Host.State
		if f.Host.Target != "" {
			w += " to " + commitid.Short(f.Host.Target)
		}
		why = append(why, w)
	}
	if len(f.Slots) > 0 {
		why = append(why, "it holds or waits for a slot of "+strings.Join(f.Slots, ", "))
	}
	return strings.Join(why, "; ")
}

// forgetOps returns what forgetting host removes and the etcd operations that do
// it, each guarded by the key's revision in snap.
func (s *Store) forgetOps(snap *Snapshot, host string) (Forgotten, []clientv3.Cmp, []clientv3.Op) {
	var (
		out  Forgotten
		cmps []clientv3.Cmp
		ops  []clientv3.Op
	)
	guard := func(rel string) string {
		k := s.prefix + "/" + rel
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", snap.revs[rel].mod))
		return k
	}
	rel := "hosts/" + host
	if _, ok := snap.revs[rel]; ok {
		out.Host, out.Record = snap.Hosts[host], true
		ops = append(ops, clientv3.OpDelete(guard(rel)))
	}
	for _, name := range slices.Sorted(maps.Keys(snap.Groups)) {
		g := snap.Groups[name]
		if slices.Contains(g.Holders, host) {
			out.Slots = append(out.Slots, name)
			ops = append(ops, clientv3.OpDelete(guard(strings.TrimPrefix(SlotKey("", name, host), "/"))))
		}
		for _, c := range slices.Sorted(maps.Keys(g.Canaries)) {
			spots := g.Canaries[c]
			if !slices.Contains(spots, host) {
				continue
			}
			out.Canaries = append(out.Canaries, c)
			k := guard("groups/" + name + "/canaries/" + c)
			left := slices.DeleteFunc(slices.Clone(spots), func(h string) bool { return h == host })
			if len(left) == 0 {
				ops = append(ops, clientv3.OpDelete(k))
				continue
			}
			data, _ := json.Marshal(left)
			ops = append(ops, clientv3.OpPut(k, string(data)))
		}
	}
	return out, cmps, ops
}
