package agent_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-fleet/baton/api"
	"github.com/baton-fleet/baton/events"
)

// hooks receives the agent's webhooks on the machine's address on the bridge.
type hooks struct {
	mu     sync.Mutex
	got    []events.Event
	badSig int
}

func receiveHooks(t *testing.T, addr string, secret []byte) (*hooks, string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr+":0")
	if err != nil {
		t.Fatal(err)
	}
	hk := &hooks{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var e events.Event
		hk.mu.Lock()
		defer hk.mu.Unlock()
		if !events.VerifySignature(secret, body, r.Header.Get("X-Baton-Signature")) {
			hk.badSig++
		}
		if json.Unmarshal(body, &e) == nil {
			hk.got = append(hk.got, e)
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return hk, "http://" + ln.Addr().String() + "/baton"
}

func (hk *hooks) types() []string {
	hk.mu.Lock()
	defer hk.mu.Unlock()
	var out []string
	for _, e := range hk.got {
		out = append(out, e.Type)
	}
	return out
}

// status runs `baton status --json` in the host.
func (h *harness) status() api.State {
	h.t.Helper()
	var st api.State
	out := h.host.MustExec(h.t, "/usr/local/bin/baton", "status", "--json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		h.t.Fatalf("baton status --json: %v\n%s", err, out)
	}
	return st
}

func (h *harness) scrape() string {
	h.t.Helper()
	resp, err := testClient.Get("http://" + h.host.IP + ":9732/metrics")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestStatusMetricsWebhooks drives a real agent through an upgrade and a revert and
// reads what an operator reads: `baton status` (JSON and table), the metrics, and the
// webhooks, signed.
func TestStatusMetricsWebhooks(t *testing.T) {
	h := newHarness(t)
	secret := []byte("webhook-s3cret-value")
	h.secret(string(secret))
	hk, url := receiveHooks(t, h.gateway, secret)
	if err := os.WriteFile(h.host.Path("/etc/baton/webhook.secret"), append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	h.writeConfig("listen: {metrics: \"0.0.0.0:9732\"}\nwebhooks: [{url: \"" + url + "\", secretFile: /etc/baton/webhook.secret}]\n")

	c1 := h.push(release{version: "1.0.0", mode: "ok"})
	h.startAgent()
	h.waitFor("the first upgrade to verify", time.Minute, func() bool { return h.host.TxnState() == "VERIFYING" })
	verifying := h.host.MustExec(t, "/usr/local/bin/baton", "status")
	h.settled(c1)
	golden(t, "status-verifying", maskStatus(verifying, map[string]string{c1: "C1"}))
	golden(t, "status-upgraded", maskStatus(h.host.MustExec(t, "/usr/local/bin/baton", "status"), map[string]string{c1: "C1"}))
	st := h.status()
	if st.Applied != c1 || st.Group != "web" || len(st.Services) != 1 || st.Services[0].Version != "1.0.0" ||
		len(st.Services[0].Units) != 1 || st.Services[0].Units[0].Active != "active" {
		t.Fatalf("status after the first upgrade: %+v", st)
	}
	if st.LastResult == nil || st.LastResult.Outcome != api.OutcomeUpgraded {
		t.Errorf("last result = %+v, want upgraded", st.LastResult)
	}

	c2 := h.push(release{version: "2.0.0", mode: "fail-health"})
	h.settled(c2)
	st = h.status()
	if st.Applied != c1 || st.LastResult == nil || st.LastResult.Outcome != api.OutcomeReverted ||
		st.LastResult.Step != "verify" || st.LastResult.Check != "health" || !strings.Contains(st.LastResult.Output, "503") {
		t.Errorf("status after a revert: applied %s, last result %+v", short(st.Applied), st.LastResult)
	}
	if len(st.Quarantined) != 1 || st.Quarantined[0].Commit != c2 {
		t.Errorf("quarantined = %+v, want %s", st.Quarantined, short(c2))
	}
	table := h.host.MustExec(t, "/usr/local/bin/baton", "status")
	golden(t, "status-reverted", maskStatus(table, map[string]string{c1: "C1", c2: "C2"}))

	m := h.scrape()
	for line := range strings.SplitSeq(m, "\n") {
		if strings.HasPrefix(line, "baton_") && !strings.HasSuffix(line, " 0") && !strings.Contains(line, "_bucket") {
			t.Logf("metric after a revert: %s", line)
		}
	}
	for _, want := range []string{
		`baton_upgrades_total{result="succeeded",service="demo"} 1`,
		`baton_upgrades_total{result="failed",service="demo"} 1`,
		`baton_check_failures_total{check="health",service="demo"} 1`,
		`applied="` + c1 + `",group="web",host="h1"`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	h.waitFor("the webhooks", 30*time.Second, func() bool {
		got := strings.Join(hk.types(), " ")
		return strings.Contains(got, "upgrade.succeeded") && strings.Contains(got, "rollout.halted")
	})
	got := hk.types()
	want := []string{"upgrade.started", "upgrade.succeeded", "upgrade.started", "revert.done", "upgrade.failed", "rollout.halted"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("webhooks received %v, want each event once: %v", got, want)
	}
	if hk.badSig != 0 {
		t.Errorf("%d webhooks with a bad signature", hk.badSig)
	}
	// no secret anywhere an operator looks
	for what, text := range map[string]string{"journal": h.journal(), "status": table, "metrics": m} {
		if strings.Contains(text, string(secret)) {
			t.Errorf("the webhook secret appears in the %s", what)
		}
	}
}
