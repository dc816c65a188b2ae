package testetcd

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// memberEnv carries a member's configuration (JSON) to the child process that runs it.
const memberEnv = "BATON_TESTETCD_MEMBER"

// canRunMembers is set once this process runs a member when started as one: Main or
// RunIfMember was called. A cluster's members are this executable run again.
var canRunMembers atomic.Bool

// RunIfMember is for a program (not a test) that starts clusters, the first call of
// its main: in a process started as a member (or a gRPC proxy) it runs that member
// and exits; in any other it returns at once.
func RunIfMember() {
	if code, ok := runIfChild(); ok {
		os.Exit(code)
	}
	canRunMembers.Store(true)
}

// runIfChild runs this process as the member or the gRPC proxy it was started as,
// and says whether it was started as one.
func runIfChild() (code int, ok bool) {
	if spec := os.Getenv(memberEnv); spec != "" {
		return runMember(spec), true
	}
	if spec := os.Getenv(grpcProxyEnv); spec != "" {
		return runGRPCProxy(spec), true
	}
	return 0, false
}

// Member is one etcd member: its URLs and data directory stay the same across Stop and
// Start.
type Member struct {
	Name      string
	ClientURL string // e.g. http://127.0.0.1:41234
	PeerURL   string

	dir string

	life    sync.Mutex // held while the member starts or stops
	started bool       // it started once: its data directory holds the cluster

	mu   sync.Mutex
	proc *childProc // nil while stopped
}

type childProc struct {
	cmd    *exec.Cmd
	stdin  io.Closer
	exited chan struct{}
}

// start runs member m as a child process, unless it runs, and waits until it serves
// clients.
func (c *Cluster) start(m *Member) error {
	m.life.Lock()
	defer m.life.Unlock()
	if m.running() {
		return nil
	}
	if !canRunMembers.Load() {
		if testing.Testing() {
			return errors.New("the package's TestMain must call testetcd.Main to run etcd members")
		}
		return errors.New("main must call testetcd.RunIfMember first to run etcd members")
	}
	var initial []string
	for _, o := range c.members {
		initial = append(initial, o.Name+"="+o.PeerURL)
	}
	mc := memberConfig{
		Name: m.Name, Dir: m.dir, ClientURL: m.ClientURL, PeerURL: m.PeerURL,
		InitialCluster: strings.Join(initial, ","), State: "new",
		NoFsync: c.opts.NoFsync, Pprof: c.opts.Pprof, TLS: c.opts.TLS, Log: os.Getenv(LogEnv) == "1",
	}
	if m.started {
		mc.State = "existing"
	}
	p, err := startChild(memberEnv, mc)
	if err != nil {
		return fmt.Errorf("member %s: %w", m.Name, err)
	}
	m.started = true
	m.mu.Lock()
	m.proc = p
	m.mu.Unlock()
	return nil
}

// startChild runs this executable again with spec (JSON) in env, as a member or a
// gRPC proxy, and waits until it says it is ready.
func startChild(env string, spec any) (*childProc, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), env+"="+string(b))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &childProc{cmd: cmd, stdin: stdin, exited: make(chan struct{})}
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
			return nil, fmt.Errorf("did not start (%q)", line)
		}
	case <-time.After(readyTimeout):
		p.kill()
		return nil, fmt.Errorf("not ready after %v", readyTimeout)
	}
	return p, nil
}

func (p *childProc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.stdin.Close()
	<-p.exited
}

// stop asks for a graceful stop (SIGTERM), killing the member after 15s.
func (p *childProc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		p.kill()
	}
}

// running reports whether the member's process runs.
func (m *Member) running() bool {
	m.mu.Lock()
	p := m.proc
	m.mu.Unlock()
	if p == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

func (m *Member) stop(kill bool) {
	m.life.Lock()
	defer m.life.Unlock()
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

// memberConfig is what a member process needs to start.
type memberConfig struct {
	Name, Dir          string
	ClientURL, PeerURL string
	InitialCluster     string
	State              string // new or existing
	NoFsync, Pprof     bool
	TLS                *TLS
	Log                bool
}

// runMember is the child process: it runs one embedded etcd member, prints "ready"
// once it serves, and closes it on SIGTERM or when its standard input closes (the test
// ended). SIGKILL ends it as it ends any process.
func runMember(spec string) int {
	var mc memberConfig
	if err := json.Unmarshal([]byte(spec), &mc); err != nil {
		fmt.Fprintln(os.Stderr, "testetcd member:", err)
		return 2
	}
	cfg := embed.NewConfig()
	cfg.Name = mc.Name
	cfg.Dir = mc.Dir
	cu, err := url.Parse(mc.ClientURL)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testetcd member:", err)
		return 2
	}
	pu, err := url.Parse(mc.PeerURL)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testetcd member:", err)
		return 2
	}
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = cfg.ListenClientUrls
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = cfg.ListenPeerUrls
	cfg.InitialCluster = mc.InitialCluster
	cfg.ClusterState = mc.State
	cfg.InitialClusterToken = "testetcd"
	cfg.UnsafeNoFsync = mc.NoFsync
	cfg.EnablePprof = mc.Pprof
	if tl := mc.TLS; tl != nil {
		cfg.ClientTLSInfo.CertFile = tl.CertFile
		cfg.ClientTLSInfo.KeyFile = tl.KeyFile
		cfg.ClientTLSInfo.TrustedCAFile = tl.TrustedCAFile
		cfg.ClientTLSInfo.ClientCertAuth = tl.ClientCertAuth
	}
	if mc.Log {
		cfg.LogLevel = "info"
	} else {
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testetcd member:", err)
		return 1
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		fmt.Fprintln(os.Stderr, "testetcd member:", err)
		return 1
	}
	fmt.Println("ready")
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	stdin := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stdin)
	}()
	select {
	case <-term:
	case <-stdin:
	case err := <-e.Err():
		fmt.Fprintln(os.Stderr, "testetcd member:", err)
		return 1
	}
	return 0
}

// statusTLS is the TLS of the cluster's own client (it asks members who leads): the
// server's certificate, which also serves as a client certificate.
func statusTLS(t testing.TB, tl *TLS) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(tl.TrustedCAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(ca)
	pair, err := tls.LoadX509KeyPair(tl.CertFile, tl.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
}
