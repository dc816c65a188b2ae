package fleet

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrFenced is returned by a fenced write when the writer no longer holds its slot.
var ErrFenced = errors.New("fenced: the lease slot is no longer held")

// Fence guards a write by a lease holder: it succeeds only while the holder's slot key
// still has the creation revision it had when the slot was taken (its fencing token).
// A nil Fence writes unguarded (operators' commands, idle records).
type Fence struct {
	Key   string // the slot key, see SlotKey
	Token int64  // the slot key's creation revision
}

// SlotKey is the key of host's slot in group's lease.
func SlotKey(prefix, group, host string) string {
	return fmt.Sprintf("%s/groups/%s/slots/%s", prefix, group, host)
}

// Store keeps the fleet state under a prefix in etcd.
type Store struct {
	cli    *clientv3.Client
	prefix string
	now    func() time.Time
}

// NewStore returns a Store on cli under prefix (e.g. "/baton").
func NewStore(cli *clientv3.Client, prefix string) *Store {
	return &Store{cli: cli, prefix: strings.TrimSuffix(prefix, "/"), now: time.Now}
}

func (s *Store) key(parts ...string) string { return s.prefix + "/" + strings.Join(parts, "/") }

// put writes key=v as JSON, fenced when f is not nil.
func (s *Store) put(ctx context.Context, f *Fence, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.txn(ctx, f, nil, clientv3.OpPut(key, string(data)))
}

// txn runs ops if the fence and the extra comparisons hold.
func (s *Store) txn(ctx context.Context, f *Fence, cmps []clientv3.Cmp, ops ...clientv3.Op) error {
	if f != nil {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(f.Key), "=", f.Token))
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		if f != nil {
			return ErrFenced
		}
		return errConflict
	}
	return nil
}

var errConflict = errors.New("concurrent update")

// PutHost records what a host runs.
func (s *Store) PutHost(ctx context.Context, f *Fence, h Host) error {
	if h.Time.IsZero() {
		h.Time = s.now().UTC()
	}
	if err := s.put(ctx, f, s.key("hosts", h.Host), h); err != nil {
		return fmt.Errorf("record host %s: %w", h.Host, err)
	}
	return nil
}

// Fail records that commit failed on host: the group halts on it.
func (s *Store) Fail(ctx context.Context, f *Fence, group, commit, host, reason string) error {
	fl := Failure{Commit: commit, Host: host, Reason: reason, Time: s.now().UTC()}
	if err := s.put(ctx, f, s.key("groups", group, "failed", commit), fl); err != nil {
		return fmt.Errorf("halt group %s on %s: %w", group, short(commit), err)
	}
	return nil
}

// Retry lifts the halt on commit in every group; it returns how many it lifted.
func (s *Store) Retry(ctx context.Context, commit string) (int, error) {
	snap, err := s.Snapshot(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for name, g := range snap.Groups {
		for c := range g.Failed {
			if c == commit || (len(commit) >= 7 && strings.HasPrefix(c, commit)) {
				if _, err := s.cli.Delete(ctx, s.key("groups", name, "failed", c)); err != nil {
					return n, fmt.Errorf("retry %s: %w", short(commit), err)
				}
				n++
			}
		}
	}
	return n, nil
}

// Pause stops new upgrades in group ("" for the whole fleet); upgrades in flight finish.
func (s *Store) Pause(ctx context.Context, group, by, reason string) error {
	k := s.key("paused")
	if group != "" {
		k = s.key("groups", group, "paused")
	}
	return s.put(ctx, nil, k, Mark{By: by, Reason: reason, Time: s.now().UTC()})
}

// Resume lifts a pause of group ("" for the fleet-wide pause).
func (s *Store) Resume(ctx context.Context, group string) error {
	k := s.key("paused")
	if group != "" {
		k = s.key("groups", group, "paused")
	}
	_, err := s.cli.Delete(ctx, k)
	return err
}

// Promote lets group go on past its canaries with commit.
func (s *Store) Promote(ctx context.Context, group, commit, by string) error {
	return s.put(ctx, nil, s.key("groups", group, "promoted", commit), Mark{By: by, Time: s.now().UTC()})
}

// ClaimCanary takes one of group's `canary` spots for commit, for host; it reports
// false when all are taken. The claim is a compare-and-swap, so no more than canary
// hosts ever claim, whatever the number of lease slots.
func (s *Store) ClaimCanary(ctx context.Context, f *Fence, group, commit, host string, canary int) (bool, error) {
	k := s.key("groups", group, "canaries", commit)
	for {
		resp, err := s.cli.Get(ctx, k)
		if err != nil {
			return false, err
		}
		var hosts []string
		rev := int64(0)
		if len(resp.Kvs) == 1 {
			rev = resp.Kvs[0].ModRevision
			if err := json.Unmarshal(resp.Kvs[0].Value, &hosts); err != nil {
				return false, fmt.Errorf("read canaries of %s: %w", group, err)
			}
		}
		if slices.Contains(hosts, host) {
			return true, nil
		}
		if len(hosts) >= canary {
			return false, nil
		}
		data, _ := json.Marshal(append(hosts, host))
		err = s.txn(ctx, f, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(k), "=", rev)}, clientv3.OpPut(k, string(data)))
		if !errors.Is(err, errConflict) {
			return err == nil, err
		}
	}
}

// Snapshot reads the whole fleet state at one revision.
func (s *Store) Snapshot(ctx context.Context) (*Snapshot, error) {
	resp, err := s.cli.Get(ctx, s.prefix+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read fleet state: %w", err)
	}
	snap := &Snapshot{Revision: resp.Header.Revision, Groups: map[string]*Group{}, Hosts: map[string]Host{}}
	type slot struct {
		host string
		rev  int64
	}
	slots := map[string][]slot{}
	for _, kv := range resp.Kvs {
		parts := strings.Split(strings.TrimPrefix(string(kv.Key), s.prefix+"/"), "/")
		if err := snap.add(parts, kv.Value); err != nil {
			return nil, fmt.Errorf("read fleet state: key %s: %w", kv.Key, err)
		}
		if len(parts) == 4 && parts[0] == "groups" && parts[2] == "slots" {
			slots[parts[1]] = append(slots[parts[1]], slot{parts[3], kv.CreateRevision})
		}
	}
	for name, ss := range slots {
		slices.SortFunc(ss, func(a, b slot) int { return cmp.Compare(a.rev, b.rev) })
		g := snap.groupFor(name)
		for _, sl := range ss {
			g.Holders = append(g.Holders, sl.host)
		}
	}
	return snap, nil
}

func (snap *Snapshot) groupFor(name string) *Group {
	g, ok := snap.Groups[name]
	if !ok {
		g = &Group{Name: name}
		snap.Groups[name] = g
	}
	return g
}

// add reads one key of the state into the snapshot. Unknown keys are ignored: a
// newer baton may store more.
func (snap *Snapshot) add(parts []string, value []byte) error {
	switch {
	case len(parts) == 1 && parts[0] == "paused":
		snap.Paused = &Mark{}
		return json.Unmarshal(value, snap.Paused)
	case len(parts) == 2 && parts[0] == "hosts":
		var h Host
		if err := json.Unmarshal(value, &h); err != nil {
			return err
		}
		snap.Hosts[parts[1]] = h
		return nil
	case len(parts) < 3 || parts[0] != "groups":
		return nil
	}
	g := snap.groupFor(parts[1])
	switch {
	case len(parts) == 3 && parts[2] == "maxParallel":
		n, err := strconv.Atoi(string(value))
		g.Slots = n
		return err
	case len(parts) == 3 && parts[2] == "paused":
		g.Paused = &Mark{}
		return json.Unmarshal(value, g.Paused)
	case len(parts) == 4 && parts[2] == "failed":
		var f Failure
		if err := json.Unmarshal(value, &f); err != nil {
			return err
		}
		if g.Failed == nil {
			g.Failed = map[string]Failure{}
		}
		g.Failed[parts[3]] = f
	case len(parts) == 4 && parts[2] == "promoted":
		var m Mark
		if err := json.Unmarshal(value, &m); err != nil {
			return err
		}
		if g.Promoted == nil {
			g.Promoted = map[string]Mark{}
		}
		g.Promoted[parts[3]] = m
	case len(parts) == 4 && parts[2] == "canaries":
		var hosts []string
		if err := json.Unmarshal(value, &hosts); err != nil {
			return err
		}
		if g.Canaries == nil {
			g.Canaries = map[string][]string{}
		}
		g.Canaries[parts[3]] = hosts
	}
	return nil
}
