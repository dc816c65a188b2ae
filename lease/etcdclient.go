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
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultEtcdDialTimeout bounds the client's first connection steps (authentication).
const DefaultEtcdDialTimeout = 5 * time.Second

// DefaultEtcdCallTimeout bounds every request of the client (a read, a write, a
// lease grant or revoke) whose context has no earlier deadline, so that an etcd that
// is down or cut off makes a call fail instead of blocking it. Watches and the
// keep-alive stream are not bounded.
const DefaultEtcdCallTimeout = 10 * time.Second

// pendingToken stands for the auth token while etcd has not answered yet: etcd
// refuses it as invalid, and the client then authenticates with the password.
const pendingToken = "baton-not-yet-authenticated"

// maxReconnectDelay caps the wait between two attempts to reconnect to etcd.
const maxReconnectDelay = 5 * time.Second

// EtcdClientConfig is how to reach etcd; its names mirror the agent's lease.etcd.
type EtcdClientConfig struct {
	Endpoints    []string // https://host:2379 (or http:// on loopback and tests)
	TLS          EtcdTLS
	Username     string
	PasswordFile string        // holds the password; read by NewClient, never logged
	DialTimeout  time.Duration // default DefaultEtcdDialTimeout
	CallTimeout  time.Duration // default DefaultEtcdCallTimeout
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
// readPassword reads the password of the etcd user from file, without the line
// end.
func readPassword(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("etcd client: read the password file: %w", err)
	}
	password := strings.TrimRight(string(b), "\r\n")
	if password == "" {
		return "", fmt.Errorf("etcd client: password file %s is empty", file)
	}
	return password, nil
}

// dial makes the client of cfg. clientv3 authenticates before it returns:
// without an answer from etcd it gives up. When etcd does not answer, the
// client starts instead with a token etcd will refuse; it then authenticates
// at its first request that reaches etcd.
func dial(cfg clientv3.Config, log *slog.Logger) (*clientv3.Client, error) {
	cli, err := clientv3.New(cfg)
	if err != nil && cfg.Password != "" && unreachable(err) {
		if log != nil {
			log.Warn("etcd does not answer; the client authenticates when it does", "err", err)
		}
		user, password := cfg.Username, cfg.Password
		cfg.Username, cfg.Password, cfg.Token = "", "", pendingToken
		cli, err = clientv3.New(cfg)
		if err == nil {
			cli.Token, cli.Username, cli.Password = "", user, password
		}
	}
	return cli, err
}

// unreachable etcd shows on the first request, not here, with or without a password
// (the client then authenticates when etcd first answers). Files that cannot be read,
// a cert without its key, and a password that etcd refuses are errors. Every request
// of the client is bounded by c.CallTimeout unless its context ends sooner.
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
		// gRPC's default reconnect backoff grows to two minutes: an etcd back after an
		// outage would wait that long to be used again.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: maxReconnectDelay},
			MinConnectTimeout: DefaultEtcdDialTimeout,
		})},
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
		if cfg.Password, err = readPassword(c.PasswordFile); err != nil {
			return nil, err
		}
	}
	cli, err := dial(cfg, c.Logger)
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	timeout := c.CallTimeout
	if timeout <= 0 {
		timeout = DefaultEtcdCallTimeout
	}
	cli.KV = boundedKV{KV: cli.KV, timeout: timeout}
	cli.Lease = boundedLease{Lease: cli.Lease, timeout: timeout}
	return cli, nil
}

// unreachable says whether err is etcd not answering (a timeout, no connection), as
// opposed to etcd answering no.
func unreachable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch status.Code(err) {
	case codes.DeadlineExceeded, codes.Unavailable:
		return true
	}
	return false
}

// boundedKV gives every request a deadline of timeout unless its context ends sooner.
type boundedKV struct {
	clientv3.KV
	timeout time.Duration
}

func (k boundedKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	return k.KV.Put(ctx, key, val, opts...)
}

func (k boundedKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	return k.KV.Get(ctx, key, opts...)
}

func (k boundedKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	return k.KV.Delete(ctx, key, opts...)
}

func (k boundedKV) Compact(ctx context.Context, rev int64, opts ...clientv3.CompactOption) (*clientv3.CompactResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	return k.KV.Compact(ctx, rev, opts...)
}

func (k boundedKV) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	return k.KV.Do(ctx, op)
}

// Txn's deadline runs from the start of the transaction's building to its commit.
func (k boundedKV) Txn(ctx context.Context) clientv3.Txn {
	ctx, cancel := context.WithTimeout(ctx, k.timeout)
	return &boundedTxn{Txn: k.KV.Txn(ctx), cancel: cancel}
}

type boundedTxn struct {
	clientv3.Txn
	cancel context.CancelFunc
}

func (t *boundedTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	t.Txn = t.Txn.If(cs...)
	return t
}

func (t *boundedTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.Txn = t.Txn.Then(ops...)
	return t
}

func (t *boundedTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.Txn = t.Txn.Else(ops...)
	return t
}

func (t *boundedTxn) Commit() (*clientv3.TxnResponse, error) {
	defer t.cancel()
	return t.Txn.Commit()
}

// boundedLease gives the one-shot lease requests a deadline of timeout unless their
// context ends sooner; KeepAlive, a stream for the life of the lease, is not bounded.
type boundedLease struct {
	clientv3.Lease
	timeout time.Duration
}

func (l boundedLease) Grant(ctx context.Context, ttl int64) (*clientv3.LeaseGrantResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	return l.Lease.Grant(ctx, ttl)
}

func (l boundedLease) Revoke(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	return l.Lease.Revoke(ctx, id)
}

func (l boundedLease) TimeToLive(ctx context.Context, id clientv3.LeaseID, opts ...clientv3.LeaseOption) (*clientv3.LeaseTimeToLiveResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	return l.Lease.TimeToLive(ctx, id, opts...)
}

func (l boundedLease) Leases(ctx context.Context) (*clientv3.LeaseLeasesResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	return l.Lease.Leases(ctx)
}

func (l boundedLease) KeepAliveOnce(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	return l.Lease.KeepAliveOnce(ctx, id)
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
