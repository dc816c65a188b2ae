package forge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"text/template"
	"time"
	"unicode/utf8"
)

// Defaults for Options.
const (
	// DefaultMaxPerContext is GitHub's limit of statuses on one commit and
	// context; baton keeps to it on every forge.
	DefaultMaxPerContext = 1000
	DefaultRetries       = 4
	DefaultWaitMin       = time.Second
	DefaultWaitMax       = time.Minute
	// rememberCommits bounds the commits whose posted statuses are remembered.
	rememberCommits = 16
)

// Options configure a Reporter.
type Options struct {
	Kind       Kind
	API        string // the API's base URL: https://api.github.com, https://gitea.example.com, https://gitlab.example.com
	Repository string // owner/name; GitLab: the project's path, group/subgroup/name
	TokenFile  string // read at each post
	// TargetURL is a text/template of the link each status carries, with .Commit,
	// .Group and .Context; "" for none.
	TargetURL string
	// MaxPerContext bounds the statuses posted on one commit and context;
	// DefaultMaxPerContext when zero.
	MaxPerContext int
	// Retries, WaitMin and WaitMax shape the retries of one post (see newHTTP);
	// the defaults when zero.
	Retries          int
	WaitMin, WaitMax time.Duration
	HTTPClient       *http.Client // nil: one with a 30s timeout
	Logger           *slog.Logger
}

// Reporter posts the statuses of commits, each only when it changed since the last
// one posted for that commit and context. Its methods are safe for concurrent use.
type Reporter struct {
	c      *client
	target *template.Template
	max    int
	log    *slog.Logger

	mu       sync.Mutex
	shown    map[string]map[string]*shown // by commit, by context
	commit   []string                     // the commits in shown, oldest first
	longLink sync.Once                    // logs a target URL too long for GitLab, once
}

type shown struct {
	state State
	wire  string // the state as the forge's API names it
	desc  string
	posts int
}

// New checks o and returns a Reporter; it posts nothing.
func New(o Options) (*Reporter, error) {
	switch o.Kind {
	case GitHub, Gitea, GitLab:
	default:
		return nil, fmt.Errorf("forge %q: use github, gitea or gitlab", o.Kind)
	}
	api, err := url.Parse(o.API)
	if err != nil || (api.Scheme != "https" && api.Scheme != "http") || api.Host == "" {
		return nil, fmt.Errorf("forge API %q is not an http(s) URL", o.API)
	}
	if o.Kind != GitLab && strings.Count(o.Repository, "/") != 1 || strings.Trim(o.Repository, "/") != o.Repository || o.Repository == "" {
		return nil, fmt.Errorf("forge repository %q: write owner/name (GitLab: group/.../name)", o.Repository)
	}
	t, err := template.New("targetURL").Option("missingkey=error").Parse(o.TargetURL)
	if err != nil {
		return nil, fmt.Errorf("forge targetURL: %w", err)
	}
	if _, err := render(t, "0000000000000000000000000000000000000000", Status{Group: "g", Context: "baton/g"}); err != nil {
		return nil, err
	}
	o.MaxPerContext = cmpOr(o.MaxPerContext, DefaultMaxPerContext)
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &client{kind: o.Kind, api: api, repo: o.Repository, tokenFile: o.TokenFile, now: time.Now}
	c.http = newHTTP(hc, cmpOr(o.Retries, DefaultRetries), cmpOr(o.WaitMin, DefaultWaitMin), cmpOr(o.WaitMax, DefaultWaitMax), c.now)
	return &Reporter{c: c, target: t, max: o.MaxPerContext, log: log.With("forge", string(o.Kind)), shown: map[string]map[string]*shown{}}, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func render(t *template.Template, commit string, st Status) (string, error) {
	var b strings.Builder
	if err := t.Execute(&b, map[string]string{"Commit": commit, "Group": st.Group, "Context": st.Context}); err != nil {
		return "", fmt.Errorf("forge targetURL: %w", err)
	}
	return b.String(), nil
}

// Report posts each of statuses on commit that differs from what was last posted
// there, one after the other, and returns the errors of those that failed (they
// are posted again at the next Report). A context that reached MaxPerContext posts
// on that commit is left as it is, and logged once.
func (r *Reporter) Report(ctx context.Context, commit string, statuses []Status) error {
	var errs []error
	for _, st := range statuses {
		if !r.due(commit, st) {
			continue
		}
		target, err := r.targetURL(commit, st)
		if err != nil {
			return err
		}
		err = r.c.post(ctx, commit, st, target)
		if err != nil && !errors.Is(err, errUnchanged) {
			errs = append(errs, err)
			continue
		}
		r.posted(commit, st)
		r.log.Info("commit status posted", "commit", commit, "context", st.Context, "state", st.State, "description", st.Description)
	}
	return errors.Join(errs...)
}

// targetURL is the link st carries: TargetURL rendered, or none on GitLab when it
// is longer than GitLab takes (which would refuse the whole status).
func (r *Reporter) targetURL(commit string, st Status) (string, error) {
	target, err := render(r.target, commit, st)
	if err != nil || r.c.kind != GitLab || utf8.RuneCountInString(target) <= gitlabMaxField {
		return target, err
	}
	r.longLink.Do(func() {
		r.log.Warn("commit statuses posted without their link: GitLab takes a target URL of at most 255 characters", "length", utf8.RuneCountInString(target))
	})
	return "", nil
}

// due reports whether st differs from what was posted on commit, within the limit.
// On GitLab a status's text changes only with its state: GitLab refuses a status
// in the state it has ("Cannot transition status via :run from :running"), so a
// new text in the same state is not posted.
func (r *Reporter) due(commit string, st Status) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.shown[commit][st.Context]
	switch {
	case s == nil:
		return true
	case s.state == st.State && s.desc == st.Description:
		return false
	case r.c.kind == GitLab && s.wire == r.c.wireState(st):
		return false
	case s.posts >= r.max:
		if s.posts == r.max {
			s.posts++ // log once
			r.log.Warn("commit status not posted: the forge's limit of statuses on one commit is reached", "commit", commit, "context", st.Context, "limit", r.max)
		}
		return false
	}
	return true
}

func (r *Reporter) posted(commit string, st Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	byCtx, ok := r.shown[commit]
	if !ok {
		byCtx = map[string]*shown{}
		r.shown[commit] = byCtx
		r.commit = append(r.commit, commit)
		if len(r.commit) > rememberCommits {
			delete(r.shown, r.commit[0])
			r.commit = r.commit[1:]
		}
	}
	s := byCtx[st.Context]
	if s == nil {
		s = &shown{}
		byCtx[st.Context] = s
	}
	s.state, s.wire, s.desc = st.State, r.c.wireState(st), st.Description
	s.posts++
}
