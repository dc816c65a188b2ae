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

// builds compiles packages of this module, once per package and ldflags.
type builds struct {
	dir  string
	mu   sync.Mutex
	done map[string]string
}

func (b *builds) get(tb testing.TB, pkg, ldflags string) string {
	tb.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	key := pkg + " " + ldflags
	if p, ok := b.done[key]; ok {
		return p
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

// Releases serves the demo service's builds over HTTP to the hosts.
type Releases struct {
	URL    string // http://gateway:port
	builds *builds
	mu     sync.Mutex
	files  map[string]string // URL path -> file
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

// publish builds the demo service at version and mode and returns its URL and sha256.
func (r *Releases) publish(tb testing.TB, version, mode string) (string, string) {
	tb.Helper()
	bin := r.builds.get(tb, module+"/examples/demo", fmt.Sprintf("-X main.version=%s -X main.mode=%s", version, mode))
	b, err := os.ReadFile(bin)
	if err != nil {
		tb.Fatal(err)
	}
	sum := sha256.Sum256(b)
	path := fmt.Sprintf("/demo/%s-%s/demo", version, mode)
	r.mu.Lock()
	r.files[path] = bin
	r.mu.Unlock()
	return r.URL + path, hex.EncodeToString(sum[:])
}
