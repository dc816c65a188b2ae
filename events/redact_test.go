package events

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// A receiver that answers with a Location header naming the hook's own URL: net/http
// quotes that header in its error, and the token in the path must not reach the log.
func TestNoSecretPathInErrors(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, nil))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "http://"+r.Host+r.URL.RequestURI()+"/%zz")
		w.WriteHeader(http.StatusFound)
	}))
	defer srv.Close()
	s := NewSender([]Webhook{{URL: srv.URL + "/services/T0KEN1/B0KEN2?token=qu3ry"}}, logger, append(fast(), WithAttempts(1))...)
	start(t, s)
	s.Publish(Event{Type: UpgradeFailed, Host: "web-01"})
	waitFor(t, "the failure", func() bool { return s.Stats()[0].Failed == 1 })
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if !strings.Contains(out, "send webhook event") {
		t.Fatalf("failure not logged:\n%s", out)
	}
	for _, secret := range []string{"T0KEN1", "B0KEN2", "qu3ry"} {
		if strings.Contains(out, secret) {
			t.Errorf("log holds %q:\n%s", secret, out)
		}
	}
}
