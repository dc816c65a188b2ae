package migrate

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/baton-fleet/baton/internal/testetcd"
	"github.com/baton-fleet/baton/internal/yamldoc"
	"github.com/baton-fleet/baton/spec"
)

// childEnv, when set in the environment, makes the test binary a runner of one
// migration instead of the tests: "endpoint|prefix|host|ttl|argv joined by \x1f",
// where an endpoint local:DIR is the Local ledger in DIR.
const childEnv = "BATON_MIGRATE_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runChild(spec))
	}
	os.Exit(testetcd.Main(m))
}

// runChild runs one migration as a separate process would: the process a test kills.
func runChild(arg string) int {
	parts := strings.Split(arg, "|")
	ttl, _ := time.ParseDuration(parts[3])
	r := &Runner{Host: parts[2], LockTTL: ttl}
	if dir, ok := strings.CutPrefix(parts[0], "local:"); ok {
		r.Ledger = NewLocal(dir)
	} else {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{parts[0]}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		defer cli.Close()
		r.Ledger = NewLedger(cli, parts[1])
	}
	m := spec.Migration{ID: "0007-orders-status", Phase: spec.PhaseExpand, Command: strings.Split(parts[4], "\x1f"), Timeout: yamldoc.Duration(time.Minute)}
	if err := r.Run(context.Background(), "api", "2.0.0", []spec.Migration{m}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
