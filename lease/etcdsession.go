package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// session is one etcd lease that this process keeps alive, and the local deadline
// before which it is certainly alive.
//
// The deadline is measured on this host's monotonic clock from the moment a keep-alive
// (or the grant) was *sent*: etcd restarts the lease's TTL when it receives the request,
// which is later, so the lease cannot expire on the server before sent+TTL. Subtracting
// a margin leaves room for the disruptive step to start and for clock rate differences.
// etcd's own Session keeps leases alive with a stream whose send times it does not
// expose, which is why this keeps them alive itself, one KeepAliveOnce at a time.
type session struct {
	cli    *clientv3.Client
	id     clientv3.LeaseID
	ttl    time.Duration
	margin time.Duration
	now    func() time.Time
	log    *slog.Logger

	mu       sync.Mutex
	deadline time.Time     // sent + TTL - margin of the last keep-alive that succeeded
	lastSent time.Time     // when that keep-alive was sent
	err      error         // why the lease ended; nil while it may live
	renewed  chan struct{} // closed and replaced at each successful keep-alive
	gone     chan struct{} // closed when err is set

	cancel context.CancelFunc
	done   chan struct{} // closed when the keep-alive loop has returned
}

// grantSession asks etcd for a lease of ttl and keeps it alive until close or until
// etcd says it is gone.
func grantSession(ctx context.Context, cli *clientv3.Client, ttl, margin time.Duration, now func() time.Time, log *slog.Logger) (*session, error) {
	sent := now()
	resp, err := cli.Grant(ctx, int64((ttl+time.Second-1)/time.Second))
	if err != nil {
		return nil, fmt.Errorf("grant etcd lease: %w", err)
	}
	s := &session{
		cli: cli, id: resp.ID, ttl: ttl, margin: margin, now: now,
		log:     log.With("lease", fmt.Sprintf("%x", int64(resp.ID))),
		renewed: make(chan struct{}),
		gone:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	s.renew(sent, resp.TTL)
	kctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.keepAlive(kctx)
	return s, nil
}

// renew moves the local deadline after a keep-alive sent at sent was answered with
// grantedTTL seconds. The shorter of the granted and the configured TTL counts.
func (s *session) renew(sent time.Time, grantedTTL int64) {
	ttl := min(time.Duration(grantedTTL)*time.Second, s.ttl)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	if d := sent.Add(ttl - s.margin); d.After(s.deadline) {
		s.deadline, s.lastSent = d, sent
	}
	close(s.renewed)
	s.renewed = make(chan struct{})
}

// end records that the lease is gone for good.
func (s *session) end(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	s.err = err
	close(s.gone)
}

// keepAlive renews the lease every TTL/3, and every half second after a failure, until
// ctx ends or etcd says the lease is gone.
func (s *session) keepAlive(ctx context.Context) {
	defer close(s.done)
	interval := s.ttl / 3
	retry := min(500*time.Millisecond, interval)
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		sent := s.now()
		kctx, cancel := context.WithTimeout(ctx, interval)
		resp, err := s.cli.KeepAliveOnce(kctx, s.id)
		cancel()
		switch {
		case err == nil:
			s.renew(sent, resp.TTL)
			timer.Reset(interval)
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			s.log.Warn("etcd lease expired or was revoked")
			s.end(fmt.Errorf("etcd lease %x expired or was revoked", int64(s.id)))
			return
		case ctx.Err() != nil:
			return
		default:
			s.log.Debug("keep the etcd lease alive", "err", err)
			timer.Reset(retry)
		}
	}
}

// state returns the local deadline and, once the lease is gone, why.
func (s *session) state() (deadline, lastSent time.Time, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deadline, s.lastSent, s.err
}

// valid returns nil when the lease is alive by the local deadline, or why not.
func (s *session) valid() error {
	deadline, lastSent, err := s.state()
	if err != nil {
		return fmt.Errorf("session lost: %w", err)
	}
	if now := s.now(); now.After(deadline) {
		return fmt.Errorf("local deadline passed: last keep-alive answered was sent %v ago, TTL %v, margin %v",
			now.Sub(lastSent).Round(time.Millisecond), s.ttl, s.margin)
	}
	return nil
}

// remaining is how long the local deadline still holds (negative once passed).
func (s *session) remaining() time.Duration {
	deadline, _, _ := s.state()
	return deadline.Sub(s.now())
}

// wakeups returns channels that close at the next renewal and when the lease ends.
func (s *session) wakeups() (renewed, gone <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.renewed, s.gone
}

// stop ends the keep-alives; the lease then expires after its TTL unless revoked.
func (s *session) stop() {
	s.cancel()
	<-s.done
}

// revoke ends the keep-alives and the lease, deleting every key attached to it.
func (s *session) revoke(ctx context.Context) error {
	s.stop()
	s.end(errors.New("revoked"))
	if _, err := s.cli.Revoke(ctx, s.id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("revoke etcd lease %x: %w", int64(s.id), err)
	}
	return nil
}
