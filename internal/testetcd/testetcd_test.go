package testetcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func put(t *testing.T, cli *clientv3.Client, k, v string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, k, v); err != nil {
		t.Fatalf("put %s: %v", k, err)
	}
}

func get(t *testing.T, cli *clientv3.Client, k string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, k)
	if err != nil {
		t.Fatalf("get %s: %v", k, err)
	}
	if len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

func TestOneMemberRestartKeepsData(t *testing.T) {
	c := Start(t)
	cli := c.Client(t)
	put(t, cli, "k", "v1")
	c.Stop(0)
	if c.Running(0) {
		t.Fatal("member still running after Stop")
	}
	c.Restart(0)
	if got := get(t, cli, "k"); got != "v1" {
		t.Fatalf("after restart k = %q, want v1", got)
	}
}

func TestThreeMembersSurviveLeaderKill(t *testing.T) {
	c := StartCluster(t, 3)
	cli := c.Client(t)
	put(t, cli, "k", "v1")
	old := c.KillLeader()
	lead := c.WaitLeader()
	if lead == old {
		t.Fatalf("leader is still the killed member %d", old)
	}
	put(t, cli, "k", "v2")
	c.Restart(old)
	if got := get(t, cli, "k"); got != "v2" {
		t.Fatalf("k = %q, want v2", got)
	}
}

func TestProxyBlocksAndUnblocks(t *testing.T) {
	c := Start(t)
	p := NewProxy(t, c.Members()[0].ClientURL)
	cfg := c.ClientConfig()
	cfg.Endpoints = []string{p.URL()}
	cli := c.ClientWith(t, cfg)
	put(t, cli, "k", "v1")

	p.Block()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_, err := cli.Get(ctx, "k")
	cancel()
	if err == nil {
		t.Fatal("Get through a blocked proxy succeeded")
	}
	p.Unblock()
	if got := get(t, cli, "k"); got != "v1" {
		t.Fatalf("after unblock k = %q, want v1", got)
	}
}

func TestTLSClientCertificates(t *testing.T) {
	certs := NewCerts(t)
	c := StartWith(t, Options{TLS: certs.ServerTLS})
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(certs.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(ca)
	pair, err := tls.LoadX509KeyPair(certs.ClientCert, certs.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.ClientConfig()
	cfg.TLS = &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	cli := c.ClientWith(t, cfg)
	put(t, cli, "k", "v")
	if got := get(t, cli, "k"); got != "v" {
		t.Fatalf("k = %q, want v", got)
	}
}

func TestKillAllThenStartAllOnAnotherAddress(t *testing.T) {
	c := StartWith(t, Options{Members: 3, ClientHost: "127.0.0.2"})
	for _, ep := range c.Endpoints() {
		if !strings.HasPrefix(ep, "http://127.0.0.2:") {
			t.Fatalf("endpoint %s, want one on 127.0.0.2", ep)
		}
	}
	cli := c.Client(t)
	put(t, cli, "k", "v1")
	c.KillAll()
	for i := range c.Members() {
		if c.Running(i) {
			t.Fatalf("member %d runs after KillAll", i)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err := c.WaitLeaderContext(ctx)
	cancel()
	if err == nil {
		t.Fatal("a leader with every member killed")
	}
	if err := c.StartAll(); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(0); err != nil { // running: nothing to do
		t.Fatal(err)
	}
	c.WaitLeader()
	if got := get(t, cli, "k"); got != "v1" {
		t.Fatalf("after StartAll k = %q, want v1", got)
	}
}

// Clients of a gRPC proxy read, write, hold leases and watch as clients of the
// member do.
func TestGRPCProxy(t *testing.T) {
	c := Start(t)
	p := c.StartGRPCProxy(t)
	cfg := c.ClientConfig()
	cfg.Endpoints = []string{p.Endpoint}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var watches []clientv3.WatchChan
	for i := range 2 {
		w := c.ClientWith(t, cfg).Watch(ctx, "k", clientv3.WithCreatedNotify())
		if wr := <-w; !wr.Created {
			t.Fatalf("watch %d through the proxy: %+v, want it created", i, wr)
		}
		watches = append(watches, w)
	}
	cli := c.ClientWith(t, cfg)
	lease, err := cli.Grant(ctx, 5)
	if err != nil {
		t.Fatalf("grant a lease through the proxy: %v", err)
	}
	if _, err := cli.Put(ctx, "k", "v1", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatalf("put through the proxy: %v", err)
	}
	if got := get(t, c.Client(t), "k"); got != "v1" {
		t.Fatalf("the member has k = %q, want v1", got)
	}
	for i, w := range watches {
		select {
		case wr := <-w:
			if len(wr.Events) != 1 || string(wr.Events[0].Kv.Value) != "v1" {
				t.Fatalf("watch %d through the proxy: %+v", i, wr)
			}
		case <-ctx.Done():
			t.Fatalf("watch %d through the proxy saw nothing", i)
		}
	}
}
