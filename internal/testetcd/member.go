package testetcd

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// memberEnv carries a member's configuration (JSON) to the child process that runs it.
const memberEnv = "BATON_TESTETCD_MEMBER"

// memberConfig is what a member process needs to start.
type memberConfig struct {
	Name, Dir          string
	ClientURL, PeerURL string
	InitialCluster     string
	State              string // new or existing
	NoFsync            bool
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
