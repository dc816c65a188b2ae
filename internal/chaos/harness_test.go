package chaos

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testfleet"
)

// Timing of the fleet under faults. The watchdog is short so that a wait that does not
// feed it shows within a scenario; the lease TTL is testfleet.LeaseTTL (5s).
const (
	watchdog    = 10 * time.Second
	minHealthy  = 2 * time.Second
	settleLimit = 150 * time.Second
)

var (
	etcdOutage = flag.Duration("faults.etcd-outage", time.Minute, "how long etcd stays down in the fault suite")
	journalDir = flag.String("faults.journals", "", "write each host's agent journal here after each scenario")
)

// harness is a fleet under faults and what the test knows of it: every release
// pushed and whether it is good.
type harness struct {
	f *testfleet.Fleet

	mu       sync.Mutex
	releases []Release
	pushed   []time.Time // when each release was pushed
	n        int
}

func startHarness(t testing.TB) *harness {
	t.Helper()
	return startHarnessWith(t, testfleet.Options{
		Hosts: 3, MinHealthy: minHealthy, EtcdMembers: 3, Watchdog: watchdog, DrainGate: true,
	})
}

// startHarnessWith starts a fleet shaped by o.
func startHarnessWith(t testing.TB, o testfleet.Options) *harness {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil && os.Geteuid() == 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("chaos: needs nft to cut hosts off etcd (CI must install nftables: see scripts/deps)")
		}
		t.Skip("chaos: needs nft (apt-get install nftables)")
	}
	f := testfleet.StartTB(t, o)
	h := &harness{f: f}
	h.releases = append(h.releases, Release{Commit: f.Hosts[0].LastGood().Revision, Version: testfleet.DefaultInitial, Good: true})
	h.pushed = append(h.pushed, time.Time{})
	return h
}

// push commits a new release, good or bad (its health check fails), and returns it.
func (h *harness) push(good bool) (Release, error) {
	h.mu.Lock()
	h.n++
	rel := testfleet.Release{Version: fmt.Sprintf("2.%d.0", h.n)}
	if !good {
		rel = testfleet.Release{Version: fmt.Sprintf("3.%d.0", h.n), Mode: "fail-health"}
	}
	h.mu.Unlock()
	c, err := h.f.Push(rel)
	if err != nil {
		return Release{}, err
	}
	r := Release{Commit: c, Version: rel.Version, Good: good}
	h.mu.Lock()
	h.releases = append(h.releases, r)
	h.pushed = append(h.pushed, time.Now())
	h.mu.Unlock()
	return r, nil
}

// heal undoes every fault: etcd members started, hosts reconnected, drain gates open,
// every agent running.
func (h *harness) heal() error {
	var errs []string
	if err := h.f.Cluster.StartAll(); err != nil {
		errs = append(errs, err.Error())
	}
	for _, host := range h.f.Hosts {
		if err := host.HealEtcd(); err != nil {
			errs = append(errs, err.Error())
		}
		if err := host.OpenDrainGate(); err != nil {
			errs = append(errs, err.Error())
		}
		if !host.AgentActive() {
			if err := host.StartAgent(); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("heal the fleet: %s", strings.Join(errs, "; "))
	}
	return nil
}

// settle waits until every host is idle on rel: committed it, or holds back from it
// (quarantined, or the group halted on it).
func (h *harness) settle(ctx context.Context, rel Release, limit time.Duration) error {
	f := h.f
	return f.WaitFor(ctx, "every host to settle on "+rel.Version, limit, func() bool {
		halts, _ := f.GroupHalts(ctx)
		halted := false
		for _, c := range halts {
			halted = halted || sameCommit(c, rel.Commit)
		}
		for _, host := range f.Hosts {
			if host.TxnState() != "" {
				return false
			}
			if host.LastGood().Revision != rel.Commit && !host.Quarantined(rel.Commit) && !halted {
				return false
			}
		}
		return true
	})
}

// input is the invariants' input over the journals since, for the releases pushed
// since then (quarantines and halts of earlier releases are not this window's).
func (h *harness) input(ctx context.Context, since time.Time) Input {
	h.mu.Lock()
	rels := append([]Release(nil), h.releases...)
	var commits []string
	for i, r := range rels {
		if !h.pushed[i].Before(since) {
			commits = append(commits, r.Commit)
		}
	}
	h.mu.Unlock()
	in := Input{MaxParallel: 1, Journals: map[string]string{}, Since: since, Releases: rels}
	for _, host := range h.f.Hosts {
		in.Journals[host.Name] = host.Journal()
		in.Hosts = append(in.Hosts, HostState{
			Name: host.Name, TxnState: host.TxnState(), LastGood: host.LastGood().Revision,
			Served: host.Served(), Quarantined: host.QuarantinedAmong(commits),
		})
	}
	halts, _ := h.f.GroupHalts(ctx)
	for _, c := range halts {
		for _, mine := range commits {
			if sameCommit(c, mine) {
				in.Halted = append(in.Halted, c)
			}
		}
	}
	return in
}

// watchdogKills counts systemd's watchdog kills in every host's agent journal.
func (h *harness) watchdogKills() map[string]int {
	out := map[string]int{}
	for _, host := range h.f.Hosts {
		out[host.Name] = strings.Count(host.Journal(), "Watchdog timeout")
	}
	return out
}

// saveJournals writes each host's journal to journalDir, named after the test, when set.
func (h *harness) saveJournals(t testing.TB) {
	if *journalDir == "" {
		return
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	for _, host := range h.f.Hosts {
		p := filepath.Join(*journalDir, name+"."+host.Name+".log")
		if err := os.WriteFile(p, []byte(host.Journal()), 0o644); err != nil {
			t.Log(err)
		}
	}
}
