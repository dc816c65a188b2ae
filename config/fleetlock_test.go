package config

import (
	"strings"
	"testing"
)

// TestFleetlockConfig: validate-config refuses what the FleetLock client would refuse
// at its first Acquire, and accepts the groups FleetLock servers accept.
func TestFleetlockConfig(t *testing.T) {
	for _, tt := range []struct{ url, group, want string }{
		{"https://fleetlock.example.com/", "web_eu", ""},
		{"https://fleetlock.example.com/airlock", "db.eu-1", ""},
		{"http://10.0.0.5:3333", "default", ""},
		{"https://fleetlock.example.com/?group=web", "web", "lease.fleetlock.url: a query or fragment is refused: the FleetLock protocol appends /v1/pre-reboot to the URL"},
		{"https://fleetlock.example.com/?", "web", "lease.fleetlock.url: a query or fragment is refused: the FleetLock protocol appends /v1/pre-reboot to the URL"},
		{"https://fleetlock.example.com/#x", "web", "lease.fleetlock.url: a query or fragment is refused: the FleetLock protocol appends /v1/pre-reboot to the URL"},
		{"https://fleetlock.example.com/", "web eu", `lease.fleetlock.group: not a valid group: "web eu" has spaces or control characters`},
		{"https://fleetlock.example.com/", "", "lease.fleetlock.group: not a valid group: empty"},
	} {
		data := "repo:\n  url: https://git.example.com/ops/fleet.git\nlease:\n  backend: fleetlock\n  fleetlock:\n    url: " +
			jsonString(tt.url) + "\n    group: " + jsonString(tt.group) + "\n"
		_, err := Parse(testFile, []byte(data), "web-01")
		got := ""
		if err != nil {
			got = strings.TrimPrefix(err.Error(), "agent.yaml:")
			_, got, _ = strings.Cut(got, ": ")
		}
		if got != tt.want {
			t.Errorf("url %q group %q:\n got: %s\nwant: %s", tt.url, tt.group, got, tt.want)
		}
	}
}
