package agent_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-fleet/baton/api"
	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/internal/testfleet"
	stager "github.com/baton-fleet/baton/release"
	"github.com/baton-fleet/baton/spec"
)

// TestBadInput runs every kind of bad input of issues 7 and 18 through the real agent on one
// real host: commits that are not signed by a trusted key (and the branch put back
// after one), a developer's signed commit fast-forwarded onto a branch whose release
// signers do not list the developer, a force-pushed branch, an older signed commit after a new clone,
// artifacts that must not be installed, an artifact server that asks to be tried again
// in a year, a redirect to a host the artifact policy does not allow, archives that
// try to leave their release directory, unit names that would take over the host, unit
// files that other readers read otherwise than systemd (an Alias= they hide), [Install]
// Also=, an instance file overriding a template of the host, and repository files built
// to exhaust or confuse the parser. Each case asserts the exact error the agent
// reports (in `baton status --json`, in the quarantine and in the journal), and that
// the running service was not touched: the same last good revision, the same
// version served by the same main PID, and not one file changed under
// /etc/systemd/system. validate-config on the host refuses etcd credentials over plain
// http. A good commit then goes through: nothing wedged the agent.
func TestBadInput(t *testing.T) {
	h := newHarness(t)
	// Every commit is signed by the key the agent trusts, unless a case says otherwise.
	sign, fingerprint := h.sshSigning(t, "trusted", "stranger", "developer")

	// A unit file that exists on the host and is not baton's.
	foreign := "[Unit]\nDescription=not baton's\n\n[Service]\nExecStart=/bin/sleep infinity\n"
	if err := os.WriteFile(h.host.Path("/etc/systemd/system/foreign.service"), []byte(foreign), 0o644); err != nil {
		t.Fatal(err)
	}

	goodURL, goodSum := h.rel.Publish(t, "1.0.0", "ok")
	good := badFiles(fleetYAML, badServiceYAML("1.0.0", badArtifact{url: goodURL, sum: goodSum, name: "demo"}))
	// evil is a release that would install fine: what an attacker wants to run.
	evilURL, evilSum := h.rel.Publish(t, "6.6.6", "ok")
	evil := badFiles(fleetYAML, badServiceYAML("6.6.6", badArtifact{url: evilURL, sum: evilSum, name: "demo"}))

	cGood := badCommit(h, "demo 1.0.0", good)
	h.startAgent()
	h.settled(cGood)
	if lg := h.host.LastGood(); lg.Revision != cGood {
		t.Fatalf("the first signed commit was not applied: %s", h.host.QuarantineReason(cGood))
	}
	h.consistent()

	// What must stay as it is.
	pid := h.unitProp("demo.service", "MainPID")
	if pid == "" || pid == "0" {
		t.Fatalf("demo.service has no main PID (%q)", pid)
	}
	unitDir := h.host.Path("/etc/systemd/system")
	units := badSnapshot(t, unitDir)
	passwd := badSnapshot(t, h.host.Path("/etc/passwd"))
	releases := badSnapshot(t, h.host.Path(stateDir+"/releases/demo"))
	untouched := func(t *testing.T) {
		t.Helper()
		if !h.host.AgentActive() {
			t.Errorf("the agent is no longer running")
		}
		if lg := h.host.LastGood(); lg.Revision != cGood {
			t.Errorf("last good is %s, want %s", short(lg.Revision), short(cGood))
		}
		if s := h.host.TxnState(); s != "" {
			t.Errorf("a transaction is open in %s", s)
		}
		if got := h.host.Served(); got != "1.0.0" {
			t.Errorf("demo serves %q, want 1.0.0", got)
		}
		if got := h.unitProp("demo.service", "MainPID"); got != pid {
			t.Errorf("demo.service's main PID is %s, was %s: it was restarted", got, pid)
		}
		if got := badSnapshot(t, unitDir); !maps.Equal(got, units) {
			t.Errorf("/etc/systemd/system changed:\n%s", badDiff(units, got))
		}
		if got := badSnapshot(t, h.host.Path("/etc/passwd")); !maps.Equal(got, passwd) {
			t.Errorf("/etc/passwd changed")
		}
		// Archives that failed to unpack leave nothing behind, nor anything outside.
		if got := badSnapshot(t, h.host.Path(stateDir+"/releases/demo")); !maps.Equal(got, releases) {
			t.Errorf("the demo release directories changed:\n%s", badDiff(releases, got))
		}
		if pwned, _ := filepath.Glob(h.host.Path("/etc/baton-pwned*")); len(pwned) > 0 {
			t.Errorf("an archive wrote outside its release directory: %v", pwned)
		}
	}

	stage := func(version string, a badArtifact) string {
		return fmt.Sprintf("stage: stage demo release %s: artifact %s: ", badReleaseID(version, a.sum), a.url)
	}
	// archive cases: a tar.gz served by the release server, with the right sha256.
	archive := func(name, version string, entries ...badEntry) (badArtifact, map[string]string) {
		url, sum := badServe(t, h, name, badTarGz(t, entries...))
		a := badArtifact{url: url, sum: sum, unpack: "tar.gz"}
		return a, badFiles(fleetYAML, badServiceYAML(version, a))
	}
	readme := badEntry{name: "README", body: "a harmless file first\n"}
	// reclone restarts the agent without its clone of the repository, as after a
	// clean-up of the state directory, once move has moved the branch.
	reclone := func(t *testing.T, move func()) {
		t.Helper()
		h.stopAgent()
		if err := os.RemoveAll(h.host.Path(stateDir + "/repo.git")); err != nil {
			t.Fatal(err)
		}
		move()
		h.startAgent()
		h.waitFor("the agent to answer", 30*time.Second, func() bool {
			_, err := h.host.Exec(context.Background(), "/usr/local/bin/baton", "status", "--json")
			return err == nil
		})
	}

	const (
		rejected    = "rejected"    // refused as bad input: status.rejected
		quarantined = "quarantined" // failed before touching the host: quarantined
		refused     = "refused"     // never accepted from the repository: status.fetch.error
		blocked     = "blocked"     // the host is in the way: status.phase and lastResult, nothing quarantined
		retried     = "retried"     // the host's trouble, not the release's: aborted before the switch, tried again after a backoff
	)
	// unitRow is the evil release with its unit file edited by edit.
	unitRow := func(edit func(unit string) string) map[string]string {
		files := maps.Clone(evil)
		files["services/demo/demo.service"] = edit(demoUnit)
		return files
	}
	// noAlias checks that no cron.service alias was linked to the repository's unit.
	noAlias := func(t *testing.T) {
		t.Helper()
		if _, err := os.Lstat(h.host.Path("/etc/systemd/system/cron.service")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("/etc/systemd/system/cron.service exists (%v): the alias was linked", err)
		}
	}
	debugShell := h.host.MustExec(t, "sh", "-c", "systemctl is-enabled debug-shell.service || true")
	// The template of an instance the repository ships: modprobe@.service, as systemd
	// finds it first on the host (units.Dir.Taken looks in the same order).
	template := ""
	for _, dir := range []string{"/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system"} {
		if _, err := os.Stat(h.host.Path(dir + "/modprobe@.service")); err == nil {
			template = dir + "/modprobe@.service"
			break
		}
	}
	if template == "" {
		t.Fatal("the host has no modprobe@.service")
	}
	templateSnap := badSnapshot(t, h.host.Path(template))
	// A server on the machine's address, which artifacts.allowInsecure allows, and a
	// name for the same address that it does not allow: a redirect to it is refused,
	// and were it followed, this server would see the request.
	var (
		slowGets, mirrorGets atomic.Int32
		oneYear              = strconv.Itoa(365 * 24 * 3600)
	)
	const mirror = "mirror.baton.test"
	srv := badHTTP(t, h.gateway, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/busy/demo":
			slowGets.Add(1)
			w.Header().Set("Retry-After", oneYear)
			w.WriteHeader(http.StatusServiceUnavailable)
		case r.URL.Path == "/moved/demo":
			http.Redirect(w, r, "http://"+mirror+":"+strings.TrimPrefix(r.Host, h.gateway+":")+"/mirror/demo", http.StatusFound)
		case r.URL.Path == "/mirror/demo":
			mirrorGets.Add(1)
			http.Redirect(w, r, evilURL, http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	hosts, err := os.ReadFile(h.host.Path("/etc/hosts"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.host.Path("/etc/hosts"), append(hosts, []byte(h.gateway+" "+mirror+"\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile(h.host.Path("/etc/hosts"), hosts, 0o644) })
	if out := h.host.MustExec(t, "getent", "hosts", mirror); !strings.HasPrefix(out, h.gateway+" ") {
		t.Fatalf("%s does not resolve to %s in the host: %q", mirror, h.gateway, out)
	}

	var beforeRewind string // the branch's head before the force-push
	tests := []struct {
		name string
		kind string
		// bad makes the bad commit and returns it with the exact error to report.
		bad func(t *testing.T) (commit, want string)
		// after puts the repository back in order, when the case disturbed it.
		after func(t *testing.T)
	}{
		{name: "unsigned commit, then the branch put back", kind: rejected, bad: func(t *testing.T) (string, string) {
			// Issue 18: the agent polls an unsigned head on the signed one, and the
			// branch is put back. The unsigned head never becomes the anchor of the
			// rewind check, so the signed head is taken again, not refused as rewound.
			beforeRewind = h.repo.Head()
			sign("")
			defer sign("trusted")
			c := badCommit(h, "unsigned 6.6.6 on the signed head", evil)
			return c, fmt.Sprintf("signature: verify %s: commit is not signed", badShort(c))
		}, after: func(t *testing.T) {
			h.repo.Rewind(beforeRewind)
			h.waitEvery("the agent to take the signed head again", time.Minute, 300*time.Millisecond, func() bool {
				st := h.status()
				return st.Tracked == beforeRewind && st.Fetch.Error == ""
			})
		}},
		{name: "unsigned commit", kind: rejected, bad: func(t *testing.T) (string, string) {
			sign("")
			defer sign("trusted")
			c := badCommit(h, "unsigned 6.6.6", evil)
			return c, fmt.Sprintf("signature: verify %s: commit is not signed", badShort(c))
		}},
		{name: "commit signed by an untrusted key", kind: rejected, bad: func(t *testing.T) (string, string) {
			sign("stranger")
			defer sign("trusted")
			c := badCommit(h, "signed by a stranger 6.6.6", evil)
			return c, fmt.Sprintf("signature: verify %s: bad commit signature: SSH key %s is not in the allowed signers", badShort(c), fingerprint["stranger"])
		}},
		{name: "tampered signature", kind: rejected, bad: func(t *testing.T) (string, string) {
			c := badTamper(t, h, good, evil)
			return c, fmt.Sprintf("signature: verify %s: bad commit signature: SSH signature by key %s (committer@example.com) does not verify: the commit was changed after signing, or the signature is corrupt", badShort(c), fingerprint["trusted"])
		}},
		{name: "a developer's signed commit fast-forwarded onto the branch", kind: rejected, bad: func(t *testing.T) (string, string) {
			// Issue 18: the developer's key is trusted, and the release signers name
			// the release key alone. A pusher without a key fast-forwards the branch to
			// the developer's signed commit of a feature branch: it descends from the
			// applied commit and its signature verifies, but it is not a release.
			beforeRewind = h.repo.Head()
			sign("developer")
			defer sign("trusted")
			developer, err := os.ReadFile(h.repo.Git("config", "user.signingkey") + ".pub")
			if err != nil {
				t.Fatal(err)
			}
			signers := h.host.Path("/etc/baton/allowed_signers")
			trusted, err := os.ReadFile(signers)
			if err != nil {
				t.Fatal(err)
			}
			extra := h.extra
			badRestart(h, func() {
				badFile(t, signers, string(trusted)+"committer@example.com namespaces=\"git\" "+string(developer))
				badFile(t, h.host.Path("/etc/baton/release_signers"), string(trusted))
				h.writeConfig("  verify:\n    sshAllowedSigners: /etc/baton/allowed_signers\n    release: {sshAllowedSigners: /etc/baton/release_signers}\n")
			})
			t.Cleanup(func() {
				// Whatever happened, the rows after this one run without the policy.
				if h.extra != extra {
					badRestart(h, func() {
						badFile(t, signers, string(trusted))
						h.writeConfig(extra)
					})
				}
			})
			badClear(h)
			badWrite(h, evil)
			h.repo.Git("add", "--all")
			h.repo.Git("commit", "--quiet", "--allow-empty", "--no-verify", "-m", "feature work 6.6.6, signed by a developer")
			c := h.repo.Head()
			h.repo.Git("push", "--quiet", "origin", "HEAD:refs/heads/feature")
			h.repo.Git("push", "--quiet", "origin", "HEAD:refs/heads/main") // the fast-forward
			return c, fmt.Sprintf("signature: verify %s: signed by ssh key %s (committer@example.com), which is not a release signer for branch main", badShort(c), fingerprint["developer"])
		}, after: func(t *testing.T) {
			h.repo.Rewind(beforeRewind)
			h.repo.Git("push", "--quiet", "origin", "--delete", "feature")
			h.waitEvery("the agent to take the branch put back", time.Minute, 300*time.Millisecond, func() bool {
				st := h.status()
				return st.Tracked == beforeRewind && st.Fetch.Error == ""
			})
		}},
		{name: "force-pushed branch", kind: refused, bad: func(t *testing.T) (string, string) {
			// The rewind check is anchored at the last head that verified (issue 18):
			// first a signed commit the agent verifies, then rejects (no group for h1).
			files := maps.Clone(evil)
			files["fleet.yaml"] = strings.Replace(fleetYAML, `hosts: ["h*"]`, `hosts: ["web-*"]`, 1)
			head := badCommit(h, "signed, no group for h1", files)
			h.waitEvery("the agent to verify and reject "+short(head), time.Minute, 300*time.Millisecond, func() bool {
				st := h.status()
				return st.Rejected != nil && st.Rejected.Commit == head
			})
			beforeRewind = head
			// A new, valid, signed release on a branch rewritten from the last good
			// commit: only the rewrite is wrong with it.
			h.repo.Git("reset", "--quiet", "--hard", cGood)
			badWrite(h, evil)
			h.repo.Git("add", "--all")
			h.repo.Git("commit", "--quiet", "--no-verify", "-m", "rewritten history 6.6.6")
			h.repo.Git("push", "--quiet", "--force", "origin", "HEAD:refs/heads/main")
			c := h.repo.Head()
			return c, fmt.Sprintf("branch rewound: main of file:///srv/git/repo.git moved from %s to %s, which does not descend from it (a force-push or reset); staying on %s (set repo.allowRewind: true in agent.yaml to accept such a head)",
				badShort(head), badShort(c), badShort(head))
		}, after: func(t *testing.T) {
			// Give the agent a few polls to change its mind, then put the branch back.
			time.Sleep(3 * time.Second)
			c := h.repo.Head()
			for _, line := range strings.Split(h.journal(), "\n") {
				if strings.Contains(line, "to="+short(c)) || strings.Contains(line, "commit="+short(c)) {
					t.Errorf("the agent accepted or acted on the rewritten head: %s", line)
				}
			}
			h.repo.Rewind(beforeRewind)
			h.waitEvery("the agent to fetch again", time.Minute, 300*time.Millisecond, func() bool {
				return h.status().Fetch.Error == ""
			})
		}},
		{name: "an older signed commit after a new clone", kind: rejected, bad: func(t *testing.T) (string, string) {
			// Issue 18: the clone is made again (or cleaned up) and the branch now holds
			// a validly signed commit that does not contain the applied one. The agent
			// cannot show that it descends from what it applied: a possible downgrade.
			beforeRewind = h.repo.Head()
			var c string
			reclone(t, func() {
				badClear(h)
				badWrite(h, evil)
				h.repo.Git("add", "--all")
				c = h.repo.Git("commit-tree", "-S", "-m", "an older release 6.6.6, signed", h.repo.Git("write-tree"))
				h.repo.Git("push", "--quiet", "--force", "origin", c+":refs/heads/main")
			})
			return c, fmt.Sprintf("the applied commit %s is not in the local clone (it was cloned again or cleaned up), so commit %s cannot be shown to descend from it and could be a downgrade; set repo.allowRewind: true in agent.yaml to accept it",
				short(cGood), short(c))
		}, after: func(t *testing.T) {
			// A new clone again, of the branch put back.
			reclone(t, func() { h.repo.Rewind(beforeRewind) })
			h.waitEvery("the agent to clone the branch put back", time.Minute, 300*time.Millisecond, func() bool {
				st := h.status()
				return st.Tracked == beforeRewind && st.Fetch.Error == ""
			})
		}},
		{name: "artifact with a wrong sha256", kind: quarantined, bad: func(t *testing.T) (string, string) {
			a := badArtifact{url: evilURL, sum: strings.Repeat("0", 64), name: "demo"}
			c := badCommit(h, "wrong sha256", badFiles(fleetYAML, badServiceYAML("6.0.1", a)))
			return c, stage("6.0.1", a) + "sha256 mismatch: got " + evilSum + ", want " + a.sum
		}},
		{name: "http artifact from a host not allowed", kind: quarantined, bad: func(t *testing.T) (string, string) {
			a := badArtifact{url: "http://releases.example.com/demo/6.0.2/demo", sum: evilSum, name: "demo"}
			c := badCommit(h, "plain http", badFiles(fleetYAML, badServiceYAML("6.0.2", a)))
			return c, stage("6.0.2", a) + "plain http:// is refused; use https://, or name the host releases.example.com in the agent's artifacts.allowInsecure"
		}},
		{name: "artifact server answering 503 with a one-year Retry-After", kind: retried, bad: func(t *testing.T) (string, string) {
			// Issue 18: the wait is capped at 30 s whatever the Retry-After, and there are
			// 5 attempts: staging fails after two minutes, as the host's trouble (the
			// server may answer later), so the commit is tried again after a backoff,
			// not quarantined. Nothing was switched: the lease was never asked for.
			slowGets.Store(0)
			a := badArtifact{url: srv + "/busy/demo", sum: evilSum, name: "demo"}
			c := badCommit(h, "503, Retry-After: one year", badFiles(fleetYAML, badServiceYAML("6.0.3", a)))
			return c, fmt.Sprintf("this host could not stage: stage demo release %s: download %s: GET %s giving up after %d attempt(s); trying again in 30s",
				badReleaseID("6.0.3", a.sum), a.url, a.url, 1+stager.DefaultRetryMax)
		}, after: func(t *testing.T) {
			if got, want := slowGets.Load(), int32(1+stager.DefaultRetryMax); got != want {
				t.Errorf("the busy server got %d requests, want %d", got, want)
			}
		}},
		{name: "artifact redirected to a host not allowed", kind: quarantined, bad: func(t *testing.T) (string, string) {
			// Issue 18: the first URL is on an allowed host; the hop it redirects to is
			// checked as the first URL was, and refused before it is requested.
			mirrorGets.Store(0)
			a := badArtifact{url: srv + "/moved/demo", sum: evilSum, name: "demo"}
			c := badCommit(h, "redirect to a host not allowed", badFiles(fleetYAML, badServiceYAML("6.0.4", a)))
			to := "http://" + mirror + ":" + strings.TrimPrefix(srv, "http://"+h.gateway+":") + "/mirror/demo"
			return c, fmt.Sprintf("stage: stage demo release %s: download %s: redirect to %s refused: plain http:// is refused; use https://, or name the host %s in the agent's artifacts.allowInsecure",
				badReleaseID("6.0.4", a.sum), a.url, to, mirror)
		}, after: func(t *testing.T) {
			if n := mirrorGets.Load(); n != 0 {
				t.Errorf("the host the redirect named got %d requests", n)
			}
		}},
		{name: "archive with a dot-dot entry", kind: quarantined, bad: func(t *testing.T) (string, string) {
			a, files := archive("dotdot.tar.gz", "6.1.0", readme, badEntry{name: "../../../../../../../../etc/baton-pwned-dotdot", body: "pwned\n"})
			c := badCommit(h, "archive with ../", files)
			return c, stage("6.1.0", a) + `unpack entry "../../../../../../../../etc/baton-pwned-dotdot": name has a ".." component`
		}},
		{name: "archive with an absolute path", kind: quarantined, bad: func(t *testing.T) (string, string) {
			a, files := archive("absolute.tar.gz", "6.1.1", readme, badEntry{name: "/etc/baton-pwned-absolute", body: "pwned\n"})
			c := badCommit(h, "archive with an absolute path", files)
			return c, stage("6.1.1", a) + `unpack entry "/etc/baton-pwned-absolute": absolute name`
		}},
		{name: "archive with a symlink escaping", kind: quarantined, bad: func(t *testing.T) (string, string) {
			a, files := archive("symlink.tar.gz", "6.1.2", readme,
				badEntry{name: "escape", link: "../../../../../../../../etc"},
				badEntry{name: "escape/baton-pwned-symlink", body: "pwned\n"})
			c := badCommit(h, "archive with a symlink out", files)
			return c, stage("6.1.2", a) + `unpack entry "escape": link target "../../../../../../../../etc" leaves the destination`
		}},
		{name: "decompression bomb", kind: quarantined, bad: func(t *testing.T) (string, string) {
			const size = 5 << 30 // over the 4 GiB unpacked limit of release.DefaultLimits
			bomb := badBomb(t, size)
			t.Logf("the bomb: %d bytes of tar.gz that unpack to %d", len(bomb), int64(size))
			url, sum := badServe(t, h, "bomb.tar.gz", bomb)
			a := badArtifact{url: url, sum: sum, unpack: "tar.gz"}
			c := badCommit(h, "decompression bomb", badFiles(fleetYAML, badServiceYAML("6.1.3", a)))
			return c, stage("6.1.3", a) + fmt.Sprintf(`unpack entry "bomb": %d bytes would take the archive over its limit of %d unpacked bytes`, int64(size), int64(4<<30))
		}},
		{name: "unit named ../../etc/passwd", kind: rejected, bad: func(t *testing.T) (string, string) {
			files := maps.Clone(good)
			files["services/demo/service.yaml"] = strings.Replace(files["services/demo/service.yaml"], "units: [demo.service]", `units: [demo.service, "../../etc/passwd"]`, 1)
			files["etc/passwd"] = "root::0:0:root:/root:/bin/sh\n"
			c := badCommit(h, "a unit named ../../etc/passwd", files)
			return c, `services/demo/service.yaml:2: units: invalid unit name "../../etc/passwd": only letters, digits and @._- are allowed`
		}},
		{name: "unit named baton.service", kind: rejected, bad: func(t *testing.T) (string, string) {
			files := maps.Clone(good)
			files["services/demo/service.yaml"] = strings.Replace(files["services/demo/service.yaml"], "units: [demo.service]", "units: [demo.service, baton.service]", 1)
			files["services/demo/baton.service"] = "[Service]\nExecStart=/bin/sh -c 'echo owned > /etc/baton-pwned-unit'\n"
			c := badCommit(h, "a unit named baton.service", files)
			return c, "services/demo/service.yaml:2: units: baton.service is reserved: it is baton's own unit, and a repository that replaced it could stop the agent or run anything as root in its place; an agent accepts it only when its config allows it by name"
		}},
		{name: "unit file of a foreign unit", kind: blocked, bad: func(t *testing.T) (string, string) {
			files := maps.Clone(good)
			files["fleet.yaml"] = strings.Replace(fleetYAML, "services: [demo]", "services: [demo, other]", 1)
			files["services/other/service.yaml"] = "version: \"1\"\nunits: [foreign.service]\n"
			files["services/other/foreign.service"] = "[Service]\nExecStart=/bin/sh -c 'echo owned > /etc/baton-pwned-foreign'\n"
			c := badCommit(h, "claim a foreign unit", files)
			return c, "blocked: unit file foreign.service exists in /etc/systemd/system and baton does not own it; remove it, or rename the unit in the repository"
		}},
		{name: "a comment ending in a backslash hides Alias=cron.service", kind: rejected, bad: func(t *testing.T) (string, string) {
			// Issue 18: go-systemd's parser continued the comment and hid the Alias= line,
			// which systemd reads: enabling the unit linked cron.service to it.
			c := badCommit(h, "Alias= behind a comment", unitRow(func(u string) string { return u + "# note \\\nAlias=cron.service\n" }))
			return c, "services/demo/demo.service:11: ambiguous unit file: a comment that ends in a backslash: systemd ends the comment at the end of the line, other readers continue it onto the next line (and hide that line); remove the backslash"
		}, after: noAlias},
		{name: "a line ending in two backslashes hides Alias=cron.service", kind: rejected, bad: func(t *testing.T) (string, string) {
			// Issue 18: systemd reads a trailing "\\" as an escaped backslash and does not
			// continue the line; go-systemd continued it, and hid the Alias= line.
			c := badCommit(h, "Alias= behind a double backslash", unitRow(func(u string) string {
				return strings.Replace(u, "WantedBy=multi-user.target\n", "WantedBy=multi-user.target \\\\\nAlias=cron.service\n", 1)
			}))
			return c, `services/demo/demo.service:10: ambiguous unit file: a line that ends in more than one backslash: systemd reads "\\" as an escaped backslash and continues the line only after an odd count, other readers continue after any; rewrite the line`
		}, after: noAlias},
		{name: "[Install] Also= naming units of the host", kind: rejected, bad: func(t *testing.T) (string, string) {
			// Issue 18: enabling the unit enabled a root shell on tty9, disabling it
			// disabled SSH.
			c := badCommit(h, "Also=", unitRow(func(u string) string { return u + "Also=ssh.service debug-shell.service\n" }))
			return c, "services/demo/demo.service:11: [Install] Also=ssh.service debug-shell.service is refused: enabling or disabling this unit would enable or disable ssh.service, debug-shell.service too, which baton does not own; list the units this service needs in units instead"
		}, after: func(t *testing.T) {
			if got := h.host.MustExec(t, "sh", "-c", "systemctl is-enabled debug-shell.service || true"); got != debugShell {
				t.Errorf("debug-shell.service is %q, was %q", got, debugShell)
			}
		}},
		{name: "an instance of a template of the host", kind: blocked, bad: func(t *testing.T) (string, string) {
			// Issue 18: modprobe@baton.service in /etc/systemd/system would override the
			// host's modprobe@.service for that instance, and systemd lists only the
			// template as taken. The agent stops before the lease.
			files := maps.Clone(evil)
			files["fleet.yaml"] = strings.Replace(fleetYAML, "services: [demo]", "services: [demo, other]", 1)
			files["services/other/service.yaml"] = "version: \"1\"\nunits: [modprobe@baton.service]\n"
			files["services/other/modprobe@baton.service"] = "[Service]\nExecStart=/bin/sh -c 'echo owned > /etc/baton-pwned-instance'\n"
			c := badCommit(h, "override a template of the host for one instance", files)
			return c, "blocked: unit modprobe@baton.service would override " + template + ", which baton does not own; remove it, or rename the unit in the repository"
		}, after: func(t *testing.T) {
			if got := badSnapshot(t, h.host.Path(template)); !maps.Equal(got, templateSnap) {
				t.Errorf("%s changed", template)
			}
		}},
		{name: "YAML billion laughs", kind: rejected, bad: func(t *testing.T) (string, string) {
			files := maps.Clone(good)
			files["fleet.yaml"] = badLaughs()
			c := badCommit(h, "billion laughs", files)
			return c, "fleet.yaml:2: unknown field \"lol\"; known fields: apiVersion, freeze, groups\n" +
				"fleet.yaml:10: expected a string, got a list"
		}},
		{name: "100 MB fleet.yaml", kind: rejected, bad: func(t *testing.T) (string, string) {
			// Valid YAML (fleet.yaml, then comment lines): only its size is wrong. It is
			// over gitsync's export limit (64 MiB), before spec's 1 MiB limit is reached.
			badClear(h)
			badWrite(h, good)
			badBigFile(t, filepath.Join(h.repo.Work, "fleet.yaml"), fleetYAML, 100<<20)
			c := h.repo.Commit("a 100 MB fleet.yaml")
			t.Cleanup(func() {
				out, _ := h.host.Exec(context.Background(), "sh", "-c", "grep -h VmHWM /proc/$(systemctl show -P MainPID "+h.host.AgentUnit()+")/status; du -sh "+stateDir+"/repo.git")
				t.Logf("after a 100 MB fleet.yaml, the agent's peak RSS and its repository: %s", strings.Join(strings.Fields(string(out)), " "))
			})
			return c, fmt.Sprintf("export %s: more than 64 MiB of files (at fleet.yaml)", badShort(c))
		}},
		{name: "binary garbage in service.yaml", kind: rejected, bad: func(t *testing.T) (string, string) {
			files := maps.Clone(good)
			files["services/demo/service.yaml"] = "version: \"6.6.6\"\nunits: [demo.service]\n\x7fELF\x02\x01\x01\x00\x00\x00\xff\xfe\x03\x00>\x00"
			c := badCommit(h, "binary garbage", files)
			return c, "services/demo/service.yaml:3: not UTF-8 text (binary data?)"
		}},
		{name: "a group matching no host", kind: rejected, bad: func(t *testing.T) (string, string) {
			files := maps.Clone(evil)
			files["fleet.yaml"] = strings.Replace(fleetYAML, `hosts: ["h*"]`, `hosts: ["web-*"]`, 1)
			c := badCommit(h, "no group for h1", files)
			return c, `fleet.yaml:2: host "h1": no group's hosts match this host`
		}},
		{name: "two groups matching the host", kind: rejected, bad: func(t *testing.T) (string, string) {
			files := maps.Clone(evil)
			files["fleet.yaml"] = fleetYAML + `  - name: pets
    hosts: ["h1"]
    services: [demo]
`
			c := badCommit(h, "two groups for h1", files)
			return c, `fleet.yaml:7: host "h1" matches groups "web" (line 3) and "pets"; a host belongs to one group`
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.t = t
			start := time.Now()
			c, want := tt.bad(t)
			var st api.State
			h.waitEvery("the agent's verdict on "+short(c), 3*time.Minute, 300*time.Millisecond, func() bool {
				st = h.status()
				switch {
				case st.Rejected != nil && st.Rejected.Commit == c,
					tt.kind == refused && strings.Contains(st.Fetch.Error, short(c)),
					(tt.kind == blocked || tt.kind == retried) && st.LastResult != nil && st.LastResult.To == c,
					h.host.Quarantined(c) && h.host.TxnState() == "",
					h.host.LastGood().Revision == c:
					return true
				}
				return false
			})
			took := time.Since(start)
			st = h.status() // taken again: the verdict may have come after the last look
			j := h.journal()
			// A wrong verdict is an error, not a stop: what it touched is checked below.
			switch gotQ := h.host.QuarantineReason(c); {
			case tt.kind == rejected && (st.Rejected == nil || st.Rejected.Commit != c):
				t.Errorf("%s was not rejected: quarantined %q, last good %s", short(c), gotQ, short(h.host.LastGood().Revision))
			case tt.kind == rejected:
				if want := "idle at " + short(cGood); st.Phase != want {
					t.Errorf("phase %q after a rejection, want %q", st.Phase, want)
				}
				if st.Rejected.Reason != want {
					t.Errorf("rejected for\n%s\nwant\n%s", st.Rejected.Reason, want)
				}
				if !badLogged(j, "commit rejected; keeping the last good revision", "commit="+short(c), "err="+strconv.Quote(want)) {
					t.Errorf("the journal has no rejection of %s with the reason", short(c))
				}
			case tt.kind == quarantined && gotQ == "":
				t.Errorf("%s was not quarantined: rejected %+v, last good %s", short(c), st.Rejected, short(h.host.LastGood().Revision))
			case tt.kind == quarantined:
				if gotQ != want {
					t.Errorf("quarantined for\n%s\nwant\n%s", gotQ, want)
				}
				if !slices.ContainsFunc(st.Quarantined, func(q api.Quarantined) bool { return q.Commit == c && q.Reason == want }) {
					t.Errorf("baton status does not list %s as quarantined with the reason: %+v", short(c), st.Quarantined)
				}
				step, reason, _ := strings.Cut(want, ": ")
				if !badLogged(j, "upgrade failed; commit quarantined", "commit="+short(c), "step="+step, "reason="+strconv.Quote(reason)) {
					t.Errorf("the journal has no quarantine of %s with the reason", short(c))
				}
			case tt.kind == blocked:
				if st.Phase != want || st.LastResult == nil || st.LastResult.Outcome != api.OutcomeAborted || st.LastResult.Message != want {
					t.Errorf("phase %q, last result %+v; want both to say\n%s", st.Phase, st.LastResult, want)
				}
				if gotQ != "" {
					t.Errorf("a host-local conflict quarantined %s: %s", short(c), gotQ)
				}
				if !badLogged(j, "not upgrading: a unit file of the release belongs to someone else", "commit="+short(c), "reason="+strconv.Quote(want)) {
					t.Errorf("the journal does not report the conflict on %s", short(c))
				}
			case tt.kind == retried:
				if st.LastResult == nil || st.LastResult.Outcome != api.OutcomeAborted || st.LastResult.Message != want {
					t.Errorf("last result %+v; want it aborted with\n%s", st.LastResult, want)
				}
				if p := fmt.Sprintf("to try %s again (attempt 1 failed on this host: could not stage: ", short(c)); !strings.HasPrefix(st.Phase, "waiting until ") || !strings.Contains(st.Phase, p) {
					t.Errorf("phase %q, want it waiting to try %s again", st.Phase, short(c))
				}
				if gotQ != "" || st.Rejected != nil && st.Rejected.Commit == c {
					t.Errorf("the host's trouble quarantined or rejected %s: %q, %+v", short(c), gotQ, st.Rejected)
				}
				if !badLogged(j, "upgrade aborted before touching the host", "reason="+strconv.Quote(want)) {
					t.Errorf("the journal has no abort of %s with the reason", short(c))
				}
				if took > stager.DefaultRetryBudget {
					t.Errorf("the verdict took %v, over the retry budget of %v", took, stager.DefaultRetryBudget)
				}
			case tt.kind == refused:
				if st.Fetch.Error != want {
					t.Errorf("the fetch error is\n%s\nwant\n%s", st.Fetch.Error, want)
				}
				if !badLogged(j, "fetch the fleet repository", "err="+strconv.Quote(want)) {
					t.Errorf("the journal does not report the refused head %s", short(c))
				}
			}
			if tt.after != nil {
				tt.after(t)
			}
			untouched(t)
			if !t.Failed() {
				t.Logf("%s %s %v after the push: %s", tt.kind, short(c), took.Round(100*time.Millisecond), want)
			}
			if tt.kind == blocked || tt.name == "binary garbage in service.yaml" {
				t.Logf("baton status:\n%s", h.host.MustExec(t, "/usr/local/bin/baton", "status"))
			}
		})
	}
	// Issue 18: etcd credentials over plain http:// to a host that is not loopback are
	// refused by validate-config on the host (and so by the agent at start: the same
	// file is a case of config.TestParseConfigBad), every such endpoint named at its line.
	t.Run("etcd credentials over plain http", func(t *testing.T) {
		h.t = t
		data, err := os.ReadFile("../config/testdata/config/bad/etcd-credentials-plain.yaml")
		if err != nil {
			t.Fatal(err)
		}
		const file = "/etc/baton/etcd-plain.yaml"
		if err := os.WriteFile(h.host.Path(file), data, 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(h.host.Path(file))
		out, err := h.host.Command(context.Background(), "/usr/local/bin/baton", "validate-config", file).CombinedOutput()
		want := file + `:9: lease.etcd.endpoints[1]: plain http:// to "10.0.0.6", which is not a loopback host, would send the etcd password (lease.etcd.passwordFile) in clear; use https://
` + file + `:11: lease.etcd.endpoints[3]: plain http:// to "etcd.internal", which is not a loopback host, would send the etcd password (lease.etcd.passwordFile) in clear; use https://
2 error(s)
baton: ` + file + " is not valid\n"
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 || string(out) != want {
			t.Errorf("baton validate-config %s: %v\n%s\nwant exit 1 and\n%s", file, err, out, want)
		}
		untouched(t)
	})
	h.t = t

	// The bad commits wedged nothing: a good one goes through.
	badClear(h)
	cNext := h.push(release{version: "2.0.0", mode: "ok"})
	h.settled(cNext)
	if lg := h.host.LastGood(); lg.Revision != cNext {
		t.Fatalf("a good commit after the bad ones was not applied: %s", h.host.QuarantineReason(cNext))
	}
	h.consistent()
	if got, _ := os.ReadFile(h.host.Path("/etc/systemd/system/foreign.service")); string(got) != foreign {
		t.Errorf("the foreign unit file was changed")
	}
}

// badRestart stops the agent, lets change edit its files, and starts it again.
func badRestart(h *harness, change func()) {
	h.t.Helper()
	h.stopAgent()
	change()
	h.startAgent()
	h.waitFor("the agent to answer", 30*time.Second, func() bool {
		_, err := h.host.Exec(context.Background(), "/usr/local/bin/baton", "status", "--json")
		return err == nil
	})
}

// badFile writes a file on the host, readable by all and written by its owner only,
// as a trust anchor must be.
func badFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// badShort is a commit id as gitsync abbreviates it in its errors.
func badShort(c string) string { return commitid.Short(c) }

// badArtifact is one artifacts: entry of service.yaml.
type badArtifact struct{ url, sum, unpack, name string }

// badServiceYAML is the demo service at version with artifacts, checked as push does.
func badServiceYAML(version string, artifacts ...badArtifact) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: %q\nunits: [demo.service]\nartifacts:\n", version)
	for _, a := range artifacts {
		fmt.Fprintf(&b, "  - url: %q\n    sha256: %q\n", a.url, a.sum)
		if a.unpack != "" {
			fmt.Fprintf(&b, "    unpack: %s\n", a.unpack)
		}
		if a.name != "" {
			fmt.Fprintf(&b, "    name: %s\n", a.name)
		}
	}
	b.WriteString(testfleet.DemoChecks)
	return b.String()
}

// badFiles is a whole fleet repository: fleet.yaml and the demo service.
func badFiles(fleet, service string) map[string]string {
	return map[string]string{
		"fleet.yaml":                 fleet,
		"services/demo/service.yaml": service,
		"services/demo/demo.service": demoUnit,
	}
}

// badReleaseID is spec.Service.ReleaseID of a version with one artifact.
func badReleaseID(version, sum string) string {
	s := sha256.Sum256([]byte(sum + "\n"))
	return version + "-" + hex.EncodeToString(s[:])[:spec.ReleaseDigits]
}

// badClear empties the work clone but for .git, so that a commit holds only what the
// test writes next.
func badClear(h *harness) {
	h.t.Helper()
	entries, err := os.ReadDir(h.repo.Work)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != ".git" {
			h.repo.Remove(e.Name())
		}
	}
}

func badWrite(h *harness, files map[string]string) {
	for name, content := range files {
		h.repo.WriteFile(name, content)
	}
}

// badCommit commits exactly files as the whole tree and pushes it.
func badCommit(h *harness, msg string, files map[string]string) string {
	h.t.Helper()
	badClear(h)
	badWrite(h, files)
	return h.repo.Commit(msg)
}

// badTamper makes the attack a signature must stop: a commit the trusted key signed
// (over the good tree) rewritten to carry the evil tree, the signature kept. It
// pushes it and returns its id.
func badTamper(t *testing.T, h *harness, good, evil map[string]string) string {
	t.Helper()
	badClear(h)
	badWrite(h, good)
	h.repo.Git("add", "--all")
	h.repo.Git("commit", "--quiet", "--allow-empty", "--no-verify", "-m", "an innocent commit")
	signed := h.repo.Git("cat-file", "commit", "HEAD")
	if !strings.Contains(signed, "\ngpgsig -----BEGIN SSH SIGNATURE-----") {
		t.Fatalf("the commit to tamper with is not signed:\n%s", signed)
	}
	goodTree := h.repo.Git("rev-parse", "HEAD^{tree}")
	badClear(h)
	badWrite(h, evil)
	h.repo.Git("add", "--all")
	evilTree := h.repo.Git("write-tree")
	tampered := strings.Replace(signed, "tree "+goodTree+"\n", "tree "+evilTree+"\n", 1)
	if tampered == signed || goodTree == evilTree {
		t.Fatalf("could not swap tree %s for %s in\n%s", goodTree, evilTree, signed)
	}
	obj := filepath.Join(t.TempDir(), "commit")
	if err := os.WriteFile(obj, []byte(tampered+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := h.repo.Git("hash-object", "-t", "commit", "-w", obj)
	h.repo.Git("update-ref", "HEAD", c)
	h.repo.Git("push", "--quiet", "origin", "HEAD:refs/heads/main")
	if got := h.repo.Git("rev-parse", "HEAD^{tree}"); got != evilTree {
		t.Fatalf("the tampered commit has tree %s, want %s", got, evilTree)
	}
	return c
}

// badServe publishes data on the release server and returns its URL and sha256.
func badServe(t *testing.T, h *harness, name string, data []byte) (string, string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(f, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return h.rel.Serve("/bad/"+name, f), hex.EncodeToString(sum[:])
}

// badHTTP serves handler on addr (a port of its own) for the test, and returns its
// http:// URL.
func badHTTP(t *testing.T, addr string, handler http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// badEntry is one entry of a test archive: a file, or a symlink when link is set.
type badEntry struct{ name, body, link string }

func badTarGz(t *testing.T, entries ...badEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	gz := gzip.NewWriter(&b)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: tar.TypeReg, ModTime: time.Unix(1700000000, 0)}
		if e.link != "" {
			hdr = &tar.Header{Name: e.name, Mode: 0o777, Linkname: e.link, Typeflag: tar.TypeSymlink, ModTime: hdr.ModTime}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// badBomb is a tar.gz of a few megabytes holding one file of size bytes of zeros: a
// gzip member with the tar header, then the same member of 1 MiB of zeros over and
// over (gzip readers read concatenated members as one stream).
func badBomb(t *testing.T, size int64) []byte {
	t.Helper()
	member := func(data []byte) []byte {
		var b bytes.Buffer
		gz, err := gzip.NewWriterLevel(&b, gzip.BestCompression)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := gz.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := gz.Close(); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	if err := tw.WriteHeader(&tar.Header{Name: "bomb", Mode: 0o644, Size: size, Typeflag: tar.TypeReg, ModTime: time.Unix(1700000000, 0)}); err != nil {
		t.Fatal(err)
	}
	const chunk = 1 << 20
	zeros := member(make([]byte, chunk))
	out := bytes.NewBuffer(member(hdr.Bytes()))
	for range size / chunk {
		out.Write(zeros)
	}
	return out.Bytes()
}

// badLaughs is a fleet.yaml with the billion laughs: nine levels of aliases of nine
// aliases, 9^9 strings once expanded, used where the groups' hosts go.
func badLaughs() string {
	var b strings.Builder
	b.WriteString("apiVersion: baton/v1\nlol:\n")
	b.WriteString(`  a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]` + "\n")
	prev := "a"
	for _, c := range "bcdefghi" {
		refs := strings.TrimSuffix(strings.Repeat("*"+prev+", ", 9), ", ")
		fmt.Fprintf(&b, "  %c: &%c [%s]\n", c, c, refs)
		prev = string(c)
	}
	b.WriteString("groups:\n  - name: web\n    hosts: *i\n    services: [demo]\n")
	return b.String()
}

// badBigFile writes head and then comment lines up to size bytes: a valid YAML file.
func badBigFile(t *testing.T, name, head string, size int) {
	t.Helper()
	line := "# " + strings.Repeat("padding ", 12) + "\n"
	var b bytes.Buffer
	b.Grow(size)
	b.WriteString(head)
	for b.Len()+len(line) <= size {
		b.WriteString(line)
	}
	b.WriteString(strings.Repeat("#", size-b.Len()-1) + "\n")
	if err := os.WriteFile(name, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// badSnapshot maps every name under root (or root itself, a file) to what it is: a
// directory, a link and its target, or a file and its sha256.
func badSnapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			snap[rel] = "link to " + target
		case d.IsDir():
			snap[rel] = "directory"
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			snap[rel] = "file " + hex.EncodeToString(sum[:8])
		}
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	return snap
}

// badDiff lists the names whose snapshots differ.
func badDiff(before, after map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(before)) {
		if a, ok := after[k]; !ok {
			fmt.Fprintf(&b, "  removed %s (%s)\n", k, before[k])
		} else if a != before[k] {
			fmt.Fprintf(&b, "  changed %s: %s -> %s\n", k, before[k], a)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(after)) {
		if _, ok := before[k]; !ok {
			fmt.Fprintf(&b, "  added %s (%s)\n", k, after[k])
		}
	}
	return b.String()
}

// badLogged reports whether one line of the journal holds all of parts.
func badLogged(journal string, parts ...string) bool {
	for _, line := range strings.Split(journal, "\n") {
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
			return true
		}
	}
	return false
}
