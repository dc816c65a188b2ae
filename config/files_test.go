package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckSecrets(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string { return writeMode(t, dir, name, "s3cret", mode) }
	for _, tt := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"private token", Config{Repo: Repo{Auth: Auth{TokenFile: write("token", 0o600)}}}, ""},
		{"group-readable key", Config{Repo: Repo{Auth: Auth{SSHKeyFile: write("key", 0o640)}}}, ""},
		{"world-readable token", Config{Repo: Repo{Auth: Auth{TokenFile: write("open-token", 0o644)}}},
			"repo.auth.tokenFile: " + filepath.Join(dir, "open-token") + " can be read by any user (mode 0644); run chmod o-rwx"},
		{"world-readable webhook key", Config{Webhooks: []Webhook{{URL: "https://h", SecretFile: write("hook", 0o604)}}},
			"webhooks[0].secretFile: "},
		{"etcd password", Config{Lease: Lease{Etcd: &Etcd{PasswordFile: write("pw", 0o666)}}}, "lease.etcd.passwordFile: "},
		{"world-readable push secret", Config{Listen: Listen{Webhook: WebhookListen{Address: "127.0.0.1:9000", SecretFile: write("push", 0o644)}}}, "listen.webhook.secretFile: "},
		{"world-readable forge token", Config{Statuses: Statuses{Forge: "github", TokenFile: write("forge", 0o604)}}, "statuses.tokenFile: "},
		{"missing file", Config{Repo: Repo{Auth: Auth{TokenFile: filepath.Join(dir, "nope")}}}, "repo.auth.tokenFile: stat "},
	} {
		err := tt.cfg.CheckFiles()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: the error shows the secret", tt.name)
		}
	}
}

// Trust anchors may be read by anyone, but written only by their owner, who is root
// or the agent's user: a keyring anyone can write defeats signing.
func TestCheckTrustAnchors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string { return writeMode(t, dir, name, "ssh-ed25519 AAAA", mode) }
	verify := func(signers, keyring string) Config {
		return Config{Repo: Repo{Verify: Verify{SSHAllowedSigners: signers, OpenPGPKeyring: keyring}}}
	}
	for _, tt := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"readable by all", verify(write("signers", 0o644), write("keyring", 0o444)), ""},
		{"group-writable allowed_signers", verify(write("signers-g", 0o664), ""),
			"repo.verify.sshAllowedSigners: " + filepath.Join(dir, "signers-g") + " can be written by users other than its owner (mode 0664); run chmod go-w"},
		{"world-writable keyring", verify("", write("keyring-o", 0o646)), "repo.verify.openpgpKeyring: "},
		{"world-writable known_hosts", Config{Repo: Repo{Auth: Auth{KnownHostsFile: write("known", 0o666)}}}, "repo.auth.knownHostsFile: "},
		{"group-writable etcd CA", Config{Lease: Lease{Etcd: &Etcd{TLS: TLS{CAFile: write("ca", 0o620)}}}}, "lease.etcd.tls.caFile: "},
		{"group-writable secret", Config{Repo: Repo{Auth: Auth{TokenFile: write("token-g", 0o660)}}}, "repo.auth.tokenFile: "},
		{"a directory", verify(dir, ""), "is not a regular file"},
	} {
		err := tt.cfg.CheckFiles()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestCheckFilesOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file away")
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "allowed_signers")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 4321, 4321); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Repo: Repo{Verify: Verify{SSHAllowedSigners: p}}}
	err := cfg.CheckFiles()
	if want := "is owned by uid 4321, neither root nor the agent's user; run chown root " + p; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("CheckFiles = %v, want %q", err, want)
	}
}

func TestUnsafeFile(t *testing.T) {
	const self = 1000
	for _, tt := range []struct {
		kind fileKind
		mode os.FileMode
		uid  int
		want string // the start of the reason; "" when safe
	}{
		{secretFile, 0o600, 0, ""},
		{secretFile, 0o640, self, ""},
		{secretFile, 0o604, 0, "can be read by any user (mode 0604)"},
		{secretFile, 0o601, 0, "can be read by any user"},
		{secretFile, 0o620, 0, "can be written by users other than its owner"},
		{secretFile, 0o600, 1001, "is owned by uid 1001"},
		{anchorFile, 0o644, 0, ""},
		{anchorFile, 0o444, self, ""},
		{anchorFile, 0o664, 0, "can be written by users other than its owner (mode 0664)"},
		{anchorFile, 0o646, 0, "can be written by users other than its owner"},
		{anchorFile, 0o644, 1001, "is owned by uid 1001"},
		{anchorFile, 0o644, -1, ""}, // the owner is unknown on this system
		{anchorFile, os.ModeDir | 0o755, 0, "is not a regular file"},
		{anchorFile, os.ModeSymlink | 0o777, 0, "is not a regular file"},
	} {
		got := unsafeFile("/etc/baton/f", tt.kind, tt.mode, tt.uid, self)
		if tt.want == "" && got != "" || !strings.HasPrefix(got, tt.want) {
			t.Errorf("unsafeFile(%v, %v, uid %d) = %q, want %q", tt.kind, tt.mode, tt.uid, got, tt.want)
		}
	}
}

// agent.yaml is a trust anchor itself, and a secret when a URL in it may hold a token.
func TestCheckConfigFile(t *testing.T) {
	dir := t.TempDir()
	load := func(name, body string, mode os.FileMode) (*Config, error) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		c, err := Load(p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return c, c.CheckFiles()
	}
	const repo = "host: web-01\nrepo: {url: https://git.example.com/ops/fleet.git}\n"
	const slack = "webhooks: [{url: \"https://hooks.example.com/services/T0/B0/s3cr3t\"}]\n"
	for _, tt := range []struct {
		file, body string
		mode       os.FileMode
		want       string
	}{
		{"plain.yaml", repo, 0o644, ""},
		{"webhook-host.yaml", repo + "webhooks: [{url: \"https://hooks.example.com/\"}]\n", 0o644, ""},
		{"webhook-private.yaml", repo + slack, 0o640, ""},
		{"webhook-open.yaml", repo + slack, 0o644,
			"webhooks[0].url: " + filepath.Join(dir, "webhook-open.yaml") + " can be read by any user (mode 0644), and the path or query of webhooks[0].url may hold a token; run chmod o-rwx"},
		{"webhook-query.yaml", repo + "webhooks: [{url: \"https://hooks.example.com?key=s3cr3t\"}]\n", 0o604, "the path or query of webhooks[0].url"},
		{"writable.yaml", repo, 0o664, "the configuration: " + filepath.Join(dir, "writable.yaml") + " can be written by users other than its owner"},
	} {
		_, err := load(tt.file, tt.body, tt.mode)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.file, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: %v, want %q", tt.file, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%s: the error shows the token: %v", tt.file, err)
		}
	}
	// Parse reads no file: nothing to check on disk.
	c, err := Parse(testFile, []byte(repo+slack), "web-01")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckFiles(); err != nil {
		t.Errorf("CheckFiles of a parsed config: %v", err)
	}
}

// writeMode writes a file of content in dir with exactly mode (whatever the umask),
// and returns its path.
func writeMode(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}
