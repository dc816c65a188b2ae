package drain

import (
	"bufio"
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAPI is a runtime API on a unix socket that answers each command with
// answer(cmd), then closes the connection, as HAProxy does.
type fakeAPI struct {
	Addr string
	mu   sync.Mutex
	cmds []string
}

func startFakeAPI(t *testing.T, answer func(cmd string, c net.Conn)) *fakeAPI {
	t.Helper()
	f := &fakeAPI{Addr: filepath.Join(t.TempDir(), "api.sock")}
	l, err := net.Listen("unix", f.Addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				cmd := strings.TrimSuffix(line, "\n")
				f.mu.Lock()
				f.cmds = append(f.cmds, cmd)
				f.mu.Unlock()
				answer(cmd, c)
			})
		}
	})
	return f
}

func (f *fakeAPI) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.cmds...)
}

func TestCommandReadsUntilEOF(t *testing.T) {
	f := startFakeAPI(t, func(cmd string, c net.Conn) {
		// an answer in pieces, as a long show stat comes
		for _, p := range []string{"# pxname,", "svname\n", "web,a\n", "\n"} {
			c.Write([]byte(p))
			time.Sleep(5 * time.Millisecond)
		}
	})
	got, err := command(context.Background(), f.Addr, "show stat")
	if err != nil {
		t.Fatal(err)
	}
	if want := "# pxname,svname\nweb,a\n\n"; got != want {
		t.Errorf("answer = %q, want %q", got, want)
	}
	if cmds := f.commands(); len(cmds) != 1 || cmds[0] != "show stat" {
		t.Errorf("commands sent = %q", cmds)
	}
}

func TestCommandCanceled(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	f := startFakeAPI(t, func(cmd string, c net.Conn) { <-hold }) // never answers
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := command(ctx, f.Addr, "show info")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("returned after %s", took)
	}
}

func TestCommandDeadline(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	f := startFakeAPI(t, func(cmd string, c net.Conn) { <-hold })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := command(ctx, f.Addr, "show info")
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no answer in time") {
		t.Fatalf("err = %v, want a deadline error", err)
	}
}

func TestCommandTooLong(t *testing.T) {
	f := startFakeAPI(t, func(cmd string, c net.Conn) {
		chunk := []byte(strings.Repeat("x", 64<<10))
		for range maxAnswer/len(chunk) + 2 {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	if _, err := command(context.Background(), f.Addr, "show stat"); !errors.Is(err, errAnswerTooLong) {
		t.Fatalf("err = %v, want errAnswerTooLong", err)
	}
}

func TestCommandNoListener(t *testing.T) {
	_, err := command(context.Background(), filepath.Join(t.TempDir(), "none.sock"), "show info")
	if err == nil || !strings.Contains(err.Error(), "connect to the runtime API") {
		t.Fatalf("err = %v", err)
	}
}

// A fake HAProxy whose server never drains and that refuses maint: Drain fails
// and puts the server back to ready.
func TestDrainFailureRestores(t *testing.T) {
	var mu sync.Mutex
	admin := "0"
	f := startFakeAPI(t, func(cmd string, c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		switch cmd {
		case "show servers state web":
			c.Write([]byte("1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state\n3 web 1 a 10.0.0.1 2 " + admin + "\n\n"))
		case "show stat web 4 -1":
			c.Write([]byte(statHeader + "web,a,0,0,0,0,UP,\n\n"))
		case "set server web/a state drain":
			admin = "8"
			c.Write([]byte("\n"))
		case "set server web/a state maint":
			c.Write([]byte("Permission denied\n\n"))
		case "set server web/a state ready":
			admin = "0"
			c.Write([]byte("\n"))
		default:
			c.Write([]byte("Unknown command.\n\n"))
		}
	})
	h := &HAProxy{Addr: f.Addr, Backend: "web", Server: "a", Timeout: time.Second, Poll: 10 * time.Millisecond}
	err := h.Drain(context.Background())
	if err == nil {
		t.Fatal("Drain succeeded")
	}
	for _, want := range []string{"drain web/a", "set server web/a state maint", `HAProxy answered "Permission denied"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	cmds := f.commands()
	if last := cmds[len(cmds)-1]; last != "set server web/a state ready" {
		t.Errorf("last command = %q, want the restore to ready; all: %q", last, cmds)
	}
	if admin != "0" {
		t.Errorf("admin state after a failed drain = %s, want 0", admin)
	}
}

func TestBadNamesSendNothing(t *testing.T) {
	f := startFakeAPI(t, func(cmd string, c net.Conn) { c.Write([]byte("\n")) })
	for _, h := range []*HAProxy{
		{Addr: f.Addr, Backend: "web", Server: "a;disable frontend fe"},
		{Addr: f.Addr, Backend: "web\nshutdown sessions server web/b", Server: "a"},
		{Addr: f.Addr, Backend: "", Server: "a"},
		{Addr: "relative.sock", Backend: "web", Server: "a"},
	} {
		if err := h.Drain(context.Background()); err == nil {
			t.Errorf("Drain of %q/%q at %q succeeded", h.Backend, h.Server, h.Addr)
		}
		if err := h.Undrain(context.Background()); err == nil {
			t.Errorf("Undrain of %q/%q at %q succeeded", h.Backend, h.Server, h.Addr)
		}
	}
	if cmds := f.commands(); len(cmds) > 0 {
		t.Errorf("commands sent: %q", cmds)
	}
}
