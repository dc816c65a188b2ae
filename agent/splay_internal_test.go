package agent

import (
	"io/fs"
	"log/slog"
	"testing"
	"time"

	"github.com/baton-fleet/baton/examples"
	"github.com/baton-fleet/baton/internal/testgit"
	"github.com/baton-fleet/baton/internal/yamldoc"
	"github.com/baton-fleet/baton/sharedhead"
)

// TestSplayFollowsTheGroup: with repo.splay, a host of a group that waits for another
// (web, after db in the example fleet) fetches a new head within the splay; a host of
// the group that goes first (db) fetches it at once, as does any host without the
// splay or whose group is not known.
func TestSplayFollowsTheGroup(t *testing.T) {
	repo := testgit.NewRepo(t)
	files := map[string]string{}
	err := fs.WalkDir(examples.Fleet(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(examples.Fleet(), path)
		files[path] = string(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	commit := repo.CommitFiles("the example fleet", files)
	for _, tt := range []struct {
		host  string
		splay time.Duration
		want  time.Duration
	}{
		{"web-01", 5 * time.Minute, 5 * time.Minute},
		{"db-01", 5 * time.Minute, 0},
		{"web-01", 0, 0},
		{"mail-01", 5 * time.Minute, 0}, // in no group: not known
	} {
		a, _ := exportAgent(t, repo)
		a.log = slog.New(slog.DiscardHandler)
		a.cfg.Host, a.cfg.Repo.Splay = tt.host, yamldoc.Duration(tt.splay)
		if got := a.splay(sharedhead.Head{}); got != 0 {
			t.Errorf("%s before its group is known: splay %v, want 0", tt.host, got)
		}
		a.learnGroup(t.Context(), commit)
		if got := a.splay(sharedhead.Head{}); got != tt.want {
			t.Errorf("%s with repo.splay %v: splay %v, want %v", tt.host, tt.splay, got, tt.want)
		}
	}
}
