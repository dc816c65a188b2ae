package testhaproxy

import (
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-fleet/baton/internal/testgit"
)

// TestMain fails the run when a test leaves an HAProxy running.
func TestMain(m *testing.M) { os.Exit(testgit.Main(m)) }

func named(name string) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, name)
	}))
}

func get(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b)
}

func TestStartServesAndAnswersTheAPI(t *testing.T) {
	a, b := named("a"), named("b")
	defer a.Close()
	defer b.Close()
	h := Start(t, Config{Servers: []Server{
		{Name: "a", Addr: a.Listener.Addr().String(), Check: true},
		{Name: "b", Addr: b.Listener.Addr().String()},
	}})
	t.Log(h.Version())

	seen := map[string]int{}
	for range 4 {
		seen[get(t, h.URL)]++
	}
	if seen["a"] != 2 || seen["b"] != 2 {
		t.Errorf("round robin answers = %v, want 2 each", seen)
	}

	cfg, err := os.ReadFile(h.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"server a " + a.Listener.Addr().String() + " check inter 200ms fall 2 rise 2\n",
		"server b " + b.Listener.Addr().String() + "\n",
		"stats socket " + h.AdminSocket + " mode 600 level admin",
		"stats socket " + h.AdminTCP + " level admin",
	} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("haproxy.cfg lacks %q:\n%s", want, cfg)
		}
	}

	for _, addr := range []struct{ network, addr string }{{"unix", h.AdminSocket}, {"tcp", h.AdminTCP}} {
		c, err := net.Dial(addr.network, addr.addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "show servers state web\n")
		out, _ := io.ReadAll(c)
		c.Close()
		if !strings.Contains(string(out), " web 1 a ") || !strings.Contains(string(out), " web 2 b ") {
			t.Errorf("show servers state over %s: %q", addr.network, out)
		}
	}
	if out, err := h.Command("set server web/a state maint"); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("set maint: %v %q", err, out)
	}
	for range 3 {
		if got := get(t, h.URL); got != "b" {
			t.Errorf("with a in maint, answer from %q", got)
		}
	}
}

func TestReload(t *testing.T) {
	a, b := named("a"), named("b")
	defer a.Close()
	defer b.Close()
	h := Start(t, Config{Backend: "api", Servers: []Server{{Name: "a", Addr: a.Listener.Addr().String()}}})
	if got := get(t, h.URL); got != "a" {
		t.Fatalf("answer from %q", got)
	}
	h.Reload(t, Config{Servers: []Server{{Name: "b", Addr: b.Listener.Addr().String()}}})
	for range 3 {
		if got := get(t, h.URL); got != "b" {
			t.Errorf("after reload, answer from %q", got)
		}
	}
	if out, _ := h.Command("show servers state api"); !strings.Contains(out, " api 1 b ") {
		t.Errorf("after reload, servers: %q", out)
	}
}

func TestBadServerName(t *testing.T) {
	h := &HAProxy{cfg: Config{Servers: []Server{{Name: "a b", Addr: "127.0.0.1:1"}}}, ConfigFile: filepath.Join(t.TempDir(), "haproxy.cfg")}
	if err := h.writeConfig(); err == nil {
		t.Error("a server name with a space was written")
	}
}

// TestCookiePersistence: with Config.Cookie, a client that keeps HAProxy's cookie
// stays on its server, and one that does not is balanced; in drain, a server keeps
// its sticky clients and gets no new ones.
func TestCookiePersistence(t *testing.T) {
	a, b := named("a"), named("b")
	defer a.Close()
	defer b.Close()
	h := Start(t, Config{Cookie: "SRV insert indirect nocache", Servers: []Server{
		{Name: "a", Addr: a.Listener.Addr().String()},
		{Name: "b", Addr: b.Listener.Addr().String(), Cookie: "bee"},
	}})
	cfg, _ := os.ReadFile(h.ConfigFile)
	for _, want := range []string{"    cookie SRV insert indirect nocache\n", " cookie a\n", " cookie bee\n"} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("haproxy.cfg lacks %q:\n%s", want, cfg)
		}
	}
	jar, _ := cookiejar.New(nil)
	sticky := &http.Client{Jar: jar, Transport: &http.Transport{DisableKeepAlives: true}}
	answer := func(c *http.Client) string {
		t.Helper()
		resp, err := c.Get(h.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	first := answer(sticky)
	for range 5 {
		if got := answer(sticky); got != first {
			t.Fatalf("a client with the cookie moved from %s to %s", first, got)
		}
	}
	seen := map[string]int{}
	for range 4 {
		seen[get(t, h.URL)]++
	}
	if seen["a"] != 2 || seen["b"] != 2 {
		t.Errorf("clients without the cookie: %v, want 2 each", seen)
	}
	if out, err := h.Command("set server web/" + first + " state drain"); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("set drain: %v %q", err, out)
	}
	if got := answer(sticky); got != first {
		t.Errorf("sticky client moved off a draining server to %s", got)
	}
	for range 3 {
		if got := get(t, h.URL); got == first {
			t.Errorf("a new client reached the draining server %s", first)
		}
	}
}
