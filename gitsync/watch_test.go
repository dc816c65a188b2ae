package gitsync

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/internal/testgit"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWatchRetriesThroughAnOutage(t *testing.T) {
	repo := testgit.NewRepo(t)
	first := repo.Commit("first")
	var outage testgit.Outage
	url, _ := testgit.ServeHTTP(t, repo, testgit.WithOutage(&outage))
	rec := &recorder{}
	s, err := New(Options{
		URL:        url,
		Dir:        t.TempDir() + "/repo.git",
		MinBackoff: 5 * time.Millisecond,
		MaxBackoff: 40 * time.Millisecond,
	}, slog.New(rec))
	if err != nil {
		t.Fatal(err)
	}

	updates := make(chan Update, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Watch(ctx, 10*time.Millisecond, func(u Update) { updates <- u })
	}()
	defer func() {
		cancel()
		<-done
	}()

	if u := <-updates; u.Commit != first || !u.Changed {
		t.Fatalf("first update = %+v, want the clone of %s", u, commitid.Short(first))
	}

	for _, mode := range []testgit.OutageMode{testgit.HangUp, testgit.Unavailable} {
		outage.Set(mode)
		before := rec.count(slog.LevelWarn, "poll failed, will retry")
		next := repo.Commit("during the outage " + mode.String())
		waitFor(t, "three failed polls", func() bool {
			return rec.count(slog.LevelWarn, "poll failed, will retry") >= before+3
		})
		if err, at := s.LastError(); err == nil || at.IsZero() {
			t.Fatalf("LastError during the outage = %v, %v", err, at)
		}
		select {
		case u := <-updates:
			t.Fatalf("update during the outage: %+v", u)
		default:
		}

		outage.Set(testgit.Up)
		select {
		case u := <-updates:
			if u.Commit != next || !u.Changed || !u.Fetched {
				t.Fatalf("update after the outage = %+v, want %s", u, commitid.Short(next))
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the commit pushed during the outage was not seen after it")
		}
		if err, _ := s.LastError(); err != nil {
			t.Fatalf("LastError after recovery = %v", err)
		}
	}
	for _, r := range rec.snapshot() {
		if r.Level != slog.LevelWarn {
			continue
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "retry_in" {
				if d := a.Value.Duration(); d < 5*time.Millisecond || d > 40*time.Millisecond {
					t.Errorf("retry_in = %v, want within [5ms, 40ms]", d)
				}
			}
			return true
		})
	}
}

func TestWatchLogsARefusedRewindOnce(t *testing.T) {
	repo := testgit.NewRepo(t)
	a := repo.Commit("a")
	b := repo.Commit("b")
	rec := &recorder{}
	s, err := New(Options{URL: repo.FileURL(), Dir: t.TempDir() + "/repo.git"}, slog.New(rec))
	if err != nil {
		t.Fatal(err)
	}
	mustPoll(t, s)
	repo.Rewind(a)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Watch(ctx, 5*time.Millisecond, func(u Update) { t.Errorf("unexpected update %+v", u) })
	}()
	// Several polls pass; each refuses, one log line.
	waitFor(t, "a refusal", func() bool { return rec.count(slog.LevelError, "refusing the remote head") == 1 })
	time.Sleep(100 * time.Millisecond)
	cancel()
	<-done
	if n := rec.count(slog.LevelError, "refusing the remote head"); n != 1 {
		t.Fatalf("logged the refusal %d times, want once", n)
	}
	if n := rec.count(slog.LevelWarn, "poll failed, will retry"); n != 0 {
		t.Fatalf("a refusal was treated as a failure to retry (%d warnings)", n)
	}
	if s.Head() != b {
		t.Fatalf("Head = %s, want %s", commitid.Short(s.Head()), commitid.Short(b))
	}
}

func TestWatchReturnsOnCancel(t *testing.T) {
	s := newSyncer(t, Options{URL: "http://127.0.0.1:1/repo.git", MinBackoff: time.Hour, MaxBackoff: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Watch(ctx, time.Hour, func(Update) {})
	}()
	waitFor(t, "a failed poll", func() bool { err, _ := s.LastError(); return err != nil })
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after cancel")
	}
}

func TestBackoff(t *testing.T) {
	const lo, hi = 100 * time.Millisecond, 5 * time.Second
	prevCeil := time.Duration(0)
	for failures := 1; failures <= 100; failures++ {
		ceil := time.Duration(0)
		for range 50 {
			d := backoff(lo, hi, failures)
			if d < lo || d > hi {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", failures, d, lo, hi)
			}
			ceil = max(ceil, d)
		}
		if ceil+lo < prevCeil/2 {
			t.Fatalf("backoff shrank: %v after %v", ceil, prevCeil)
		}
		prevCeil = ceil
	}
	if d := backoff(lo, hi, 100); d < hi/2 {
		t.Fatalf("backoff after 100 failures = %v, want at least %v", d, hi/2)
	}
	if d := backoff(time.Second, time.Duration(1<<62), 1000); d <= 0 {
		t.Fatalf("backoff overflowed: %v", d)
	}
}
