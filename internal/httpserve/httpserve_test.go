package httpserve

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestRun: a request in flight when the context ends is answered; Run then returns
// nil and the listener is closed. A listener that fails stops Run with its error.
func TestRun(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := Server(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(started)
		time.Sleep(200 * time.Millisecond)
		w.WriteHeader(http.StatusTeapot)
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, l, srv) }()
	answered := make(chan int, 1)
	go func() {
		resp, err := http.Get("http://" + l.Addr().String())
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	<-started
	cancel()
	if code := <-answered; code != http.StatusTeapot {
		t.Errorf("the request in flight got %d, want 418", code)
	}
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if _, err := net.Dial("tcp", l.Addr().String()); err == nil {
		t.Error("the listener accepts after Run returned")
	}

	l2, _ := net.Listen("tcp", "127.0.0.1:0")
	l2.Close()
	if err := Run(context.Background(), l2, Server(http.NotFoundHandler())); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Run on a closed listener: %v", err)
	}
}
