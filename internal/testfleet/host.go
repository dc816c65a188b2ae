package testfleet

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testbed"
	"github.com/baton-fleet/baton/internal/testgit"
	"github.com/baton-fleet/baton/rollback"
)

// Host is one host of the fleet; its state is read from its state directory, its
// journal and its demo service.
type Host struct {
	*testbed.Host
	fleet    *Fleet        // nil for a host of NewHost
	watchdog time.Duration // Options.Watchdog

	mu   sync.Mutex
	runs int    // agent units started
	unit string // the agent's unit now: AgentUnit, then AgentUnit-2, -3, ...
}

// NewHost is a host that a test booted itself (with baton at /usr/local/bin/baton and
// its configuration at /etc/baton/agent.yaml), outside any Fleet: its agent is started,
// stopped and read as a fleet's hosts are.
func NewHost(h *testbed.Host) *Host { return &Host{Host: h} }

// blueGreen reports whether the host is in a bluegreen fleet (Options.BlueGreen).
func (h *Host) blueGreen() bool { return h.fleet != nil && h.fleet.opts.BlueGreen }

// client makes the fleet's own requests to the hosts; it keeps no idle connections.
var client = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// writeConfig writes the agent's configuration: the repository bound in at /srv/git,
// polled every second, the lease (etcd's or FleetLock's), and plain http:// artifacts allowed from the
// release server on the gateway.
func (h *Host) writeConfig(tb testing.TB, repo *testgit.Repo, lease, gateway string) {
	tb.Helper()
	cfg := "host: " + h.Name + "\nrepo:\n  url: file:///srv/git/" + baseName(repo.Bare) +
		"\n  branch: main\n  poll: " + DefaultPoll.String() + "\n" +
		lease +
		"artifacts:\n  allowInsecure: [\"" + gateway + "\"]\n"
	if err := os.MkdirAll(h.Path("/etc/baton"), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(h.Path("/etc/baton/agent.yaml"), []byte(cfg), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// startAgent runs the agent as a transient systemd service in the host.
func (h *Host) startAgent(tb testing.TB) {
	tb.Helper()
	if err := h.StartAgent(); err != nil {
		tb.Fatal(err)
	}
}

// LastGood is the host's last good record, empty when it has none.
func (h *Host) LastGood() rollback.LastGood {
	var lg rollback.LastGood
	if b, err := os.ReadFile(h.Path(stateDir + "/" + rollback.LastGoodFile)); err == nil {
		_ = json.Unmarshal(b, &lg)
	}
	return lg
}

// TxnState is the open transaction's state, "" when the agent is idle.
func (h *Host) TxnState() string {
	var txn rollback.Txn
	b, err := os.ReadFile(h.Path(stateDir + "/" + rollback.TxnFile))
	if err != nil || json.Unmarshal(b, &txn) != nil {
		return ""
	}
	return string(txn.State)
}

// Quarantined reports whether the host quarantined commit.
func (h *Host) Quarantined(commit string) bool { return h.QuarantineReason(commit) != "" }

// QuarantineReason is why the host quarantined commit, "" when it did not.
func (h *Host) QuarantineReason(commit string) string {
	s := &rollback.Store{Dir: h.Path(stateDir)}
	q, err := s.IsQuarantined(commit)
	if err != nil || q == nil {
		return ""
	}
	return q.Reason
}

// Settled reports whether the agent is idle on commit: committed or quarantined.
func (h *Host) Settled(commit string) bool {
	return h.TxnState() == "" && (h.LastGood().Revision == commit || h.Quarantined(commit))
}

// Served is the version the host's demo service answers with, "" if none: in a
// bluegreen fleet, the color's that HAProxy sends new clients to.
func (h *Host) Served() string {
	port := DemoPort
	if h.blueGreen() {
		c, ok := h.readyColor()
		if !ok {
			return ""
		}
		port = c.Port
	}
	return version(h.IP + ":" + port)
}

// version is the version the demo service at addr answers with, "" if none.
func version(addr string) string {
	resp, err := client.Get("http://" + addr + "/version")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// InRotation reports whether HAProxy sends requests to the host: a server of it (in a
// bluegreen fleet, one of its colors) ready and UP.
func (h *Host) InRotation() bool {
	if h.fleet == nil {
		return false
	}
	for _, name := range h.servers() {
		st, err := h.fleet.haproxyState(name)
		if err == nil && st.Admin.String() == "ready" && strings.HasPrefix(st.Status, "UP") {
			return true
		}
	}
	return false
}

// Journal is the agent's journal, message lines only, over every unit it ran as.
func (h *Host) Journal() string {
	out, _ := h.Exec(context.Background(), "journalctl", "--no-pager", "-o", "cat", "-u", AgentUnit+"*")
	return string(out)
}

// Switched reports whether the host ever switched to commit (its journal says so).
func (h *Host) Switched(commit string) bool {
	return strings.Contains(h.Journal(), short(commit)+": switching")
}

func baseName(p string) string { return p[strings.LastIndex(p, "/")+1:] }
