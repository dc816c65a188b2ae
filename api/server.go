package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/baton-fleet/baton/internal/redact"
)

// SocketMode is the mode of the socket: root and the socket's group may connect.
const SocketMode fs.FileMode = 0o660

// The endpoints, under the socket's HTTP.
const (
	PathStatus   = "/v1/status"   // GET: State
	PathSync     = "/v1/sync"     // POST, empty body or {}: poll now
	PathRollback = "/v1/rollback" // POST, empty body, {} or {"to": commit}: revert to an earlier revision
	PathRetry    = "/v1/retry"    // POST {"commit": "<id or prefix>"}: lift a quarantine
)

// maxBody bounds a request body; every valid one is far smaller.
const maxBody = 4 << 10

// maxSocketPath is the longest path a unix socket can be bound to (sun_path, less its NUL).
const maxSocketPath = 107

// Server serves the API on a unix socket.
type Server struct {
	path    string
	ln      *net.UnixListener
	self    os.FileInfo // the socket this server created, to remove only it
	backend Backend
	log     *slog.Logger
	now     func() time.Time

	serving   sync.Mutex // held by Serve
	closeOnce sync.Once
	closeErr  error
}

// NewServer creates the socket at path, with mode 0660 and group gid (-1 leaves the
// group as created), and its directory when missing. It refuses a path that exists
// and is not a socket, or on which another server answers; it replaces a stale
// socket. The socket appears at path with its mode and group already set. Serve
// then answers on it; Close (or the end of Serve) removes it.
func NewServer(path string, gid int, b Backend, logger *slog.Logger) (*Server, error) {
	if path == "" {
		return nil, errors.New("api socket: empty path")
	}
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("api socket %s: path longer than %d bytes", path, maxSocketPath)
	}
	if err := clearStale(path); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	// Bind under a temporary name, set mode and group, then rename into place: no
	// client ever sees the socket with looser permissions.
	bind := filepath.Join(dir, "."+randomHex(4))
	if len(bind) > maxSocketPath {
		bind = path
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: bind, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*Server, error) {
		ln.Close()
		os.Remove(bind)
		return nil, fmt.Errorf("api socket %s: %w", path, err)
	}
	if err := os.Chmod(bind, SocketMode); err != nil {
		return fail(err)
	}
	if gid >= 0 {
		if err := os.Lchown(bind, -1, gid); err != nil {
			return fail(err)
		}
	}
	if bind != path {
		if err := os.Rename(bind, path); err != nil {
			return fail(err)
		}
	}
	self, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return &Server{path: path, ln: ln, self: self, backend: b, log: logger, now: time.Now}, nil
}

// clearStale checks what is at path: nothing, or a socket nobody answers on (which
// it removes) are fine.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("api socket: %w", err)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("api socket %s: exists and is not a socket; refusing to replace it", path)
	}
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("api socket %s: another server answers on it (is another agent running?)", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("api socket %s: check the existing socket: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("api socket %s: remove the stale socket: %w", path, err)
	}
	return nil
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

// Serve answers requests until ctx ends, then waits up to 5 seconds for requests
// in flight (their contexts are cancelled), closes the listener and removes the
// socket. It returns nil when ctx ends, or the error that stopped it.
func (s *Server) Serve(ctx context.Context) error {
	if !s.serving.TryLock() {
		return errors.New("api: Serve called twice")
	}
	defer s.serving.Unlock()
	defer s.Close()
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		IdleTimeout:       time.Minute,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnContext:       withPeer,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		if errors.Is(err, net.ErrClosed) {
			return nil // Close was called
		}
		return fmt.Errorf("api: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc
	return nil
}

// Close closes the listener and removes the socket, if it is still the one this
// server created. Serve calls it; call it when Serve is never called.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		err := s.ln.Close()
		if fi, lerr := os.Lstat(s.path); lerr == nil && os.SameFile(fi, s.self) {
			if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				err = errors.Join(err, rerr)
			}
		}
		if err != nil && !errors.Is(err, net.ErrClosed) {
			s.closeErr = fmt.Errorf("api socket %s: close: %w", s.path, err)
		}
	})
	return s.closeErr
}

// ServeHTTP routes a request to its endpoint. Every answer is JSON; an error is
// {"error": "..."} with a 4xx or 5xx status.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var allow string
	switch r.URL.Path {
	case PathStatus:
		allow = http.MethodGet
	case PathSync, PathRollback, PathRetry:
		allow = http.MethodPost
	default:
		writeError(w, http.StatusNotFound, fmt.Sprintf("no endpoint %s", r.URL.Path))
		return
	}
	if r.Method != allow && !(allow == http.MethodGet && r.Method == http.MethodHead) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s takes %s, not %s", r.URL.Path, allow, r.Method))
		return
	}
	var body []byte
	if allow == http.MethodPost {
		var err error
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", maxBody))
				return
			}
			writeError(w, http.StatusBadRequest, "read the request body: "+err.Error())
			return
		}
	}
	ctx := r.Context()
	log := s.log.With("endpoint", r.URL.Path)
	if p, ok := ctx.Value(peerKey{}).(peer); ok {
		log = log.With("uid", p.uid, "pid", p.pid)
	}
	switch r.URL.Path {
	case PathStatus:
		st, err := s.backend.State(ctx)
		if err != nil {
			s.fail(w, log, err)
			return
		}
		if st.Time.IsZero() {
			st.Time = s.now()
		}
		writeJSON(w, http.StatusOK, redactState(st))
	case PathSync:
		s.command(w, log, parseEmpty(body), func() (any, error) { return nil, s.backend.Sync(ctx) }, http.StatusAccepted)
	case PathRollback:
		to, err := parseRollback(body)
		s.command(w, log, err, func() (any, error) { return s.backend.Rollback(ctx, to) }, http.StatusAccepted)
	case PathRetry:
		commit, err := parseRetry(body)
		s.command(w, log.With("commit", commit), err, func() (any, error) { return nil, s.backend.Retry(ctx, commit) }, http.StatusOK)
	}
}

// command runs do unless the request was bad, and answers with status and what do
// returned, or {"ok": true} when it returned nothing.
func (s *Server) command(w http.ResponseWriter, log *slog.Logger, bad error, do func() (any, error), status int) {
	if bad != nil {
		writeError(w, http.StatusBadRequest, bad.Error())
		return
	}
	answer, err := do()
	if err != nil {
		s.fail(w, log, err)
		return
	}
	if answer == nil {
		log.Info("api command done")
		answer = map[string]bool{"ok": true}
	} else {
		log.Info("api command done", "answer", answer)
	}
	writeJSON(w, status, answer)
}

func (s *Server) fail(w http.ResponseWriter, log *slog.Logger, err error) {
	status := errorStatus(err)
	msg := redact.Text(err.Error())
	if status >= 500 {
		log.Warn("api request failed", "status", status, "err", msg)
	} else {
		log.Debug("api request refused", "status", status, "err", msg)
	}
	writeError(w, status, msg)
}

func errorStatus(err error) int {
	switch {
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrNotReady), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// errorBody is every error's answer.
type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		b.Reset()
		_ = json.NewEncoder(&b).Encode(errorBody{Error: "encode the answer: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// peer is the process at the other end of a connection, for the log of commands.
type peer struct{ uid, pid int }

type peerKey struct{}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
