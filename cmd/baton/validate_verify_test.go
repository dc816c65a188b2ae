package main

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/internal/testgit"
)

// verifyNeedTool skips the test when the command is missing, and fails it
// under CI=true, where every tool must be installed.
func verifyNeedTool(t *testing.T, cmd, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(cmd); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed (Debian package %s); required when CI=true", cmd, pkg)
		}
		t.Skipf("%s not installed (Debian package %s)", cmd, pkg)
	}
}

// verifyKey makes an ed25519 key with ssh-keygen and returns its private
// key file, its authorized_keys line and its fingerprint.
func verifyKey(t *testing.T, name string) (file, authorized, fp string) {
	t.Helper()
	file = filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", file).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	pub, err := os.ReadFile(file + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return file, strings.TrimSpace(string(pub)), ssh.FingerprintSHA256(key)
}

// TestValidateVerify runs baton validate --verify on a git repository
// holding the example fleet, at a signed and at an unsigned commit.
func TestValidateVerify(t *testing.T) {
	verifyNeedTool(t, "git", "git")
	verifyNeedTool(t, "ssh-keygen", "openssh-client")
	r := testgit.NewRepo(t)
	err := filepath.WalkDir("../../examples/fleet", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("../../examples/fleet", p)
		r.WriteFile(filepath.ToSlash(rel), string(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	key, authorized, fp := verifyKey(t, "alice")
	_, otherKey, _ := verifyKey(t, "mallory")
	r.Git("config", "gpg.format", "ssh")
	r.Git("config", "user.signingkey", key)
	r.Git("config", "commit.gpgsign", "true")
	signed := r.Commit("the example fleet, signed")
	r.Git("config", "commit.gpgsign", "false")
	unsigned := r.Commit("unsigned")

	keys := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(keys, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	trusted := write("allowed_signers", "*@example.com "+authorized+"\n")
	untrusted := write("other_signers", "*@example.com "+otherKey+"\n")
	broken := write("broken_signers", "committer@example.com\n")
	plain := t.TempDir() // not in a git repository

	const ok = "ok: 2 groups (db, web), 2 services (api, kv), hosts db-* web-*\n"
	tests := []struct {
		name           string
		head           string // checked out before the run
		args           []string
		code           int
		stdout, stderr string
	}{
		{"signed", signed, []string{"--verify", "--ssh-allowed-signers", trusted, r.Work}, 0,
			"signed: HEAD " + signed + " by ssh key " + fp + " (committer@example.com)\n" + ok, ""},
		{"signed, from a subdirectory", signed, []string{"--verify", "--ssh-allowed-signers", trusted, filepath.Join(r.Work, "services")}, 1,
			"signed: HEAD " + signed + " by ssh key " + fp + " (committer@example.com)\n", "*"}, // not a fleet repository: validation's own errors
		{"unsigned", unsigned, []string{"--verify", "--ssh-allowed-signers", trusted, r.Work}, 1,
			ok, "baton: verify HEAD " + commitid.Short(unsigned) + " of " + r.Work + ": commit is not signed\n"},
		{"untrusted key", signed, []string{"--verify", "--ssh-allowed-signers", untrusted, r.Work}, 1,
			ok, "baton: verify HEAD " + commitid.Short(signed) + " of " + r.Work + ": bad commit signature: SSH key " + fp + " is not in the allowed signers\n"},
		{"without --verify", unsigned, []string{r.Work}, 0, ok, ""},
		{"no keys", signed, []string{"--verify", r.Work}, 2,
			"", "baton: --verify needs --ssh-allowed-signers or --openpgp-keyring\n"},
		{"keys without --verify", signed, []string{"--ssh-allowed-signers", trusted, r.Work}, 2,
			"", "baton: --ssh-allowed-signers and --openpgp-keyring take effect with --verify\n"},
		{"broken allowed_signers", signed, []string{"--verify", "--ssh-allowed-signers", broken, r.Work}, 2,
			"", "baton: " + broken + ":1: missing key\n"},
		{"missing keyring", signed, []string{"--verify", "--openpgp-keyring", filepath.Join(keys, "missing.asc"), r.Work}, 2,
			"", "baton: read trusted keys: open " + filepath.Join(keys, "missing.asc") + ": no such file or directory\n"},
		{"not a git repository", signed, []string{"--verify", "--ssh-allowed-signers", trusted, plain}, 2,
			"", "baton: open the git repository of " + plain + ": repository does not exist\n"},
		{"not a directory", signed, []string{"--verify", "--ssh-allowed-signers", trusted, filepath.Join(plain, "nonexistent")}, 2,
			"", "baton: " + filepath.Join(plain, "nonexistent") + " is not a directory\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.Git("checkout", "--quiet", "--detach", tt.head)
			code, stdout, stderr := runBinary(t, append([]string{"validate"}, tt.args...)...)
			if code != tt.code || stdout != tt.stdout || (tt.stderr != "*" && stderr != tt.stderr) {
				t.Errorf("baton validate %s:\nexit %d\n--- stdout\n%s--- stderr\n%s\nwant:\nexit %d\n--- stdout\n%s--- stderr\n%s",
					strings.Join(tt.args, " "), code, stdout, stderr, tt.code, tt.stdout, tt.stderr)
			}
		})
	}
}
