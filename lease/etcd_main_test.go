package lease

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testchild"
	"github.com/baton-fleet/baton/internal/testetcd"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Environment of a contender run as a child process of the test binary (see
// startContender): its host, group and etcd endpoints.
const (
	contenderHostEnv      = "BATON_LEASE_TEST_CONTENDER"
	contenderGroupEnv     = "BATON_LEASE_TEST_GROUP"
	contenderEndpointsEnv = "BATON_LEASE_TEST_ENDPOINTS"
	// testLogEnv set to 1 makes the leases of the tests log to stderr.
	testLogEnv = "BATON_LEASE_TEST_LOG"
)

func TestMain(m *testing.M) {
	if host := os.Getenv(contenderHostEnv); host != "" {
		os.Exit(runContender(host))
	}
	os.Exit(testetcd.Main(m))
}

// runContender is the child process: it acquires a slot, prints "token N", and holds
// it (keeping its session alive) until its standard input closes or it is killed.
func runContender(host string) int {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   strings.Split(os.Getenv(contenderEndpointsEnv), ","),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cli.Close()
	e := NewEtcd(cli, EtcdOptions{Host: host, TTL: testTTL, Logger: testLogger()})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Acquire(ctx, os.Getenv(contenderGroupEnv)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("token %d\n", e.Token())
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// contender is a child process holding a slot.
type contender struct {
	*testchild.Child
	token int64
}

// startContender runs host as a child process that acquires a slot of group and
// returns once it holds it. The child is killed when the test ends.
func startContender(t *testing.T, c *testetcd.Cluster, host, group string) *contender {
	t.Helper()
	child, line := testchild.Start(t,
		contenderHostEnv+"="+host,
		contenderGroupEnv+"="+group,
		contenderEndpointsEnv+"="+strings.Join(c.Endpoints(), ","))
	tok, err := strconv.ParseInt(strings.TrimPrefix(strings.TrimSpace(line), "token "), 10, 64)
	if err != nil {
		t.Fatalf("contender %s printed %q", host, line)
	}
	return &contender{Child: child, token: tok}
}

// kill sends SIGKILL: the child stops keeping its lease alive and revokes nothing.
func (p *contender) kill() { p.Kill() }

// testTTL is the etcd lease TTL of the tests: the minimum.
const testTTL = MinEtcdTTL

func testLogger() *slog.Logger {
	if os.Getenv(testLogEnv) == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// newEtcd makes the lease of host on cli, closed when the test ends.
func newEtcd(t testing.TB, cli *clientv3.Client, host string) *Etcd {
	t.Helper()
	e := NewEtcd(cli, EtcdOptions{Host: host, TTL: testTTL, Logger: testLogger().With("host", host)})
	t.Cleanup(func() { e.Close() })
	return e
}

// ctxT is a context that ends with the test or after d.
func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// acquireAsync starts Acquire in a goroutine; the channel gets its result.
func acquireAsync(ctx context.Context, e *Etcd, group string) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- e.Acquire(ctx, group) }()
	return ch
}

// holders returns the hosts of group in line order, and which hold.
func holders(t testing.TB, cli *clientv3.Client, group string) (line, holding []string, n int) {
	t.Helper()
	hs, n, err := Holders(ctxT(t, 10*time.Second), cli, "", group)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		line = append(line, h.Host)
		if h.Holding {
			holding = append(holding, h.Host)
		}
	}
	return line, holding, n
}
