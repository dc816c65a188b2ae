package testprom

import (
	"context"
	"testing"
	"time"

	"github.com/baton-fleet/baton/analysis"
)

// TestStartScrapesAndStops: a value the test sets reaches Prometheus through a
// scrape; a rule fires; Stop ends the process, which answers no more; Restart brings
// it back where it was.
func TestStartScrapesAndStops(t *testing.T) {
	e := NewExporter(t)
	e.Set("temperature", map[string]string{"room": "a"}, 21.5)
	p := Start(t, Config{Targets: []string{e.Addr}, Rules: `groups:
  - name: test
    rules:
      - alert: Hot
        expr: temperature > 30
`})
	c, err := analysis.NewClient(analysis.Server{URL: p.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wait := func(q string, want int) analysis.Vector {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			v, err := c.Query(context.Background(), q)
			if err == nil && len(v) == want {
				return v
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d series (%v), want %d", q, len(v), err, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if v := wait(`temperature{room="a"}`, 1); v[0].Value != 21.5 || string(v[0].Metric["instance"]) != e.Addr {
		t.Errorf("temperature = %v", v)
	}
	wait(`ALERTS{alertname="Hot"}`, 0)
	e.Set("temperature", map[string]string{"room": "a"}, 35)
	wait(`ALERTS{alertname="Hot",alertstate="firing"}`, 1)

	pid := p.PID()
	p.Stop()
	if p.PID() != 0 || pid == 0 {
		t.Errorf("PID after Stop = %d (was %d)", p.PID(), pid)
	}
	if _, err := c.Query(context.Background(), "up"); err == nil {
		t.Error("a stopped Prometheus answered")
	}

	// Restarted, it answers at the same address, from the same storage.
	p.Restart(t)
	if p.PID() == 0 || p.PID() == pid {
		t.Errorf("PID after Restart = %d (was %d)", p.PID(), pid)
	}
	if v := wait(`temperature{room="a"}`, 1); v[0].Value != 35 {
		t.Errorf("temperature after Restart = %v", v)
	}
}
