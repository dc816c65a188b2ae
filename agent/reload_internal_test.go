package agent

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/config"
)

// A reload checks the files again: one made writable by others since the start is
// refused, and the running configuration stays.
func TestReloadChecksFiles(t *testing.T) {
	dir := t.TempDir()
	signers := filepath.Join(dir, "allowed_signers")
	if err := os.WriteFile(signers, []byte("ops@example.com ssh-ed25519 AAAA\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "agent.yaml")
	body := "host: web-01\nrepo:\n  url: https://git.example.com/ops/fleet.git\n  poll: 5s\n  verify: {sshAllowedSigners: " + signers + "}\n"
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	a := &Agent{cfg: cfg, configFile: file, log: slog.New(slog.NewTextHandler(&logs, nil))}
	a.pollEvery.Store(int64(cfg.Repo.Poll.D()))
	if err := os.WriteFile(file, []byte(strings.Replace(body, "poll: 5s", "poll: 7s", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(signers, 0o666); err != nil {
		t.Fatal(err)
	}
	a.reload("test")
	if a.poll() != 5*time.Second || !strings.Contains(logs.String(), "configuration not reloaded") || !strings.Contains(logs.String(), "repo.verify.sshAllowedSigners") {
		t.Errorf("poll %v after a reload with a writable allowed_signers; log:\n%s", a.poll(), logs.String())
	}
	if err := os.Chmod(signers, 0o644); err != nil {
		t.Fatal(err)
	}
	a.reload("test")
	if a.poll() != 7*time.Second {
		t.Errorf("poll %v after a good reload; log:\n%s", a.poll(), logs.String())
	}
}
