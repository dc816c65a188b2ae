package testfleet

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Load sends GET requests to a URL from a few clients, bounded in count and time, and
// counts every failed one (an error or a status other than 200).
type Load struct {
	sent, failed atomic.Int64
	stop         chan struct{}
	once         sync.Once
	done         sync.WaitGroup
}

// StartLoad starts clients sending requests to url until Finish, max requests in all
// or limit, whichever comes first.
func StartLoad(url string, clients int, max int64, limit time.Duration) *Load {
	l := &Load{stop: make(chan struct{})}
	deadline := time.Now().Add(limit)
	for range clients {
		l.done.Go(func() {
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
			defer c.CloseIdleConnections()
			for l.sent.Load() < max && time.Now().Before(deadline) {
				select {
				case <-l.stop:
					return
				default:
				}
				l.sent.Add(1)
				resp, err := c.Get(url)
				if err != nil {
					l.failed.Add(1)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					l.failed.Add(1)
				}
			}
		})
	}
	return l
}

// Counts are the requests sent and failed so far.
func (l *Load) Counts() (sent, failed int64) { return l.sent.Load(), l.failed.Load() }

// Finish stops the clients, waits for them and returns the final counts.
func (l *Load) Finish() (sent, failed int64) {
	l.once.Do(func() { close(l.stop) })
	l.done.Wait()
	return l.Counts()
}
