package lease

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testetcd"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newClient(t *testing.T, c EtcdClientConfig) *clientv3.Client {
	t.Helper()
	cli, err := NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestNewClientTLSAndAuth runs etcd with client certificates required and
// authentication on, and connects as the agent's lease.etcd settings say.
func TestNewClientTLSAndAuth(t *testing.T) {
	t.Parallel() // mostly waits for a TTL or a timeout
	certs := testetcd.NewCerts(t)
	c := testetcd.StartWith(t, testetcd.Options{TLS: certs.ServerTLS})
	tlsFiles := EtcdTLS{CAFile: certs.CAFile, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}
	const password = "s3cret-Pa55"

	admin := newClient(t, EtcdClientConfig{Endpoints: c.Endpoints(), TLS: tlsFiles})
	ctx := ctxT(t, 30*time.Second)
	if _, err := admin.UserAdd(ctx, "root", password); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}

	cli := newClient(t, EtcdClientConfig{
		Endpoints: c.Endpoints(), TLS: tlsFiles,
		Username: "root", PasswordFile: writeFile(t, "password", password+"\n"),
	})
	e := newEtcd(t, cli, "web-01")
	if err := e.Acquire(ctx, "web"); err != nil {
		t.Fatalf("Acquire over TLS with auth: %v", err)
	}
	if err := e.Check(ctx); err != nil {
		t.Fatal(err)
	}

	// Without credentials, with a wrong password, or trusting another CA: refused.
	for name, cfg := range map[string]EtcdClientConfig{
		"no credentials": {Endpoints: c.Endpoints(), TLS: tlsFiles},
		"wrong password": {Endpoints: c.Endpoints(), TLS: tlsFiles, Username: "root", PasswordFile: writeFile(t, "wrong", "not-it\n")},
		"other CA": {Endpoints: c.Endpoints(), Username: "root", PasswordFile: writeFile(t, "pw", password), DialTimeout: time.Second,
			TLS: EtcdTLS{CAFile: certs.OtherCAFile, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}},
	} {
		t.Run(name, func(t *testing.T) {
			cli, err := NewClient(cfg)
			if err == nil {
				defer cli.Close()
				short, cancel := context.WithTimeout(ctx, time.Second)
				_, err = cli.Put(short, "/baton/x", "1")
				cancel()
			}
			if err == nil {
				t.Fatal("write succeeded")
			}
			if strings.Contains(err.Error(), password) {
				t.Fatalf("error shows the password: %v", err)
			}
		})
	}
}

func TestNewClientRefusesBadSettings(t *testing.T) {
	certs := testetcd.NewCerts(t)
	ep := []string{"https://127.0.0.1:2379"}
	for name, cfg := range map[string]EtcdClientConfig{
		"no endpoints":      {},
		"cert without key":  {Endpoints: ep, TLS: EtcdTLS{CertFile: certs.ClientCert}},
		"missing CA":        {Endpoints: ep, TLS: EtcdTLS{CAFile: filepath.Join(t.TempDir(), "nope.pem")}},
		"CA not PEM":        {Endpoints: ep, TLS: EtcdTLS{CAFile: writeFile(t, "ca.pem", "not pem")}},
		"key not matching":  {Endpoints: ep, TLS: EtcdTLS{CertFile: certs.ClientCert, KeyFile: certs.ServerKey}},
		"user without file": {Endpoints: ep, Username: "root"},
		"missing password":  {Endpoints: ep, Username: "root", PasswordFile: filepath.Join(t.TempDir(), "nope")},
		"empty password":    {Endpoints: ep, Username: "root", PasswordFile: writeFile(t, "pw", "\n")},
		"password w/o user": {Endpoints: ep, PasswordFile: writeFile(t, "pw2", "x")},
	} {
		t.Run(name, func(t *testing.T) {
			cli, err := NewClient(cfg)
			if err == nil {
				cli.Close()
				t.Fatal("NewClient succeeded")
			}
		})
	}
}

func TestEtcdClientLogsGoToSlog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	z := zap.New(slogCore{log: log}).With(zap.String("endpoint", "e1"))
	z.Info("chatter")
	z.Warn("retrying of unary invoker failed", zap.Int("attempt", 2))
	z.Error("lost", zap.Error(os.ErrClosed))
	got := buf.String()
	for _, want := range []string{
		`level=WARN msg="retrying of unary invoker failed" component=etcd-client`, "endpoint=e1", "attempt=2",
		`level=ERROR msg=lost`, `error="file already closed"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "chatter") {
		t.Errorf("info record passed through:\n%s", got)
	}
}
