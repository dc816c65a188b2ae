package fleet

import (
	"context"
	"errors"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-fleet/baton/internal/testetcd"
	"github.com/baton-fleet/baton/spec"
)

func TestStoreAgainstEtcd(t *testing.T) {
	cli := testetcd.Start(t).Client(t)
	ctx := context.Background()
	s := NewStore(cli, "/baton")
	const c = "c0ffee0000000000000000000000000000000000"

	// a slot key, as the etcd lease writes it, fences host writes
	slot := SlotKey("/baton", "web", "web-1")
	resp, err := cli.Put(ctx, slot, "")
	if err != nil {
		t.Fatal(err)
	}
	fence := &Fence{Key: slot, Token: resp.Header.Revision}
	if err := s.PutHost(ctx, fence, Host{Host: "web-1", Group: "web", Commit: c, State: "IDLE"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Fail(ctx, fence, "web", c, "web-1", "verify: check health failed"); err != nil {
		t.Fatal(err)
	}
	stale := &Fence{Key: slot, Token: resp.Header.Revision - 1}
	if err := s.PutHost(ctx, stale, Host{Host: "web-1", Group: "web", Commit: "bad"}); !errors.Is(err, ErrFenced) {
		t.Fatalf("a write with a stale fencing token: %v, want ErrFenced", err)
	}
	if err := s.Pause(ctx, "db", "ops", "incident 42"); err != nil {
		t.Fatal(err)
	}
	if err := s.Promote(ctx, "web", c, "ops"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/baton/groups/web/maxParallel", "2"); err != nil {
		t.Fatal(err)
	}

	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	web := snap.Groups["web"]
	if h := snap.Hosts["web-1"]; h.Commit != c || h.Group != "web" {
		t.Errorf("host record = %+v", h)
	}
	if web.Failed[c].Host != "web-1" || web.Slots != 2 || len(web.Holders) != 1 || web.Holders[0] != "web-1" {
		t.Errorf("group web = %+v", web)
	}
	if _, ok := web.Promoted[c]; !ok || snap.Groups["db"].Paused == nil || snap.Groups["db"].Paused.Reason != "incident 42" {
		t.Errorf("marks not read back: web %+v, db %+v", web, snap.Groups["db"])
	}
	g := &spec.Group{Name: "web"}
	if v := snap.Gate(g, c, "web-2", snap.Groups["web"].Failed[c].Time); !v.Halted {
		t.Errorf("Gate after a failure = %+v, want halted", v)
	}

	n, err := s.Retry(ctx, c[:8])
	if err != nil || n != 1 {
		t.Fatalf("Retry = %d, %v", n, err)
	}
	if err := s.Resume(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	snap, _ = s.Snapshot(ctx)
	if len(snap.group("web").Failed) != 0 || snap.group("db").Paused != nil {
		t.Errorf("after retry and resume: web %+v db %+v", snap.group("web"), snap.group("db"))
	}
}

// TestClaimCanaryIsExact: however many hosts race for the canary spots, exactly
// `canary` of them get one.
func TestClaimCanaryIsExact(t *testing.T) {
	cli := testetcd.Start(t).Client(t)
	s := NewStore(cli, "/baton")
	const c = "c0ffee0000000000000000000000000000000000"
	var mu sync.Mutex
	var won []string
	var wg sync.WaitGroup
	for i := range 12 {
		host := "web-" + string(rune('a'+i))
		wg.Go(func() {
			ok, err := s.ClaimCanary(context.Background(), nil, "web", c, host, 3)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				won = append(won, host)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(won) != 3 {
		t.Fatalf("%d hosts claimed a canary spot, want 3: %v", len(won), won)
	}
	again, err := s.ClaimCanary(context.Background(), nil, "web", c, won[0], 3)
	if err != nil || !again {
		t.Errorf("a canary claiming again = %v, %v; want its spot back", again, err)
	}
	resp, _ := cli.Get(context.Background(), "/baton/groups/web/canaries/"+c, clientv3.WithCountOnly())
	if resp.Count != 1 {
		t.Errorf("canary key count = %d", resp.Count)
	}
}
