package testfleet

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// etcdReady bounds how long a member may take to serve after a start.
const etcdReady = 30 * time.Second

// EtcdCluster is the fleet's etcd: one or more members embedded in this process,
// serving clients on the bridge (the hosts reach them there) and peers on loopback.
// A member stopped keeps its data directory and ports and starts again on them.
type EtcdCluster struct {
	members []*etcdMember
}

type etcdMember struct {
	cfg *embed.Config
	mu  sync.Mutex
	e   *embed.Etcd // nil while stopped
}

// startEtcd runs an n-member etcd; tb's cleanup stops it and closes its client.
func startEtcd(tb testing.TB, gateway string, n int) (*EtcdCluster, *clientv3.Client) {
	tb.Helper()
	c := &EtcdCluster{}
	var initial []string
	for i := range n {
		client, peer := freePort(tb, gateway), freePort(tb, "127.0.0.1")
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("testfleet%d", i)
		cfg.Dir = tb.TempDir()
		cu, _ := url.Parse("http://" + client)
		pu, _ := url.Parse("http://" + peer)
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
		cfg.InitialClusterToken = "testfleet"
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		initial = append(initial, cfg.Name+"="+pu.String())
		c.members = append(c.members, &etcdMember{cfg: cfg})
	}
	for _, m := range c.members {
		m.cfg.InitialCluster = strings.Join(initial, ",")
	}
	tb.Cleanup(c.stopAll)
	for i := range c.members {
		if err := c.launch(i); err != nil {
			tb.Fatal(err)
		}
	}
	for i := range c.members {
		if err := c.waitReady(i); err != nil {
			tb.Fatal(err)
		}
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		tb.Fatalf("connect to etcd: %v", err)
	}
	tb.Cleanup(func() { cli.Close() })
	return c, cli
}

// Members is the number of members, running or not.
func (c *EtcdCluster) Members() int { return len(c.members) }

// Endpoints are the client URLs of every member, running or not.
func (c *EtcdCluster) Endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.cfg.AdvertiseClientUrls[0].String())
	}
	return eps
}

// Ports are the members' client ports on the bridge.
func (c *EtcdCluster) Ports() []string {
	var ps []string
	for _, m := range c.members {
		ps = append(ps, m.cfg.ListenClientUrls[0].Port())
	}
	return ps
}

func (c *EtcdCluster) launch(i int) error {
	m := c.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.e != nil {
		return nil
	}
	e, err := embed.StartEtcd(m.cfg)
	if err != nil {
		return fmt.Errorf("start etcd member %d: %w", i, err)
	}
	m.e = e
	return nil
}

func (c *EtcdCluster) waitReady(i int) error {
	m := c.members[i]
	m.mu.Lock()
	e := m.e
	m.mu.Unlock()
	if e == nil {
		return fmt.Errorf("etcd member %d is stopped", i)
	}
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("etcd member %d: %w", i, err)
	case <-time.After(etcdReady):
		return fmt.Errorf("etcd member %d not ready after %v", i, etcdReady)
	}
}

// Start starts member i again on its data directory and ports. With more than one
// member it returns once the member runs, without waiting for quorum.
func (c *EtcdCluster) Start(i int) error {
	if err := c.launch(i); err != nil {
		return err
	}
	if len(c.members) == 1 {
		return c.waitReady(i)
	}
	return nil
}

// StartAll starts every stopped member and waits until each serves.
func (c *EtcdCluster) StartAll() error {
	for i := range c.members {
		if err := c.launch(i); err != nil {
			return err
		}
	}
	for i := range c.members {
		if err := c.waitReady(i); err != nil {
			return err
		}
	}
	return nil
}

// Stop stops member i gracefully: a leader hands its leadership over first.
func (c *EtcdCluster) Stop(i int) { c.stop(i, false) }

// Kill stops member i at once: no leadership transfer, its raft stops mid-flight,
// then its listeners close.
func (c *EtcdCluster) Kill(i int) { c.stop(i, true) }

func (c *EtcdCluster) stop(i int, hard bool) {
	m := c.members[i]
	m.mu.Lock()
	e := m.e
	m.e = nil
	m.mu.Unlock()
	if e == nil {
		return
	}
	if hard {
		e.Server.HardStop()
	}
	e.Close()
}

// StopAll stops every member at once (etcd down).
func (c *EtcdCluster) StopAll() { c.stopAll() }

func (c *EtcdCluster) stopAll() {
	var wg sync.WaitGroup
	for i := range c.members {
		wg.Go(func() { c.stop(i, true) })
	}
	wg.Wait()
}

// Running reports whether member i runs.
func (c *EtcdCluster) Running(i int) bool {
	m := c.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.e != nil
}

// Leader is the index of the running member that leads now, -1 when none does.
func (c *EtcdCluster) Leader() int {
	for i, m := range c.members {
		m.mu.Lock()
		e := m.e
		m.mu.Unlock()
		if e != nil && e.Server.Leader() != 0 && e.Server.Leader() == e.Server.MemberID() {
			return i
		}
	}
	return -1
}

// WaitLeader waits until a running member leads and returns its index.
func (c *EtcdCluster) WaitLeader(ctx context.Context, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for {
		if i := c.Leader(); i >= 0 {
			return i, nil
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("etcd: no leader after %v", timeout)
		}
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
