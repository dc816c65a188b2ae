package drain

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// backend is a test HTTP server standing for one host's service. A request's
// ?hold=<ms> makes the handler hold it that long before answering 200 and the
// backend's name. Restart stops it abruptly and starts a new one on the same port,
// as a service's restart does.
type backend struct {
	name     string
	addr     string
	arrived  atomic.Int64 // requests that reached any instance
	hits     atomic.Int64 // requests answered by any instance
	inflight atomic.Int64 // requests being held right now
	mu       sync.Mutex
	srv      *http.Server
	done     chan struct{} // closed when srv's Serve returned
}

func startBackend(t testing.TB, name string) *backend {
	t.Helper()
	b := &backend{name: name}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = l.Addr().String()
	b.serve(l)
	t.Cleanup(b.stop)
	return b
}

func (b *backend) serve(l net.Listener) {
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.arrived.Add(1)
			b.inflight.Add(1)
			defer b.inflight.Add(-1)
			if ms, _ := strconv.Atoi(r.URL.Query().Get("hold")); ms > 0 {
				select {
				case <-time.After(time.Duration(ms) * time.Millisecond):
				case <-r.Context().Done():
					return
				}
			}
			b.hits.Add(1)
			io.WriteString(w, b.name)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	done := make(chan struct{})
	b.mu.Lock()
	b.srv, b.done = srv, done
	b.mu.Unlock()
	go func() { _ = srv.Serve(l); close(done) }()
}

// stop closes the listener and every connection at once, cutting held requests.
func (b *backend) stop() {
	b.mu.Lock()
	srv, done := b.srv, b.done
	b.srv = nil
	b.mu.Unlock()
	if srv != nil {
		srv.Close()
		<-done
	}
}

// restart stops the backend abruptly, waits down, and listens again on its port.
func (b *backend) restart(t *testing.T, down time.Duration) {
	t.Helper()
	b.stop()
	time.Sleep(down)
	l, err := net.Listen("tcp", b.addr)
	if err != nil {
		t.Fatalf("restart %s: %v", b.name, err)
	}
	b.serve(l)
}

// loadResult counts the requests of a load run.
type loadResult struct {
	OK, Failed int64
	Errors     []string // the first few failures
	Took       time.Duration
	Slowest    time.Duration // the longest request, failed or not
}

// load is a bounded load generator, made by startLoad.
type load struct {
	ok, failed, sent atomic.Int64
	slowest          atomic.Int64 // nanoseconds
	mu               sync.Mutex
	errs             []string
	stop             chan struct{}
	stopOnce         sync.Once
	done             chan struct{}
	start            time.Time
	took             time.Duration
}

// startLoad sends GET url through `clients` concurrent keep-alive clients until
// `total` requests are done, the deadline passes or wait(true) stops it,
// whichever comes first; every request that is not answered 200 counts as failed.
func startLoad(url string, clients int, total int64, deadline time.Duration) *load {
	ld := &load{stop: make(chan struct{}), done: make(chan struct{}), start: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	tr := &http.Transport{MaxIdleConnsPerHost: clients, DisableCompression: true, Proxy: nil}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for ld.sent.Add(1) <= total {
				select {
				case <-ld.stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				t0 := time.Now()
				err := get(ctx, client, url)
				for took := int64(time.Since(t0)); ; {
					if old := ld.slowest.Load(); took <= old || ld.slowest.CompareAndSwap(old, took) {
						break
					}
				}
				if err != nil {
					if ctx.Err() != nil {
						return // the deadline, not the server
					}
					ld.failed.Add(1)
					ld.mu.Lock()
					if len(ld.errs) < 5 {
						ld.errs = append(ld.errs, err.Error())
					}
					ld.mu.Unlock()
				} else {
					ld.ok.Add(1)
				}
			}
		})
	}
	go func() {
		wg.Wait()
		ld.took = time.Since(ld.start)
		cancel()
		tr.CloseIdleConnections()
		close(ld.done)
	}()
	return ld
}

func get(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d: %.80s", resp.StatusCode, body)
	}
	return nil
}

// wait stops the load (when stop is true) and returns its counts.
func (ld *load) wait(stop bool) loadResult {
	if stop {
		ld.stopOnce.Do(func() { close(ld.stop) })
	}
	<-ld.done
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return loadResult{OK: ld.ok.Load(), Failed: ld.failed.Load(), Errors: ld.errs, Took: ld.took, Slowest: time.Duration(ld.slowest.Load())}
}

// waitFor polls cond every 10 ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
