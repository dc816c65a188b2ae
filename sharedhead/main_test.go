package sharedhead

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/baton-fleet/baton/internal/testchild"
	"github.com/baton-fleet/baton/internal/testetcd"
)

// Environment of a candidate run as a child process of the test binary (see
// startCandidate).
const (
	candidateHostEnv      = "BATON_SHAREDHEAD_TEST_CANDIDATE"
	candidateEndpointsEnv = "BATON_SHAREDHEAD_TEST_ENDPOINTS"
	testLogEnv            = "BATON_SHAREDHEAD_TEST_LOG"
)

func TestMain(m *testing.M) {
	if host := os.Getenv(candidateHostEnv); host != "" {
		os.Exit(runCandidate(host))
	}
	if spec := os.Getenv(simFleetEnv); spec != "" {
		os.Exit(runSimFleet(spec))
	}
	os.Exit(testetcd.Main(m))
}

// testTTL is the election's TTL in the tests: etcd's minimum that the lease tests use.
const testTTL = 5 * time.Second

func testOptions(host string) Options {
	log := slog.New(slog.DiscardHandler)
	if os.Getenv(testLogEnv) == "1" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return Options{Prefix: "/baton", Branch: "main", Host: host, Poll: time.Second, TTL: testTTL, Logger: log.With("host", host)}
}

// runCandidate is the child process: it stands in the election, prints "fetcher"
// once elected, and runs until killed or its standard input closes.
func runCandidate(host string) int {
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(os.Getenv(candidateEndpointsEnv), ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cli.Close()
	ctx, cancel := context.WithCancel(context.Background())
	s := New(cli, testOptions(host))
	var once sync.Once
	go s.Run(ctx, func() string { return "" }, func() { once.Do(func() { fmt.Println("fetcher") }) })
	io.Copy(io.Discard, os.Stdin)
	cancel()
	return 0
}

// startCandidate runs host as a child process and returns once it is the fetcher.
// It is killed when the test ends.
func startCandidate(t *testing.T, c *testetcd.Cluster, host string) *testchild.Child {
	t.Helper()
	child, line := testchild.Start(t, candidateHostEnv+"="+host, candidateEndpointsEnv+"="+strings.Join(c.Endpoints(), ","))
	if strings.TrimSpace(line) != "fetcher" {
		t.Fatalf("candidate %s: %q", host, line)
	}
	return child
}

// agent is one Shared running in the test, with the wakes it got.
type agent struct {
	*Shared
	local string
	wakes chan struct{}
	hook  func(*Shared) // called by each wake, from the goroutine that wakes; nil for none
	stop  context.CancelFunc
	done  chan struct{}
}

func (a *agent) wake() {
	if a.hook != nil {
		a.hook(a.Shared)
	}
	select {
	case a.wakes <- struct{}{}:
	default:
	}
}

// startAgent runs a Shared of host on its own client; it stops when the test ends.
func startAgent(t testing.TB, c *testetcd.Cluster, host string, tweak func(*Options)) *agent {
	t.Helper()
	o := testOptions(host)
	if tweak != nil {
		tweak(&o)
	}
	return runAgent(t, c.Client(t), o)
}

func runAgent(t testing.TB, cli *clientv3.Client, o Options) *agent {
	return runAgentHook(t, cli, o, nil)
}

func runAgentHook(t testing.TB, cli *clientv3.Client, o Options, hook func(*Shared)) *agent {
	ctx, cancel := context.WithCancel(context.Background())
	a := &agent{Shared: New(cli, o), wakes: make(chan struct{}, 1), hook: hook, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(a.done)
		a.Run(ctx, func() string { return a.local }, a.wake)
	}()
	t.Cleanup(func() { a.halt() })
	return a
}

func (a *agent) halt() {
	a.stop()
	<-a.done
}

// startThree runs agents a, b and c on c's etcd (each tweaked by tweak(i, o) when
// it is not nil) and returns them once one of them is elected, with the fetcher.
func startThree(t *testing.T, c *testetcd.Cluster, tweak func(i int, o *Options)) ([]*agent, *agent) {
	t.Helper()
	var as []*agent
	for i, h := range []string{"a", "b", "c"} {
		as = append(as, startAgent(t, c, h, func(o *Options) {
			if tweak != nil {
				tweak(i, o)
			}
		}))
	}
	waitFor(t, 15*time.Second, "one fetcher elected", func() bool { return len(fetchers(as)) == 1 })
	return as, fetchers(as)[0]
}

// waitFor polls cond every 20ms until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func fetchers(as []*agent) []*agent {
	var out []*agent
	for _, a := range as {
		if a.Fetcher() {
			out = append(out, a)
		}
	}
	return out
}
