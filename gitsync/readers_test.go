package gitsync

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testgit"
)

// TestReadersDoNotWaitOnTheServer: while a poll waits on a git server that holds
// its answer, to the ref listing or to the fetch, Export and Descends (what the
// agent's loop reads while the fleet's fetcher polls beside it) answer from the
// repository. Under one lock for the whole poll they waited for the server, up to
// the poll's timeout, and the agent's watchdog could end the agent meanwhile.
func TestReadersDoNotWaitOnTheServer(t *testing.T) {
	for _, tt := range []struct {
		name    string
		onFetch bool // hold the fetch (POST git-upload-pack), not the ref listing
	}{
		{"the ref listing held", false},
		{"the fetch held", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			repo := testgit.NewRepo(t)
			first := repo.Commit("first")
			held := make(chan struct{}) // a request reached the server and is held
			release := make(chan struct{})
			hold := make(chan bool, 1) // armed: hold the next matching request
			url, _ := testgit.ServeHTTP(t, repo, testgit.WithWrap(func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if (r.Method == http.MethodPost) == tt.onFetch {
						select {
						case <-hold:
							close(held)
							<-release
						default:
						}
					}
					next.ServeHTTP(w, r)
				})
			}))
			s := newSyncer(t, Options{URL: url})
			mustPoll(t, s)
			second := repo.Commit("second")

			hold <- true
			polled := make(chan error, 1)
			go func() {
				_, err := s.Poll(context.Background())
				polled <- err
			}()
			select {
			case <-held:
			case <-time.After(30 * time.Second):
				t.Fatal("the poll never reached the server")
			}
			read := make(chan error, 1)
			go func() {
				if err := s.Export(context.Background(), first, filepath.Join(t.TempDir(), "tree")); err != nil {
					read <- err
					return
				}
				_, err := s.Descends(first, first)
				read <- err
			}()
			select {
			case err := <-read:
				if err != nil {
					t.Fatalf("reading the repository while the server holds the poll: %v", err)
				}
			case <-time.After(30 * time.Second):
				close(release)
				t.Fatal("Export and Descends waited on the server's answer to the poll")
			}
			close(release)
			if err := <-polled; err != nil {
				t.Fatalf("the poll, once the server answered: %v", err)
			}
			if h := s.Head(); h != second {
				t.Fatalf("head after the poll = %s, want %s", h, second)
			}
		})
	}
}
