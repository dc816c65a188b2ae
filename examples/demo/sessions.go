package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"sync"
)

// sessionCookie names the cookie of a demo session.
const sessionCookie = "demo-session"

// sessions are logged-in sessions, kept only in this process's memory, as a shop's
// carts often are: a request with a session this process does not know is answered
// 401, so a client sent to another process (or to this one restarted) has lost it.
type sessions struct {
	mu    sync.Mutex
	carts map[string]int // by session id: requests served in it
}

func newSessions() *sessions { return &sessions{carts: map[string]int{}} }

// login opens a session and sets its cookie.
func (s *sessions) login(w http.ResponseWriter, _ *http.Request) {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	s.mu.Lock()
	s.carts[id] = 0
	s.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: "/"})
	fmt.Fprintln(w, "logged in")
}

// cart serves a request in the session: 401 for a session this process does not know.
func (s *sessions) cart(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(sessionCookie)
	s.mu.Lock()
	n, ok := 0, false
	if err == nil {
		n, ok = s.carts[c.Value]
		if ok {
			n++
			s.carts[c.Value] = n
		}
	}
	s.mu.Unlock()
	if !ok {
		http.Error(w, "no such session here", http.StatusUnauthorized)
		return
	}
	fmt.Fprintf(w, "cart: %d requests\n", n)
}

// logout ends the session.
func (s *sessions) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		s.mu.Lock()
		delete(s.carts, c.Value)
		s.mu.Unlock()
	}
	fmt.Fprintln(w, "logged out")
}
