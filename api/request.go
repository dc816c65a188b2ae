package api

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/internal/strictjson"
)

// RetryRequest is the body of POST /v1/retry.
type RetryRequest struct {
	Commit string `json:"commit"`
}

// RollbackRequest is the body of POST /v1/rollback: empty, {}, or the revision to
// go back to; without one the agent picks the newest earlier revision it ran that
// is not quarantined.
type RollbackRequest struct {
	To string `json:"to,omitempty"`
}

// RollbackAnswer is what the agent will do: revert the host from From to To. Its
// Request id comes back in State.LastRollback once the rollback has ended.
type RollbackAnswer struct {
	Request string `json:"request"`
	From    string `json:"from"`
	To      string `json:"to"`
}

// MinCommitPrefix is the fewest hex digits of a commit prefix (commitid.MinPrefix).
const MinCommitPrefix = commitid.MinPrefix

// parseRetry decodes the body of POST /v1/retry: one JSON object with exactly a
// "commit" field, a hex commit id or prefix. It returns the commit in lower case.
// Errors wrap ErrInvalid.
func parseRetry(data []byte) (string, error) {
	var req struct {
		Commit *string `json:"commit"`
	}
	if err := decodeStrict(data, &req); err != nil {
		return "", err
	}
	if req.Commit == nil {
		return "", fmt.Errorf("%w: commit is required", ErrInvalid)
	}
	commit := strings.ToLower(*req.Commit)
	if err := CheckCommit(commit); err != nil {
		return "", err
	}
	return commit, nil
}

// parseRollback decodes the body of POST /v1/rollback: nothing, {}, or {"to":
// commit}. It returns the commit in lower case, "" when none was given. Errors wrap
// ErrInvalid.
func parseRollback(data []byte) (string, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return "", nil
	}
	var req RollbackRequest
	if err := decodeStrict(data, &req); err != nil {
		return "", err
	}
	if req.To == "" {
		return "", nil
	}
	to := strings.ToLower(req.To)
	return to, CheckCommit(to)
}

// CheckCommit says why commit (lower case) is not a commit id or a prefix of one
// (commitid.CheckPrefix); the error wraps ErrInvalid.
func CheckCommit(commit string) error {
	if err := commitid.CheckPrefix(commit); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// parseEmpty accepts the body of a request that takes no argument: nothing, or {}.
func parseEmpty(data []byte) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	return decodeStrict(data, &struct{}{})
}

// decodeStrict decodes data as exactly one JSON object into v, refusing unknown
// fields and anything after the object. Errors wrap ErrInvalid.
func decodeStrict(data []byte, v any) error {
	if len(data) > maxBody {
		return fmt.Errorf("%w: request body over %d bytes", ErrInvalid, maxBody)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return fmt.Errorf("%w: empty request body; want a JSON object", ErrInvalid)
	}
	if trimmed[0] != '{' {
		return fmt.Errorf("%w: request body is not a JSON object", ErrInvalid)
	}
	switch err := strictjson.Decode(data, v); {
	case errors.Is(err, strictjson.ErrTrailing):
		return fmt.Errorf("%w: request body: data after the JSON object", ErrInvalid)
	case err != nil:
		return fmt.Errorf("%w: request body: %v", ErrInvalid, err)
	}
	return nil
}
