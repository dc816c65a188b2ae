package migrate

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// etcdLock is the fleet-wide migration lock in etcd, as its holder has it.
type etcdLock struct {
	l     *Ledger
	sess  *concurrency.Session
	token int64 // the lock key's creation revision: the fencing token
}

// lock takes the fleet-wide migration lock for host, bound to a lease of ttl,
// waiting (by watch) while another host holds it, which it tells waiting.
func (l *Ledger) lock(ctx context.Context, host string, ttl time.Duration, waiting func(holder string)) (held, error) {
	sess, err := concurrency.NewSession(l.cli, concurrency.WithTTL(int(math.Ceil(ttl.Seconds()))), concurrency.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("take the migration lock: %w", err)
	}
	key := l.LockKey()
	for {
		resp, err := l.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, host, clientv3.WithLease(sess.Lease()))).
			Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			sess.Close()
			return nil, fmt.Errorf("take the migration lock: %w", err)
		}
		if resp.Succeeded {
			return &etcdLock{l: l, sess: sess, token: resp.Header.Revision}, nil
		}
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
			waiting(string(kvs[0].Value))
		}
		if err := waitDeleted(ctx, l.cli, key, resp.Header.Revision+1); err != nil {
			sess.Close()
			return nil, fmt.Errorf("wait for the migration lock: %w", err)
		}
	}
}

// waitDeleted waits until key is deleted at or after revision rev.
func waitDeleted(ctx context.Context, cli *clientv3.Client, key string, rev int64) error {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range cli.Watch(ctx, key, clientv3.WithRev(rev), clientv3.WithFilterPut()) {
		if err := resp.Err(); err != nil {
			return err
		}
		if len(resp.Events) > 0 {
			return nil
		}
	}
	return ctx.Err()
}

func (h *etcdLock) put(ctx context.Context, rev int64, v Entry) (int64, error) {
	key := h.l.key(v.Service, v.ID)
	data, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	resp, err := h.l.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(h.l.LockKey()), "=", h.token),
		clientv3.Compare(clientv3.ModRevision(key), "=", rev),
	).Then(clientv3.OpPut(key, string(data))).Commit()
	switch {
	case err != nil:
		return 0, fmt.Errorf("write the ledger: %w", err)
	case !resp.Succeeded:
		return 0, fmt.Errorf("write the ledger entry of migration %s of %s: the lock was lost or the entry changed: %w", v.ID, v.Service, ErrLockLost)
	}
	return resp.Header.Revision, nil
}

func (h *etcdLock) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	go func() {
		select {
		case <-h.sess.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

func (h *etcdLock) lost() bool {
	select {
	case <-h.sess.Done():
		return true
	default:
		return false
	}
}

// release gives the lock back: its lease is revoked, and its key with it.
func (h *etcdLock) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = h.l.cli.Revoke(ctx, h.sess.Lease())
	h.sess.Close()
}
