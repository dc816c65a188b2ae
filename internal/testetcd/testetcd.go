// Package testetcd starts real etcd members (go.etcd.io/etcd/server/v3/embed) on loopback for tests.
package testetcd

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// LogEnv names an environment variable: set to 1, the members log to stderr (they are
// silent otherwise).
const LogEnv = "BATON_TESTETCD_LOG"

// readyTimeout bounds how long a member may take to start and join its cluster.
const readyTimeout = 30 * time.Second

// Options shape a cluster.
type Options struct {
	Members int  // 1 (default) or more; 3 for leader-loss tests
	NoFsync bool // skip fsync (etcd's --unsafe-no-fsync): faster, for tests that need many writes
	TLS     *TLS // serve clients over TLS (https:// endpoints) when set
}

// TLS is the server side of client TLS.
type TLS struct {
	CertFile, KeyFile string // the server's certificate (for 127.0.0.1) and key
	TrustedCAFile     string // the CA that signs client certificates
	ClientCertAuth    bool   // require a client certificate
}

// Cluster is a running etcd cluster. Each member is a child process of the test binary
// running etcd embedded (see Main), so that Kill is a real SIGKILL: its connections
// reset at once, as when a machine's etcd dies. Every member is stopped and its data
// removed when the test ends.
type Cluster struct {
	t       testing.TB
	opts    Options
	members []*Member
	status  *clientv3.Client // for Leader
}

// Member is one etcd member: its URLs and data directory stay the same across Stop and
// Restart.
type Member struct {
	Name      string
	ClientURL string // e.g. http://127.0.0.1:41234
	PeerURL   string

	dir string

	mu   sync.Mutex
	proc *memberProc // nil while stopped
}

type memberProc struct {
	cmd    *exec.Cmd
	stdin  io.Closer
	exited chan struct{}
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
	c := &Cluster{t: t, opts: o}
	scheme := "http"
	if o.TLS != nil {
		scheme = "https"
	}
	ports := freePorts(t, 2*o.Members)
	for i := range o.Members {
		c.members = append(c.members, &Member{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[2*i]),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
			dir:       t.TempDir(),
		})
	}
	// Registered after the TempDirs, so it runs before they are removed.
	t.Cleanup(c.close)
	errs := make(chan error, o.Members)
	for _, m := range c.members {
		go func() { errs <- c.start(m, "new") }()
	}
	for range c.members {
		if err := <-errs; err != nil {
			t.Fatalf("start etcd: %v", err)
		}
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

// freePorts finds n TCP ports free on 127.0.0.1 now. Another process may take one
// before etcd binds it; the start then fails loudly rather than flakes silently.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// start runs member m as a child process and waits until it serves clients.
func (c *Cluster) start(m *Member, state string) error {
	var initial []string
	for _, o := range c.members {
		initial = append(initial, o.Name+"="+o.PeerURL)
	}
	mc := memberConfig{
		Name: m.Name, Dir: m.dir, ClientURL: m.ClientURL, PeerURL: m.PeerURL,
		InitialCluster: strings.Join(initial, ","), State: state,
		NoFsync: c.opts.NoFsync, TLS: c.opts.TLS, Log: os.Getenv(LogEnv) == "1",
	}
	b, err := json.Marshal(mc)
	if err != nil {
		return err
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), memberEnv+"="+string(b))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("member %s: %w", m.Name, err)
	}
	p := &memberProc{cmd: cmd, stdin: stdin, exited: make(chan struct{})}
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- strings.TrimSpace(line)
		io.Copy(io.Discard, stdout)
		cmd.Wait()
		close(p.exited)
	}()
	select {
	case line := <-ready:
		if line != "ready" {
			p.kill()
			return fmt.Errorf("member %s did not start (%q); does the package's TestMain call testetcd.Main?", m.Name, line)
		}
	case <-time.After(readyTimeout):
		p.kill()
		return fmt.Errorf("member %s: not ready after %v", m.Name, readyTimeout)
	}
	m.mu.Lock()
	m.proc = p
	m.mu.Unlock()
	return nil
}

func (p *memberProc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.stdin.Close()
	<-p.exited
}

// stop asks for a graceful stop (SIGTERM), killing the member after 15s.
func (p *memberProc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		p.kill()
	}
}

func (c *Cluster) close() {
	if c.status != nil {
		c.status.Close()
	}
	var wg sync.WaitGroup
	for _, m := range c.members {
		wg.Go(func() { m.stop(true) })
	}
	wg.Wait()
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

// Restart starts a stopped member i again with its data and URLs.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if c.Running(i) {
		c.t.Fatalf("restart %s: still running", c.members[i].Name)
	}
	if err := c.start(c.members[i], "existing"); err != nil {
		c.t.Fatalf("restart etcd: %v", err)
	}
}

// Running reports whether member i runs.
func (c *Cluster) Running(i int) bool {
	m := c.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc != nil
}

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

// WaitLeader waits until a running member is leader and returns its index; the test
// fails after 30s without one.
func (c *Cluster) WaitLeader() int {
	c.t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		if i := c.Leader(); i >= 0 {
			return i
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("etcd: no leader after %v", readyTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// KillLeader kills the current leader and returns its index.
func (c *Cluster) KillLeader() int {
	c.t.Helper()
	i := c.WaitLeader()
	c.Kill(i)
	return i
}

func (m *Member) stop(kill bool) {
	m.mu.Lock()
	p := m.proc
	m.proc = nil
	m.mu.Unlock()
	if p == nil {
		return
	}
	if kill {
		p.kill()
	} else {
		p.stop()
	}
}
