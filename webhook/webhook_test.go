package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testSecret = "It's a Secret to Everybody"
	testRepo   = "https://git.example.com/ops/fleet.git"
)

// Bodies as each forge sends them, cut to the fields around the ones read.
func githubBody(ref, cloneURL string) string {
	return fmt.Sprintf(`{"ref":%q,"before":"0000000000000000000000000000000000000000","after":"6113728f27ae82c7b1a177c8d03f9e96e0adf246",
"repository":{"id":1,"full_name":"ops/fleet","clone_url":%q,"ssh_url":"git@git.example.com:ops/fleet.git","html_url":"https://git.example.com/ops/fleet"},
"pusher":{"name":"dev"},"commits":[]}`, ref, cloneURL)
}

func gitlabBody(ref, httpURL string) string {
	return fmt.Sprintf(`{"object_kind":"push","event_name":"push","ref":%q,"after":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
"project":{"id":15,"path_with_namespace":"ops/fleet","git_http_url":%q,"git_ssh_url":"git@git.example.com:ops/fleet.git","web_url":"https://git.example.com/ops/fleet"},"commits":[]}`, ref, httpURL)
}

func sign(body string) string {
	m := hmac.New(sha256.New, []byte(testSecret))
	m.Write([]byte(body))
	return hex.EncodeToString(m.Sum(nil))
}

// request builds a delivery as forge sends it, signed with testSecret.
func request(forge Forge, id, event, body string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	switch forge {
	case GitHub:
		req.Header.Set("X-GitHub-Event", event)
		req.Header.Set("X-GitHub-Delivery", id)
		req.Header.Set("X-Hub-Signature-256", "sha256="+sign(body))
	case Gitea:
		req.Header.Set("X-Gitea-Event", event)
		req.Header.Set("X-Gitea-Delivery", id)
		req.Header.Set("X-Gitea-Signature", sign(body))
	case GitLab:
		req.Header.Set("X-Gitlab-Event", event)
		req.Header.Set("X-Gitlab-Event-UUID", id)
		req.Header.Set("X-Gitlab-Token", testSecret)
	}
	return req
}

type pushes struct {
	mu      sync.Mutex
	list    []Push
	results map[string]int
}

func (p *pushes) result(r string) {
	p.mu.Lock()
	if p.results == nil {
		p.results = map[string]int{}
	}
	p.results[r]++
	p.mu.Unlock()
}

func (p *pushes) add(_ Forge, push Push) {
	p.mu.Lock()
	p.list = append(p.list, push)
	p.mu.Unlock()
}

func (p *pushes) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.list)
}

func writeSecret(t *testing.T, secret string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(f, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func newReceiver(t *testing.T, got *pushes, maxBody int64) *Receiver {
	t.Helper()
	r, err := New(Options{SecretFile: writeSecret(t, testSecret), Repo: testRepo, Branch: "main", MaxBody: maxBody, Remember: 3, Push: got.add, Result: got.result})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestGoodDeliveries(t *testing.T) {
	for _, tt := range []struct {
		forge Forge
		event string
		body  string
	}{
		{GitHub, "push", githubBody("refs/heads/main", testRepo)},
		{Gitea, "push", githubBody("refs/heads/main", "https://GIT.example.com/ops/fleet")},
		{GitLab, "Push Hook", gitlabBody("refs/heads/main", "https://git.example.com/ops/fleet.git")},
	} {
		t.Run(string(tt.forge), func(t *testing.T) {
			var got pushes
			r := newReceiver(t, &got, 0)
			w := httptest.NewRecorder()
			r.ServeHTTP(w, request(tt.forge, "d-1", tt.event, tt.body))
			if w.Code != http.StatusAccepted || !strings.Contains(w.Body.String(), "fetching now") {
				t.Fatalf("answer %d %q, want 202 fetching now", w.Code, w.Body.String())
			}
			if got.count() != 1 || got.list[0].Branch() != "main" {
				t.Fatalf("pushes %+v, want one to main", got.list)
			}
		})
	}
}

// TestBadDeliveries: each refusal has its status and its reason, and calls no push.
func TestBadDeliveries(t *testing.T) {
	good := githubBody("refs/heads/main", testRepo)
	for _, tt := range []struct {
		name   string
		req    func() *http.Request
		status int
		want   string
	}{
		{"get", func() *http.Request { return httptest.NewRequest(http.MethodGet, "/", nil) }, 405, "POSTed"},
		{"no forge headers", func() *http.Request {
			return httptest.NewRequest(http.MethodPost, "/", strings.NewReader(good))
		}, 400, "no X-GitHub-Event"},
		{"no delivery id", func() *http.Request {
			r := request(GitHub, "x", "push", good)
			r.Header.Del("X-GitHub-Delivery")
			return r
		}, 400, "without a delivery id"},
		{"delivery id with a newline", func() *http.Request {
			r := request(GitHub, "x", "push", good)
			r.Header["X-Github-Delivery"] = []string{"a\x01b"}
			return r
		}, 400, "not a short printable"},
		{"github unsigned", func() *http.Request {
			r := request(GitHub, "x", "push", good)
			r.Header.Del("X-Hub-Signature-256")
			return r
		}, 401, "without X-Hub-Signature-256"},
		{"github sha1 only", func() *http.Request {
			r := request(GitHub, "x", "push", good)
			r.Header.Set("X-Hub-Signature-256", "sha1=abcdef")
			return r
		}, 401, "without X-Hub-Signature-256"},
		{"github bad hex", func() *http.Request {
			r := request(GitHub, "x", "push", good)
			r.Header.Set("X-Hub-Signature-256", "sha256=zz")
			return r
		}, 401, "not a SHA-256 in hex"},
		{"github other body", func() *http.Request {
			r := request(GitHub, "x", "push", good)
			r.Body = io.NopCloser(strings.NewReader(strings.Replace(good, "main", "mainx", 1)))
			r.ContentLength = -1
			return r
		}, 401, "does not match the body"},
		{"gitea wrong secret", func() *http.Request {
			r := request(Gitea, "x", "push", good)
			m := hmac.New(sha256.New, []byte("another"))
			m.Write([]byte(good))
			r.Header.Set("X-Gitea-Signature", hex.EncodeToString(m.Sum(nil)))
			return r
		}, 401, "does not match"},
		{"gitea unsigned", func() *http.Request {
			r := request(Gitea, "x", "push", good)
			r.Header.Del("X-Gitea-Signature")
			return r
		}, 401, "without X-Gitea-Signature"},
		{"gitlab wrong token", func() *http.Request {
			r := request(GitLab, "x", "Push Hook", gitlabBody("refs/heads/main", testRepo))
			r.Header.Set("X-Gitlab-Token", testSecret+"x")
			return r
		}, 401, "is not the secret"},
		{"gitlab no token", func() *http.Request {
			r := request(GitLab, "x", "Push Hook", gitlabBody("refs/heads/main", testRepo))
			r.Header.Del("X-Gitlab-Token")
			return r
		}, 401, "without X-Gitlab-Token"},
		{"too large", func() *http.Request {
			return request(GitHub, "x", "push", good+strings.Repeat(" ", 2048))
		}, 413, "over the limit"},
		{"too large, no length", func() *http.Request {
			body := good + strings.Repeat(" ", 2048)
			r := request(GitHub, "x", "push", body)
			r.ContentLength = -1
			return r
		}, 413, "over the limit"},
		{"not json", func() *http.Request { return request(GitHub, "x", "push", "ref=main") }, 400, "not JSON"},
		{"no ref", func() *http.Request { return request(GitHub, "x", "push", `{"repository":{"clone_url":"x"}}`) }, 400, `no "ref"`},
		{"no repository", func() *http.Request { return request(GitHub, "x", "push", `{"ref":"refs/heads/main"}`) }, 400, `no "repository"`},
		{"ref not a string", func() *http.Request { return request(GitHub, "x", "push", `{"ref":1}`) }, 400, `"ref" is not a JSON string`},
		{"gitlab not a push", func() *http.Request {
			return request(GitLab, "x", "Push Hook", `{"object_kind":"tag_push","ref":"refs/tags/v1"}`)
		}, 400, "object_kind"},
		{"other repository", func() *http.Request {
			return request(GitHub, "x", "push", strings.ReplaceAll(good, "ops/fleet", "ops/other"))
		}, 403, "not to the repository this agent follows"},
		{"other host", func() *http.Request {
			b := strings.NewReplacer(`"full_name":"ops/fleet"`, `"full_name":"x/y"`, "git.example.com", "evil.example.com").Replace(good)
			return request(GitHub, "x", "push", b)
		}, 403, "not to the repository"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got pushes
			r := newReceiver(t, &got, 1024)
			w := httptest.NewRecorder()
			r.ServeHTTP(w, tt.req())
			if w.Code != tt.status || !strings.Contains(w.Body.String(), tt.want) {
				t.Errorf("answer %d %q, want %d and %q", w.Code, w.Body.String(), tt.status, tt.want)
			}
			if got.count() != 0 {
				t.Errorf("a refused delivery made the agent fetch: %+v", got.list)
			}
		})
	}
}

// TestIgnored: another branch, a tag and another event are answered 202 (GitLab
// disables a hook that keeps failing) and make no fetch.
func TestIgnored(t *testing.T) {
	for _, tt := range []struct {
		name string
		req  *http.Request
		want string
	}{
		{"other branch", request(GitHub, "a", "push", githubBody("refs/heads/dev", testRepo)), "not refs/heads/main"},
		{"tag", request(Gitea, "b", "push", githubBody("refs/tags/v1", testRepo)), "not refs/heads/main"},
		{"ping", request(GitHub, "c", "ping", `{"zen":"Design for failure."}`), `event "ping" is not a push`},
		{"gitlab merge request", request(GitLab, "d", "Merge Request Hook", `{"object_kind":"merge_request"}`), "is not a push"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got pushes
			r := newReceiver(t, &got, 0)
			w := httptest.NewRecorder()
			r.ServeHTTP(w, tt.req)
			if w.Code != http.StatusAccepted || !strings.Contains(w.Body.String(), tt.want) {
				t.Errorf("answer %d %q, want 202 and %q", w.Code, w.Body.String(), tt.want)
			}
			if got.count() != 0 || got.results["ignored"] != 1 {
				t.Errorf("an ignored delivery made the agent fetch, or was not counted: %v", got.results)
			}
		})
	}
}

// TestReplay: a delivery id is accepted once; a forged delivery does not spend the
// id; the ids are bounded (Remember: 3), the oldest forgotten first.
func TestReplay(t *testing.T) {
	var got pushes
	r := newReceiver(t, &got, 0)
	body := githubBody("refs/heads/main", testRepo)
	send := func(id string, forged bool) int {
		req := request(GitHub, id, "push", body)
		if forged {
			req.Header.Set("X-Hub-Signature-256", "sha256="+strings.Repeat("00", 32))
		}
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		return w.Code
	}
	steps := []struct {
		id     string
		forged bool
		want   int
	}{
		{"d1", true, 401}, {"d1", false, 202}, {"d1", false, 409},
		{"d2", false, 202}, {"d3", false, 202}, {"d2", false, 409},
		{"d4", false, 202}, // d1 forgotten: three ids are kept
		{"d1", false, 202},
	}
	for i, s := range steps {
		if code := send(s.id, s.forged); code != s.want {
			t.Fatalf("step %d (%s, forged %v): %d, want %d", i, s.id, s.forged, code, s.want)
		}
	}
	if got.count() != 5 {
		t.Errorf("%d fetches, want 5", got.count())
	}
	if want := map[string]int{"fetch": 5, "refused": 3}; !maps.Equal(got.results, want) {
		t.Errorf("results %v, want %v", got.results, want)
	}
	// The same id from another forge is another delivery.
	w := httptest.NewRecorder()
	r.ServeHTTP(w, request(GitLab, "d4", "Push Hook", gitlabBody("refs/heads/main", testRepo)))
	if w.Code != http.StatusAccepted {
		t.Errorf("gitlab d4 after github d4: %d, want 202", w.Code)
	}
}

// TestSecretRotates: the secret file is read at each delivery; one that cannot be
// read refuses with 503.
func TestSecretRotates(t *testing.T) {
	file := writeSecret(t, "old")
	var got pushes
	r, err := New(Options{SecretFile: file, Repo: testRepo, Branch: "main", Push: got.add})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(testSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	r.ServeHTTP(w, request(GitHub, "1", "push", githubBody("refs/heads/main", testRepo)))
	if w.Code != http.StatusAccepted {
		t.Fatalf("after rotation: %d %s", w.Code, w.Body)
	}
	os.Remove(file)
	w = httptest.NewRecorder()
	r.ServeHTTP(w, request(GitHub, "2", "push", githubBody("refs/heads/main", testRepo)))
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("secret gone: %d, want 503", w.Code)
	}
}

func TestNewRefusesBadSecret(t *testing.T) {
	for name, content := range map[string]string{"empty": " \n", "large": strings.Repeat("x", maxSecret+1)} {
		f := filepath.Join(t.TempDir(), "s")
		os.WriteFile(f, []byte(content), 0o600)
		if _, err := New(Options{SecretFile: f}); err == nil {
			t.Errorf("%s secret: no error", name)
		}
	}
	if _, err := New(Options{SecretFile: filepath.Join(t.TempDir(), "none")}); err == nil {
		t.Error("missing secret: no error")
	}
}

func TestRepoKey(t *testing.T) {
	for in, want := range map[string]string{
		"https://git.example.com/Ops/Fleet.git":      "git.example.com/ops/fleet",
		"https://git.example.com:8443/ops/fleet/":    "git.example.com/ops/fleet",
		"ssh://git@git.example.com:2222/ops/fleet":   "git.example.com/ops/fleet",
		"git@git.example.com:ops/fleet.git":          "git.example.com/ops/fleet",
		"git.example.com:ops/fleet":                  "git.example.com/ops/fleet",
		"ops/fleet":                                  "ops/fleet",
		"http://127.0.0.1:8080/fleet.git":            "127.0.0.1/fleet",
		"https://gitlab.example.com/group/sub/fleet": "gitlab.example.com/group/sub/fleet",
	} {
		if got := RepoKey(in); got != want {
			t.Errorf("RepoKey(%q) = %q, want %q", in, got, want)
		}
	}
	if sameRepo(testRepo, []string{"other/fleet"}) || !sameRepo(testRepo, []string{"ops/fleet"}) {
		t.Error("a full name matches by the path of the URL")
	}
}

// TestServe: a real listener takes a delivery and stops when its context ends.
func TestServe(t *testing.T) {
	var got pushes
	r := newReceiver(t, &got, 0)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, l, r, slog.New(slog.DiscardHandler)) }()
	req := request(GitHub, "s1", "push", githubBody("refs/heads/main", testRepo))
	req.RequestURI, req.URL.Scheme, req.URL.Host = "", "http", l.Addr().String()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || got.count() != 1 {
		t.Fatalf("status %d, %d pushes", resp.StatusCode, got.count())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
		c.Close()
		t.Fatal("the listener still accepts after Serve returned")
	}
}

// FuzzParsePush: no body makes ParsePush panic, and a push it accepts names a
// repository.
func FuzzParsePush(f *testing.F) {
	f.Add("github", githubBody("refs/heads/main", testRepo))
	f.Add("gitlab", gitlabBody("refs/heads/main", testRepo))
	f.Add("gitea", `{"ref":"refs/heads/x","repository":{}}`)
	f.Add("gitlab", `{"object_kind":"push","ref":null,"project":{"web_url":""}}`)
	f.Add("github", `[1,2`)
	f.Fuzz(func(t *testing.T, forge, body string) {
		p, err := ParsePush(Forge(forge), []byte(body))
		if err != nil {
			if strings.Contains(err.Error(), body) && len(body) > 8 {
				t.Errorf("the error quotes the body: %v", err)
			}
			return
		}
		if len(p.Repos) == 0 {
			t.Errorf("accepted push without a repository: %+v", p)
		}
		_ = RepoKey(p.Repos[0])
	})
}
