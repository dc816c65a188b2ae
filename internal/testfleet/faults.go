package testfleet

import (
	"context"
	"fmt"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/baton-fleet/baton/lease"
	"github.com/baton-fleet/baton/rollback"
)

// LeaseTTL is the etcd lease TTL of every agent of the fleet.
const LeaseTTL = 5 * time.Second

// drainGate is the file in a host that holds its drain hook (Options.DrainGate).
const drainGate = "/run/testfleet-drain-gate"

// cutTable is the nftables table in a host's network namespace that cuts it off.
const cutTable = "testfleet_cut"

// StartAgent starts the host's agent as a transient unit: as the package runs it
// (Type=notify, the watchdog, restarted on failure) when the fleet has a Watchdog,
// as a plain service otherwise. env is added to its environment (NAME=value).
func (h *Host) StartAgent(env ...string) error {
	return h.StartAgentWith(h.watchdogProps(true), env...)
}

// StartAgentOnce starts the agent with env as StartAgent does, but systemd does not
// restart it when it dies: for a failpoint (BATON_FAILPOINT=STATE) that kills it.
func (h *Host) StartAgentOnce(env ...string) error {
	return h.StartAgentWith(h.watchdogProps(false), env...)
}

// watchdogProps are the unit properties of an agent run as the package runs it.
func (h *Host) watchdogProps(restart bool) []string {
	if h.watchdog <= 0 {
		return nil
	}
	props := []string{"Type=notify", "NotifyAccess=main", "WatchdogSec=" + strconv.Itoa(int(h.watchdog.Seconds())),
		"TimeoutStartSec=infinity", "StartLimitIntervalSec=10min", "StartLimitBurst=5"}
	if restart {
		props = append(props, "Restart=on-failure", "RestartSec=1s")
	}
	return props
}

// StartAgentWith starts the agent as a transient unit with the unit properties props
// (such as "Type=notify") and env added to its environment.
func (h *Host) StartAgentWith(props []string, env ...string) error {
	// systemd in the hosts does not always collect a stopped transient unit, so each
	// start after the first takes a new name.
	h.mu.Lock()
	if h.agentActiveLocked() {
		h.mu.Unlock()
		return fmt.Errorf("start the agent on %s: %s is running", h.Name, h.unit)
	}
	h.runs++
	h.unit = AgentUnit
	if h.runs > 1 {
		h.unit = fmt.Sprintf("%s-%d", AgentUnit, h.runs)
	}
	unit := h.unit
	h.mu.Unlock()
	args := []string{"systemd-run", "--unit=" + unit, "--collect", "--property=KillMode=mixed"}
	for _, p := range props {
		args = append(args, "--property="+p)
	}
	for _, e := range env {
		args = append(args, "--setenv="+e)
	}
	args = append(args, "/usr/local/bin/baton", "agent", "--config", "/etc/baton/agent.yaml")
	_, err := h.Exec(context.Background(), args...)
	return err
}

// AgentUnit is the unit the agent runs (or last ran) as.
func (h *Host) AgentUnit() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.unit == "" {
		return AgentUnit
	}
	return h.unit
}

// agentActiveLocked is AgentActive with h.mu held.
func (h *Host) agentActiveLocked() bool {
	unit := h.unit
	if unit == "" {
		unit = AgentUnit
	}
	return active(h.unitState(unit))
}

func active(state string) bool {
	switch state {
	case "active", "activating", "reloading":
		return true
	}
	return false
}

// agentUnitState is the agent unit's active state, "" when systemd has not loaded it.
func (h *Host) agentUnitState() string { return h.unitState(h.AgentUnit()) }

// unitState lists units rather than naming one, so that asking does not load a stub.
func (h *Host) unitState(unit string) string {
	out, _ := h.Exec(context.Background(), "systemctl", "list-units", "--all", "--plain", "--no-legend", "--full", unit+".service")
	f := strings.Fields(string(out))
	if len(f) < 3 {
		return ""
	}
	return f[2]
}

// StopAgent stops the agent (SIGTERM, as systemctl stop) and waits until it exited.
func (h *Host) StopAgent() error {
	if h.agentUnitState() == "" {
		return nil
	}
	_, err := h.Exec(context.Background(), "systemctl", "stop", h.AgentUnit())
	return err
}

// KillAgent sends SIGKILL to the agent's process, as its systemd sees it.
func (h *Host) KillAgent() error {
	_, err := h.Exec(context.Background(), "systemctl", "kill", "--signal=KILL", "--kill-whom=main", h.AgentUnit())
	return err
}

// AgentActive reports whether the agent's unit is active (running, or restarting).
func (h *Host) AgentActive() bool { return active(h.agentUnitState()) }

// AgentRestarts is how many times systemd restarted the agent's unit (NRestarts).
func (h *Host) AgentRestarts() int {
	if h.agentUnitState() == "" {
		return 0
	}
	out, _ := h.Exec(context.Background(), "systemctl", "show", "--value", "--property=NRestarts", h.AgentUnit())
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n
}

// CutEtcd silently cuts the host off from every etcd member: its packets to their
// client ports and theirs to it are dropped (nftables in the host's network
// namespace), so that connections hang instead of being refused. HealEtcd undoes it.
func (h *Host) CutEtcd() error {
	var ports []string
	for _, ep := range h.fleet.Cluster.Endpoints() {
		u, err := url.Parse(ep)
		if err != nil {
			return fmt.Errorf("cut %s off etcd: %w", h.Name, err)
		}
		ports = append(ports, u.Port())
	}
	rules := fmt.Sprintf(`table inet %[1]s {
	chain out { type filter hook output priority 0; ip daddr %[2]s tcp dport { %[3]s } drop; }
	chain in { type filter hook input priority 0; ip saddr %[2]s tcp sport { %[3]s } drop; }
}
`, cutTable, h.fleet.Gateway, strings.Join(ports, ", "))
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(h.Leader), "-n", "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cut %s off etcd: %w: %s", h.Name, err, out)
	}
	return nil
}

// HealEtcd removes the cut of CutEtcd; healing a host that is not cut does nothing.
func (h *Host) HealEtcd() error {
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(h.Leader), "-n", "nft", "delete", "table", "inet", cutTable).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "No such file") {
		return fmt.Errorf("heal %s: %w: %s", h.Name, err, out)
	}
	return nil
}

// CloseDrainGate makes the host's next drain (Options.DrainGate) wait until
// OpenDrainGate, up to a minute.
func (h *Host) CloseDrainGate() error {
	_, err := h.Exec(context.Background(), "touch", drainGate)
	return err
}

// OpenDrainGate lets the host's drain finish.
func (h *Host) OpenDrainGate() error {
	_, err := h.Exec(context.Background(), "rm", "-f", drainGate)
	return err
}

// QuarantinedAmong returns the commits among commits that the host quarantined.
func (h *Host) QuarantinedAmong(commits []string) []string {
	var out []string
	for _, c := range commits {
		if h.Quarantined(c) {
			out = append(out, c)
		}
	}
	return out
}

// HoldSlot takes a slot of the group's etcd lease as a host named name would (the
// fleet's own contender), waiting for it until ctx ends; release gives it back.
func (f *Fleet) HoldSlot(ctx context.Context, name string) (release func(), err error) {
	l := lease.NewEtcd(f.Etcd, lease.EtcdOptions{Prefix: etcdPrefix, Host: name, TTL: LeaseTTL})
	if err := l.Acquire(ctx, Group); err != nil {
		_ = l.Close()
		return nil, err
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = l.Release(ctx)
		_ = l.Close()
	}, nil
}

// GroupHalts are the commits the group's fleet state records as failed.
func (f *Fleet) GroupHalts(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	snap, err := f.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	g := snap.Groups[Group]
	if g == nil {
		return nil, nil
	}
	var out []string
	for c := range g.Failed {
		out = append(out, c)
	}
	return out, nil
}

// WaitTxnState waits until the host's open transaction is in one of states.
func (f *Fleet) WaitTxnState(ctx context.Context, h *Host, timeout time.Duration, states ...rollback.State) error {
	return f.WaitFor(ctx, fmt.Sprintf("%s in %v", h.Name, states), timeout, func() bool {
		st := h.TxnState()
		for _, s := range states {
			if st == string(s) {
				return true
			}
		}
		return false
	})
}
