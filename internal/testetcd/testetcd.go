// Package testetcd runs real etcd clusters for tests and the live demo: each member is a child process running etcd embedded (go.etcd.io/etcd/server/v3/embed), stopped, killed (SIGKILL) and started again on its data.
package testetcd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// LogEnv names an environment variable: set to 1, the members and the gRPC proxies log
// to stderr (they are silent otherwise).
const LogEnv = "BATON_TESTETCD_LOG"

// readyTimeout bounds how long a member may take to start and join its cluster, and
// WaitLeader how long a cluster may go without a leader.
const readyTimeout = 30 * time.Second

// Options shape a cluster.
type Options struct {
	Members int  // 1 (default) or more; 3 for leader-loss tests
	NoFsync bool // skip fsync (etcd's --unsafe-no-fsync): faster, for tests that need many writes
	TLS     *TLS // serve clients over TLS (https:// endpoints) when set
	// Pprof serves the members' Go profiles at <client URL>/debug/pprof/ (etcd's
	// --enable-pprof), for a benchmark to see where a member spends its time.
	Pprof bool
	// ClientHost is the address the members serve clients on, such as the test hosts'
	// gateway on their bridge; default 127.0.0.1. Peers always talk on loopback.
	ClientHost string
}

// TLS is the server side of client TLS.
type TLS struct {
	CertFile, KeyFile string // the server's certificate (for 127.0.0.1) and key
	TrustedCAFile     string // the CA that signs client certificates
	ClientCertAuth    bool   // require a client certificate
}

// Cluster is a running etcd cluster. Each member is a child process of this one (see
// Main and RunIfMember), so that Kill is a real SIGKILL: its connections reset at
// once, as when a machine's etcd dies. Every member is killed and its data removed
// when the test ends.
type Cluster struct {
	t       testing.TB
	opts    Options
	members []*Member
	status  *clientv3.Client // for Leader
}

// Start runs a one-member cluster.
func Start(t testing.TB) *Cluster { return StartWith(t, Options{Members: 1}) }

// StartCluster runs an n-member cluster and waits until it has a leader.
func StartCluster(t testing.TB, n int) *Cluster { return StartWith(t, Options{Members: n}) }

// StartWith runs a cluster shaped by o and waits until it has a leader.
func StartWith(t testing.TB, o Options) *Cluster {
	t.Helper()
	if o.Members <= 0 {
		o.Members = 1
	}
	if o.ClientHost == "" {
		o.ClientHost = "127.0.0.1"
	}
	c := &Cluster{t: t, opts: o}
	scheme := "http"
	if o.TLS != nil {
		scheme = "https"
	}
	clients, peers := freePorts(t, o.ClientHost, o.Members), freePorts(t, "127.0.0.1", o.Members)
	for i := range o.Members {
		c.members = append(c.members, &Member{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: scheme + "://" + net.JoinHostPort(o.ClientHost, strconv.Itoa(clients[i])),
			PeerURL:   "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(peers[i])),
			dir:       t.TempDir(),
		})
	}
	// Registered after the TempDirs, so it runs before they are removed.
	t.Cleanup(c.close)
	if err := c.StartAll(); err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	cfg := c.ClientConfig()
	cfg.TLS = nil
	if o.TLS != nil {
		cfg.TLS = statusTLS(t, o.TLS)
	}
	st, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("connect to etcd: %v", err)
	}
	c.status = st
	c.WaitLeader()
	return c
}

// freePorts finds n TCP ports free on host now. Another process may take one before
// etcd binds it; the start then fails loudly rather than flakes silently.
func freePorts(t testing.TB, host string, n int) []int {
	t.Helper()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}

func (c *Cluster) close() {
	if c.status != nil {
		c.status.Close()
	}
	c.KillAll()
}

// Members returns the members, in the order they were created.
func (c *Cluster) Members() []*Member { return c.members }

// Endpoints returns the client URLs of every member, running or not.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = m.ClientURL
	}
	return eps
}

// ClientConfig is a client configuration for every member, quiet and with a short
// dial timeout. Tests add TLS, credentials or interceptors to it.
func (c *Cluster) ClientConfig() clientv3.Config {
	return clientv3.Config{
		Endpoints:   c.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	}
}

// Client connects to every member; the client is closed when the test ends.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	return c.ClientWith(t, c.ClientConfig())
}

// ClientWith connects with cfg; the client is closed when the test ends.
func (c *Cluster) ClientWith(t testing.TB, cfg clientv3.Config) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("connect to etcd: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Stop stops member i gracefully (SIGTERM: a leader hands its leadership over first).
func (c *Cluster) Stop(i int) { c.members[i].stop(false) }

// Kill kills member i (SIGKILL): no leadership transfer, its connections reset.
func (c *Cluster) Kill(i int) { c.members[i].stop(true) }

// KillAll kills every member at once (SIGKILL): etcd is down.
func (c *Cluster) KillAll() {
	var wg sync.WaitGroup
	for _, m := range c.members {
		wg.Go(func() { m.stop(true) })
	}
	wg.Wait()
}

// Start starts member i again with its data and URLs, unless it runs, and waits until
// it serves clients, which takes a quorum of members running.
func (c *Cluster) Start(i int) error { return c.start(c.members[i]) }

// StartAll starts every stopped member at once and waits until each serves clients.
func (c *Cluster) StartAll() error {
	errs := make([]error, len(c.members))
	var wg sync.WaitGroup
	for i, m := range c.members {
		wg.Go(func() { errs[i] = c.start(m) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Restart starts a stopped member i again with its data and URLs; the test fails if
// it runs or does not start.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if c.Running(i) {
		c.t.Fatalf("restart %s: still running", c.members[i].Name)
	}
	if err := c.Start(i); err != nil {
		c.t.Fatalf("restart etcd: %v", err)
	}
}

// Running reports whether member i runs.
func (c *Cluster) Running(i int) bool { return c.members[i].running() }

// Leader returns the index of the member that is leader now, by its own word, or -1
// when no running member says it is.
func (c *Cluster) Leader() int {
	for i, m := range c.members {
		if !c.Running(i) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := c.status.Status(ctx, m.ClientURL)
		cancel()
		if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
			return i
		}
	}
	return -1
}

// WaitLeaderContext waits until a running member is leader and returns its index, or
// an error once ctx ends.
func (c *Cluster) WaitLeaderContext(ctx context.Context) (int, error) {
	for {
		if i := c.Leader(); i >= 0 {
			return i, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("etcd: no leader: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// WaitLeader waits until a running member is leader and returns its index; the test
// fails after 30s without one.
func (c *Cluster) WaitLeader() int {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	i, err := c.WaitLeaderContext(ctx)
	if err != nil {
		c.t.Fatalf("%v after %v", err, readyTimeout)
	}
	return i
}

// KillLeader kills the current leader and returns its index.
func (c *Cluster) KillLeader() int {
	c.t.Helper()
	i := c.WaitLeader()
	c.Kill(i)
	return i
}
