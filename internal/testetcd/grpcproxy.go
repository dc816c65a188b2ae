package testetcd

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strconv"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/proxy/grpcproxy"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
)

// grpcProxyEnv carries a gRPC proxy's configuration (JSON) to the child process
// that runs it.
const grpcProxyEnv = "BATON_TESTETCD_GRPC_PROXY"

// GRPCProxy is etcd's gRPC proxy in front of a cluster (the KV, watch, lease,
// cluster and maintenance services that etcd grpc-proxy start serves), in a child
// process of its own as a member is. The watches of one key its clients make
// become one watch of the cluster, whose events the proxy sends on to each: a
// member whose thousands of watchers of a key are behind a few proxies sends each
// event a few times.
type GRPCProxy struct {
	Endpoint string // for clients, e.g. http://127.0.0.1:41234
	proc     *childProc
}

// grpcProxyConfig is what a proxy's process needs to start.
type grpcProxyConfig struct {
	Listen    string   // host:port
	Endpoints []string // the cluster's members
}

// StartGRPCProxy runs a gRPC proxy to c's members on a loopback port; it is killed
// when the test ends.
func (c *Cluster) StartGRPCProxy(t testing.TB) *GRPCProxy {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePorts(t, "127.0.0.1", 1)[0]))
	p, err := startChild(grpcProxyEnv, grpcProxyConfig{Listen: addr, Endpoints: c.Endpoints()})
	if err != nil {
		t.Fatalf("start a gRPC proxy: %v", err)
	}
	t.Cleanup(p.kill)
	return &GRPCProxy{Endpoint: "http://" + addr, proc: p}
}

// Pid is the proxy's process id, for a benchmark to read the CPU time it used.
func (p *GRPCProxy) Pid() int { return p.proc.cmd.Process.Pid }

// runGRPCProxy is the proxy's child process: it serves, prints "ready", and stops
// when its standard input closes (the test ended).
func runGRPCProxy(spec string) int {
	var pc grpcProxyConfig
	if err := json.Unmarshal([]byte(spec), &pc); err != nil {
		fmt.Fprintln(os.Stderr, "testetcd gRPC proxy:", err)
		return 2
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: pc.Endpoints, DialTimeout: readyTimeout, Logger: zap.NewNop()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "testetcd gRPC proxy:", err)
		return 1
	}
	defer cli.Close()
	ln, err := net.Listen("tcp", pc.Listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testetcd gRPC proxy:", err)
		return 1
	}
	lg := zap.NewNop()
	if os.Getenv(LogEnv) == "1" { // to stderr: stdout is read for "ready"
		lg = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.Lock(os.Stderr), zap.DebugLevel))
	}
	srv := newGRPCProxyServer(lg, cli, "http://"+pc.Listen)
	go srv.Serve(ln)
	defer srv.Stop()
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// newGRPCProxyServer serves what etcd grpc-proxy start serves a client of the key
// space, with its defaults: no namespace, no cache of leases, no TLS.
func newGRPCProxyServer(lg *zap.Logger, cli *clientv3.Client, advertise string) *grpc.Server {
	kv, _ := grpcproxy.NewKvProxy(cli)
	watch, _ := grpcproxy.NewWatchProxy(cli.Ctx(), lg, cli)
	cluster, _ := grpcproxy.NewClusterProxy(lg, cli, advertise, "")
	lease, _ := grpcproxy.NewLeaseProxy(cli.Ctx(), cli)
	srv := grpc.NewServer(grpc.MaxConcurrentStreams(math.MaxUint32))
	pb.RegisterKVServer(srv, kv)
	pb.RegisterWatchServer(srv, watch)
	pb.RegisterClusterServer(srv, cluster)
	pb.RegisterLeaseServer(srv, lease)
	pb.RegisterMaintenanceServer(srv, grpcproxy.NewMaintenanceProxy(cli))
	return srv
}
