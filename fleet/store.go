package fleet

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-fleet/baton/internal/commitid"
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

// HostKey is the key of host's record.
func HostKey(prefix, host string) string { return prefix + "/hosts/" + host }

// FailedKey is the key of group's halt on commit.
func FailedKey(prefix, group, commit string) string {
	return prefix + "/groups/" + group + "/failed/" + commit
}

// BadKey is the key of group's halt on the release r.
func BadKey(prefix, group string, r Release) string {
	return prefix + "/groups/" + group + "/bad/" + r.key()
}

// The bounds of one read of the fleet state (Store.Snapshot). A fleet of 10,000
// hosts holds about two keys a host (its record, a slot while it upgrades) and a few
// per group and commit, each of a few hundred bytes: some 20,000 keys and 10 MiB at
// most. A state past either bound is not read at all (it grew without pruning, or
// someone wrote to the prefix what baton never writes), so no gate passes.
const (
	SnapshotMaxKeys  = 100_000  // keys under the prefix
	SnapshotMaxBytes = 64 << 20 // bytes of those keys and their values
)

// Store keeps the fleet state under a prefix in etcd.
type Store struct {
	cli    *clientv3.Client
	prefix string
	now    func() time.Time
	seen   sightings // of the hosts' commits, for Snapshot.running
	// maxKeys and maxBytes bound a Snapshot: SnapshotMaxKeys and SnapshotMaxBytes.
	maxKeys, maxBytes int64
}

// NewStore returns a Store on cli under prefix (e.g. "/baton").
func NewStore(cli *clientv3.Client, prefix string) *Store {
	return &Store{cli: cli, prefix: strings.TrimSuffix(prefix, "/"), now: time.Now, maxKeys: SnapshotMaxKeys, maxBytes: SnapshotMaxBytes}
}

// Client is the etcd client the store reads and writes with, for the other parts of
// the fleet state kept under the same prefix (the shared head).
func (s *Store) Client() *clientv3.Client { return s.cli }

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
	if err := s.put(ctx, f, HostKey(s.prefix, h.Host), h); err != nil {
		return fmt.Errorf("record host %s: %w", h.Host, err)
	}
	return nil
}

// Fail records that commit failed on host: the group halts on it, and on each of
// releases (the releases the commit changed), in one etcd transaction.
func (s *Store) Fail(ctx context.Context, f *Fence, group, commit, host, reason string, releases ...Release) error {
	fl := Failure{Commit: commit, Host: host, Reason: reason, Time: s.now().UTC()}
	ops := []clientv3.Op{}
	put := func(key string, v Failure) error {
		data, err := json.Marshal(v)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(key, string(data)))
		return nil
	}
	err := put(FailedKey(s.prefix, group, commit), fl)
	for _, r := range releases {
		if err == nil {
			rf := fl
			rf.Release = r.Service + " " + r.Version
			err = put(BadKey(s.prefix, group, r), rf)
		}
	}
	if err == nil {
		err = s.txn(ctx, f, nil, ops...)
	}
	if err != nil {
		return fmt.Errorf("halt group %s on %s: %w", group, commitid.Short(commit), err)
	}
	return nil
}

// Retry lifts the halt on the commit that prefix names (commitid.Match, over the
// commits some group is halted on) in every group; it returns how many it lifted, 0
// when no group is halted on such a commit. A prefix of several is commitid.ErrAmbiguous.
func (s *Store) Retry(ctx context.Context, prefix string) (int, error) {
	snap, err := s.Snapshot(ctx)
	if err != nil {
		return 0, err
	}
	commit, err := commitid.Match(prefix, snap.haltedOn())
	if errors.Is(err, commitid.ErrNoMatch) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("retry: %w", err)
	}
	n := 0
	for name, g := range snap.Groups {
		for c := range g.Failed {
			if c == commit {
				if _, err := s.cli.Delete(ctx, s.key("groups", name, "failed", c)); err != nil {
					return n, fmt.Errorf("retry %s: %w", commitid.Short(commit), err)
				}
				n++
			}
		}
		// The releases that failed in that commit are tried again with it.
		for rel, f := range g.Bad {
			if f.Commit == commit {
				if _, err := s.cli.Delete(ctx, s.key("groups", name, "bad", rel)); err != nil {
					return n, fmt.Errorf("retry %s: %w", commitid.Short(commit), err)
				}
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

// Ping reads one small key of the fleet state: whether etcd answers now, at the cost
// of a few bytes rather than a Snapshot.
func (s *Store) Ping(ctx context.Context) error {
	if _, err := s.cli.Get(ctx, s.key("paused"), clientv3.WithCountOnly()); err != nil {
		return fmt.Errorf("read fleet state: %w", err)
	}
	return nil
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
			if hosts, err = parseCanaries(resp.Kvs[0].Value); err != nil {
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

// Snapshot reads the whole fleet state at one revision. A key that does not parse
// does not fail it: it is listed in Problems and read on the safe side. An
// unreadable pause still pauses, an unreadable halt still halts (its reason says
// the record is unreadable), an unreadable maxParallel is 0 slots as the lease
// reads it; an unreadable host record, canary list or promotion is left out (the
// host is unknown, a canary claim then fails in ClaimCanary, no promotion). It notes,
// on this host's clock, when this Store first saw each host run its commit: the canary
// pause counts from that (see Gate). A state of more than SnapshotMaxKeys keys, or
// SnapshotMaxBytes bytes, is an error: etcd sends no more keys than that, and the
// agent, whose gate then cannot read the state, starts no upgrade.
func (s *Store) Snapshot(ctx context.Context) (*Snapshot, error) {
	resp, err := s.cli.Get(ctx, s.prefix+"/", clientv3.WithPrefix(), clientv3.WithLimit(s.maxKeys))
	if err != nil {
		return nil, fmt.Errorf("read fleet state: %w", err)
	}
	if resp.More {
		return nil, fmt.Errorf("read fleet state: %s/ holds %d keys, over the limit of %d; list them with etcdctl get --prefix --keys-only %s/ and delete what baton does not write (baton fleet forget a host gone for good)",
			s.prefix, resp.Count, s.maxKeys, s.prefix)
	}
	size := int64(0)
	for _, kv := range resp.Kvs {
		size += int64(len(kv.Key) + len(kv.Value))
	}
	if size > s.maxBytes {
		return nil, fmt.Errorf("read fleet state: the %d keys under %s/ hold %d bytes, over the limit of %d; list them with etcdctl get --prefix --keys-only %s/ and delete what baton does not write (baton fleet forget a host gone for good)",
			len(resp.Kvs), s.prefix, size, s.maxBytes, s.prefix)
	}
	snap := ReadSnapshot(s.prefix, resp.Header.Revision, resp.Kvs)
	snap.running = s.seen.see(snap.Hosts, s.now()) // the monotonic clock kept: no UTC()
	return snap, nil
}

// ReadSnapshot reads the keys of the fleet state under prefix, as read at revision
// rev, into a Snapshot. It does no I/O: Store.Snapshot reads the keys from etcd, the
// fleet simulation from its own.
func ReadSnapshot(prefix string, rev int64, kvs []*mvccpb.KeyValue) *Snapshot {
	snap := &Snapshot{Revision: rev, Groups: map[string]*Group{}, Hosts: map[string]Host{}, revs: map[string]keyRev{}}
	type slot struct {
		host string
		rev  int64
	}
	slots := map[string][]slot{}
	for _, kv := range kvs {
		rel := strings.TrimPrefix(string(kv.Key), prefix+"/")
		parts := strings.Split(rel, "/")
		snap.revs[rel] = keyRev{create: kv.CreateRevision, mod: kv.ModRevision}
		if err := snap.add(parts, kv.Value); err != nil {
			snap.Problems = append(snap.Problems, Problem{Key: string(kv.Key), Err: err.Error()})
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
	return snap
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
// newer baton may store more. On an error the key is read on the safe side (see
// Snapshot).
func (snap *Snapshot) add(parts []string, value []byte) error {
	switch {
	case len(parts) == 1 && parts[0] == "paused":
		m, err := parseMark(value)
		snap.Paused = &m
		return err
	case len(parts) == 2 && parts[0] == "hosts":
		h, err := parseHost(parts[1], value)
		if err != nil {
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
		n, err := ParseSlots(value)
		g.Slots = n
		return err
	case len(parts) == 3 && parts[2] == "paused":
		m, err := parseMark(value)
		g.Paused = &m
		return err
	case len(parts) == 4 && parts[2] == "failed":
		f, err := parseFailure(parts[3], value)
		if g.Failed == nil {
			g.Failed = map[string]Failure{}
		}
		g.Failed[parts[3]] = f
		return err
	case len(parts) == 4 && parts[2] == "bad":
		f, err := parseBadRelease(value)
		if g.Bad == nil {
			g.Bad = map[string]Failure{}
		}
		g.Bad[parts[3]] = f
		return err
	case len(parts) == 4 && parts[2] == "promoted":
		m, err := parseMark(value)
		if err != nil {
			return err
		}
		if g.Promoted == nil {
			g.Promoted = map[string]Mark{}
		}
		g.Promoted[parts[3]] = m
	case len(parts) == 4 && parts[2] == "canaries":
		hosts, err := parseCanaries(value)
		if err != nil {
			return err
		}
		if g.Canaries == nil {
			g.Canaries = map[string][]string{}
		}
		g.Canaries[parts[3]] = hosts
	}
	return nil
}

// Touch is a host's heartbeat: it sets Seen in the host's record and nothing
// else, whoever wrote the record last. It reports false, writing nothing, when
// there is no record (forgotten, or never written): the host then writes its
// whole record with PutHost. An unreadable record is an error.
func (s *Store) Touch(ctx context.Context, host string) (bool, error) {
	k := s.key("hosts", host)
	for {
		resp, err := s.cli.Get(ctx, k)
		if err != nil {
			return false, fmt.Errorf("touch host %s: %w", host, err)
		}
		if len(resp.Kvs) == 0 {
			return false, nil
		}
		kv := resp.Kvs[0]
		h, err := parseHost(host, kv.Value)
		if err != nil {
			return false, fmt.Errorf("touch host %s: %w", host, err)
		}
		h.Seen = s.now().UTC()
		data, err := json.Marshal(h)
		if err != nil {
			return false, err
		}
		err = s.txn(ctx, nil, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(k), "=", kv.ModRevision)}, clientv3.OpPut(k, string(data)))
		if !errors.Is(err, errConflict) {
			if err != nil {
				return false, fmt.Errorf("touch host %s: %w", host, err)
			}
			return true, nil
		}
	}
}

// Prune deletes the records that no gate reads again (Snapshot.Superseded), each
// only if it did not change since it was read, and returns their keys.
func (s *Store) Prune(ctx context.Context, descends func(ancestor, commit string) (bool, error)) ([]string, error) {
	snap, err := s.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	var done []string
	for _, rel := range snap.Superseded(s.now(), descends) {
		k := s.prefix + "/" + rel
		err := s.txn(ctx, nil, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(k), "=", snap.revs[rel].mod)}, clientv3.OpDelete(k))
		if errors.Is(err, errConflict) {
			continue // changed since: judged again next time
		}
		if err != nil {
			return done, fmt.Errorf("prune %s: %w", k, err)
		}
		done = append(done, k)
	}
	return done, nil
}
