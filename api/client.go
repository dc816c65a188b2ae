package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
)

// maxAnswer bounds an answer of the server.
const maxAnswer = 16 << 20

// Client calls the API of the agent on a unix socket. Its calls wait as long as their
// context allows: give them a deadline.
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client of the socket at path. It connects at each call.
func NewClient(path string) *Client {
	var d net.Dialer
	return &Client{
		path: path,
		hc: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return d.DialContext(ctx, "unix", path)
			},
			MaxIdleConns:    1,
			IdleConnTimeout: 0,
			Proxy:           nil,
		}},
	}
}

// Error is the server's answer to a request it did not do. It wraps ErrInvalid,
// ErrNotFound, ErrConflict or ErrNotReady according to its status.
type Error struct {
	Status  int    // the HTTP status
	Message string // the server's message
}

func (e *Error) Error() string { return e.Message }

func (e *Error) Unwrap() error {
	switch e.Status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return ErrInvalid
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusConflict:
		return ErrConflict
	case http.StatusServiceUnavailable:
		return ErrNotReady
	}
	return nil
}

// State returns the agent's state.
func (c *Client) State(ctx context.Context) (State, error) {
	var st State
	err := c.do(ctx, http.MethodGet, PathStatus, nil, &st)
	return st, err
}

// Sync makes the agent poll the fleet repository now.
func (c *Client) Sync(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, PathSync, nil, nil)
}

// Rollback makes the agent revert the host to an earlier revision it ran, under the
// lease: to, or the newest earlier one not quarantined when to is "". It returns
// once the agent has taken the request; State tells how it ends.
func (c *Client) Rollback(ctx context.Context, to string) (RollbackAnswer, error) {
	var ans RollbackAnswer
	err := c.do(ctx, http.MethodPost, PathRollback, RollbackRequest{To: to}, &ans)
	return ans, err
}

// Retry lifts the quarantine of commit (a full id or a prefix of at least
// MinCommitPrefix hex digits), so that the agent tries it again.
func (c *Client) Retry(ctx context.Context, commit string) error {
	return c.do(ctx, http.MethodPost, PathRetry, RetryRequest{Commit: commit}, nil)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode the request: %w", err)
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://baton"+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // it names a made-up URL
		}
		hint := ""
		switch {
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
			hint = " (is the agent running?)"
		case errors.Is(err, fs.ErrPermission):
			hint = " (run as root or as a member of the socket's group)"
		}
		return fmt.Errorf("reach the baton agent on %s: %w%s", c.path, err, hint)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("read the agent's answer: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var e errorBody
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("the agent answered %s: %s", resp.Status, strings.TrimSpace(string(data[:min(len(data), 200)])))
		}
		return &Error{Status: resp.StatusCode, Message: e.Error}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode the agent's answer: %w", err)
		}
	}
	return nil
}
