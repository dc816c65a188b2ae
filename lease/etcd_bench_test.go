package lease

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testetcd"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// requestCounter counts what clients send to etcd: every unary call (Txn, Grant,
// Revoke, ...) and every message sent on a stream (a watch create or cancel, a lease
// keep-alive), by method.
type requestCounter struct {
	mu sync.Mutex
	n  map[string]*atomic.Int64
}

func newRequestCounter() *requestCounter { return &requestCounter{n: map[string]*atomic.Int64{}} }

func (rc *requestCounter) add(method string) {
	rc.mu.Lock()
	c := rc.n[method]
	if c == nil {
		c = new(atomic.Int64)
		rc.n[method] = c
	}
	rc.mu.Unlock()
	c.Add(1)
}

// snapshot returns the counts by short method name.
func (rc *requestCounter) snapshot() map[string]int64 {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	m := map[string]int64{}
	for k, v := range rc.n {
		m[k[strings.LastIndexByte(k, '/')+1:]] = v.Load()
	}
	return m
}

func (rc *requestCounter) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			rc.add(method)
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			s, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				return nil, err
			}
			return countingStream{ClientStream: s, rc: rc, method: method}, nil
		}),
	}
}

type countingStream struct {
	grpc.ClientStream
	rc     *requestCounter
	method string
}

func (s countingStream) SendMsg(m any) error {
	s.rc.add(s.method)
	return s.ClientStream.SendMsg(m)
}

// diff returns after - before per method, and the total.
func diff(before, after map[string]int64) (map[string]int64, int64) {
	d := map[string]int64{}
	var total int64
	for k, v := range after {
		if n := v - before[k]; n > 0 {
			d[k] = n
			total += n
		}
	}
	return d, total
}

func describe(d map[string]int64, per float64) string {
	var keys []string
	for k := range d {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.2f", k, float64(d[k])/per))
	}
	return strings.Join(parts, ", ")
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// BenchmarkEtcdHandoff measures the time from a holder's Release to the next waiter's
// Acquire returning, over b.N handoffs between two hosts on one etcd member (fsync on),
// and the etcd requests each handoff costs.
//
//	go test -run '^$' -bench BenchmarkEtcdHandoff -benchtime 300x ./lease/
func BenchmarkEtcdHandoff(b *testing.B) {
	c := testetcd.Start(b)
	rc := newRequestCounter()
	cfg := c.ClientConfig()
	cfg.DialOptions = rc.dialOptions()
	hosts := []*Etcd{newEtcd(b, c.ClientWith(b, cfg), "a"), newEtcd(b, c.ClientWith(b, cfg), "b")}
	waiting := make(chan struct{}, 1)
	for _, e := range hosts {
		e.o.TTL = DefaultEtcdTTL
		e.onWait = func() { waiting <- struct{}{} }
	}
	ctx := b.Context()
	if err := hosts[0].Acquire(ctx, "web"); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	var before map[string]int64
	b.ResetTimer()
	for i := range b.N {
		holder, next := hosts[i%2], hosts[(i+1)%2]
		got := acquireAsync(ctx, next, "web")
		<-waiting
		if i == 0 {
			before = rc.snapshot()
		}
		start := time.Now()
		if err := holder.Release(ctx); err != nil {
			b.Fatal(err)
		}
		if err := <-got; err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	d, total := diff(before, rc.snapshot())
	b.ReportMetric(float64(percentile(lat, 0.5).Microseconds())/1000, "ms-median")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "ms-p99")
	b.ReportMetric(float64(total)/float64(b.N), "requests/handoff")
	b.Logf("%d handoffs; per handoff (release + re-queue of the releaser): %s", b.N, describe(d, float64(b.N)))
}

// BenchmarkEtcd1000Contenders runs 1,000 hosts in one process against one etcd member
// (fsync on), maxParallel 1, each acquiring and releasing at once in a loop until b.N
// acquisitions are done. The hosts share 10 clients (100 per client: one gRPC
// connection, one watch stream); each has its own etcd lease (session) kept alive every
// TTL/3 (15s TTL). It reports acquisitions per second and the etcd requests per
// handoff (unary calls and stream messages, keep-alives included).
//
//	go test -run '^$' -bench BenchmarkEtcd1000Contenders -benchtime 2000x ./lease/
func BenchmarkEtcd1000Contenders(b *testing.B) {
	const contenders, clients = 1000, 10
	c := testetcd.Start(b)
	rc := newRequestCounter()
	cfg := c.ClientConfig()
	cfg.DialOptions = rc.dialOptions()
	var clis []*clientv3.Client
	for range clients {
		clis = append(clis, c.ClientWith(b, cfg))
	}
	hosts := make([]*Etcd, contenders)
	for i := range hosts {
		hosts[i] = NewEtcd(clis[i%clients], EtcdOptions{Host: fmt.Sprintf("host-%04d", i), Logger: testLogger()})
		b.Cleanup(func() { hosts[i].Close() })
	}
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()

	// Everyone queues up first (one holds), so that the measured part is steady.
	var waiting atomic.Int64
	for _, e := range hosts {
		var once sync.Once
		e.onWait = func() { once.Do(func() { waiting.Add(1) }) }
	}
	var done atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, e := range hosts {
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := e.Acquire(ctx, "web"); err != nil {
					return
				}
				<-start
				if done.Add(1) >= int64(b.N) {
					cancel()
				}
				retryUntil(context.Background(), e.Release)
			}
		})
	}
	for waiting.Load() < contenders-1 {
		time.Sleep(10 * time.Millisecond)
	}
	before := rc.snapshot()
	b.ResetTimer()
	t0 := time.Now()
	close(start)
	wg.Wait()
	elapsed := time.Since(t0)
	b.StopTimer()
	n := done.Load()
	d, total := diff(before, rc.snapshot())
	b.ReportMetric(float64(n)/elapsed.Seconds(), "acquisitions/s")
	b.ReportMetric(float64(total)/float64(n), "requests/handoff")
	b.Logf("%d acquisitions by %d hosts in %v; per handoff: %s", n, contenders, elapsed.Round(time.Millisecond), describe(d, float64(n)))
}
