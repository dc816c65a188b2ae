package testfleet

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Sessions are clients of the demo service that log in, make a few requests in their
// session (each a GET /cart with the session's cookies, and HAProxy's when it sticks
// sessions), log out and start again, until Finish. A session unknown to the process
// that receives it is answered 401: a lost session. Each request opens a connection
// of its own, as a browser's does after a pause: between two requests a session holds
// no connection, so a drain that waits for a server's connections to end does not
// wait for its sessions.
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
	c := &http.Client{Timeout: 5 * time.Second, Jar: jar, Transport: &http.Transport{DisableKeepAlives: true}}
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
	return s.Counts()
}

// Counts are the counts so far.
func (s *Sessions) Counts() SessionCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := make(map[string]int64, len(s.versions))
	for k, n := range s.versions {
		v[k] = n
	}
	return SessionCounts{Sent: s.sent.Load(), Failed: s.failed.Load(), Lost: s.lost.Load(), Completed: s.done.Load(), Versions: v}
}

// Downloads are clients of the demo service that each log in, so that HAProxy sticks
// them to a server, and download /download?seconds=N, again and again until Finish: a
// long response that a restart cuts and a draining color lets finish.
type Downloads struct {
	mu    sync.Mutex
	log   DownloadLog
	stop  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
	limit time.Time
}

// Download is one long download: the server HAProxy stuck it to (its SRV cookie),
// the version that answered, when it started and ended, and whether every byte its
// Content-Length promised arrived.
type Download struct {
	Server, Version string
	Start, End      time.Time
	Complete        bool
	Err             string // why it is not complete
}

// StartDownloads starts clients against base (HAProxy's URL, no trailing slash), each
// downloading for length at a time, for at most limit.
func StartDownloads(base string, clients int, length, limit time.Duration) *Downloads {
	d := &Downloads{stop: make(chan struct{}), limit: time.Now().Add(limit)}
	for range clients {
		d.wg.Go(func() {
			for d.running() && time.Now().Add(length).Before(d.limit) {
				dl := download(base, length)
				d.mu.Lock()
				d.log = append(d.log, dl)
				d.mu.Unlock()
			}
		})
	}
	return d
}

// download logs in and downloads for length.
func download(base string, length time.Duration) (dl Download) {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Timeout: length + 30*time.Second, Jar: jar, Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	dl.Start = time.Now()
	defer func() { dl.End = time.Now() }()
	resp, err := c.Post(base+"/login", "", nil)
	if err != nil {
		dl.Err = "login: " + err.Error()
		return dl
	}
	resp.Body.Close()
	resp, err = c.Get(fmt.Sprintf("%s/download?seconds=%d", base, int(length.Seconds())))
	if err != nil {
		dl.Err = err.Error()
		return dl
	}
	defer resp.Body.Close()
	dl.Version = resp.Header.Get("X-Demo-Version")
	if u, err := url.Parse(base); err == nil {
		for _, ck := range jar.Cookies(u) {
			if ck.Name == "SRV" {
				dl.Server = ck.Value
			}
		}
	}
	n, err := io.Copy(io.Discard, resp.Body)
	switch {
	case resp.StatusCode != http.StatusOK:
		dl.Err = resp.Status
	case err != nil:
		dl.Err = fmt.Sprintf("cut after %d of %d bytes: %v", n, resp.ContentLength, err)
	case n != resp.ContentLength:
		dl.Err = fmt.Sprintf("%d of %d bytes", n, resp.ContentLength)
	default:
		dl.Complete = true
	}
	return dl
}

func (d *Downloads) running() bool {
	select {
	case <-d.stop:
		return false
	default:
		return true
	}
}

// Finish stops starting downloads, waits for those in flight to end, and returns
// every download, in the order they ended.
func (d *Downloads) Finish() DownloadLog {
	d.once.Do(func() { close(d.stop) })
	d.wg.Wait()
	return d.Log()
}

// Log is every download that ended so far.
func (d *Downloads) Log() DownloadLog {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.log)
}

// DownloadLog is what the download clients saw.
type DownloadLog []Download

// Completed counts the downloads that got every byte.
func (l DownloadLog) Completed() int {
	n := 0
	for _, d := range l {
		if d.Complete {
			n++
		}
	}
	return n
}

// InFlight counts the downloads that server was serving at t: started before it,
// ended after it.
func (l DownloadLog) InFlight(server string, t time.Time) int {
	n := 0
	for _, d := range l {
		if d.Server == server && d.Start.Before(t) && d.End.After(t) {
			n++
		}
	}
	return n
}

// Failures are the reasons of the downloads that did not complete, at most n.
func (l DownloadLog) Failures(n int) []string {
	var out []string
	for _, d := range l {
		if !d.Complete && len(out) < n {
			out = append(out, d.Server+": "+d.Err)
		}
	}
	return out
}

// The session load of the bluegreen tests and benchmarks: SessionClients clients that
// log in and make SessionRequests requests SessionPause apart (about 5s a session),
// and DownloadClients that download for DownloadLength at a time.
const (
	SessionClients  = 12
	SessionRequests = 20
	SessionPause    = 250 * time.Millisecond
	DownloadClients = 4
	DownloadLength  = 4 * time.Second
)

// SessionLoad is the session load running against a load balancer.
type SessionLoad struct {
	Sessions  *Sessions
	Downloads *Downloads
}

// StartSessionLoad starts the session load against base (HAProxy's URL, no trailing
// slash), for at most 5 minutes.
func StartSessionLoad(base string) SessionLoad {
	return SessionLoad{
		Sessions:  StartSessions(base, SessionClients, SessionRequests, SessionPause, 5*time.Minute),
		Downloads: StartDownloads(base, DownloadClients, DownloadLength, 5*time.Minute),
	}
}

// Finish stops the clients, waits for their sessions and downloads to end, and
// returns what they saw.
func (l SessionLoad) Finish() (SessionCounts, DownloadLog) {
	return l.Sessions.Finish(), l.Downloads.Finish()
}
