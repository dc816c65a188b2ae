package testfleet

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// builds compiles packages of this module, once per package and ldflags, into dir
// (a temporary directory made at the first build when dir is "").
type builds struct {
	dir  string
	mu   sync.Mutex
	done map[string]string
}

// testBuilds is the cache of a test process: every fleet and harness in it shares the
// binaries, and Main removes them when the tests end.
var testBuilds = &builds{}

// Build compiles a package of this module (pkg is its import path) with ldflags, once
// per test process, and returns the binary's path. The package's TestMain is Main.
func Build(tb testing.TB, pkg, ldflags string) string {
	tb.Helper()
	return testBuilds.get(tb, pkg, ldflags)
}

func (b *builds) get(tb testing.TB, pkg, ldflags string) string {
	tb.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	key := pkg + " " + ldflags
	if p, ok := b.done[key]; ok {
		return p
	}
	if b.dir == "" {
		d, err := os.MkdirTemp("", "baton-build-")
		if err != nil {
			tb.Fatal(err)
		}
		b.dir = d
	}
	if b.done == nil {
		b.done = map[string]string{}
	}
	out := filepath.Join(b.dir, fmt.Sprintf("bin%d", len(b.done)))
	cmd := exec.Command("go", "build", "-ldflags", ldflags, "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if o, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build %s: %v\n%s", pkg, err, o)
	}
	b.done[key] = out
	return out
}

// remove deletes every binary built, with the directory.
func (b *builds) remove() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
	b.dir, b.done = "", nil
}

// Releases serves the demo service's builds, and any file a test adds, over HTTP to
// the hosts.
type Releases struct {
	URL    string // http://gateway:port
	builds *builds
	mu     sync.Mutex
	files  map[string]string // URL path -> file
}

// ServeReleases serves releases to the hosts on addr (the gateway), until the test
// ends.
func ServeReleases(tb testing.TB, addr string) *Releases {
	tb.Helper()
	return serveReleases(tb, addr, testBuilds)
}

func serveReleases(tb testing.TB, addr string, b *builds) *Releases {
	tb.Helper()
	ln, err := net.Listen("tcp", addr+":0")
	if err != nil {
		tb.Fatalf("release server: %v", err)
	}
	r := &Releases{URL: "http://" + ln.Addr().String(), builds: b, files: map[string]string{}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		f, ok := r.files[req.URL.Path]
		r.mu.Unlock()
		if !ok {
			http.NotFound(w, req)
			return
		}
		http.ServeFile(w, req, f)
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	tb.Cleanup(func() { srv.Close(); <-done })
	return r
}

// Publish builds the demo service at version and mode and returns its URL and sha256.
func (r *Releases) Publish(tb testing.TB, version, mode string) (string, string) {
	tb.Helper()
	bin := r.builds.get(tb, module+"/examples/demo", fmt.Sprintf("-X main.version=%s -X main.mode=%s", version, mode))
	b, err := os.ReadFile(bin)
	if err != nil {
		tb.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return r.Serve(fmt.Sprintf("/demo/%s-%s/demo", version, mode), bin), hex.EncodeToString(sum[:])
}

// Serve serves file at path from now on, and returns its URL.
func (r *Releases) Serve(path, file string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.files[path] = file
	return r.URL + path
}
