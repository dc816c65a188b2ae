package lease

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// DefaultEtcdDialTimeout bounds the client's first connection steps (authentication).
const DefaultEtcdDialTimeout = 5 * time.Second

// EtcdClientConfig is how to reach etcd; its names mirror the agent's lease.etcd.
type EtcdClientConfig struct {
	Endpoints    []string // https://host:2379 (or http:// on loopback and tests)
	TLS          EtcdTLS
	Username     string
	PasswordFile string        // holds the password; read by NewClient, never logged
	DialTimeout  time.Duration // default DefaultEtcdDialTimeout
	Logger       *slog.Logger  // gets the etcd client's warnings and errors; default: discard
}

// EtcdTLS names the PEM files of the client's TLS settings. With none set, https://
// endpoints are verified against the system's roots.
type EtcdTLS struct {
	CAFile   string // the CA that signs etcd's server certificates
	CertFile string // a client certificate, for etcd's --client-cert-auth
	KeyFile  string
}

// NewClient connects to etcd as c says. The connection is made in the background: an
// unreachable etcd shows on the first request, not here. Files that cannot be read
// and a cert without its key are errors.
func NewClient(c EtcdClientConfig) (*clientv3.Client, error) {
	if len(c.Endpoints) == 0 {
		return nil, errors.New("etcd client: no endpoints")
	}
	cfg := clientv3.Config{
		Endpoints:            c.Endpoints,
		DialTimeout:          c.DialTimeout,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		PermitWithoutStream:  true,
		Username:             c.Username,
		Logger:               zap.New(slogCore{log: c.Logger}),
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultEtcdDialTimeout
	}
	if c.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	tlsCfg, err := c.TLS.config(c.Endpoints)
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	cfg.TLS = tlsCfg
	if (c.Username == "") != (c.PasswordFile == "") {
		return nil, errors.New("etcd client: username and passwordFile go together")
	}
	if c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("etcd client: read the password file: %w", err)
		}
		cfg.Password = strings.TrimRight(string(b), "\r\n")
		if cfg.Password == "" {
			return nil, fmt.Errorf("etcd client: password file %s is empty", c.PasswordFile)
		}
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	return cli, nil
}

// config builds the TLS settings: nil when no file is set and no endpoint is https.
func (t EtcdTLS) config(endpoints []string) (*tls.Config, error) {
	https := false
	for _, ep := range endpoints {
		if strings.HasPrefix(ep, "https://") {
			https = true
		}
	}
	if !https && t == (EtcdTLS{}) {
		return nil, nil
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("tls: certFile and keyFile go together")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: read caFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: caFile %s holds no PEM certificate", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	if t.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: load certFile and keyFile: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// slogCore passes the etcd client's zap records of level warn and above to a
// *slog.Logger, so that they land in the agent's journal like its own.
type slogCore struct {
	log    *slog.Logger
	fields []zapcore.Field
}

func (c slogCore) Enabled(l zapcore.Level) bool { return c.log != nil && l >= zapcore.WarnLevel }

func (c slogCore) With(fields []zapcore.Field) zapcore.Core {
	return slogCore{log: c.log, fields: append(append([]zapcore.Field(nil), c.fields...), fields...)}
}

func (c slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	args := make([]any, 0, 2*len(enc.Fields)+2)
	args = append(args, "component", "etcd-client")
	for k, v := range enc.Fields {
		args = append(args, k, v)
	}
	level := slog.LevelWarn
	if e.Level >= zapcore.ErrorLevel {
		level = slog.LevelError
	}
	c.log.Log(context.Background(), level, e.Message, args...)
	return nil
}

func (c slogCore) Sync() error { return nil }
