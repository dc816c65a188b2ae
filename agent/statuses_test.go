package agent_test

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testetcd"
	"github.com/baton-fleet/baton/internal/testfleet"
)

// githubStatuses answers as GitHub's commit-status API documents
// (docs.github.com/en/rest/commits/statuses#create-a-commit-status): POST
// /repos/{owner}/{repo}/statuses/{sha} with a bearer token and a JSON body of state,
// target_url, description and context; 201. It keeps the last status of each sha
// and context, as the commit page shows them.
type githubStatuses struct {
	t    *testing.T
	mu   sync.Mutex
	last map[string]map[string]string // by sha and context
}

func (g *githubStatuses) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sha, ok := strings.CutPrefix(r.URL.Path, "/repos/ops/fleet/statuses/")
	var body map[string]string
	if r.Method != http.MethodPost || !ok || r.Header.Get("Authorization") != "Bearer forge-token" ||
		json.NewDecoder(r.Body).Decode(&body) != nil || body["context"] == "" ||
		!strings.Contains("error failure pending success", body["state"]) || len([]rune(body["description"])) > 140 {
		g.t.Errorf("a request GitHub would refuse: %s %s %v", r.Method, r.URL.Path, body)
		w.WriteHeader(http.StatusUnprocessableEntity)
		return
	}
	g.mu.Lock()
	if g.last[sha] == nil {
		g.last[sha] = map[string]string{}
	}
	g.last[sha][body["context"]] = body["state"] + " " + body["description"]
	g.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
}

func (g *githubStatuses) status(sha, context string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.last[sha][context]
}

// TestCommitStatuses: the fleet's fetcher shows each commit's rollout on the forge,
// one status for group web: success once both hosts run it, pending while a canary
// waits for baton promote, failure naming the host and the check when it halts.
func TestCommitStatuses(t *testing.T) {
	cluster := testetcd.Start(t)
	h1 := newHarness(t)
	gh := &githubStatuses{t: t, last: map[string]map[string]string{}}
	ln, err := net.Listen("tcp", h1.gateway+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: gh}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	relay := testfleet.Forward(t, h1.gateway, strings.TrimPrefix(cluster.Endpoints()[0], "http://"))
	h1.writeConfig("lease:\n  backend: etcd\n  etcd: {endpoints: [\"http://" + relay + "\"], prefix: /baton, ttl: 5s}\n" +
		"statuses: {forge: github, api: \"http://" + ln.Addr().String() + "\", repository: ops/fleet, tokenFile: /etc/baton/forge.token}\n")
	hosts := []*harness{h1, h1.sibling("h2")}
	for _, h := range hosts {
		if err := os.WriteFile(h.host.Path("/etc/baton/forge.token"), []byte("forge-token\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	wait := func(sha, want string) {
		t.Helper()
		h1.waitFor("status "+want, 2*time.Minute, func() bool { return gh.status(sha, "baton/web") == want })
	}
	c1 := h1.push(release{version: "1.0.0", mode: "ok"})
	for _, h := range hosts {
		h.startAgent()
	}
	wait(c1, "success 2/2 hosts on demo 1.0.0")

	canaryFleet := strings.Replace(fleetYAML, "rollout: {", "rollout: {canary: 1, canaryPause: manual, ", 1)
	c2 := h1.push(release{version: "2.0.0", mode: "ok", fleet: canaryFleet})
	wait(c2, "pending 1/2 hosts on demo 2.0.0, canary waiting for promote")
	h1.host.MustExec(t, "/usr/local/bin/baton", "promote", "web", c2)
	wait(c2, "success 2/2 hosts on demo 2.0.0")

	c3 := h1.push(release{version: "3.0.0", mode: "fail-health"})
	h1.waitFor("a failure status on the bad release", 2*time.Minute, func() bool {
		s := gh.status(c3, "baton/web")
		return strings.HasPrefix(s, "failure halted: failed on h") && strings.Contains(s, "check health")
	})
	t.Logf("on %s: %s", short(c3), gh.status(c3, "baton/web"))
}
