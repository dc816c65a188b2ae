package testbed

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

func TestBootTwoHostsOnABridge(t *testing.T) {
	n := NewNetwork(t)
	a := n.Boot(t, "ta")
	b := n.Boot(t, "tb")
	if got := strings.TrimSpace(a.MustExec(t, "hostname")); got != "ta" {
		t.Errorf("hostname in host a = %q", got)
	}
	if out := a.MustExec(t, "systemctl", "show", "-P", "SystemState"); !strings.Contains(out, "running") && !strings.Contains(out, "degraded") {
		t.Errorf("system state = %q", out)
	}
	// a service started inside host a is reachable from host b and from the machine
	a.MustExec(t, "systemd-run", "--unit=echo-test", "--", "systemd-socket-activate", "--accept", "--inetd", "-l", a.IP+":8000", "/bin/cat")
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", a.IP+":8000", time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("service in host a not reachable: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.MustExec(t, "bash", "-c", "echo hello >/dev/tcp/"+a.IP+"/8000")
	// changes inside stay inside: the machine's root is an overlay's lower layer
	a.MustExec(t, "touch", "/etc/testbed-marker")
	if _, err := a.Exec(context.Background(), "test", "-e", "/etc/testbed-marker"); err != nil {
		t.Error(err)
	}
	if _, err := b.Exec(context.Background(), "test", "-e", "/etc/testbed-marker"); err == nil {
		t.Error("a file made in host a is visible in host b")
	}
}
