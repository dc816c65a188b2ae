package agent_test

import (
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testfleet"
	"github.com/baton-fleet/baton/internal/testgit"
)

// TestRepoToken follows the fleet repository over smart HTTP with a token, as over
// https: a wrong token is a fetch error that says what failed and holds no token; the
// right one, written to the same file, is read at the next fetch. Neither token shows
// in the journal (the harness scans it), the status or the metrics.
func TestRepoToken(t *testing.T) {
	h := newHarness(t)
	const good, bad = "tok-4f9a1c-right-value", "tok-77e0b2-wrong-value"
	h.secret(good)
	h.secret(bad)
	repoURL, _ := testgit.ServeHTTP(t, h.repo, testgit.WithToken(good))
	u, err := url.Parse(repoURL)
	if err != nil {
		t.Fatal(err)
	}
	// The agent takes http:// only to a loopback address: a socket proxy in the host
	// listens on its loopback and relays to the server through the bridge.
	relay := testfleet.Forward(t, h.gateway, u.Host)
	h.host.MustExec(t, "systemd-run", "--unit=git-relay", "--socket-property=ListenStream=127.0.0.1:8418",
		"/lib/systemd/systemd-socket-proxyd", relay)

	tokenFile := h.host.Path("/etc/baton/repo.token")
	if err := os.WriteFile(tokenFile, []byte(bad+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.extra = "" // writeConfig sets it; the repository differs from the harness's
	cfg := "host: h1\nartifacts: {allowInsecure: [\"" + h.gateway + "\"]}\n" +
		"listen: {metrics: \"0.0.0.0:9732\"}\n" +
		"repo:\n  url: http://127.0.0.1:8418" + u.Path + "\n  branch: main\n  poll: 1s\n  auth: {tokenFile: /etc/baton/repo.token}\n"
	if err := os.WriteFile(h.host.Path("/etc/baton/agent.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c1 := h.push(release{version: "1.0.0", mode: "ok"})
	h.startAgent()
	h.waitFor("a fetch error", time.Minute, func() bool { return strings.Contains(h.journal(), "fetch the fleet repository") })
	st := h.status()
	if !strings.Contains(st.Fetch.Error, "authentication required") {
		t.Errorf("the fetch error does not say the token was refused: %q", st.Fetch.Error)
	}
	t.Logf("fetch error with a wrong token: %s", st.Fetch.Error)

	if err := os.WriteFile(tokenFile, []byte(good+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.settled(c1)
	h.consistent()

	seen := map[string]string{
		"status --json": h.host.MustExec(t, "/usr/local/bin/baton", "status", "--json"),
		"status":        h.host.MustExec(t, "/usr/local/bin/baton", "status"),
		"metrics":       h.scrape(),
	}
	for where, text := range seen {
		for _, s := range []string{good, bad} {
			if strings.Contains(text, s) {
				t.Errorf("a token appears in the %s", where)
			}
		}
	}
}
