package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckSecrets(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("s3cret"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tt := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"private token", Config{Repo: RepoConfig{Auth: AuthConfig{TokenFile: write("token", 0o600)}}}, ""},
		{"group-readable key", Config{Repo: RepoConfig{Auth: AuthConfig{SSHKeyFile: write("key", 0o640)}}}, ""},
		{"world-readable token", Config{Repo: RepoConfig{Auth: AuthConfig{TokenFile: write("open-token", 0o644)}}},
			"repo.auth.tokenFile: " + filepath.Join(dir, "open-token") + " can be read by any user (mode 0644); run chmod o-rwx"},
		{"world-readable webhook key", Config{Webhooks: []WebhookConfig{{URL: "https://h", SecretFile: write("hook", 0o604)}}},
			"webhooks[0].secretFile: "},
		{"etcd password", Config{Lease: LeaseConfig{Etcd: &EtcdConfig{PasswordFile: write("pw", 0o666)}}}, "lease.etcd.passwordFile: "},
		{"missing file", Config{Repo: RepoConfig{Auth: AuthConfig{TokenFile: filepath.Join(dir, "nope")}}}, "repo.auth.tokenFile: stat "},
	} {
		err := checkSecrets(&tt.cfg)
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
