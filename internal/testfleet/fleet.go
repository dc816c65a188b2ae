// Package testfleet runs a whole baton fleet on one machine, for tests, benchmarks and the live demo: systemd-nspawn hosts on a bridge each running the real baton agent, etcd, HAProxy in front of the demo service, the fleet repository, a release server and a bounded load generator.
package testfleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-fleet/baton/drain"
	"github.com/baton-fleet/baton/fleet"
	"github.com/baton-fleet/baton/internal/testbed"
	"github.com/baton-fleet/baton/internal/testetcd"
	"github.com/baton-fleet/baton/internal/testgit"
	"github.com/baton-fleet/baton/internal/testhaproxy"
)

// Defaults of Options.
const (
	DefaultHosts      = 3
	DefaultMinHealthy = 5 * time.Second
	DefaultInitial    = "1.0.0"
	DefaultPoll       = time.Second
	// Group is the one group of the fleet, and HAProxy's backend.
	Group = "web"
	// DemoPort is where the demo service listens on every host.
	DemoPort = "8080"
	// DemoChecks is the demo service's health check, as its service.yaml says it. Its
	// failures in a row give the service two seconds to start listening: tests run
	// side by side, and on a busy machine a process can take more than the half
	// second that three failures would allow.
	DemoChecks = `checks:
  - name: health
    http: {url: "http://127.0.0.1:` + DemoPort + `/healthz", contains: ok}
    interval: 200ms
    timeout: 1s
    successes: 2
    failures: 10
`
	// AgentUnit is the transient unit the agent runs as in every host; started again
	// by the test (Host.StartAgent), it runs as AgentUnit-2, -3, ...
	AgentUnit = "baton-agent"

	stateDir    = "/var/lib/baton"
	etcdPrefix  = "/baton"
	module      = "github.com/baton-fleet/baton"
	settleLimit = 3 * time.Minute
)

// Options shape a fleet. The zero value is three hosts with drain.
type Options struct {
	Hosts      int           // hosts h1..hN; default DefaultHosts
	MinHealthy time.Duration // the group's minHealthy; default DefaultMinHealthy
	Initial    string        // the version every host runs once Start returns; default DefaultInitial
	NoDrain    bool          // leave the drain: block out of service.yaml
	// ServiceFlags are added to the demo service's command line, such as
	// "--request-delay 50ms --shutdown-timeout 1ms" (slow requests cut at SIGTERM).
	ServiceFlags string
	Baton        string    // a prebuilt baton binary; "" builds ./cmd/baton
	Log          io.Writer // progress lines; nil discards them

	// EtcdMembers is the size of the etcd cluster on the gateway; default 1.
	EtcdMembers int
	// Watchdog runs each agent as the package does (Type=notify, WatchdogSec=Watchdog,
	// Restart=on-failure) instead of as a plain service; 0 keeps the plain service.
	Watchdog time.Duration
	// DrainGate drains with an exec hook that waits while the host's drain gate is
	// closed (Host.CloseDrainGate), up to a minute, instead of with HAProxy.
	DrainGate bool
	// FleetLock is the address (host:port on this machine) of a FleetLock server that
	// the agents take their slot from instead of etcd's lease; the fleet relays to it
	// from the bridge. Its group is Group. etcd still runs, unused by the lease.
	FleetLock string
	// BlueGreen deploys the demo service with strategy: bluegreen in two Colors, each
	// a server of HAProxy's backend (h1-blue, h1-green, ...) behind cookie persistence
	// (StickyCookie). With NoDrain or DrainGate it cannot run.
	BlueGreen bool
	// Sticky puts cookie persistence (StickyCookie) in front of a fleet deployed by
	// restart, so that logged-in clients keep their host, as a shop's do.
	Sticky bool
}

// Fleet is a running fleet. Close (or the test's cleanup) stops everything it started.
type Fleet struct {
	Hosts    []*Host
	LB       *testhaproxy.HAProxy
	Releases *Releases
	Repo     *testgit.Repo
	Etcd     *clientv3.Client  // a client of every member
	Cluster  *testetcd.Cluster // the etcd members, serving the hosts on the gateway
	Gateway  string            // the machine's address on the hosts' bridge

	tb     testing.TB
	prog   *programTB // nil under a test
	opts   Options
	builds *builds
	log    io.Writer

	fleetLock string // the FleetLock URL the hosts reach, "" for etcd's lease

	mu      sync.Mutex
	current Release // the last release pushed
}

// leaseConfig is the lease: section of every agent's configuration.
func (f *Fleet) leaseConfig() string {
	if f.fleetLock != "" {
		return "lease:\n  backend: fleetlock\n  fleetlock: {url: \"" + f.fleetLock + "\", group: " + Group + "}\n"
	}
	return "lease:\n  backend: etcd\n  etcd: {endpoints: [\"" + strings.Join(f.Cluster.Endpoints(), "\", \"") +
		"\"], prefix: " + etcdPrefix + ", ttl: " + LeaseTTL.String() + "}\n"
}

// Start starts a fleet from a program: hosts, etcd, HAProxy, the repository with the
// initial release, every agent; it returns once every host runs the initial release
// and is in rotation. Close stops it all, as does a failed Start. The etcd members are
// the program run again: its main calls testetcd.RunIfMember first.
func Start(ctx context.Context, o Options) (*Fleet, error) {
	p := newProgramTB(o.Log)
	var f *Fleet
	err := catch(func() { f = start(ctx, p, o) })
	if err != nil {
		p.Close()
		return nil, err
	}
	f.prog = p
	return f, nil
}

// StartTB is Start for a test or benchmark: it skips without root, systemd-nspawn or
// haproxy, fails the test on error, and stops everything in t.Cleanup.
func StartTB(t testing.TB, o Options) *Fleet {
	t.Helper()
	testbed.Require(t)
	testhaproxy.Require(t)
	return start(context.Background(), t, o)
}

// Close stops everything a program's fleet started. Under a test it does nothing:
// the test's cleanup does it.
func (f *Fleet) Close() {
	if f.prog != nil {
		f.prog.Close()
	}
}

// Require reports why this machine cannot run a fleet, nil when it can.
func Require() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root")
	}
	for _, bin := range []string{"systemd-nspawn", "ip", "nsenter", "git", "go"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("needs %s (apt-get install systemd-container iproute2 git)", bin)
		}
	}
	if _, err := testhaproxy.Binary(); err != nil {
		return errors.New("needs haproxy (apt-get install haproxy)")
	}
	return nil
}

func start(ctx context.Context, tb testing.TB, o Options) *Fleet {
	tb.Helper()
	if o.Hosts <= 0 {
		o.Hosts = DefaultHosts
	}
	if o.MinHealthy <= 0 {
		o.MinHealthy = DefaultMinHealthy
	}
	if o.Initial == "" {
		o.Initial = DefaultInitial
	}
	if o.BlueGreen && (o.NoDrain || o.DrainGate) {
		tb.Fatal("testfleet: a bluegreen fleet switches colors in HAProxy: NoDrain and DrainGate do not apply")
	}
	f := &Fleet{tb: tb, opts: o, log: o.Log, builds: testBuilds}
	if _, program := tb.(*programTB); program {
		f.builds = &builds{dir: tb.TempDir()} // removed when the program's fleet closes
	}
	if f.log == nil {
		f.log = io.Discard
	}
	baton := o.Baton
	if baton == "" {
		f.logf("building baton and the demo service")
		baton = f.builds.get(tb, module+"/cmd/baton", "-X main.version=testfleet")
	}
	n := testbed.NewNetwork(tb)
	f.Gateway = n.Gateway()
	f.Releases = serveReleases(tb, f.Gateway, f.builds)
	f.Repo = testgit.NewRepo(tb)
	f.Cluster = testetcd.StartWith(tb, testetcd.Options{Members: max(o.EtcdMembers, 1), ClientHost: f.Gateway})
	f.Etcd = f.Cluster.Client(tb)
	if o.FleetLock != "" {
		f.fleetLock = "http://" + Forward(tb, f.Gateway, o.FleetLock)
	}

	for i := 1; i <= o.Hosts; i++ {
		name := "h" + strconv.Itoa(i)
		f.logf("booting %s", name)
		th := n.Boot(tb, name,
			testbed.Bind{Src: baton, Dst: "/usr/local/bin/baton"},
			testbed.Bind{Src: filepath.Dir(f.Repo.Bare), Dst: "/srv/git"})
		h := &Host{Host: th, fleet: f, watchdog: o.Watchdog}
		h.writeConfig(tb, f.Repo, f.leaseConfig(), f.Gateway)
		f.Hosts = append(f.Hosts, h)
	}
	f.LB = testhaproxy.Start(tb, testhaproxy.Config{Backend: Group, Servers: f.haproxyServers(), AdminTCP: f.Gateway + ":0", Cookie: f.cookie()})

	tb.Cleanup(func() {
		if tb.Failed() {
			for _, h := range f.Hosts {
				tb.Logf("journal of %s:\n%s", h.Name, lastLines(h.Journal(), 40))
			}
		}
	})
	c := f.push(tb, Release{Version: o.Initial, Mode: "ok"})
	f.logf("starting the agents on %s", short(c))
	for _, h := range f.Hosts {
		h.startAgent(tb)
	}
	for _, h := range f.Hosts {
		var failed *fleet.Failure
		err := f.WaitFor(ctx, h.Name+" to commit "+o.Initial, settleLimit, func() bool {
			if h.TxnState() == "" && h.LastGood().Revision == c {
				return true
			}
			failed, _ = f.groupFailure(ctx, c)
			return failed != nil
		})
		if err != nil {
			tb.Fatal(err)
		}
		if failed != nil {
			tb.Fatalf("the initial release %s failed on %s: %s", o.Initial, failed.Host, failed.Reason)
		}
	}
	if err := f.WaitInRotation(ctx, time.Minute); err != nil {
		tb.Fatal(err)
	}
	return f
}

func (f *Fleet) logf(format string, args ...any) { fmt.Fprintf(f.log, format+"\n", args...) }

// Release is one version of the demo service pushed to the fleet repository.
type Release struct {
	Version  string
	Mode     string // the demo's mode: ok, fail-health, crash-after, exit, slow-start, flaky, slow, fail-on-traffic, ...
	Analysis string // an analysis: block for service.yaml (see StartPrometheus), "" for none
}

// Push commits a fleet repository in which every host runs rel and returns the commit.
func (f *Fleet) Push(rel Release) (commit string, err error) {
	err = catch(func() { commit = f.push(f.tb, rel) })
	return commit, err
}

func (f *Fleet) push(tb testing.TB, rel Release) string {
	tb.Helper()
	if rel.Mode == "" {
		rel.Mode = "ok"
	}
	u, sum := f.Releases.Publish(tb, rel.Version, rel.Mode)
	drainBlock := ""
	switch {
	case f.opts.DrainGate:
		drainBlock = fmt.Sprintf("drain:\n  exec: {drain: [/bin/sh, -c, %q], undrain: [/bin/true]}\n",
			"for i in $(seq 600); do test -e "+drainGate+" || exit 0; sleep 0.1; done")
	case !f.opts.NoDrain:
		drainBlock = fmt.Sprintf("drain:\n  haproxy: {socket: %q, backend: %s, server: \"{{ .Host }}\", timeout: 10s}\n", f.LB.AdminTCP, Group)
	}
	service, unit := DemoChecks+drainBlock, DemoUnit("baton demo {{ .Version }}", DemoPort, f.opts.ServiceFlags)
	if f.opts.BlueGreen {
		service, unit = f.blueGreenService()
	}
	files := map[string]string{
		"fleet.yaml": fmt.Sprintf(`apiVersion: baton/v1
groups:
  - name: %s
    hosts: ["h*"]
    services: [demo]
    rollout: {minHealthy: %s, healthyDeadline: 30s}
`, Group, f.opts.MinHealthy),
		"services/demo/service.yaml": fmt.Sprintf(`version: %q
units: [demo.service]
artifacts:
  - url: %q
    sha256: %q
    name: demo
`, rel.Version, u, sum) + service + rel.Analysis,
		"services/demo/demo.service": unit,
	}
	c := f.Repo.CommitFiles(fmt.Sprintf("demo %s (%s)", rel.Version, rel.Mode), files)
	f.mu.Lock()
	f.current = rel
	f.mu.Unlock()
	return c
}

// DemoUnit is a unit file that runs the demo program, described as description,
// listening on port (a number, or "{{ .Port }}" for a color's), with flags added to
// its command line.
func DemoUnit(description, port, flags string) string {
	cmd := "{{ .Release }}/demo --listen 0.0.0.0:" + port
	if flags != "" {
		cmd += " " + flags
	}
	return "[Unit]\nDescription=" + description + "\n\n[Service]\nExecStart=" + cmd +
		"\nRestart=on-failure\nRestartSec=300ms\n\n[Install]\nWantedBy=multi-user.target\n"
}

// WaitFor polls cond every 100ms until it holds, ctx ends or timeout passes.
func (f *Fleet) WaitFor(ctx context.Context, what string, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// OutOfRotation counts the hosts HAProxy does not send requests to: not ready or not UP.
func (f *Fleet) OutOfRotation() int {
	n := 0
	for _, h := range f.Hosts {
		if !h.InRotation() {
			n++
		}
	}
	return n
}

// WaitInRotation waits until every host is ready and UP in HAProxy.
func (f *Fleet) WaitInRotation(ctx context.Context, timeout time.Duration) error {
	return f.WaitFor(ctx, "every host in rotation", timeout, func() bool { return f.OutOfRotation() == 0 })
}

// Lease reads the group's lease from etcd: the hosts holding one of its slots, and
// the hosts waiting in line for one, oldest first.
func (f *Fleet) Lease(ctx context.Context) (holders, waiting []string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	snap, err := f.snapshot(ctx)
	if err != nil {
		return nil, nil, err
	}
	g := snap.Groups[Group]
	if g == nil {
		return nil, nil, nil
	}
	slots := max(g.Slots, 1)
	if len(g.Holders) <= slots {
		return g.Holders, nil, nil
	}
	return g.Holders[:slots], g.Holders[slots:], nil
}

func (f *Fleet) snapshot(ctx context.Context) (*fleet.Snapshot, error) {
	snap, err := fleet.NewStore(f.Etcd, etcdPrefix).Snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the fleet state: %w", err)
	}
	return snap, nil
}

// haproxyState is the host's server state in HAProxy.
func (f *Fleet) haproxyState(name string) (drain.ServerState, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return (&drain.HAProxy{Addr: f.LB.AdminTCP, Backend: Group, Server: name}).State(ctx)
}

func short(rev string) string {
	if len(rev) > 7 {
		return rev[:7]
	}
	return rev
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
