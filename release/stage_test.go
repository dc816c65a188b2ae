package release

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
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

	"github.com/hashicorp/go-retryablehttp"

	"github.com/baton-fleet/baton/spec"
)

// server serves files by path and counts the requests for each.
type server struct {
	*httptest.Server
	mu    sync.Mutex
	files map[string][]byte
	hits  map[string]int
}

func newServer(t *testing.T, files map[string][]byte) *server {
	s := &server{files: files, hits: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits[r.URL.Path]++
		body, ok := s.files[r.URL.Path]
		s.mu.Unlock()
		switch {
		case r.URL.Path == "/fail":
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		case !ok:
			http.NotFound(w, r)
		case r.URL.Query().Has("chunked"):
			// No Content-Length: the size is only known by reading.
			w.Write(body[:1])
			w.(http.Flusher).Flush()
			w.Write(body[1:])
		default:
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.Write(body)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) count(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[path]
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// fastClient retries twice, within milliseconds.
func fastClient() *retryablehttp.Client {
	c := retryablehttp.NewClient()
	c.Logger = nil
	c.RetryMax = 2
	c.RetryWaitMin = time.Millisecond
	c.RetryWaitMax = 5 * time.Millisecond
	return c
}

// rendered is a service "api" at version 1.0.0 with artifacts, as Render makes it.
func rendered(state string, artifacts ...spec.Artifact) *spec.Rendered {
	svc := spec.Service{Name: "api", Version: "1.0.0", Artifacts: artifacts}
	return &spec.Rendered{
		Service:   svc,
		ReleaseID: svc.ReleaseID(),
		Vars:      spec.Vars{Service: "api", Version: "1.0.0", Release: svc.ReleaseDir(state)},
	}
}

// leftovers lists what is in state/releases/api besides complete releases.
func leftovers(t *testing.T, state string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(state, "releases", "api"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if !complete(filepath.Join(state, "releases", "api", e.Name())) {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestStage(t *testing.T) {
	bin := []byte("#!/bin/sh\necho api\n")
	tgz := tarball(t, true, dir("bin"), ent{name: "bin/api", body: "binary", mode: 0o755}, symlink("api", "bin/api"), file("etc/api.conf", "port=8080\n"))
	plain := tarball(t, false, ent{name: "static/index.html", body: "<h1>hi</h1>", mode: 0o640})
	srv := newServer(t, map[string][]byte{"/api": bin, "/api.tar.gz": tgz, "/static.tar": plain})
	state := t.TempDir()
	s := &Stager{StateDir: state, Client: fastClient(), AllowInsecure: loopback}
	r := rendered(state,
		spec.Artifact{URL: srv.URL + "/api", SHA256: sum(bin), Unpack: "none", Name: "api-tool"},
		spec.Artifact{URL: srv.URL + "/api.tar.gz", SHA256: sum(tgz), Unpack: "tar.gz"},
		spec.Artifact{URL: srv.URL + "/static.tar?chunked=1", SHA256: sum(plain), Unpack: "tar"},
	)
	got, err := s.Stage(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if want := r.Vars.Release; got != want {
		t.Fatalf("Stage = %s, want %s", got, want)
	}
	files := map[string]struct {
		body string
		mode fs.FileMode
	}{
		"api-tool":          {string(bin), 0o755},
		"bin/api":           {"binary", 0o755},
		"etc/api.conf":      {"port=8080\n", 0o644},
		"static/index.html": {"<h1>hi</h1>", 0o640},
	}
	for name, want := range files {
		p := filepath.Join(got, name)
		b, err := os.ReadFile(p)
		fi, _ := os.Lstat(p)
		if err != nil || string(b) != want.body || fi.Mode() != want.mode {
			t.Errorf("%s: %q %v (%v), want %q %v", name, b, fi.Mode(), err, want.body, want.mode)
		}
	}
	if l, err := os.Readlink(filepath.Join(got, "api")); l != "bin/api" {
		t.Errorf("api -> %q (%v), want bin/api", l, err)
	}
	if fi, err := os.Stat(got); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("release directory mode %v (%v), want 0755", fi.Mode(), err)
	}
	marker, err := os.ReadFile(filepath.Join(got, MarkerFile))
	if err != nil || !strings.Contains(string(marker), "release "+r.ReleaseID) {
		t.Errorf("marker %q (%v)", marker, err)
	}
	if l := leftovers(t, state); l != nil {
		t.Errorf("left behind %q", l)
	}

	// Staged again: no download.
	again, err := s.Stage(context.Background(), r)
	if err != nil || again != got {
		t.Fatalf("second Stage = %s, %v", again, err)
	}
	for _, p := range []string{"/api", "/api.tar.gz", "/static.tar"} {
		if n := srv.count(p); n != 1 {
			t.Errorf("%s requested %d times, want once", p, n)
		}
	}
}

func TestStageReplacesIncompleteDir(t *testing.T) {
	bin := []byte("v1")
	srv := newServer(t, map[string][]byte{"/api": bin})
	state := t.TempDir()
	r := rendered(state, spec.Artifact{URL: srv.URL + "/api", SHA256: sum(bin), Unpack: "none", Name: "api"})
	if err := os.MkdirAll(r.Vars.Release, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(r.Vars.Release, "half"), []byte("x"), 0o644)
	dir, err := (&Stager{StateDir: state, Client: fastClient(), AllowInsecure: loopback}).Stage(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(t, dir); !slices.Equal(got, []string{MarkerFile, "api"}) {
		t.Errorf("release holds %q, want the marker and api", got)
	}
	if l := leftovers(t, state); l != nil {
		t.Errorf("left behind %q", l)
	}
}

func TestStageConcurrent(t *testing.T) {
	tgz := tarball(t, true, file("a", "1"), file("b/c", "2"))
	srv := newServer(t, map[string][]byte{"/a.tar.gz": tgz})
	state := t.TempDir()
	s := &Stager{StateDir: state, Client: fastClient(), AllowInsecure: loopback}
	r := rendered(state, spec.Artifact{URL: srv.URL + "/a.tar.gz", SHA256: sum(tgz), Unpack: "tar.gz"})
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { _, errs[i] = s.Stage(context.Background(), r) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if !complete(r.Vars.Release) {
		t.Error("the release is not complete")
	}
	if l := leftovers(t, state); l != nil {
		t.Errorf("left behind %q", l)
	}
}

func TestStageFails(t *testing.T) {
	good := []byte("good")
	big := []byte(strings.Repeat("x", 4096))
	marked := tarball(t, false, file(MarkerFile, "forged"))
	clash := tarball(t, false, file("api", "from the archive"))
	evil := tarball(t, true, file("ok", "x"), file("../evil", "x"))
	srv := newServer(t, map[string][]byte{"/good": good, "/big": big, "/marked.tar": marked, "/clash.tar": clash, "/evil.tar.gz": evil})
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()
	wrong := strings.Repeat("0", 64)

	tests := []struct {
		name      string
		artifacts []spec.Artifact
		want      []string // in the error
		hidden    []string // never in the error
		requests  map[string]int
	}{
		{
			name:      "wrong sha256",
			artifacts: []spec.Artifact{{URL: srv.URL + "/good", SHA256: wrong, Unpack: "none", Name: "good"}},
			want:      []string{"sha256 mismatch", srv.URL + "/good", "got " + sum(good), "want " + wrong},
		},
		{
			name:      "wrong sha256 after a good artifact",
			artifacts: []spec.Artifact{{URL: srv.URL + "/good", SHA256: sum(good), Name: "g"}, {URL: srv.URL + "/good", SHA256: wrong, Name: "h"}},
			want:      []string{"sha256 mismatch"},
		},
		{
			name: "credentials are not shown",
			artifacts: []spec.Artifact{{
				URL: strings.Replace(srv.URL, "http://", "http://deploy:s3cr3t@", 1) + "/good?token=t0ken&v=1", SHA256: wrong, Name: "good",
			}},
			want:   []string{"sha256 mismatch", srv.URL + "/good?token=REDACTED&v=REDACTED"},
			hidden: []string{"s3cr3t", "t0ken", "deploy"},
		},
		{
			name:      "404",
			artifacts: []spec.Artifact{{URL: srv.URL + "/missing", SHA256: wrong, Name: "m"}},
			want:      []string{"404 Not Found", srv.URL + "/missing"},
			requests:  map[string]int{"/missing": 1},
		},
		{
			name:      "503 retried then given up",
			artifacts: []spec.Artifact{{URL: srv.URL + "/fail", SHA256: wrong, Name: "f"}},
			want:      []string{"giving up after 3 attempt(s)"},
			requests:  map[string]int{"/fail": 3},
		},
		{
			name:      "server down",
			artifacts: []spec.Artifact{{URL: strings.Replace(downURL, "http://", "http://deploy:s3cr3t@", 1) + "/x?token=t0ken", SHA256: wrong, Name: "x"}},
			want:      []string{"giving up after 3 attempt(s)", "connection refused", downURL + "/x?token=REDACTED"},
			hidden:    []string{"s3cr3t", "t0ken", "deploy"},
		},
		{
			name:      "over MaxArtifactBytes",
			artifacts: []spec.Artifact{{URL: srv.URL + "/big", SHA256: sum(big), Name: "big"}},
			want:      []string{"4096 bytes is over the limit of 3000"},
		},
		{
			name:      "over MaxArtifactBytes without a length",
			artifacts: []spec.Artifact{{URL: srv.URL + "/big?chunked=1", SHA256: sum(big), Name: "big"}},
			want:      []string{"over the limit of 3000 bytes"},
		},
		{
			name:      "scheme",
			artifacts: []spec.Artifact{{URL: "file:///etc/passwd", SHA256: wrong, Name: "p"}},
			want:      []string{"the scheme must be http or https"},
		},
		{
			name:      "archive forges the marker",
			artifacts: []spec.Artifact{{URL: srv.URL + "/marked.tar", SHA256: sum(marked), Unpack: "tar"}},
			want:      []string{"an artifact holds .baton-release"},
		},
		{
			name:      "two artifacts, one name",
			artifacts: []spec.Artifact{{URL: srv.URL + "/clash.tar", SHA256: sum(clash), Unpack: "tar"}, {URL: srv.URL + "/good", SHA256: sum(good), Name: "api"}},
			want:      []string{"api is already in the release"},
		},
		{
			name:      "evil archive",
			artifacts: []spec.Artifact{{URL: srv.URL + "/evil.tar.gz", SHA256: sum(evil), Unpack: "tar.gz"}},
			want:      []string{`unpack entry "../evil"`},
		},
		{
			name:      "name with a slash",
			artifacts: []spec.Artifact{{URL: srv.URL + "/good", SHA256: sum(good), Name: "../good"}},
			want:      []string{"not a plain file name"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state := t.TempDir()
			s := &Stager{StateDir: state, Client: fastClient(), AllowInsecure: loopback, Limits: Limits{MaxArtifactBytes: 3000}}
			r := rendered(state, tt.artifacts...)
			before := map[string]int{}
			for p := range tt.requests {
				before[p] = srv.count(p)
			}
			start := time.Now()
			dir, err := s.Stage(context.Background(), r)
			if err == nil {
				t.Fatalf("Stage = %s; want an error", dir)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("failing took %v", took)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not hold %q", err, w)
				}
			}
			for _, h := range tt.hidden {
				if strings.Contains(err.Error(), h) {
					t.Errorf("error %q\nshows %q", err, h)
				}
			}
			for p, n := range tt.requests {
				if got := srv.count(p) - before[p]; got != n {
					t.Errorf("%s requested %d times, want %d", p, got, n)
				}
			}
			if _, err := os.Lstat(r.Vars.Release); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("release directory: %v, want none", err)
			}
			if l := leftovers(t, state); l != nil {
				t.Errorf("left behind %q", l)
			}
			if _, err := os.Lstat(filepath.Join(state, "releases", "evil")); err == nil {
				t.Errorf("the evil archive wrote outside its release")
			}
		})
	}
}

func TestStageRefusesOtherStateDir(t *testing.T) {
	r := rendered("/elsewhere", spec.Artifact{URL: "http://127.0.0.1:1/x", SHA256: strings.Repeat("0", 64), Name: "x"})
	state := t.TempDir()
	_, err := (&Stager{StateDir: state, AllowInsecure: loopback}).Stage(context.Background(), r)
	if err == nil || !strings.Contains(err.Error(), "rendered for release directory /elsewhere/") {
		t.Fatalf("err = %v, want a state directory mismatch", err)
	}
	if got := names(t, state); len(got) != 0 {
		t.Errorf("state holds %q", got)
	}
}

func TestStageCanceled(t *testing.T) {
	srv := newServer(t, map[string][]byte{"/good": []byte("good")})
	state := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := rendered(state, spec.Artifact{URL: srv.URL + "/good", SHA256: sum([]byte("good")), Name: "good"})
	_, err := (&Stager{StateDir: state, Client: fastClient(), AllowInsecure: loopback}).Stage(ctx, r)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if l := leftovers(t, state); l != nil {
		t.Errorf("left behind %q", l)
	}
}

func TestDefaultClient(t *testing.T) {
	s := &Stager{StateDir: t.TempDir(), AllowInsecure: loopback}
	c := s.client()
	if c.RetryMax != DefaultRetryMax || c.Logger != nil || c.HTTPClient.Transport.(*http.Transport).ResponseHeaderTimeout == 0 {
		t.Errorf("default client: RetryMax %d, Logger %v, transport %+v", c.RetryMax, c.Logger, c.HTTPClient.Transport)
	}
	if s.client() != c {
		t.Error("the default client is made more than once")
	}
}

// loopback lets the tests' plain-http servers on 127.0.0.1 through.
var loopback = []string{"127.0.0.1"}

func TestStageRefusesPlainHTTP(t *testing.T) {
	r := &spec.Rendered{Service: spec.Service{Name: "api", Version: "1.0.0", Artifacts: []spec.Artifact{
		{URL: "http://releases.example.com/api", SHA256: strings.Repeat("a", 64), Unpack: spec.UnpackNone, Name: "api"},
	}}}
	for _, allow := range [][]string{nil, {"other.example.com"}} {
		_, err := (&Stager{StateDir: t.TempDir(), AllowInsecure: allow}).Stage(context.Background(), r)
		if err == nil || !strings.Contains(err.Error(), "plain http:// is refused") || !strings.Contains(err.Error(), "artifacts.allowInsecure") {
			t.Errorf("allowInsecure %v: Stage = %v, want plain http refused", allow, err)
		}
	}
}
