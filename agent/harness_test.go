package agent_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/internal/testbed"
	"github.com/baton-fleet/baton/internal/testfleet"
	"github.com/baton-fleet/baton/internal/testgit"
)

// The harness runs the real baton agent, as a systemd service, inside a real systemd
// host booted with systemd-nspawn. It follows a git repository written by the test
// (bound into the host, file://), and downloads the demo service's builds from a
// release server on the machine's address on the test bridge.

func TestMain(m *testing.M) { os.Exit(testfleet.Main(m)) }

// testClient makes the tests' own requests; it keeps no idle connections, so none
// outlives a test.
var testClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

type harness struct {
	t       testing.TB
	net     *testbed.Network
	gateway string // the machine's address on the hosts' bridge
	extra   string // the configuration's extra YAML
	host    *testfleet.Host
	repo    *testgit.Repo
	rel     *testfleet.Releases
	baton   string
	secrets *[]string // put in the agent's configuration: never to appear in its journal
}

// scanSecrets is the log scan of every test: no secret of the agent's configuration
// in the host's journal, with every field of every line.
func (h *harness) scanSecrets() {
	out, _ := h.host.Exec(context.Background(), "journalctl", "--no-pager", "-o", "verbose", "-t", agentTag)
	for _, s := range *h.secrets {
		if strings.Contains(string(out), s) {
			h.t.Errorf("a secret of the agent's configuration appears in the journal of %s", h.host.Name)
		}
	}
}

// secret records a value the test puts in the agent's configuration (a token, a
// webhook secret): when the test ends, the agent's journal must not hold it.
func (h *harness) secret(s string) {
	*h.secrets = append(*h.secrets, s)
}

// boot starts a host with baton and the fleet repository bound in.
func (h *harness) boot(name string) *testfleet.Host {
	return testfleet.NewHost(h.net.Boot(h.t, name,
		testbed.Bind{Src: h.baton, Dst: "/usr/local/bin/baton"},
		testbed.Bind{Src: filepath.Dir(h.repo.Bare), Dst: "/srv/git"}))
}

// sibling boots another host on the same network, following the same repository
// with the same configuration, and returns a harness for it.
func (h *harness) sibling(name string) *harness {
	h.t.Helper()
	s := *h
	s.host = h.boot(name)
	s.writeConfig(h.extra)
	h.t.Cleanup(func() {
		s.scanSecrets()
		s.logJournalIfFailed()
	})
	return &s
}

// writeConfig writes the agent's configuration in the host: the test repository,
// polled every second, and extra YAML appended. The file is private, as one naming a
// webhook URL with a path must be.
func (h *harness) writeConfig(extra string) {
	h.t.Helper()
	h.extra = extra
	cfg := "host: " + h.host.Name + "\nartifacts: {allowInsecure: [\"" + h.gateway + "\"]}\n" +
		"repo:\n  url: file:///srv/git/" + filepath.Base(h.repo.Bare) + "\n  branch: main\n  poll: 1s\n" + extra
	if err := os.MkdirAll(h.host.Path("/etc/baton"), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(h.host.Path("/etc/baton/agent.yaml"), []byte(cfg), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

const (
	agentTag = "baton" // the agent's syslog identifier: its lines in the journal, whatever its unit
	stateDir = "/var/lib/baton"
	demoPort = testfleet.DemoPort
)

// newHarness boots host h1 for a test. A test that boots hosts runs in parallel with
// the others that do (as many at once as -parallel, GOMAXPROCS by default): each has
// its own bridge, hosts, etcd and load balancer, and mostly waits on them.
func newHarness(t testing.TB) *harness {
	t.Helper()
	testbed.Require(t)
	if pt, ok := t.(*testing.T); ok {
		pt.Parallel()
	}
	h := &harness{t: t, baton: testfleet.Build(t, "github.com/baton-fleet/baton/cmd/baton", "-X main.version=test"), secrets: new([]string)}
	n := testbed.NewNetwork(t)
	h.net = n
	h.rel = testfleet.ServeReleases(t, n.Gateway())
	h.repo = testgit.NewRepo(t)
	h.host = h.boot("h1")
	h.gateway = n.Gateway()
	h.writeConfig("")
	t.Cleanup(func() {
		h.scanSecrets()
		h.logJournalIfFailed()
	})
	return h
}

// logJournalIfFailed logs the end of the agent's and the demo service's journals
// on the host when the test failed.
func (h *harness) logJournalIfFailed() {
	if !h.t.Failed() {
		return
	}
	// -t and -u would match only lines with both: ask for each.
	agent, _ := h.host.Exec(context.Background(), "journalctl", "--no-pager", "-n", "60", "-t", agentTag)
	demo, _ := h.host.Exec(context.Background(), "journalctl", "--no-pager", "-n", "20", "-u", "demo.service")
	h.t.Logf("journal of the agent on %s:\n%s\njournal of demo.service on %s:\n%s", h.host.Name, agent, h.host.Name, demo)
}

// release describes one version of the demo service pushed to the fleet repository.
type release struct {
	version, mode string
	sha256        string // "" for the right one
	url           string // "" for the release server's
	unit          string // "" for the default unit file
	drain         string // a drain: block for service.yaml, "" for none
	fleet         string // fleet.yaml, "" for fleetYAML
}

var demoUnit = testfleet.DemoUnit("baton demo {{ .Version }}", demoPort, "")

// fleetYAML puts h1 in group web, running the demo service.
const fleetYAML = `apiVersion: baton/v1
groups:
  - name: web
    hosts: ["h*"]
    services: [demo]
    rollout: {minHealthy: 5s, healthyDeadline: 30s}
`

// push commits a fleet repository in which h1 runs rel, and returns the commit.
func (h *harness) push(rel release) string {
	h.t.Helper()
	url, sum := h.rel.Publish(h.t, rel.version, rel.mode)
	if rel.url != "" {
		url = rel.url
	}
	if rel.sha256 != "" {
		sum = rel.sha256
	}
	unit := demoUnit
	if rel.unit != "" {
		unit = rel.unit
	}
	fleetFile := fleetYAML
	if rel.fleet != "" {
		fleetFile = rel.fleet
	}
	files := map[string]string{
		"fleet.yaml": fleetFile,
		"services/demo/service.yaml": fmt.Sprintf(`version: %q
units: [demo.service]
artifacts:
  - url: %q
    sha256: %q
    name: demo
`, rel.version, url, sum) + testfleet.DemoChecks + rel.drain,
		"services/demo/demo.service": unit,
	}
	return h.repo.CommitFiles(fmt.Sprintf("demo %s (%s)", rel.version, rel.mode), files)
}

// startAgent runs the agent as a transient systemd service in the host.
func (h *harness) startAgent(env ...string) {
	h.t.Helper()
	h.startAgentWith(nil, env...)
}

// startAgentWith runs the agent with extra unit properties (Type=notify, ...).
func (h *harness) startAgentWith(props []string, env ...string) {
	h.t.Helper()
	if err := h.host.StartAgentWith(props, env...); err != nil {
		h.t.Fatal(err)
	}
}

// stopAgent stops the agent and waits until it exited.
func (h *harness) stopAgent() {
	h.t.Helper()
	if err := h.host.StopAgent(); err != nil {
		h.t.Fatal(err)
	}
	h.waitFor("the agent to stop", 30*time.Second, func() bool { return !h.host.AgentActive() })
}

func (h *harness) waitFor(what string, timeout time.Duration, cond func() bool) {
	h.t.Helper()
	h.waitEvery(what, timeout, 200*time.Millisecond, cond)
}

// waitEvery waits for cond, checking it every interval.
func (h *harness) waitEvery(what string, timeout, every time.Duration, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out after %v waiting for %s (last good %s, txn %q, serving %q)",
				timeout, what, short(h.host.LastGood().Revision), h.host.TxnState(), h.host.Served())
		}
		time.Sleep(every)
	}
}

// settled waits until the agent is idle on commit: committed or quarantined.
func (h *harness) settled(commit string) {
	h.t.Helper()
	h.waitFor("the agent to settle on "+short(commit), 3*time.Minute, func() bool {
		return h.host.Settled(commit)
	})
}

// consistent checks that what the host runs is what the last good record says: the
// unit file on disk is the recorded one, and the service answers with its version.
func (h *harness) consistent() {
	h.t.Helper()
	lg := h.host.LastGood()
	want, ok := lg.Files["demo.service"]
	got, err := os.ReadFile(h.host.Path("/etc/systemd/system/demo.service"))
	if !ok || err != nil || string(got) != want {
		h.t.Errorf("demo.service on disk differs from the last good record (%v)", err)
	}
	version := lg.Services["demo"].Version
	h.waitFor("the host to serve "+version, 30*time.Second, func() bool { return h.host.Served() == version })
}

func short(rev string) string { return commitid.Short(rev) }
