package agent_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSignedCommitsOnly configures the agent with an allowed_signers file: an
// unsigned commit and one signed by an unknown key are rejected with the reason and
// change nothing; a commit signed by the trusted key is applied.
func TestSignedCommitsOnly(t *testing.T) {
	h := newHarness(t)
	sign, _ := h.sshSigning(t, "trusted", "stranger")
	sign("trusted")
	c1 := h.push(release{version: "1.0.0", mode: "ok"})
	h.startAgent()
	h.settled(c1)
	if h.host.LastGood().Revision != c1 {
		t.Fatalf("a commit signed by the trusted key was not applied")
	}

	for _, tt := range []struct{ name, key, reason string }{
		{"unsigned", "", "commit is not signed"},
		{"unknown key", "stranger", "is not in the allowed signers"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h.t = t
			sign(tt.key)
			c := h.push(release{version: "6.6.6", mode: "ok"})
			h.waitFor("the agent to reject "+short(c), time.Minute, func() bool {
				j := h.journal()
				return strings.Contains(j, "commit rejected") && strings.Contains(j, short(c))
			})
			if j := h.journal(); !strings.Contains(j, tt.reason) {
				t.Errorf("the rejection does not say %q", tt.reason)
			}
			if h.host.LastGood().Revision != c1 || h.host.Served() != "1.0.0" {
				t.Errorf("a badly signed commit changed the host: last good %s, serving %q", short(h.host.LastGood().Revision), h.host.Served())
			}
		})
	}
	h.t = t
	sign("trusted")
	c3 := h.push(release{version: "3.0.0", mode: "ok"})
	h.settled(c3)
	if h.host.LastGood().Revision != c3 {
		t.Fatalf("a signed commit after rejected ones was not applied")
	}
	h.consistent()
}

// sshSigning makes an ed25519 key for each name (git's gpg.format=ssh), trusts the
// first one in the agent's configuration (repo.verify.sshAllowedSigners), and returns
// a function that signs the repository's next commits with a key ("" for unsigned),
// and the keys' fingerprints. Commits are signed with the trusted key until told
// otherwise.
func (h *harness) sshSigning(t *testing.T, names ...string) (sign func(name string), fingerprint map[string]string) {
	t.Helper()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs ssh-keygen (openssh-client)")
		}
		t.Skip("needs ssh-keygen (openssh-client)")
	}
	keys := t.TempDir()
	fingerprint = map[string]string{}
	for _, name := range names {
		key := filepath.Join(keys, name)
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v %s", err, out)
		}
		out, err := exec.Command("ssh-keygen", "-l", "-f", key+".pub").Output()
		f := strings.Fields(string(out))
		if err != nil || len(f) < 2 {
			t.Fatalf("ssh-keygen -l: %v %q", err, out)
		}
		fingerprint[name] = f[1]
	}
	pub, err := os.ReadFile(filepath.Join(keys, names[0]+".pub"))
	if err != nil {
		t.Fatal(err)
	}
	signers := "committer@example.com namespaces=\"git\" " + strings.TrimSpace(string(pub)) + "\n"
	if err := os.WriteFile(h.host.Path("/etc/baton/allowed_signers"), []byte(signers), 0o644); err != nil {
		t.Fatal(err)
	}
	h.writeConfig("  verify: {sshAllowedSigners: /etc/baton/allowed_signers}\n")
	sign = func(name string) {
		if name == "" {
			h.repo.Git("config", "commit.gpgsign", "false")
			return
		}
		h.repo.Git("config", "gpg.format", "ssh")
		h.repo.Git("config", "user.signingkey", filepath.Join(keys, name))
		h.repo.Git("config", "commit.gpgsign", "true")
	}
	sign(names[0])
	return sign, fingerprint
}
