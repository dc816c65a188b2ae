package agent

import (
	"fmt"
	"testing"

	"github.com/baton-fleet/baton/rollback"
)

// TestColorStates: what `baton status` says of each color, through a bluegreen
// upgrade from blue (1.0.0) to green (2.0.0), a revert, and odd hosts.
func TestColorStates(t *testing.T) {
	both := []string{"shop@blue.service", "shop@green.service"}
	blue := rollback.ServiceRecord{Version: "1.0.0", Color: "blue", Units: both}
	green := rollback.ServiceRecord{Version: "2.0.0", Color: "green", Units: []string{"shop@green.service"}}
	txn := func(state rollback.State, cutOver bool) *rollback.Txn {
		return &rollback.Txn{State: state, CutOver: cutOver}
	}
	runs := func(units ...string) func(string) bool {
		return func(u string) bool {
			for _, r := range units {
				if r == u {
					return true
				}
			}
			return false
		}
	}
	for _, tt := range []struct {
		name    string
		rec     rollback.ServiceRecord
		txn     *rollback.Txn
		target  *rollback.ServiceRecord
		running func(string) bool
		want    string
	}{
		{"idle", blue, nil, nil, runs("shop@blue.service"), "[blue 1.0.0 active] [green - stopped]"},
		{"the new color starting", blue, txn(rollback.Switching, false), &green, runs(both...), "[blue 1.0.0 active] [green 2.0.0 starting]"},
		{"checked on its port", blue, txn(rollback.Verifying, false), &green, runs(both...), "[blue 1.0.0 active] [green 2.0.0 starting]"},
		{"switched: the old one drains", blue, txn(rollback.Verifying, true), &green, runs(both...), "[green 2.0.0 active] [blue 1.0.0 draining]"},
		{"the old one stopped, before the commit", blue, txn(rollback.Verifying, true), &green, runs("shop@green.service"), "[green 2.0.0 active] [blue - stopped]"},
		{"switched back", blue, txn(rollback.RollingBack, true), &green, runs(both...), "[blue 1.0.0 active] [green 2.0.0 reverting]"},
		{"reverted", blue, txn(rollback.Failed, true), &green, runs("shop@blue.service"), "[blue 1.0.0 active] [green - stopped]"},
		{"a first install", rollback.ServiceRecord{}, txn(rollback.Verifying, false), &rollback.ServiceRecord{Version: "1.0.0", Color: "blue", Units: []string{"shop@blue.service"}},
			runs("shop@blue.service"), "[blue 1.0.0 starting]"},
		{"a first install, both colors recorded", rollback.ServiceRecord{}, txn(rollback.Verifying, false), &rollback.ServiceRecord{Version: "1.0.0", Color: "blue", Colors: []string{"blue", "green"}, Units: []string{"shop@blue.service"}},
			runs("shop@blue.service"), "[blue 1.0.0 starting] [green - stopped]"},
		{"after a first install, the idle color never installed", rollback.ServiceRecord{Version: "1.0.0", Color: "blue", Colors: []string{"blue", "green"}, Units: []string{"shop@blue.service"}}, nil, nil,
			runs("shop@blue.service"), "[blue 1.0.0 active] [green - stopped]"},
		{"the active color down", blue, nil, nil, runs(), "[blue - stopped] [green - stopped]"},
		{"an idle color left running", blue, nil, nil, runs(both...), "[blue 1.0.0 active] [green - idle]"},
		{"another service's transaction", blue, txn(rollback.Verifying, true), &blue, runs("shop@blue.service"), "[blue 1.0.0 active] [green - stopped]"},
	} {
		var got []string
		for _, c := range colorStates(tt.rec, tt.txn, tt.target, tt.running) {
			got = append(got, fmt.Sprintf("[%s %s %s]", c.Name, versionOrDash(c.Version), c.State))
		}
		if fmt.Sprint(got) != "["+tt.want+"]" {
			t.Errorf("%s: %v, want [%s]", tt.name, got, tt.want)
		}
	}
	if got := colorOfUnit("shop@blue.service") + "," + colorOfUnit("shop.service") + "," + colorOfUnit("shop@blue.socket"); got != "blue,," {
		t.Errorf("colorOfUnit: %q", got)
	}
}

func versionOrDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
