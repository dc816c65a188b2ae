package gitsync

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"

	"github.com/baton-fleet/baton/internal/testgit"
)

// TestPollServerRefusal: a poll the git server refuses with 429 or a 5xx is a
// ServerError, with the wait its Retry-After asked for (capped at MaxBackoff); until
// that wait passes Poll does not ask the server again. Refusals of one host's own
// (credentials, a missing repository) and network faults are not.
func TestPollServerRefusal(t *testing.T) {
	for _, tt := range []struct {
		name       string
		status     int
		retryAfter string
		onFetch    bool          // refuse the fetch (POST git-upload-pack), not the ref listing
		wantServer bool          // a ServerError
		wantWait   time.Duration // its RetryAfter
	}{
		{"rate limited", http.StatusTooManyRequests, "3", false, true, 3 * time.Second},
		{"rate limited, no Retry-After", http.StatusTooManyRequests, "", false, true, 0},
		{"rate limited for an hour, capped", http.StatusTooManyRequests, "3600", false, true, 20 * time.Second},
		{"unavailable", http.StatusServiceUnavailable, "2", false, true, 2 * time.Second},
		{"internal error", http.StatusInternalServerError, "", false, true, 0},
		{"bad gateway on the fetch", http.StatusBadGateway, "", true, true, 0},
		{"rate limited on the fetch", http.StatusTooManyRequests, "4", true, true, 4 * time.Second},
		{"not found", http.StatusNotFound, "", false, false, 0},
		{"forbidden", http.StatusForbidden, "", false, false, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			repo := testgit.NewRepo(t)
			first := repo.Commit("first")
			var refuse atomic.Bool
			var asked atomic.Int64
			url, _ := testgit.ServeHTTP(t, repo, testgit.WithWrap(func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					asked.Add(1)
					if refuse.Load() && (r.Method == http.MethodPost) == tt.onFetch {
						if tt.retryAfter != "" {
							w.Header().Set("Retry-After", tt.retryAfter)
						}
						http.Error(w, "refused for the test", tt.status)
						return
					}
					next.ServeHTTP(w, r)
				})
			}))
			s := newSyncer(t, Options{URL: url, MaxBackoff: 20 * time.Second})
			mustPoll(t, s)
			repo.Commit("second")
			refuse.Store(true)
			before := time.Now()
			u, err := s.Poll(context.Background())
			if err == nil {
				t.Fatalf("Poll succeeded: %+v", u)
			}
			if u.Commit != first {
				t.Errorf("Update.Commit = %s after a refusal, want the head kept", u.Commit)
			}
			var se *ServerError
			if got := errors.As(err, &se); got != tt.wantServer || got != IsServerError(err) {
				t.Fatalf("a ServerError: %v (IsServerError %v), want %v: %v", got, IsServerError(err), tt.wantServer, err)
			}
			if !tt.wantServer {
				if !errors.Is(err, transport.ErrRepositoryNotFound) && !errors.Is(err, transport.ErrAuthorizationFailed) {
					t.Errorf("error %v lost go-git's own", err)
				}
				return
			}
			if se.Status != tt.status || se.RetryAfter != tt.wantWait || se.Until.Before(before.Add(tt.wantWait)) {
				t.Fatalf("ServerError = %d, wait %v, until %v; want %d, %v", se.Status, se.RetryAfter, se.Until, tt.status, tt.wantWait)
			}
			if !strings.Contains(err.Error(), http.StatusText(tt.status)) {
				t.Errorf("error %q does not name the status", err)
			}

			n := asked.Load()
			_, again := s.Poll(context.Background())
			switch {
			case tt.wantWait > 0 && (!IsServerError(again) || asked.Load() != n):
				t.Errorf("a poll within the server's Retry-After: %v, %d requests; want its ServerError and none", again, asked.Load()-n)
			case tt.wantWait == 0 && asked.Load() == n:
				t.Errorf("a poll after a refusal without Retry-After did not ask the server")
			}
			if last, _ := s.LastError(); !IsServerError(last) {
				t.Errorf("LastError = %v, want the refusal", last)
			}
		})
	}
	t.Run("the wait passes", func(t *testing.T) {
		repo := testgit.NewRepo(t)
		repo.Commit("first")
		var outage testgit.Outage
		url, _ := testgit.ServeHTTP(t, repo, testgit.WithOutage(&outage))
		s := newSyncer(t, Options{URL: url})
		mustPoll(t, s)
		second := repo.Commit("second")
		outage.RateLimit("1")
		if _, err := s.Poll(context.Background()); !IsServerError(err) {
			t.Fatalf("Poll while rate limited: %v", err)
		}
		outage.Set(testgit.Up)
		time.Sleep(1100 * time.Millisecond)
		if u := mustPoll(t, s); u.Commit != second {
			t.Fatalf("poll after the wait = %+v, want %s", u, second)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		s := newSyncer(t, Options{URL: "http://" + addr + "/repo.git"})
		if _, err := s.Poll(context.Background()); err == nil || IsServerError(err) {
			t.Fatalf("Poll of a closed port = %v, want an error that is not the server's", err)
		}
	})
}
