package fleet

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-fleet/baton/internal/testetcd"
)

// TestForget: a decommissioned host, or a dead canary, is removed with its slot
// key and its canary spots; its halts stay. A host in a transaction is refused
// unless forced.
func TestForget(t *testing.T) {
	cli := testetcd.Start(t).Client(t)
	ctx := context.Background()
	s := NewStore(cli, "/baton")
	if err := s.PutHost(ctx, nil, Host{Host: "web-1", Group: "web", Commit: commitA, Target: commitB, State: "SWITCHING"}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutHost(ctx, nil, Host{Host: "web-2", Group: "web", Commit: commitA, State: "IDLE"}); err != nil {
		t.Fatal(err)
	}
	put(t, cli, SlotKey("/baton", "web", "web-2"), "web-2")
	put(t, cli, SlotKey("/baton", "web", "web-3"), "web-3")
	for _, h := range []string{"web-1", "web-2"} {
		if ok, err := s.ClaimCanary(ctx, nil, "web", commitB, h, 2); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	if err := s.Fail(ctx, nil, "web", commitC, "web-1", "verify"); err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct{ host, want string }{
		{"web-1", "its record says SWITCHING to bbbbbbb"},
		{"web-2", "it holds or waits for a slot of web"},
		{"web-3", "it holds or waits for a slot of web"},
	} {
		if _, err := s.Forget(ctx, tt.host, false); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "--force") {
			t.Errorf("Forget(%s) = %v, want ErrBusy: %s", tt.host, err, tt.want)
		}
	}
	if _, err := s.Forget(ctx, "web-9", true); !errors.Is(err, ErrUnknownHost) {
		t.Errorf("Forget of an unknown host: %v", err)
	}

	f, err := s.Forget(ctx, "web-1", true)
	if err != nil {
		t.Fatal(err)
	}
	if !f.Record || f.Host.State != "SWITCHING" || len(f.Slots) != 0 || !slices.Equal(f.Canaries, []string{commitB}) {
		t.Errorf("forgot %+v", f)
	}
	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	web := snap.Groups["web"]
	if _, ok := snap.Hosts["web-1"]; ok || !slices.Equal(web.Canaries[commitB], []string{"web-2"}) || web.Failed[commitC].Host != "web-1" {
		t.Errorf("after forgetting web-1: hosts %v, web %+v", snap.Hosts, web)
	}
	// its canary spot is free for another host
	if ok, err := s.ClaimCanary(ctx, nil, "web", commitB, "web-4", 2); !ok || err != nil {
		t.Errorf("claim of the freed spot = %v, %v", ok, err)
	}

	f, err = s.Forget(ctx, "web-2", true)
	if err != nil || !slices.Equal(f.Slots, []string{"web"}) {
		t.Fatalf("Forget(web-2) = %+v, %v", f, err)
	}
	if f, err = s.Forget(ctx, "web-3", true); err != nil || f.Record || !slices.Equal(f.Slots, []string{"web"}) {
		t.Fatalf("Forget(web-3), a slot key and nothing else = %+v, %v", f, err)
	}
	resp, err := cli.Get(ctx, "/baton/groups/web/slots/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Errorf("slot keys left: %d, %v", resp.Count, err)
	}
	snap, _ = s.Snapshot(ctx)
	if !slices.Equal(snap.Groups["web"].Canaries[commitB], []string{"web-4"}) || len(snap.Hosts) != 0 {
		t.Errorf("after forgetting web-2: %+v %+v", snap.Groups["web"], snap.Hosts)
	}

	// An unreadable record is forgotten like any other.
	put(t, cli, "/baton/hosts/web-5", "{")
	if f, err := s.Forget(ctx, "web-5", false); err != nil || !f.Record {
		t.Errorf("Forget of an unreadable record = %+v, %v", f, err)
	}
}
