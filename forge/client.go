package forge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/baton-fleet/baton/internal/httpretry"
)

// Kind is the forge's API.
type Kind string

// The forges whose commit-status APIs the client speaks.
const (
	// GitHub: POST /repos/{owner}/{repo}/statuses/{sha}
	// (docs.github.com/rest/commits/statuses#create-a-commit-status).
	GitHub Kind = "github"
	// Gitea and Forgejo: POST /api/v1/repos/{owner}/{repo}/statuses/{sha}
	// (the Swagger of /api/swagger: repoCreateStatus).
	Gitea Kind = "gitea"
	// GitLab: POST /api/v4/projects/{id}/statuses/{sha}
	// (docs.gitlab.com/api/commits/#set-the-pipeline-status-of-a-commit).
	GitLab Kind = "gitlab"
)

// maxToken bounds the token file read.
const maxToken = 4096

// maxAnswer bounds the part of an answer read for its error message.
const maxAnswer = 64 << 10

// client posts statuses to one repository of one forge.
type client struct {
	kind      Kind
	api       *url.URL // the API's base: https://api.github.com, https://gitea.example.com, https://gitlab.example.com
	repo      string   // owner/name, or GitLab's project path
	tokenFile string
	http      *retryablehttp.Client
	now       func() time.Time
}

// request builds the POST of st on commit, as kind's API documents it.
func (c *client) request(ctx context.Context, commit string, st Status, targetURL, token string) (*retryablehttp.Request, error) {
	var path string
	var body any
	h := http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json"}}
	switch c.kind {
	case GitHub:
		path = "/repos/" + escapeSegments(c.repo) + "/statuses/" + commit
		body = map[string]string{"state": string(st.State), "context": st.Context, "description": st.Description, "target_url": targetURL}
		h.Set("Accept", "application/vnd.github+json")
		h.Set("X-GitHub-Api-Version", "2022-11-28")
		h.Set("Authorization", "Bearer "+token)
	case Gitea:
		path = "/api/v1/repos/" + escapeSegments(c.repo) + "/statuses/" + commit
		body = map[string]string{"state": string(st.State), "context": st.Context, "description": st.Description, "target_url": targetURL}
		h.Set("Authorization", "token "+token)
	case GitLab:
		path = "/api/v4/projects/" + url.PathEscape(c.repo) + "/statuses/" + commit
		body = map[string]string{"state": gitlabState(st), "name": st.Context, "description": st.Description, "target_url": targetURL}
		h.Set("PRIVATE-TOKEN", token)
	default:
		return nil, fmt.Errorf("forge %q is unknown", c.kind)
	}
	data, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	// path is escaped already: GitLab's project path keeps its %2F.
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.api.String(), "/")+path, data)
	if err != nil {
		return nil, err
	}
	req.Header = h
	return req, nil
}

// escapeSegments escapes each segment of owner/name.
func escapeSegments(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

// gitlabState maps a status to GitLab's states: a rollout that has not reached a
// host yet is "pending", one under way "running", a halt "failed".
func gitlabState(st Status) string {
	switch st.State {
	case Pending:
		if st.Started {
			return "running"
		}
		return "pending"
	case Failure:
		return "failed"
	}
	return string(st.State)
}

// wireState is st's state as the forge's API names it.
func (c *client) wireState(st Status) string {
	if c.kind == GitLab {
		return gitlabState(st)
	}
	return string(st.State)
}

// gitlabMaxField is the longest description and target_url GitLab takes
// (app/models/commit_status.rb: validates length maximum 255).
const gitlabMaxField = 255

// errUnchanged is GitLab's refusal of a status in the state it already has
// ("Cannot transition status via :run from :running"): nothing to post.
var errUnchanged = errors.New("the forge already shows this state")

// post sends st; the token is read at each post, so it can be rotated.
func (c *client) post(ctx context.Context, commit string, st Status, targetURL string) error {
	token, err := readToken(c.tokenFile)
	if err != nil {
		return err
	}
	req, err := c.request(ctx, commit, st, targetURL, token)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("post the status %s: %w", st.Context, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	msg := ParseError(data)
	if c.kind == GitLab && resp.StatusCode == http.StatusBadRequest && strings.Contains(msg, "Cannot transition status") {
		return errUnchanged
	}
	return fmt.Errorf("post the status %s: %s: %s", st.Context, resp.Status, msg)
}

// ParseError reads the message of a forge's error answer: {"message": "..."} from
// GitHub and Gitea, {"message": ...} or {"error": "..."} from GitLab. An answer that
// is none of these is described, not quoted whole.
func ParseError(body []byte) string {
	var e struct {
		Message json.RawMessage `json:"message"`
		Error   string          `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return fmt.Sprintf("an answer of %d bytes that is not a JSON error", len(body))
	}
	var s string
	switch {
	case len(e.Message) > 0 && json.Unmarshal(e.Message, &s) == nil:
	case len(e.Message) > 0 && string(e.Message) != "null":
		s = string(e.Message) // GitLab: {"message": {"field": ["is invalid"]}}
	default:
		s = e.Error
	}
	if s == "" {
		return "an error without a message"
	}
	return bound(s)
}

func readToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("forge token: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxToken+1))
	if err != nil {
		return "", fmt.Errorf("forge token: %w", err)
	}
	t := strings.TrimSpace(string(data))
	switch {
	case len(data) > maxToken:
		return "", fmt.Errorf("forge token %s: over %d bytes", path, maxToken)
	case t == "":
		return "", fmt.Errorf("forge token %s: empty", path)
	case strings.ContainsAny(t, "\r\n"):
		return "", fmt.Errorf("forge token %s: more than one line", path)
	}
	return t, nil
}

// newHTTP is the retrying client: errors, 429 and 5xx are retried, and a 403 that
// says the rate limit is spent; each wait honours Retry-After and the rate-limit
// reset, and none is longer than waitMax.
func newHTTP(hc *http.Client, retries int, waitMin, waitMax time.Duration, now func() time.Time) *retryablehttp.Client {
	return &retryablehttp.Client{
		HTTPClient:   hc,
		RetryWaitMin: waitMin,
		RetryWaitMax: waitMax,
		RetryMax:     retries,
		CheckRetry: func(ctx context.Context, resp *http.Response, err error) (bool, error) {
			if err == nil && resp.StatusCode == http.StatusForbidden && rateLimited(resp.Header) {
				return ctx.Err() == nil, ctx.Err()
			}
			return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
		},
		Backoff: httpretry.Capped(func(lo, hi time.Duration, n int, resp *http.Response) time.Duration {
			if resp != nil {
				if d, ok := rateLimitWait(resp, now()); ok {
					return d
				}
			}
			return retryablehttp.DefaultBackoff(lo, hi, n, resp)
		}),
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
	}
}

// rateLimited reports whether an answer says the rate limit is spent: GitHub's
// X-RateLimit-Remaining: 0 or its secondary limit's Retry-After, GitLab's
// RateLimit-Remaining: 0.
func rateLimited(h http.Header) bool {
	return h.Get("X-RateLimit-Remaining") == "0" || h.Get("RateLimit-Remaining") == "0" || h.Get("Retry-After") != ""
}

// rateLimitWait is how long an answer asks to wait: its Retry-After (seconds),
// else, when the limit is spent, until its reset (Unix seconds).
func rateLimitWait(resp *http.Response, now time.Time) (time.Duration, bool) {
	h := resp.Header
	if s := h.Get("Retry-After"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 {
			return time.Duration(n) * time.Second, true
		}
	}
	if !rateLimited(h) || (resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusTooManyRequests) {
		return 0, false
	}
	for _, name := range []string{"X-RateLimit-Reset", "RateLimit-Reset"} {
		if n, err := strconv.ParseInt(h.Get(name), 10, 64); err == nil {
			return max(0, time.Unix(n, 0).Sub(now)), true
		}
	}
	return 0, false
}
