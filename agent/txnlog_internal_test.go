package agent

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/baton-fleet/baton/rollback"
)

func TestTxnLogAttrs(t *testing.T) {
	var buf bytes.Buffer
	tl := &txnLog{}
	log := slog.New(tl.handler(slog.NewJSONHandler(&buf, nil))).With("host", "h1")
	lines := func() []map[string]any {
		var out []map[string]any
		for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			m := map[string]any{}
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("%v: %s", err, l)
			}
			out = append(out, m)
		}
		buf.Reset()
		return out
	}

	log.Info("idle")
	if got := lines()[0]; got["commit"] != nil || got["step"] != nil || got["host"] != "h1" {
		t.Errorf("a line with no transaction open: %v", got)
	}

	txn := &rollback.Txn{ID: "ab12cd34", Group: "web", From: strings.Repeat("1", 40), To: strings.Repeat("2", 40),
		Services: []string{"api", "worker"}, State: rollback.Verifying}
	tl.track(txn)
	log.Info("checking")
	log.With("commit", "2222222").Warn("a line that names its commit", "service", "api")
	for i, got := range lines() {
		want := map[string]any{"host": "h1", "txn": "ab12cd34", "group": "web", "commit": "2222222", "from": "1111111",
			"service": "api,worker", "step": "VERIFYING"}
		if i == 1 {
			want["service"] = "api" // the line's own value wins
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("line %d: %s = %v, want %v (%v)", i, k, got[k], v, got)
			}
		}
	}
	// A repeated key would make a JSON line with two "commit" members.
	log.With("commit", "2222222").Info("x")
	if raw := buf.String(); strings.Count(raw, `"commit"`) != 1 || strings.Count(raw, `"service"`) != 1 {
		t.Errorf("keys repeated: %s", raw)
	}
	buf.Reset()

	txn.State = rollback.RollingBack
	tl.track(txn)
	log.Info("reverting")
	if got := lines()[0]; got["step"] != "ROLLING_BACK" {
		t.Errorf("step = %v after the state changed", got["step"])
	}
	tl.done()
	log.Info("idle again")
	if got := lines()[0]; got["txn"] != nil {
		t.Errorf("a line after the transaction ended carries it: %v", got)
	}
}
