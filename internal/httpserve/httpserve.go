// Package httpserve runs the agent's HTTP servers until their context ends, then shuts them down gracefully.
package httpserve

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// shutdownWait bounds how long the requests in flight may take once the context ended.
const shutdownWait = 5 * time.Second

// Server is an http.Server for h with timeouts that bound a slow client.
func Server(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
}

// Run serves srv on l until ctx ends, then shuts srv down, waiting up to five
// seconds for the requests in flight, and closes l. It returns nil when ctx ended,
// and the error that stopped serving before.
func Run(ctx context.Context, l net.Listener, srv *http.Server) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownWait)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
