// Package testprom runs a real Prometheus for tests (Debian's prometheus package), scraping exporters the test runs and sets.
package testprom

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/baton-fleet/baton/internal/testproc"
)

// Defaults of Config.
const (
	DefaultScrapeInterval = 250 * time.Millisecond
)

// StartTimeout bounds how long Prometheus may take to be ready.
var StartTimeout = 30 * time.Second

// Config describes the Prometheus to run.
type Config struct {
	// Targets are host:port addresses scraped at /metrics, as job "test". A series
	// gets the label instance="<host:port>" unless it has its own: the exporter's
	// labels are kept (honor_labels), so a test can export instance="db-02".
	Targets []string
	// Rules is the text of an alerting and recording rules file (Prometheus' YAML
	// format); "" for none. Rules are evaluated every ScrapeInterval.
	Rules string
	// ScrapeInterval is how often targets are scraped and rules evaluated; default
	// DefaultScrapeInterval.
	ScrapeInterval time.Duration
	// TLS, when set, makes Prometheus serve https with this certificate and key
	// (PEM files), signed by CAFile; URL is then https://.
	TLS *TLS
}

// TLS is the certificate Prometheus serves, and the CA that signed it.
type TLS struct {
	CertFile, KeyFile, CAFile string
}

// Prometheus is a running prometheus process owned by one test, with its own storage
// directory and loopback port.
type Prometheus struct {
	URL     string // http://127.0.0.1:<port>
	LogFile string // Prometheus' output

	cfg  Config
	addr string // host:port it listens on
	dir  string
	bin  string
	mu   sync.Mutex
	proc *testproc.Proc
}

// Binary is the prometheus binary Start runs: found in PATH, else /usr/bin/prometheus.
func Binary() (string, error) {
	return testproc.Find("prometheus", "/usr/bin/prometheus", "prometheus")
}

// Require skips the test when prometheus is missing; in CI (CI=true) it fails instead.
func Require(t testing.TB) string {
	t.Helper()
	return testproc.Require(t, "testprom", "prometheus", "/usr/bin/prometheus", "prometheus")
}

// Start writes a prometheus.yml (and the rules file) for cfg in a temporary
// directory, starts Prometheus on a free loopback port with its storage there, and
// waits until it is ready. t.Cleanup stops it (by its PID: SIGTERM, then SIGKILL) and
// waits for it to exit before the directory is removed.
func Start(t testing.TB, cfg Config) *Prometheus {
	t.Helper()
	bin := Require(t)
	if cfg.ScrapeInterval <= 0 {
		cfg.ScrapeInterval = DefaultScrapeInterval
	}
	dir := t.TempDir()
	p := &Prometheus{cfg: cfg, dir: dir, bin: bin, LogFile: filepath.Join(dir, "prometheus.log")}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			if b, err := os.ReadFile(p.LogFile); err == nil && len(b) > 0 {
				t.Logf("prometheus log (tail):\n%s", testproc.Tail(b, 4096))
			}
		}
	})
	if err := p.writeConfig(); err != nil {
		t.Fatalf("testprom: %v", err)
	}
	// A free port found by listening and closing can be taken before Prometheus
	// binds it: try a few times.
	var err error
	for range 3 {
		if p.addr, err = freeLoopback(); err == nil {
			p.URL = "http://" + p.addr
			if cfg.TLS != nil {
				p.URL = "https://" + p.addr
			}
			if err = p.start(); err == nil {
				return p
			}
		}
		p.Stop()
	}
	t.Fatalf("testprom: %v", err)
	return nil
}

// Restart starts Prometheus again, after Stop, on the same address and with the same
// storage: what its clients see is Prometheus coming back. It fails the test if the
// address was taken meanwhile or Prometheus does not get ready.
func (p *Prometheus) Restart(t testing.TB) {
	t.Helper()
	p.Stop()
	if err := p.start(); err != nil {
		p.Stop()
		t.Fatalf("testprom: restart: %v", err)
	}
}

var configTemplate = template.Must(template.New("prometheus.yml").Parse(`# written by testprom
global:
  scrape_interval: {{ .Interval }}
  scrape_timeout: {{ .Interval }}
  evaluation_interval: {{ .Interval }}
{{- if .Rules }}
rule_files: ["{{ .RulesFile }}"]
{{- end }}
scrape_configs:
  - job_name: test
    honor_labels: true
    static_configs:
      - targets: [{{ range $i, $t := .Targets }}{{ if $i }}, {{ end }}"{{ $t }}"{{ end }}]
`))

func (p *Prometheus) writeConfig() error {
	rulesFile := filepath.Join(p.dir, "rules.yml")
	if p.cfg.Rules != "" {
		if err := os.WriteFile(rulesFile, []byte(p.cfg.Rules), 0o600); err != nil {
			return err
		}
	}
	var b strings.Builder
	err := configTemplate.Execute(&b, map[string]any{
		"Interval": p.cfg.ScrapeInterval.String(), "Rules": p.cfg.Rules != "", "RulesFile": rulesFile, "Targets": p.cfg.Targets,
	})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(p.dir, "prometheus.yml"), []byte(b.String()), 0o600); err != nil {
		return err
	}
	if t := p.cfg.TLS; t != nil {
		web := fmt.Sprintf("tls_server_config:\n  cert_file: %q\n  key_file: %q\n", t.CertFile, t.KeyFile)
		return os.WriteFile(filepath.Join(p.dir, "web.yml"), []byte(web), 0o600)
	}
	return nil
}

// start runs Prometheus on p.addr and waits until it is ready.
func (p *Prometheus) start() error {
	args := []string{
		"--config.file=" + filepath.Join(p.dir, "prometheus.yml"),
		"--storage.tsdb.path=" + filepath.Join(p.dir, "data"),
		"--web.listen-address=" + p.addr,
		"--log.level=warn",
	}
	if p.cfg.TLS != nil {
		args = append(args, "--web.config.file="+filepath.Join(p.dir, "web.yml"))
	}
	cmd := exec.Command(p.bin, args...)
	cmd.Dir = p.dir
	proc, err := testproc.Start(cmd, p.LogFile, false)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.proc = proc
	p.mu.Unlock()
	return p.waitReady(proc.Done())
}

func (p *Prometheus) waitReady(done <-chan struct{}) error {
	client, err := p.readyClient()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(StartTimeout)
	for {
		resp, err := client.Get(p.URL + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-done:
			b, _ := os.ReadFile(p.LogFile)
			return fmt.Errorf("prometheus exited: %s", testproc.Tail(b, 2048))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("prometheus not ready at %s after %s", p.URL, StartTimeout)
		}
	}
}

// readyClient is the client that asks whether Prometheus is ready: over https, it
// trusts the CA of Config.TLS.
func (p *Prometheus) readyClient() (*http.Client, error) {
	c := &http.Client{Timeout: time.Second}
	if t := p.cfg.TLS; t != nil {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		c.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	return c, nil
}

// Stop ends Prometheus by its PID (SIGTERM, SIGKILL after 5 s) and waits for it to
// exit: a test stops it to see what its absence does. Stopping twice is harmless.
func (p *Prometheus) Stop() {
	p.mu.Lock()
	proc := p.proc
	p.mu.Unlock()
	proc.Stop(5 * time.Second)
}

// PID is the process id of the running Prometheus, 0 when it is stopped.
func (p *Prometheus) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return 0
	}
	return p.proc.PID()
}

// freeLoopback is a loopback address with a port free a moment ago.
func freeLoopback() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
