package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/fleet"
	"github.com/baton-fleet/baton/internal/golden"
)

// TestWriteFleet: stale hosts are marked, unreadable keys listed, halts in order.
func TestWriteFleet(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	const c1, c2, c3 = "75eba4c000000000000000000000000000000000", "b55e201000000000000000000000000000000000", "3f2a1c9000000000000000000000000000000000"
	snap := &fleet.Snapshot{
		Groups: map[string]*fleet.Group{
			"web": {Name: "web", Slots: 2, Holders: []string{"web-2"}, Failed: map[string]fleet.Failure{
				c1: {Commit: c1, Host: "web-1", Reason: "verify: check health failed"},
				c3: {Commit: c3, Host: "?", Reason: "the halt record is unreadable"},
			}},
			"db": {Name: "db", Slots: 0, Paused: &fleet.Mark{By: "ops@bastion"}},
		},
		Hosts: map[string]fleet.Host{
			"web-1": {Host: "web-1", Group: "web", Commit: c2, State: "IDLE", Result: "failed: verify", Time: now.Add(-2 * time.Hour), Seen: now.Add(-time.Minute)},
			"web-2": {Host: "web-2", Group: "web", Commit: c2, Target: c3, State: "SWITCHING", Time: now.Add(-time.Minute)},
			"db-9":  {Host: "db-9", Group: "db", Commit: c1, State: "IDLE", Time: now.Add(-40 * 24 * time.Hour), Seen: now.Add(-30 * 24 * time.Hour)},
			"db-1":  {Host: "db-1", Group: "db", Commit: c1, State: "IDLE", Time: now.Add(-40 * 24 * time.Hour)}, // sends no heartbeat
		},
		Problems: []fleet.Problem{
			{Key: "/baton/groups/db/maxParallel", Err: `maxParallel "many" is not a count of slots`},
			{Key: "/baton/hosts/db-3\x1b[2J", Err: `host record "{" : unexpected end of JSON input`},
		},
	}
	var out bytes.Buffer
	if err := writeFleet(&out, snap, now); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/golden/fleet-stale-and-unreadable.txt", out.Bytes())
}

func TestWriteForgotten(t *testing.T) {
	var out bytes.Buffer
	writeForgotten(&out, "web-1", fleet.Forgotten{
		Record: true, Host: fleet.Host{Group: "web", State: "SWITCHING", Commit: "b55e201000", Target: "75eba4c000"},
		Slots: []string{"web"}, Canaries: []string{"75eba4c000"},
	}, "ops@bastion")
	writeForgotten(&out, "web-3", fleet.Forgotten{Slots: []string{"web"}}, "ops@bastion")
	want := "forgot web-1 (by ops@bastion): its record (group web, SWITCHING at b55e201 to 75eba4c); its slot key in group web; its canary spot for 75eba4c\n" +
		"forgot web-3 (by ops@bastion): its slot key in group web\n"
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
}

// TestFleetForgetArgs runs the built binary: forget takes exactly one host, and
// needs the etcd lease in the agent configuration.
func TestFleetForgetArgs(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"fleet", "forget"}, "accepts 1 arg(s), received 0"},
		{[]string{"fleet", "forget", "a", "b"}, "accepts 1 arg(s), received 2"},
		{[]string{"fleet", "forget", "web-1", "--config", "testdata/no-such-agent.yaml"}, "testdata/no-such-agent.yaml"},
	} {
		out, err := exec.Command(binary, tt.args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tt.want) {
			t.Errorf("baton %s: %v\n%s\nwant an error containing %q", strings.Join(tt.args, " "), err, out, tt.want)
		}
	}
}
