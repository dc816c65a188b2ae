// Package testfleetlock is a FleetLock server for tests that answers as airlock does.
package testfleetlock

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// The two calls of the protocol, as airlock serves them.
const (
	PreReboot   = "/v1/pre-reboot"
	SteadyState = "/v1/steady-state"
)

// Server answers the FleetLock protocol as airlock (coreos/airlock) does:
//
//   - both calls, whatever the method, first validate the client: the header
//     "fleet-lock-protocol: true" and a JSON body {"client_params":{"group":..,"id":..}}
//     with both non-empty; otherwise 400 {"kind":"invalid_client_identity",...};
//   - a group that is not configured: 400 {"kind":"unknown_group","value":"unknown group \"x\""};
//   - pre-reboot: 200 when the id holds a slot of the group, already or now; when every
//     slot is taken, 500 {"kind":"failed_lock","value":"all N semaphore slots currently locked"};
//   - steady-state: 200, whether or not the id held a slot;
//   - errors are written with http.Error: Content-Type text/plain, the JSON and a newline;
//   - any other path: net/http's 404.
//
// The semaphores outlive Stop and Start, as airlock's live in etcd and outlive a restart
// of airlock; Wipe loses them, as a new etcd would.
type Server struct {
	mu        sync.Mutex
	groups    map[string]uint64 // airlock's [[lock.groups]]: name -> slots
	sems      map[string]*Semaphore
	most      map[string]int // the most holders each group had at once
	log       []Request
	intercept func(Request) *Reply
	addr      string
	srv       *http.Server
}

// Request is what the server received and answered.
type Request struct {
	At     time.Time
	Path   string
	ID     string // "" when the body did not validate
	Group  string
	Status int
	Kind   string // the error kind answered, "" for 200
}

// Reply is an answer chosen by an interceptor instead of the server's own.
type Reply struct {
	Status int
	Header http.Header
	Body   string
}

// New makes a server of groups (name -> slots). It is not listening yet.
func New(groups map[string]uint64) *Server {
	return &Server{groups: groups, sems: map[string]*Semaphore{}, most: map[string]int{}}
}

// Start makes a server of groups, listening on a free port of 127.0.0.1, stopped when
// the test ends.
func Start(t testing.TB, groups map[string]uint64) *Server {
	t.Helper()
	s := New(groups)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Start listens: on a free port the first time, on the same address after Stop.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return errors.New("testfleetlock: already listening")
	}
	addr := s.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for range 50 { // the port of a stopped server may take a moment to be free again
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("testfleetlock: listen: %w", err)
	}
	s.addr = ln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc(PreReboot, s.serve)
	mux.HandleFunc(SteadyState, s.serve)
	s.srv = &http.Server{Handler: mux}
	go s.srv.Serve(ln)
	return nil
}

// Stop kills the server: the listener and every connection close at once, as when
// the process is killed. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// URL is the server's base URL, without a trailing slash.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "http://" + s.addr
}

// Wipe forgets every semaphore, as a server whose store was lost.
func (s *Server) Wipe() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sems = map[string]*Semaphore{}
}

// Intercept makes fn see every request first: when it returns a Reply, that is the
// answer and the semaphores are left alone. nil removes the interceptor.
func (s *Server) Intercept(fn func(Request) *Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.intercept = fn
}

// Holders returns the ids holding a slot of group, sorted.
func (s *Server) Holders(group string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sem := s.sems[group]; sem != nil {
		return slices.Clone(sem.Holders)
	}
	return nil
}

// MostHolders is the most ids that held a slot of group at once since the server was made.
func (s *Server) MostHolders(group string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.most[group]
}

// Requests returns every request answered, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.log)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	req := Request{At: time.Now(), Path: r.URL.Path}
	rep, kind := s.answer(r, &req)
	req.Status, req.Kind = rep.Status, kind
	s.mu.Lock()
	s.log = append(s.log, req)
	s.mu.Unlock()
	for k, vs := range rep.Header {
		w.Header()[k] = vs
	}
	if rep.Body == "" {
		w.WriteHeader(rep.Status)
		return
	}
	http.Error(w, rep.Body, rep.Status) // as airlock: text/plain, the body and a newline
}

// fail is airlock's error answer: herrors.HTTPError as JSON.
func fail(status int, kind, value string) (*Reply, string) {
	b, _ := json.Marshal(struct {
		Kind  string `json:"kind"`
		Value string `json:"value"`
	}{kind, value})
	return &Reply{Status: status, Body: string(b)}, kind
}

// answer validates the request and applies it to the semaphore, as airlock does. It
// returns the reply and its error kind.
func (s *Server) answer(r *http.Request, req *Request) (*Reply, string) {
	var in struct {
		ClientParams struct {
			Group string `json:"group"`
			ID    string `json:"id"`
		} `json:"client_params"`
	}
	var bad error
	if r.Header.Get("fleet-lock-protocol") != "true" {
		bad = errors.New("wrong 'fleet-lock-protocol' header")
	} else if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		bad = err
	} else if in.ClientParams.Group == "" {
		bad = errors.New("empty client group")
	} else if in.ClientParams.ID == "" {
		bad = errors.New("empty client ID")
	}
	if bad != nil {
		return fail(http.StatusBadRequest, "invalid_client_identity", "failed to validate client identity: "+bad.Error())
	}
	id, group := in.ClientParams.ID, in.ClientParams.Group
	req.ID, req.Group = id, group
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.intercept != nil {
		if rep := s.intercept(*req); rep != nil {
			var e struct{ Kind string }
			_ = json.Unmarshal([]byte(rep.Body), &e)
			return rep, e.Kind
		}
	}
	slots, ok := s.groups[group]
	if !ok {
		return fail(http.StatusBadRequest, "unknown_group", fmt.Sprintf("unknown group %q", group))
	}
	sem := s.sems[group]
	if sem == nil {
		sem = &Semaphore{TotalSlots: slots, Holders: []string{}}
		s.sems[group] = sem
	}
	if r.URL.Path == SteadyState {
		sem.UnlockIfHeld(id)
		return &Reply{Status: http.StatusOK}, ""
	}
	if err := sem.RecursiveLock(id); err != nil {
		return fail(http.StatusInternalServerError, "failed_lock", err.Error())
	}
	s.most[group] = max(s.most[group], len(sem.Holders))
	return &Reply{Status: http.StatusOK}, ""
}
