package packagetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testbed"
	"github.com/baton-fleet/baton/internal/testgit"
	"github.com/baton-fleet/baton/rollback"
)

// A host here is a real systemd host (internal/testbed) on which the test installs the
// packages as an administrator would: the built packages are bound in read-only at
// /srv/pkg/<tag>/, and a fleet repository written by the test at /srv/git (file://).

const (
	stateDir   = "/var/lib/baton"
	configFile = "/etc/baton/agent.yaml"
	request    = "/run/baton/restart-requested"
)

type host struct {
	*testbed.Host
	t    *testing.T
	repo *testgit.Repo
}

// bootHost builds the packages of tags, then boots a host with them and a fleet
// repository bound in.
func bootHost(t *testing.T, name string, tags ...string) *host {
	t.Helper()
	testbed.Require(t)
	var binds []testbed.Bind
	for _, tag := range tags {
		p := build(t, tag)
		binds = append(binds, testbed.Bind{Src: p.Dir, Dst: "/srv/pkg/" + tag})
	}
	repo := testgit.NewRepo(t)
	binds = append(binds, testbed.Bind{Src: filepath.Dir(repo.Bare), Dst: "/srv/git"})
	n := testbed.NewNetwork(t)
	h := &host{Host: n.Boot(t, name, binds...), t: t, repo: repo}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := h.Exec(context.Background(), "journalctl", "--no-pager", "-n", "60", "-u", "baton", "-u", "hold")
			t.Logf("journal of %s:\n%s", name, out)
		}
	})
	return h
}

// deb is the path inside the host of the .deb of a release tag (vX.Y.Z).
func deb(tag string) string {
	return fmt.Sprintf("/srv/pkg/%s/baton_%s_%s.deb", tag, strings.TrimPrefix(tag, "v"), runtime.GOARCH)
}

// rpm is the path inside the host of the .rpm of a release tag (vX.Y.Z).
func rpm(tag string) string {
	return fmt.Sprintf("/srv/pkg/%s/baton-%s.%s.rpm", tag, strings.TrimPrefix(tag, "v"), rpmArch(runtime.GOARCH))
}

// sh runs a shell script in the host and returns its output; a failure fails the test.
func (h *host) sh(script string) string {
	h.t.Helper()
	return h.MustExec(h.t, "sh", "-c", script)
}

// ok reports whether a shell script succeeds in the host.
func (h *host) ok(script string) bool {
	_, err := h.Exec(context.Background(), "sh", "-c", script)
	return err == nil
}

func (h *host) show(prop string) string {
	h.t.Helper()
	return strings.TrimSpace(h.sh("systemctl show -p " + prop + " --value baton.service"))
}

func (h *host) exists(p string) bool {
	_, err := os.Lstat(h.Path(p))
	return err == nil
}

func (h *host) read(p string) string {
	h.t.Helper()
	b, err := os.ReadFile(h.Path(p))
	if err != nil {
		h.t.Fatal(err)
	}
	return string(b)
}

func (h *host) write(p, content string) {
	h.t.Helper()
	if err := os.MkdirAll(filepath.Dir(h.Path(p)), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(h.Path(p), []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// lastGood is the revision the agent last committed, "" before the first.
func (h *host) lastGood() string {
	var lg rollback.LastGood
	b, err := os.ReadFile(h.Path(stateDir + "/" + rollback.LastGoodFile))
	if err != nil || json.Unmarshal(b, &lg) != nil {
		return ""
	}
	return lg.Revision
}

// txnState is the state of the open transaction, "" when the agent is idle.
func (h *host) txnState() string {
	var txn rollback.Txn
	b, err := os.ReadFile(h.Path(stateDir + "/" + rollback.TxnFile))
	if err != nil || json.Unmarshal(b, &txn) != nil {
		return ""
	}
	return string(txn.State)
}

func (h *host) waitFor(what string, timeout time.Duration, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out after %v waiting for %s (baton %s, pid %s, txn %q, last good %.7s)",
				timeout, what, h.show("ActiveState"), h.show("MainPID"), h.txnState(), h.lastGood())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// exe is what the agent's process runs: "/usr/bin/baton", or "/usr/bin/baton (deleted)"
// when the package replaced the binary under it.
func (h *host) exe(pid string) string {
	h.t.Helper()
	return strings.TrimSpace(h.sh("readlink /proc/" + pid + "/exe"))
}

// versionsStarted lists the versions the agent logged at each start.
func (h *host) versionsStarted() []string {
	h.t.Helper()
	var vs []string
	for line := range strings.Lines(h.sh("journalctl --no-pager -o cat -u baton.service")) {
		if !strings.Contains(line, "baton agent starting") {
			continue
		}
		for f := range strings.FieldsSeq(line) {
			if v, ok := strings.CutPrefix(f, "version="); ok {
				vs = append(vs, v)
			}
		}
	}
	return vs
}

// fleet commits a fleet repository whose one group, web, matches the host and runs
// services (each a directory of files).
func (h *host) fleet(msg string, rollout string, services map[string]map[string]string) string {
	h.t.Helper()
	names := make([]string, 0, len(services))
	files := map[string]string{}
	for name, svc := range services {
		names = append(names, name)
		for f, content := range svc {
			files["services/"+name+"/"+f] = content
		}
	}
	slices.Sort(names)
	files["fleet.yaml"] = "apiVersion: baton/v1\ngroups:\n  - name: web\n    hosts: [\"" + h.Name + "\"]\n" +
		"    services: [" + strings.Join(names, ", ") + "]\n" + rollout
	return h.repo.CommitFiles(msg, files)
}

// configure writes a valid agent configuration that follows the test's repository.
func (h *host) configure() string {
	h.t.Helper()
	cfg := "# written by the test\nhost: " + h.Name + "\nrepo:\n  url: file:///srv/git/" + filepath.Base(h.repo.Bare) + "\n  poll: 1s\n"
	h.write(configFile, cfg)
	h.MustExec(h.t, "baton", "validate-config")
	return cfg
}

// startAndApply enables and starts the agent, checks that it is ready as soon as
// systemctl returns (Type=notify), and waits until it commits the repository's head.
func (h *host) startAndApply(commit string) {
	h.t.Helper()
	h.MustExec(h.t, "systemctl", "enable", "--now", "baton")
	if state := h.show("ActiveState") + "/" + h.show("SubState"); state != "active/running" {
		h.t.Fatalf("baton is %s right after systemctl start returned, want active/running", state)
	}
	h.waitFor("the agent to apply "+commit[:7], 60*time.Second, func() bool { return h.lastGood() == commit })
	h.waitFor("the agent to go idle", 30*time.Second, func() bool { return h.txnState() == "" })
}

// installed checks what an install leaves: the group, the state directory, the unit
// loaded and sound, and the agent neither started nor enabled (its config is not valid).
func (h *host) installed(out string) {
	h.t.Helper()
	if !strings.Contains(out, configFile+" is not valid yet") {
		h.t.Errorf("install says nothing about the configuration to edit:\n%s", out)
	}
	h.MustExec(h.t, "getent", "group", "baton")
	if info, err := os.Stat(h.Path(stateDir)); err != nil || !info.IsDir() || info.Mode().Perm() != 0o755 {
		h.t.Errorf("state directory %s: %v %v, want a directory 0755", stateDir, info, err)
	}
	if got := h.show("ActiveState"); got != "inactive" {
		h.t.Errorf("baton is %s after install, want inactive", got)
	}
	if got := h.show("UnitFileState"); got != "disabled" {
		h.t.Errorf("baton is %s after install, want disabled", got)
	}
	// Debian's merged /usr: systemd may name /usr/lib by its /lib alias.
	if got := h.show("FragmentPath"); got != "/usr/lib/systemd/system/baton.service" && got != "/lib/systemd/system/baton.service" {
		h.t.Errorf("baton.service is loaded from %q", got)
	}
	h.MustExec(h.t, "systemd-analyze", "verify", "baton.service")
}

// TestDebLifecycle installs the .deb on a real systemd host and takes it through a
// life: not started until configured; started and applying commits; upgraded while
// idle (restarted); upgraded in the middle of a host upgrade (not restarted until that
// is done); removed (stopped, disabled, config and state kept); purged.
func TestDebLifecycle(t *testing.T) {
	t.Parallel()
	h := bootHost(t, "pkgdeb", "v1.0.0", "v1.1.0", "v1.2.0")

	// Install: nothing starts, the configuration as shipped is refused.
	out := h.MustExec(t, "dpkg", "-i", deb("v1.0.0"))
	h.installed(out)
	if got := h.MustExec(t, "baton", "version"); !strings.HasPrefix(got, "baton v1.0.0 (commit ") {
		t.Errorf("baton version = %q", got)
	}
	if _, err := h.Exec(context.Background(), "baton", "validate-config"); err == nil {
		t.Error("the shipped configuration passes validate-config")
	}
	if got := h.MustExec(t, "dpkg-query", "-W", "-f=${Conffiles}", "baton"); !strings.Contains(got, configFile) {
		t.Errorf("dpkg does not list %s as a conffile: %q", configFile, got)
	}

	// Configure and start: READY before systemctl returns, then a commit applied.
	cfg := h.configure()
	commitA := h.fleet("no services", "", nil)
	h.startAndApply(commitA)
	if got := h.show("WatchdogUSec"); got != "2min" {
		t.Errorf("WatchdogUSec = %s, want 2min", got)
	}
	h.waitFor("a STATUS= line", 10*time.Second, func() bool { return h.show("StatusText") != "" })

	// The sandbox, as systemd rates it; its score goes in docs/packaging.md.
	sec := h.MustExec(t, "systemd-analyze", "security", "--no-pager", "baton.service")
	score, level := exposure(sec)
	t.Logf("systemd-analyze security baton.service: %.1f %s", score, level)
	if score < 0 || score > maxExposure {
		t.Errorf("exposure %.1f %s, want at most %.1f (see docs/packaging.md):\n%s", score, level, maxExposure, sec)
	}

	// Upgrade while idle: the agent restarts on the new binary, the config is kept.
	pid := h.show("MainPID")
	out = h.MustExec(t, "dpkg", "-i", deb("v1.1.0"))
	newPID := h.show("MainPID")
	if newPID == pid || h.show("ActiveState") != "active" {
		t.Fatalf("after an idle upgrade baton is %s with MainPID %s (was %s), want restarted:\n%s", h.show("ActiveState"), newPID, pid, out)
	}
	if exe := h.exe(newPID); exe != "/usr/bin/baton" {
		t.Errorf("the agent runs %q after the upgrade", exe)
	}
	if got := h.read(configFile); got != cfg {
		t.Errorf("the upgrade changed %s:\n%s", configFile, got)
	}
	if h.ok("test -e " + request) {
		t.Errorf("an idle upgrade left %s", request)
	}

	// Upgrade in the middle of a host upgrade: a service whose check fails until the
	// test opens a gate holds the transaction open in VERIFYING.
	h.write("/srv/gate/.keep", "")
	commitB := h.fleet("hold", "    rollout: {minHealthy: 2s, healthyDeadline: 10m}\n", map[string]map[string]string{
		"hold": {"service.yaml": holdService, "hold.service": holdUnit},
	})
	h.waitFor("the upgrade to "+commitB[:7]+" to reach VERIFYING", 60*time.Second, func() bool {
		return h.txnState() == string(rollback.Verifying)
	})
	pid = h.show("MainPID")
	out = h.MustExec(t, "dpkg", "-i", deb("v1.2.0"))
	if !strings.Contains(out, "restarts on the new version when that is done") {
		t.Errorf("the upgrade does not say the restart waits:\n%s", out)
	}
	if !h.ok("test -e " + request) {
		t.Errorf("no %s after an upgrade during a transaction", request)
	}
	time.Sleep(3 * time.Second)
	if got := h.show("MainPID"); got != pid {
		t.Fatalf("the agent was restarted (MainPID %s -> %s) in the middle of a transaction (now %q)", pid, got, h.txnState())
	}
	if state := h.txnState(); state != string(rollback.Verifying) {
		t.Fatalf("the transaction is %q, want it still VERIFYING", state)
	}
	if exe := h.exe(pid); exe != "/usr/bin/baton (deleted)" {
		t.Errorf("the agent in the transaction runs %q, want the old, replaced binary", exe)
	}
	// Open the gate: the upgrade commits, and the agent, idle, restarts on v1.2.0.
	h.write("/srv/gate/open", "")
	h.waitFor("the agent to restart once idle", 90*time.Second, func() bool {
		p := h.show("MainPID")
		return p != pid && p != "0" && h.show("ActiveState") == "active"
	})
	if got := h.lastGood(); got != commitB {
		t.Errorf("last good %.7s, want %.7s: the agent restarted before committing", got, commitB)
	}
	if exe := h.exe(h.show("MainPID")); exe != "/usr/bin/baton" {
		t.Errorf("the restarted agent runs %q", exe)
	}
	if h.ok("test -e " + request) {
		t.Errorf("%s is still there after the restart", request)
	}
	if got, want := h.versionsStarted(), []string{"v1.0.0", "v1.1.0", "v1.2.0"}; !slices.Equal(got, want) {
		t.Errorf("the agent started as %v, want %v", got, want)
	}
	if got := h.show("Result"); got != "success" {
		t.Errorf("baton.service result %s after the requested restart, want success", got)
	}
	if !h.exists("/etc/systemd/system/hold.service") || !h.ok("systemctl is-active --quiet hold.service") {
		t.Error("hold.service is not installed and running: the agent could not write units or drive systemd")
	}

	// An upgrade whose binary refuses the configuration leaves the running agent alone
	// (here the same version again, under a configuration broken meanwhile).
	pid = h.show("MainPID")
	h.write(configFile, cfg+"bogus: true\n")
	out = h.MustExec(t, "dpkg", "-i", deb("v1.2.0"))
	if !strings.Contains(out, "the new version refuses "+configFile) || !strings.Contains(out, "bogus") {
		t.Errorf("an upgrade under a broken configuration does not say so:\n%s", out)
	}
	if got := h.show("MainPID"); got != pid || h.show("ActiveState") != "active" {
		t.Errorf("an upgrade under a broken configuration restarted the agent (MainPID %s -> %s)", pid, got)
	}
	h.write(configFile, cfg)

	// Remove: stopped and disabled; the configuration and the state stay, and so do
	// the services baton installed.
	h.MustExec(t, "dpkg", "-r", "baton")
	if got := h.show("ActiveState"); got != "inactive" {
		t.Errorf("baton is %s after dpkg -r", got)
	}
	if h.exists("/etc/systemd/system/multi-user.target.wants/baton.service") {
		t.Error("baton is still enabled after dpkg -r")
	}
	if h.exists("/usr/bin/baton") || h.exists("/usr/lib/systemd/system/baton.service") {
		t.Error("dpkg -r left the binary or the unit")
	}
	if got := h.read(configFile); got != cfg {
		t.Errorf("dpkg -r changed %s", configFile)
	}
	if h.lastGood() != commitB {
		t.Error("dpkg -r lost the state")
	}
	if !h.ok("systemctl is-active --quiet hold.service") {
		t.Error("dpkg -r stopped a service that baton installed")
	}

	// Purge: the state goes, except the release that hold.service runs from.
	if !h.exists(stateDir + "/releases/hold") {
		t.Fatal("no release directory for hold: the purge would not be tested keeping it")
	}
	out = h.MustExec(t, "dpkg", "-P", "baton")
	if !strings.Contains(out, "kept "+stateDir+"/releases") {
		t.Errorf("the purge does not say it kept the releases:\n%s", out)
	}
	if got := ls(t, h.Path(stateDir)); !slices.Equal(got, []string{"releases"}) {
		t.Errorf("%s after the purge holds %v, want only releases", stateDir, got)
	}
	if h.exists("/etc/baton") {
		t.Errorf("/etc/baton is still there after the purge: %v", ls(t, h.Path("/etc/baton")))
	}
	if _, err := h.Exec(context.Background(), "dpkg", "-s", "baton"); err == nil {
		t.Error("dpkg -s baton still knows the package after the purge")
	}
}

// TestDebPurge: a purge after a life with no services leaves nothing of baton but its
// group, and the files the administrator put in /etc/baton.
func TestDebPurge(t *testing.T) {
	t.Parallel()
	h := bootHost(t, "pkgpurge", "v1.0.0")
	h.MustExec(t, "dpkg", "-i", deb("v1.0.0"))
	files := strings.Fields(h.MustExec(t, "dpkg-query", "-L", "baton"))
	h.configure()
	h.write("/etc/baton/known_hosts", "# the administrator's\n")
	h.startAndApply(h.fleet("no services", "", nil))

	out := h.MustExec(t, "dpkg", "-P", "baton")
	if !strings.Contains(out, "kept /etc/baton") {
		t.Errorf("the purge does not say it kept /etc/baton:\n%s", out)
	}
	if h.ok("systemctl is-active --quiet baton") || h.exists("/etc/systemd/system/multi-user.target.wants/baton.service") {
		t.Error("baton is still running or enabled after the purge")
	}
	for _, p := range []string{stateDir, "/run/baton"} {
		if h.ok("test -e " + p) {
			t.Errorf("%s is still there after the purge", p)
		}
	}
	if got := ls(t, h.Path("/etc/baton")); !slices.Equal(got, []string{"known_hosts"}) {
		t.Errorf("/etc/baton after the purge holds %v, want only the administrator's known_hosts", got)
	}
	for _, f := range files {
		if info, err := os.Lstat(h.Path(f)); err == nil && !info.IsDir() {
			t.Errorf("%s is still there after the purge", f)
		}
	}
	if !h.ok("getent group baton") {
		t.Error("the purge removed the baton group (docs/packaging.md says it stays)")
	}
}

// TestRPMLifecycle installs the .rpm with rpm itself on the (Debian) systemd host, to
// run the same scripts the rpm way: %post with 1 then 2, %preun and %postun with 1 on
// upgrade and 0 on erase.
func TestRPMLifecycle(t *testing.T) {
	t.Parallel()
	requireTools(t, "rpm")
	h := bootHost(t, "pkgrpm", "v1.0.0", "v1.1.0")
	rpmCmd := func(args ...string) string {
		// --nodeps: the host's packages are in dpkg's database, not rpm's.
		return h.MustExec(t, append([]string{"rpm", "--nodeps"}, args...)...)
	}

	out := rpmCmd("-i", rpm("v1.0.0"))
	h.installed(out)
	cfg := h.configure()
	commit := h.fleet("no services", "", nil)
	h.startAndApply(commit)

	pid := h.show("MainPID")
	rpmCmd("-U", rpm("v1.1.0"))
	if got := h.show("MainPID"); got == pid || h.show("ActiveState") != "active" {
		t.Fatalf("after rpm -U baton is %s with MainPID %s (was %s), want restarted", h.show("ActiveState"), got, pid)
	}
	if got := h.read(configFile); got != cfg {
		t.Errorf("rpm -U changed %s", configFile)
	}
	if h.exists(configFile + ".rpmnew") {
		t.Errorf("rpm -U left %s.rpmnew: the template did not change", configFile)
	}
	if got := h.MustExec(t, "baton", "version"); !strings.HasPrefix(got, "baton v1.1.0 ") {
		t.Errorf("baton version after rpm -U = %q", got)
	}

	out = rpmCmd("-e", "baton")
	if got := h.show("ActiveState"); got != "inactive" {
		t.Errorf("baton is %s after rpm -e", got)
	}
	if h.exists("/etc/systemd/system/multi-user.target.wants/baton.service") {
		t.Error("baton is still enabled after rpm -e")
	}
	if !strings.Contains(out, "kept "+stateDir) {
		t.Errorf("rpm -e does not say what it kept:\n%s", out)
	}
	// rpm keeps a changed %config(noreplace) file as .rpmsave; the state stays.
	if got := h.read(configFile + ".rpmsave"); got != cfg {
		t.Errorf("%s.rpmsave = %q, want the administrator's file", configFile, got)
	}
	if h.lastGood() != commit {
		t.Error("rpm -e lost the state")
	}
	if h.exists("/usr/bin/baton") {
		t.Error("rpm -e left /usr/bin/baton")
	}
}

// maxExposure bounds the overall exposure level of baton.service that systemd-analyze
// security reports (0 safest, 10 unprotected); docs/packaging.md gives the score.
const maxExposure = 4.0

// exposure is the overall exposure level in the output of systemd-analyze security,
// 2.9 and "OK" for example; -1 when there is none.
func exposure(out string) (float64, string) {
	_, after, ok := strings.Cut(out, "Overall exposure level for baton.service: ")
	if !ok {
		return -1, ""
	}
	line, _, _ := strings.Cut(after, "\n")
	f := strings.Fields(line)
	if len(f) < 2 {
		return -1, ""
	}
	score, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1, ""
	}
	return score, f[1]
}

// ls lists a directory of the machine, nil when it does not exist.
func ls(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// holdService is a service whose check fails until /srv/gate/open exists: an upgrade
// to it stays in VERIFYING (for up to its healthyDeadline) until the test opens the gate.
// The check switches to user nobody first, as a check run as another user does: that
// it ever passes proves the sandbox of baton.service allows it (CAP_SETUID, CAP_SETGID,
// the system call filter).
const holdService = `version: "1"
units: [hold.service]
checks:
  - name: gate
    exec: {command: ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/test", "-e", "/srv/gate/open"]}
    interval: 200ms
    successes: 1
    failures: 100000
`

// holdUnit runs from its release directory, as a real service does: the purge must
// keep that directory while the unit is installed.
const holdUnit = `[Unit]
Description=baton package test: a service that holds an upgrade open

[Service]
Environment=RELEASE={{ .Release }}
ExecStart=/bin/sleep infinity

[Install]
WantedBy=multi-user.target
`
