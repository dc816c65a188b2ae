package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

var (
	// errExitMode is returned by run in exit mode: the build refuses to start.
	errExitMode = errors.New("mode exit: this build refuses to start, like a release that cannot run on this host")
	// errCrash is returned by run when crash-after mode's timer fires.
	errCrash = errors.New("mode crash-after: crashing as built")
)

// readHeaderTimeout bounds how long a client may take to send its request headers.
const readHeaderTimeout = 10 * time.Second

// notifyFunc sends one sd_notify message, such as "READY=1".
type notifyFunc func(state string)

// sdNotify returns a notifyFunc that talks to systemd through $NOTIFY_SOCKET
// and does nothing when that is unset.
func sdNotify(logger *slog.Logger) notifyFunc {
	return func(state string) {
		if _, err := daemon.SdNotify(false, state); err != nil {
			logger.Warn("sd_notify failed", "state", state, "err", err)
		}
	}
}

// run serves until ctx is done, then shuts down gracefully: it stops accepting,
// lets in-flight requests finish within cfg.ShutdownTimeout and returns nil.
// It returns errExitMode or errCrash when the mode asks for it.
func run(ctx context.Context, cfg config, logger *slog.Logger, notify notifyFunc) error {
	logger = logger.With("version", cfg.Version, "mode", cfg.Mode)
	if cfg.Mode == modeExit {
		return errExitMode
	}

	// Take passed sockets first: a socket-activated slow start leaves
	// connections queued in them rather than refused.
	ls, err := activatedListeners()
	if err != nil {
		return err
	}
	activated := len(ls) > 0
	logger.Info("starting", "pid", os.Getpid(), "socket_activated", activated)

	if cfg.Mode == modeSlowStart {
		notify(fmt.Sprintf("STATUS=starting slowly (%s)", cfg.StartDelay))
		if !sleep(ctx, cfg.StartDelay) {
			closeAll(ls)
			logger.Info("stopped before ready", "cause", context.Cause(ctx))
			return nil
		}
	}
	if !activated {
		l, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		ls = append(ls, l)
	}

	return serve(ctx, cfg, logger, notify, ls)
}

// serve serves on ls until ctx is done, then shuts down gracefully; it stops
// at once, with an error, when crash-after mode's timer fires or a listener
// fails.
func serve(ctx context.Context, cfg config, logger *slog.Logger, notify notifyFunc, ls []net.Listener) error {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	srv := &http.Server{
		Handler:           newHandler(cfg, host),
		ReadHeaderTimeout: readHeaderTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, len(ls))
	for _, l := range ls {
		go func() { serveErr <- srv.Serve(l) }()
	}
	// wait collects every Serve goroutine once the server is closed.
	wait := func() {
		for range ls {
			<-serveErr
		}
	}

	addrs := listenerAddrs(ls)
	notify(fmt.Sprintf("READY=1\nSTATUS=serving version %s (mode %s) on %s", cfg.Version, cfg.Mode, addrs))
	logger.Info("serving", "addr", addrs)

	var crash <-chan time.Time
	if cfg.Mode == modeCrashAfter {
		t := time.NewTimer(cfg.CrashAfter)
		defer t.Stop()
		crash = t.C
	}

	select {
	case <-ctx.Done():
	case <-crash:
		srv.Close()
		wait()
		return errCrash
	case err := <-serveErr:
		srv.Close()
		wait()
		return fmt.Errorf("serve: %w", err)
	}

	notify("STOPPING=1\nSTATUS=stopping: finishing in-flight requests")
	logger.Info("stopping", "cause", context.Cause(ctx), "timeout", cfg.ShutdownTimeout)
	return shutDown(srv, cfg.ShutdownTimeout, logger, wait)
}

// shutDown stops srv accepting and lets in-flight requests finish within
// timeout, closing the connections still open after it; wait collects the
// Serve goroutines.
func shutDown(srv *http.Server, timeout time.Duration, logger *slog.Logger, wait func()) error {
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		srv.Close()
	}
	wait()
	if err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// activatedListeners returns the stream sockets systemd passed to this process
// (LISTEN_FDS, LISTEN_PID), or none when it was not socket-activated.
func activatedListeners() ([]net.Listener, error) {
	files := activation.Files(true)
	var ls []net.Listener
	for _, f := range files {
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			closeAll(ls)
			return nil, fmt.Errorf("use passed socket %s: %w", f.Name(), err)
		}
		ls = append(ls, l)
	}
	return ls, nil
}

func closeAll(ls []net.Listener) {
	for _, l := range ls {
		l.Close()
	}
}

func listenerAddrs(ls []net.Listener) string {
	addrs := make([]string, len(ls))
	for i, l := range ls {
		addrs[i] = l.Addr().String()
	}
	return strings.Join(addrs, ",")
}

// sleep waits d and reports true, or reports false as soon as ctx is done.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// newHandler serves /healthz, /version, /metrics, /, sessions kept in this process's
// memory (POST /login, GET /cart, POST /logout) and long downloads (GET
// /download?seconds=N), and names the version in an X-Demo-Version header on every
// response.
func newHandler(cfg config, host string) http.Handler {
	metrics := newRequestMetrics(host)
	var requests counter
	mux := http.NewServeMux()
	var clients traffic
	sessions := newSessions()
	mux.HandleFunc("POST /login", clients.count(sessions.login))
	mux.HandleFunc("GET /cart", clients.count(sessions.cart))
	mux.HandleFunc("POST /logout", clients.count(sessions.logout))
	mux.HandleFunc("GET /download", clients.count(download))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if cfg.Mode == modeFailHealth || cfg.Mode == modeFailOnTraffic && clients.seen() {
			http.Error(w, "unhealthy", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "ok\n")
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s\n", cfg.Version)
	})
	mux.Handle("GET /metrics", metrics.handler())
	delay := cfg.RequestDelay
	if cfg.Mode == modeSlow {
		delay += slowDelay
	}
	mux.HandleFunc("GET /{$}", clients.count(metrics.observe(func(w http.ResponseWriter, r *http.Request) {
		// The delay ignores shutdown on purpose: a request in flight when
		// SIGTERM arrives completes. Only the client giving up ends it early.
		if delay > 0 && !sleep(r.Context(), delay) {
			return
		}
		if cfg.Mode == modeFlaky && flaky(requests.next()) {
			http.Error(w, "flaky by design", http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "hello from %s version %s\n", host, cfg.Version)
	})))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Demo-Version", cfg.Version)
		mux.ServeHTTP(w, r)
	})
}

// traffic says whether the process has served a client request yet.
type traffic struct{ served atomic.Bool }

// count marks next's requests as client traffic.
func (t *traffic) count(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		t.served.Store(true)
		next(w, r)
	}
}

func (t *traffic) seen() bool { return t.served.Load() }
