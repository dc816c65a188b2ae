package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-fleet/baton/rollback"
)

// TestRetryWithoutAgent: with no agent to answer, baton retry lifts the quarantine in
// the state directory by the rule the agent uses: a prefix of at least 7 digits that
// names one quarantined commit.
func TestRetryWithoutAgent(t *testing.T) {
	a := "3f2a1c9d8e7f" + strings.Repeat("0", 28)
	b := "3f2a1c9d8e70" + strings.Repeat("1", 28)
	c := "9b8e7d6c5b4a" + strings.Repeat("2", 28)
	tests := []struct {
		name, commit string
		code         int
		out          string
		left         int
	}{
		{"unique prefix", "9B8E7D6", 0, "lifted the quarantine of " + c, 2},
		{"full id", a, 0, "lifted the quarantine of " + a, 2},
		{"ambiguous", "3f2a1c9", 1, "ambiguous commit prefix: 3f2a1c9 names 3f2a1c9d8e70, 3f2a1c9d8e7f; give more digits", 3},
		{"not quarantined", "0123456", 1, "commit 0123456: not quarantined on this host", 3},
		{"too short", "9b8e7d", 2, "commit must be 7 to 64 hex digits", 3},
		{"not hex", "main", 2, "commit must be 7 to 64 hex digits", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			q := []rollback.Quarantined{{Commit: a}, {Commit: b}, {Commit: c}}
			data, _ := json.Marshal(q)
			if err := os.WriteFile(filepath.Join(dir, rollback.QuarantineFile), data, 0o644); err != nil {
				t.Fatal(err)
			}
			code, stdout, stderr := runBinary(t, "retry", tt.commit, "--state", dir,
				"--socket", filepath.Join(dir, "no-agent.sock"), "--config", filepath.Join(dir, "no-agent.yaml"))
			if out := stdout + stderr; code != tt.code || !strings.Contains(out, tt.out) {
				t.Errorf("baton retry %s: exit %d, %q; want exit %d, %q", tt.commit, code, out, tt.code, tt.out)
			}
			left, err := (&rollback.Store{Dir: dir}).Quarantine()
			if err != nil || len(left) != tt.left {
				t.Errorf("baton retry %s left %d quarantined (%v), want %d", tt.commit, len(left), err, tt.left)
			}
		})
	}
}

// TestSyncFleetNeedsSharedHead: baton sync --fleet refuses a configuration whose
// head is not shared, and says what to do instead.
func TestSyncFleetNeedsSharedHead(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(cfg, []byte("repo: {url: https://git.example.com/ops/fleet.git}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runBinary(t, "sync", "--fleet", "--config", cfg)
	if code != 1 || !strings.Contains(stderr, "repo.sharedHead is off (it needs lease.backend etcd)") || !strings.Contains(stderr, "run baton sync on each host") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}
