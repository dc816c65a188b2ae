package fleet

import (
	"context"
	"slices"
	"testing"

	"github.com/baton-fleet/baton/internal/testetcd"
)

// TestPrune: once the group converged past a halted commit the halt goes, with the
// canary spots and promotions of commits no host uses; nothing else does.
func TestPrune(t *testing.T) {
	cli := testetcd.Start(t).Client(t)
	ctx := context.Background()
	s := NewStore(cli, "/baton")
	order := map[string]int{commitA: 1, commitB: 2, commitC: 3}
	descends := func(anc, c string) (bool, error) { return order[anc] < order[c], nil }

	for _, h := range []string{"web-1", "web-2"} {
		if err := s.PutHost(ctx, nil, Host{Host: h, Group: "web", Commit: commitC, State: "IDLE"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutHost(ctx, nil, Host{Host: "db-1", Group: "db", Commit: commitA, State: "IDLE"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{commitA, commitB} {
		if _, err := s.ClaimCanary(ctx, nil, "web", c, "web-1", 1); err != nil {
			t.Fatal(err)
		}
		if err := s.Promote(ctx, "web", c, "ops"); err != nil {
			t.Fatal(err)
		}
		if err := s.Fail(ctx, nil, "web", c, "web-1", "verify"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Fail(ctx, nil, "db", commitB, "db-1", "verify"); err != nil { // db is still on A: B stays halted
		t.Fatal(err)
	}
	pruned, err := s.Prune(ctx, descends)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"/baton/groups/web/failed/" + commitA, "/baton/groups/web/failed/" + commitB,
		"/baton/groups/web/canaries/" + commitA, "/baton/groups/web/promoted/" + commitA,
	}
	if !slices.Equal(pruned, want) {
		t.Errorf("pruned\n %q\nwant\n %q", pruned, want)
	}
	snap, _ := s.Snapshot(ctx)
	if _, ok := snap.Groups["db"].Failed[commitB]; !ok {
		t.Errorf("the halt of db on B, which db has not passed, was pruned")
	}
	if pruned, err := s.Prune(ctx, descends); err != nil || len(pruned) != 0 {
		t.Errorf("a second Prune = %q, %v", pruned, err)
	}
}
