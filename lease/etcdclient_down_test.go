package lease

import (
	"context"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testetcd"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestNewClientEtcdDown makes the agent's client while etcd, with authentication on,
// is down: NewClient returns without waiting for etcd, every request without a
// deadline of its own fails at the call timeout instead of blocking, and once etcd
// is back the client authenticates and works.
func TestNewClientEtcdDown(t *testing.T) {
	t.Parallel() // mostly waits for timeouts
	c := testetcd.Start(t)
	const password = "s3cret-Pa55"
	admin := newClient(t, EtcdClientConfig{Endpoints: c.Endpoints()})
	ctx := ctxT(t, 3*time.Minute) // a bound, not a figure: a busy machine takes its time
	if _, err := admin.UserAdd(ctx, "root", password); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	c.Stop(0)

	const callTimeout = 2 * time.Second
	cli, err := NewClient(EtcdClientConfig{
		Endpoints: c.Endpoints(), Username: "root", PasswordFile: writeFile(t, "password", password),
		DialTimeout: time.Second, CallTimeout: callTimeout,
	})
	if err != nil {
		t.Fatalf("NewClient with etcd down: %v", err)
	}
	t.Cleanup(func() { cli.Close() })

	calls := map[string]func() error{
		"put": func() error { _, err := cli.Put(context.Background(), "/baton/x", "1"); return err },
		"get": func() error { _, err := cli.Get(context.Background(), "/baton/x"); return err },
		"txn": func() error {
			_, err := cli.Txn(context.Background()).If(clientv3.Compare(clientv3.Version("/baton/x"), "=", 0)).
				Then(clientv3.OpPut("/baton/x", "1")).Commit()
			return err
		},
		"grant": func() error { _, err := cli.Grant(context.Background(), 5); return err },
	}
	for name, call := range calls {
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- call() }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s succeeded with etcd down", name)
			}
			if took := time.Since(start); took < callTimeout/2 {
				t.Errorf("%s failed after %v, before the call timeout: %v", name, took, err)
			}
		case <-time.After(5 * callTimeout):
			t.Fatalf("%s blocked with etcd down, past the call timeout of %v", name, callTimeout)
		}
	}

	c.Restart(0)
	for {
		short, cancel := context.WithTimeout(ctx, callTimeout)
		_, err := cli.Put(short, "/baton/x", "2")
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the client never authenticated once etcd was back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	e := newEtcd(t, cli, "web-01")
	if err := e.Acquire(ctx, "web"); err != nil {
		t.Fatalf("Acquire once etcd is back: %v", err)
	}
	// Authentication is in force: a client without the password is refused.
	anon := newClient(t, EtcdClientConfig{Endpoints: c.Endpoints(), CallTimeout: callTimeout})
	if _, err := anon.Put(ctx, "/baton/x", "3"); err == nil {
		t.Error("a client without credentials wrote")
	}
}
