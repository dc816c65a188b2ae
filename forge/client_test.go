package forge

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const testToken = "ghp_test0123"

// forgeServer answers as each forge's commit-status API documents, and refuses what
// the documentation does not allow:
//   - GitHub, docs.github.com/en/rest/commits/statuses#create-a-commit-status:
//     POST /repos/{owner}/{repo}/statuses/{sha}, Authorization: Bearer, a JSON body
//     with state (error, failure, pending, success), target_url, description (at
//     most 140 characters), context; 201 with the status; at most 1000 statuses per
//     sha and context.
//   - Gitea and Forgejo, /api/swagger operation repoCreateStatus:
//     POST /api/v1/repos/{owner}/{repo}/statuses/{sha}, Authorization: token, state
//     (pending, success, error, failure, warning), target_url, description, context;
//     201.
//   - GitLab, docs.gitlab.com/api/commits/#set-the-pipeline-status-of-a-commit:
//     POST /api/v4/projects/{id}/statuses/{sha} with the project's path URL-encoded,
//     PRIVATE-TOKEN, state (pending, running, success, failed, canceled, skipped),
//     name, target_url and description (each at most 255 characters,
//     app/models/commit_status.rb); 201. A status moves as GitLab's state machine
//     lets it (app/services/ci/create_commit_status_service.rb, apply_job_state!):
//     pending to running, success or failed; running to success or failed; one that
//     ended is followed by a new one. Anything else is refused with 400 "Cannot
//     transition status via :run from :running" (or :enqueue from :pending...), and
//     its new description is not kept.
type forgeServer struct {
	t    *testing.T
	kind Kind
	mu   sync.Mutex
	got  []map[string]string
	last map[string]string // by sha and context: the state, for GitLab's transitions
	// answer, when set, answers request n (from 0) instead.
	answer func(n int, w http.ResponseWriter) bool
}

// gitlabMoves is GitLab's state machine for the states baton posts: from a state,
// those a post may move a status to. A status that ended (success, failed) is
// followed by a new one, in any state.
var gitlabMoves = map[string][]string{
	"pending": {"running", "success", "failed"},
	"running": {"success", "failed"},
}

func gitlabMoveOK(from, to string) bool {
	next, open := gitlabMoves[from]
	return !open || slices.Contains(next, to)
}

func newForgeServer(t *testing.T, kind Kind) (*forgeServer, *httptest.Server) {
	f := &forgeServer{t: t, kind: kind, last: map[string]string{}}
	s := httptest.NewServer(f)
	t.Cleanup(s.Close)
	return f, s
}

func (f *forgeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.got)
	f.got = append(f.got, nil)
	if f.answer != nil && f.answer(n, w) {
		return
	}
	var prefix, auth, want, ctxField string
	var states []string
	switch f.kind {
	case GitHub:
		prefix, auth, want, ctxField = "/repos/ops/fleet/statuses/", "Authorization", "Bearer "+testToken, "context"
		states = []string{"error", "failure", "pending", "success"}
		if r.Header.Get("Accept") != "application/vnd.github+json" {
			f.fail(w, 415, "Accept is %q", r.Header.Get("Accept"))
			return
		}
	case Gitea:
		prefix, auth, want, ctxField = "/api/v1/repos/ops/fleet/statuses/", "Authorization", "token "+testToken, "context"
		states = []string{"pending", "success", "error", "failure", "warning"}
	case GitLab:
		prefix, auth, want, ctxField = "/api/v4/projects/ops%2Fsub%2Ffleet/statuses/", "PRIVATE-TOKEN", testToken, "name"
		states = []string{"pending", "running", "success", "failed", "canceled", "skipped"}
	}
	sha, ok := strings.CutPrefix(r.URL.EscapedPath(), prefix)
	if r.Method != http.MethodPost || !ok || len(sha) != 40 {
		f.fail(w, 404, "%s %s", r.Method, r.URL.EscapedPath())
		return
	}
	if r.Header.Get(auth) != want {
		f.fail(w, 401, "%s is %q", auth, r.Header.Get(auth))
		return
	}
	var body map[string]string
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		f.fail(w, 400, "body: %v", err)
		return
	}
	if !slices.Contains(states, body["state"]) || body[ctxField] == "" || !f.fits(body) {
		f.fail(w, 422, "invalid status %v", body)
		return
	}
	key := sha + " " + body[ctxField]
	if f.kind == GitLab && !gitlabMoveOK(f.last[key], body["state"]) {
		w.WriteHeader(400)
		fmt.Fprintf(w, `{"message":"Cannot transition status via :%s from :%s"}`, body["state"], f.last[key])
		return
	}
	f.last[key] = body["state"]
	f.got[n] = body
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(map[string]any{"id": n + 1, "state": body["state"], "context": body[ctxField]})
}

// fits checks the lengths the forge takes: GitHub's description, GitLab's
// description and target_url.
func (f *forgeServer) fits(body map[string]string) bool {
	n := func(k string) int { return len([]rune(body[k])) }
	switch f.kind {
	case GitHub:
		return n("description") <= 140
	case GitLab:
		return n("description") <= 255 && n("target_url") <= 255
	}
	return true
}

func (f *forgeServer) fail(w http.ResponseWriter, code int, format string, args ...any) {
	f.t.Errorf("the forge refused a request: "+format, args...)
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"message":%q}`, fmt.Sprintf(format, args...))
}

// posted returns the statuses the forge accepted.
func (f *forgeServer) posted() []map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []map[string]string
	for _, b := range f.got {
		if b != nil {
			out = append(out, b)
		}
	}
	return out
}

func (f *forgeServer) requests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.got)
}

func tokenFile(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newTestReporter(t *testing.T, kind Kind, api string, tweak func(*Options)) *Reporter {
	t.Helper()
	repo := "ops/fleet"
	if kind == GitLab {
		repo = "ops/sub/fleet"
	}
	o := Options{Kind: kind, API: api, Repository: repo, TokenFile: tokenFile(t),
		TargetURL: "https://grafana.example.com/d/baton?var-commit={{ .Commit }}&var-group={{ .Group }}",
		WaitMin:   10 * time.Millisecond, WaitMax: 100 * time.Millisecond}
	if tweak != nil {
		tweak(&o)
	}
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestReportEachForge: a rollout from pending to success posts its statuses on
// each forge, as its API takes them; a Report that changes nothing posts nothing.
// On GitLab the group's status goes pending (no host yet), running, success, and a
// new text in the same state is not posted: GitLab would refuse it.
func TestReportEachForge(t *testing.T) {
	for _, kind := range []Kind{GitHub, Gitea, GitLab} {
		t.Run(string(kind), func(t *testing.T) {
			srv, s := newForgeServer(t, kind)
			r := newTestReporter(t, kind, s.URL, nil)
			ctx := context.Background()
			db := Status{"baton/db", "db", Success, "1/1 hosts on db 15", true}
			steps := [][]Status{
				{{"baton/api", "api", Pending, "0/2 hosts on api 2.0.0", false}, db},
				{{"baton/api", "api", Pending, "0/2 hosts on api 2.0.0", false}, db},
				{{"baton/api", "api", Pending, "1/2 hosts on api 2.0.0", true}, db},
				{{"baton/api", "api", Pending, "1/2 hosts on api 2.0.0, canary waiting for promote", true}, db},
				{{"baton/api", "api", Success, "2/2 hosts on api 2.0.0", true}, db},
			}
			for _, st := range steps {
				if err := r.Report(ctx, commitA, st); err != nil {
					t.Fatal(err)
				}
			}
			ctxField, pending, running := "context", "pending", "pending"
			wantPosts := 5
			if kind == GitLab {
				ctxField, running = "name", "running"
				wantPosts = 4 // the canary's text, in the state running already, is not posted
			}
			got := srv.posted()
			if n := srv.requests(); n != wantPosts || len(got) != wantPosts {
				t.Fatalf("%d requests, %d statuses accepted, want %d: %v", n, len(got), wantPosts, got)
			}
			var api []string
			for _, b := range got {
				if b[ctxField] == "baton/api" {
					api = append(api, b["state"]+" "+b["description"])
				}
			}
			want := []string{pending + " 0/2 hosts on api 2.0.0", running + " 1/2 hosts on api 2.0.0", "success 2/2 hosts on api 2.0.0"}
			if kind != GitLab {
				want = slices.Insert(want, 2, running+" 1/2 hosts on api 2.0.0, canary waiting for promote")
			}
			if !slices.Equal(api, want) {
				t.Errorf("the statuses of baton/api:\n%q\nwant\n%q", api, want)
			}
			if first := got[0]; first["target_url"] != "https://grafana.example.com/d/baton?var-commit="+commitA+"&var-group=api" {
				t.Errorf("first status %v", first)
			}
		})
	}
}

// TestReportGitLabLongLink: a target URL longer than GitLab takes is left out, so
// that the status itself is posted.
func TestReportGitLabLongLink(t *testing.T) {
	srv, s := newForgeServer(t, GitLab)
	r := newTestReporter(t, GitLab, s.URL, func(o *Options) {
		o.TargetURL = "https://grafana.example.com/d/baton?var-commit={{ .Commit }}&pad=" + strings.Repeat("x", 250)
	})
	if err := r.Report(context.Background(), commitA, []Status{{"baton/api", "api", Pending, "0/2", false}}); err != nil {
		t.Fatal(err)
	}
	if got := srv.posted(); len(got) != 1 || got[0]["target_url"] != "" {
		t.Errorf("posted %v, want one status without its link", got)
	}
}

// TestReportRetriesRateLimits: a 429 with Retry-After and a 403 with GitHub's spent
// rate limit are retried after the wait they ask for; a Retry-After of an hour waits
// WaitMax; an error answer is reported with the forge's message and posted again at
// the next Report.
func TestReportRetriesRateLimits(t *testing.T) {
	srv, s := newForgeServer(t, GitHub)
	srv.answer = func(n int, w http.ResponseWriter) bool {
		switch n {
		case 0:
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusTooManyRequests)
		case 1:
			w.Header().Set("X-RateLimit-Remaining", "0")
			w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Unix(), 10))
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"message":"API rate limit exceeded"}`)
		case 3:
			w.WriteHeader(http.StatusUnprocessableEntity)
			fmt.Fprint(w, `{"message":"Validation Failed","errors":[{"field":"state"}]}`)
		default:
			return false
		}
		return true
	}
	r := newTestReporter(t, GitHub, s.URL, nil)
	start := time.Now()
	if err := r.Report(context.Background(), commitA, []Status{{"baton/api", "api", Pending, "0/2", false}}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v: an hour's Retry-After was not capped", d)
	}
	if n := srv.requests(); n != 3 {
		t.Errorf("%d requests, want 3 (two rate-limited, one accepted)", n)
	}
	err := r.Report(context.Background(), commitA, []Status{{"baton/api", "api", Pending, "1/2", true}})
	if err == nil || !strings.Contains(err.Error(), "422") || !strings.Contains(err.Error(), "Validation Failed") {
		t.Fatalf("error %v, want the 422 and its message", err)
	}
	if err := r.Report(context.Background(), commitA, []Status{{"baton/api", "api", Pending, "1/2", true}}); err != nil {
		t.Fatalf("the failed status, posted again: %v", err)
	}
	if n := len(srv.posted()); n != 2 {
		t.Errorf("%d statuses accepted, want 2", n)
	}
}

// TestReportPerContextLimit: no more than MaxPerContext statuses on one commit and
// context; another commit has its own count.
func TestReportPerContextLimit(t *testing.T) {
	srv, s := newForgeServer(t, Gitea)
	r := newTestReporter(t, Gitea, s.URL, func(o *Options) { o.MaxPerContext = 3 })
	for i := range 5 {
		if err := r.Report(context.Background(), commitA, []Status{{"baton/api", "api", Pending, fmt.Sprintf("%d/9", i), i > 0}}); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.requests(); n != 3 {
		t.Errorf("%d posts on one commit and context, want the limit 3", n)
	}
	if err := r.Report(context.Background(), commitB, []Status{{"baton/api", "api", Pending, "0/9", false}}); err != nil {
		t.Fatal(err)
	}
	if n := srv.requests(); n != 4 {
		t.Errorf("another commit was held to the first one's limit")
	}
}

func TestReportTokenFile(t *testing.T) {
	_, s := newForgeServer(t, GitHub)
	r := newTestReporter(t, GitHub, s.URL, func(o *Options) { o.TokenFile = filepath.Join(t.TempDir(), "none") })
	if err := r.Report(context.Background(), commitA, []Status{{"baton/api", "api", Pending, "0/2", false}}); err == nil || !strings.Contains(err.Error(), "forge token") {
		t.Fatalf("error %v, want the token file's", err)
	}
}

func TestNewRefuses(t *testing.T) {
	for _, tt := range []struct {
		o    Options
		want string
	}{
		{Options{Kind: "bitbucket", API: "https://x", Repository: "a/b"}, `forge "bitbucket"`},
		{Options{Kind: GitHub, API: "ftp://x", Repository: "a/b"}, "not an http(s) URL"},
		{Options{Kind: GitHub, API: "https://api.github.com", Repository: "a/b/c"}, "write owner/name"},
		{Options{Kind: Gitea, API: "https://g", Repository: "a"}, "write owner/name"},
		{Options{Kind: GitLab, API: "https://g", Repository: "/a/b"}, "write owner/name"},
		{Options{Kind: GitHub, API: "https://g", Repository: "a/b", TargetURL: "{{ .Commit"}, "targetURL"},
		{Options{Kind: GitHub, API: "https://g", Repository: "a/b", TargetURL: "{{ .Sha }}"}, "targetURL"},
	} {
		if _, err := New(tt.o); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%+v) = %v, want %q", tt.o, err, tt.want)
		}
	}
}

func TestParseError(t *testing.T) {
	for body, want := range map[string]string{
		`{"message":"Validation Failed","errors":[]}`:    "Validation Failed",
		`{"message":{"state":["is invalid"]}}`:           `{"state":["is invalid"]}`,
		`{"error":"state does not have a valid value"}`:  "state does not have a valid value",
		`<html>502 Bad Gateway</html>`:                   "an answer of 28 bytes that is not a JSON error",
		`{}`:                                             "an error without a message",
		`{"message":null}`:                               "an error without a message",
		`{"message":"` + strings.Repeat("x", 500) + `"}`: strings.Repeat("x", MaxDescription-1) + "…",
	} {
		if got := ParseError([]byte(body)); got != want {
			t.Errorf("ParseError(%.30q) = %q, want %q", body, got, want)
		}
	}
}

func FuzzParseError(f *testing.F) {
	f.Add(`{"message":"Validation Failed"}`)
	f.Add(`{"message":{"a":[1]}}`)
	f.Add(`{"error":"x"}`)
	f.Add(`nope`)
	f.Fuzz(func(t *testing.T, body string) {
		got := ParseError([]byte(body))
		if n := len([]rune(got)); n == 0 || n > MaxDescription+60 {
			t.Errorf("ParseError gave %d characters", n)
		}
		if strings.ContainsAny(got, "\n\r") {
			t.Errorf("ParseError gave a line break: %q", got)
		}
	})
}
