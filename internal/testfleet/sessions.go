package testfleet

import (
	"net/http"
	"net/http/cookiejar"
	"sync"
	"sync/atomic"
	"time"
)

// Sessions are clients of the demo service that log in, make a few requests in their
// session (each a GET /cart with the session's cookies, and HAProxy's when it sticks
// sessions), log out and start again, until Finish. A session unknown to the process
// that receives it is answered 401: a lost session.
type Sessions struct {
	sent, failed, lost, done atomic.Int64
	mu                       sync.Mutex
	versions                 map[string]int64 // X-Demo-Version of every answer
	stop                     chan struct{}
	once                     sync.Once
	wg                       sync.WaitGroup
}

// StartSessions starts clients against base (HAProxy's URL, no trailing slash), each
// session making perSession requests spaced by pause, for at most limit.
func StartSessions(base string, clients, perSession int, pause, limit time.Duration) *Sessions {
	s := &Sessions{stop: make(chan struct{}), versions: map[string]int64{}}
	deadline := time.Now().Add(limit)
	for range clients {
		s.wg.Go(func() {
			for time.Now().Before(deadline) {
				if !s.session(base, perSession, pause) {
					return
				}
			}
		})
	}
	return s
}

// session runs one session; false when the clients are to stop.
func (s *Sessions) session(base string, n int, pause time.Duration) bool {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Timeout: 5 * time.Second, Jar: jar, Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	if !s.do(c, http.MethodPost, base+"/login") {
		return s.running()
	}
	for range n {
		if !s.running() {
			return false
		}
		if !s.do(c, http.MethodGet, base+"/cart") {
			return s.running()
		}
		time.Sleep(pause)
	}
	s.do(c, http.MethodPost, base+"/logout")
	s.done.Add(1)
	return s.running()
}

// do sends one request and counts it; false when it failed or the session was lost.
func (s *Sessions) do(c *http.Client, method, url string) bool {
	req, _ := http.NewRequest(method, url, nil)
	s.sent.Add(1)
	resp, err := c.Do(req)
	if err != nil {
		s.failed.Add(1)
		return false
	}
	resp.Body.Close()
	s.mu.Lock()
	s.versions[resp.Header.Get("X-Demo-Version")]++
	s.mu.Unlock()
	switch resp.StatusCode {
	case http.StatusOK:
		return true
	case http.StatusUnauthorized:
		s.lost.Add(1)
	default:
		s.failed.Add(1)
	}
	return false
}

func (s *Sessions) running() bool {
	select {
	case <-s.stop:
		return false
	default:
		return true
	}
}

// SessionCounts is what the clients saw.
type SessionCounts struct {
	Sent, Failed, Lost, Completed int64
	Versions                      map[string]int64 // answers by the version that gave them
}

// Finish stops the clients, waits for their sessions to end, and returns the counts.
func (s *Sessions) Finish() SessionCounts {
	s.once.Do(func() { close(s.stop) })
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	v := make(map[string]int64, len(s.versions))
	for k, n := range s.versions {
		v[k] = n
	}
	return SessionCounts{Sent: s.sent.Load(), Failed: s.failed.Load(), Lost: s.lost.Load(), Completed: s.done.Load(), Versions: v}
}
