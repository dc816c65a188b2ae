// Package webhook receives push events from GitHub, Gitea/Forgejo and GitLab and makes the agent fetch at once.
package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Forge is the kind of server a delivery came from, told by its headers.
type Forge string

// The forges whose push events the receiver reads.
const (
	GitHub Forge = "github"
	Gitea  Forge = "gitea" // and Forgejo, which sends Gitea's headers too
	GitLab Forge = "gitlab"
)

// Push is what a push event says that the receiver uses.
type Push struct {
	Ref   string   // refs/heads/<branch>
	After string   // the commit the ref points at now; may be all zeros for a deleted branch
	Repos []string // the URLs (and "owner/name" path) under which the forge names the repository
}

// Branch is the branch name the push moved, "" when Ref names a tag or anything else.
func (p Push) Branch() string {
	b, ok := strings.CutPrefix(p.Ref, "refs/heads/")
	if !ok {
		return ""
	}
	return b
}

// ErrNotPush is wrapped by ParsePush for a body that is JSON but no push event.
var ErrNotPush = errors.New("not a push event")

// githubPush is the part of GitHub's and Gitea's push payload the receiver reads
// (docs.github.com/webhooks/webhook-events-and-payloads#push; Gitea's
// services/webhook payloads follow it).
type githubPush struct {
	Ref        *string `json:"ref"`
	After      string  `json:"after"`
	Repository *struct {
		FullName string `json:"full_name"`
		CloneURL string `json:"clone_url"`
		SSHURL   string `json:"ssh_url"`
		HTMLURL  string `json:"html_url"`
		GitURL   string `json:"git_url"`
	} `json:"repository"`
}

// gitlabPush is the part of GitLab's push payload the receiver reads
// (docs.gitlab.com/user/project/integrations/webhook_events/#push-events).
type gitlabPush struct {
	ObjectKind string  `json:"object_kind"`
	Ref        *string `json:"ref"`
	After      string  `json:"after"`
	Project    *struct {
		PathWithNamespace string `json:"path_with_namespace"`
		GitHTTPURL        string `json:"git_http_url"`
		GitSSHURL         string `json:"git_ssh_url"`
		WebURL            string `json:"web_url"`
	} `json:"project"`
}

// ParsePush reads the body of a push event from forge. A body that is not a JSON
// object, or that lacks the ref or the repository, is an error saying what is
// missing; nothing of the body is quoted.
func ParsePush(forge Forge, body []byte) (Push, error) {
	var p Push
	switch forge {
	case GitHub, Gitea:
		var g githubPush
		if err := json.Unmarshal(body, &g); err != nil {
			return p, fmt.Errorf("body: %w", jsonError(err))
		}
		if g.Ref == nil {
			return p, fmt.Errorf("body: %w: no \"ref\"", ErrNotPush)
		}
		if g.Repository == nil {
			return p, fmt.Errorf("body: %w: no \"repository\"", ErrNotPush)
		}
		r := g.Repository
		p = Push{Ref: *g.Ref, After: g.After, Repos: nonEmpty(r.CloneURL, r.SSHURL, r.HTMLURL, r.GitURL, r.FullName)}
	case GitLab:
		var g gitlabPush
		if err := json.Unmarshal(body, &g); err != nil {
			return p, fmt.Errorf("body: %w", jsonError(err))
		}
		if g.ObjectKind != "push" {
			return p, fmt.Errorf("body: %w: object_kind is not \"push\"", ErrNotPush)
		}
		if g.Ref == nil {
			return p, fmt.Errorf("body: %w: no \"ref\"", ErrNotPush)
		}
		if g.Project == nil {
			return p, fmt.Errorf("body: %w: no \"project\"", ErrNotPush)
		}
		r := g.Project
		p = Push{Ref: *g.Ref, After: g.After, Repos: nonEmpty(r.GitHTTPURL, r.GitSSHURL, r.WebURL, r.PathWithNamespace)}
	default:
		return p, fmt.Errorf("forge %q is unknown", forge)
	}
	if len(p.Repos) == 0 {
		return p, fmt.Errorf("body: %w: the repository has no URL", ErrNotPush)
	}
	return p, nil
}

// jsonError is err without the bytes of the body that some decoding errors quote.
func jsonError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Errorf("not JSON (at byte %d)", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Errorf("%q is not a JSON %s", typ.Field, typ.Type)
	}
	return errors.New("not a JSON object")
}

func nonEmpty(list ...string) []string {
	var out []string
	for _, s := range list {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// RepoKey reduces a repository URL to what names the repository whatever the
// protocol: the lower-cased host and the path, without ".git" or a trailing "/".
// https://git.example.com/Ops/Fleet.git, ssh://git@git.example.com/ops/fleet and
// git@git.example.com:ops/fleet.git all give "git.example.com/ops/fleet". A path
// alone ("ops/fleet", a forge's full name) gives itself, lower-cased. Forges
// treat owner and repository names case-insensitively, so does RepoKey.
func RepoKey(raw string) string {
	s := strings.TrimSpace(raw)
	host, path := "", s
	if u, err := url.Parse(s); err == nil && u.Scheme != "" && strings.Contains(s, "://") {
		host, path = u.Hostname(), u.Path
	} else if at, rest, ok := strings.Cut(s, ":"); ok && !strings.Contains(at, "/") {
		// scp-like: [user@]host:path
		if i := strings.LastIndex(at, "@"); i >= 0 {
			at = at[i+1:]
		}
		host, path = at, rest
	}
	path = strings.Trim(path, "/")
	path = strings.TrimSuffix(path, ".git")
	path = strings.Trim(path, "/")
	if host == "" {
		return strings.ToLower(path)
	}
	return strings.ToLower(host + "/" + path)
}

// sameRepo reports whether one of the names the forge gives the repository is
// the repository at want. A bare "owner/name" matches want's path.
func sameRepo(want string, names []string) bool {
	key := RepoKey(want)
	_, path, _ := strings.Cut(key, "/")
	for _, n := range names {
		k := RepoKey(n)
		if k == key || (!strings.Contains(n, ":") && k == path) {
			return true
		}
	}
	return false
}
