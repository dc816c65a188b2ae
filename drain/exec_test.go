package drain

import (
	"context"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/checks"
	"github.com/baton-fleet/baton/internal/yamldoc"
	"github.com/baton-fleet/baton/spec"
)

func TestExecRunsCommandsWithArgs(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	script := func(what string) []string {
		return []string{"/bin/sh", "-c", `printf '%s %s|' "$0" "$1" >>"$2"`, what, "arg with spaces", log}
	}
	e := &Exec{DrainCmd: script("drain"), UndrainCmd: script("undrain"), Timeout: 10 * time.Second}
	ctx := context.Background()
	if err := e.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Undrain(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), "drain arg with spaces|undrain arg with spaces|"; got != want {
		t.Errorf("commands wrote %q, want %q", got, want)
	}
}

func TestExecFailureNamesCommandAndOutput(t *testing.T) {
	e := &Exec{
		DrainCmd:   []string{"/bin/sh", "-c", "echo starting; echo 'lb refused: backend busy' >&2; exit 3"},
		UndrainCmd: []string{"/nonexistent/undrain", "web-01"},
	}
	err := e.Drain(context.Background())
	if err == nil {
		t.Fatal("Drain succeeded")
	}
	for _, want := range []string{
		"drain command /bin/sh -c", `"echo starting;`, "exit status 3", "lb refused: backend busy",
		// the failed drain tried to put the host back
		"and put back: undrain command /nonexistent/undrain web-01",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	err = e.Undrain(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "undrain command /nonexistent/undrain web-01") {
		t.Errorf("Undrain error = %v", err)
	}
}

// A failed drain command runs the undrain command, even when ctx has ended.
func TestExecFailedDrainUndrains(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "undrained")
	e := &Exec{
		DrainCmd:   []string{"/bin/sh", "-c", "sleep 30"},
		UndrainCmd: []string{"/bin/sh", "-c", `echo yes >"$0"`, marker},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(200*time.Millisecond, cancel)
	err := e.Drain(ctx)
	if err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Errorf("err = %v, want canceled", err)
	}
	if b, err := os.ReadFile(marker); err != nil || string(b) != "yes\n" {
		t.Errorf("undrain command did not run: %v %q", err, b)
	}
}

func TestExecTimeout(t *testing.T) {
	e := &Exec{DrainCmd: []string{"/bin/sh", "-c", "echo waiting for the lb; sleep 30"}, Timeout: 200 * time.Millisecond}
	start := time.Now()
	err := e.Drain(context.Background())
	if err == nil || !strings.Contains(err.Error(), "killed after the 200ms timeout") || !strings.Contains(err.Error(), "waiting for the lb") {
		t.Errorf("err = %v, want a timeout naming the output", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Drain returned after %s", took)
	}
}

func TestExecEmptyCommandsDoNothing(t *testing.T) {
	e := &Exec{Prober: &checks.Prober{}}
	if err := e.Drain(context.Background()); err != nil {
		t.Error(err)
	}
	if err := e.Undrain(context.Background()); err != nil {
		t.Error(err)
	}
}

func TestNew(t *testing.T) {
	if d := New(nil, nil); d != (Nop{}) {
		t.Errorf("New(nil) = %#v, want Nop", d)
	}
	if d := New(&spec.Drain{}, nil); d != (Nop{}) {
		t.Errorf("New(empty) = %#v, want Nop", d)
	}
	if err := errorsOf(New(nil, nil)); err != nil {
		t.Error(err)
	}

	d := New(&spec.Drain{HAProxy: &spec.HAProxyDrain{
		Socket: "/run/haproxy/admin.sock", Backend: "web", Server: "web-01", Timeout: yamldoc.Duration(7 * time.Second),
	}}, nil)
	h, ok := d.(*HAProxy)
	if !ok {
		t.Fatalf("New(haproxy) = %T", d)
	}
	if h.Addr != "/run/haproxy/admin.sock" || h.Backend != "web" || h.Server != "web-01" || h.Timeout != 7*time.Second || h.Logger == nil {
		t.Errorf("New(haproxy) = %+v", h)
	}

	if h := NewWithState(&spec.Drain{HAProxy: &spec.HAProxyDrain{Socket: "/s", Backend: "web", Server: "a"}}, "/state", nil).(*HAProxy); h.StateDir != "/state" {
		t.Errorf("NewWithState(haproxy) = %+v, want its StateDir", h)
	}
	if h := NewHAProxy(&spec.Drain{HAProxy: &spec.HAProxyDrain{Socket: "/s", Backend: "web", Server: "web-01-blue"}}, nil); h == nil || h.Server != "web-01-blue" || h.StateDir != "" || h.Logger == nil {
		t.Errorf("NewHAProxy = %+v, want the server, recording nothing", h)
	}
	if h := NewHAProxy(&spec.Drain{Exec: &spec.ExecDrain{}}, nil); h != nil {
		t.Errorf("NewHAProxy(exec) = %+v, want nil", h)
	}

	d = New(&spec.Drain{Exec: &spec.ExecDrain{Drain: []string{"/bin/true", "a"}, Undrain: []string{"/bin/false"}}}, nil)
	e, ok := d.(*Exec)
	if !ok {
		t.Fatalf("New(exec) = %T", d)
	}
	if !reflect.DeepEqual(e.DrainCmd, []string{"/bin/true", "a"}) || !reflect.DeepEqual(e.UndrainCmd, []string{"/bin/false"}) || e.Prober == nil || e.Prober.User != "" {
		t.Errorf("New(exec) = %+v", e)
	}
	if err := e.Drain(context.Background()); err != nil {
		t.Error(err)
	}
	if err := e.Undrain(context.Background()); err == nil {
		t.Error("undrain with /bin/false succeeded")
	}
}

// TestNewExecAsUser builds an exec drainer from a spec whose hooks name a user:
// both commands run as that user, and an unknown user fails them, naming it.
func TestNewExecAsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running as another user needs root")
	}
	if _, err := user.Lookup("nobody"); err != nil {
		t.Skip("no user nobody")
	}
	// Each command fails, saying who it ran as, unless it runs as nobody.
	asNobody := func(what string) []string {
		return []string{"/bin/sh", "-c", `u=$(id -un); [ "$u" = nobody ] && [ "$(id -u)" != 0 ] || { echo "$0 ran as $u"; exit 1; }; echo "$0 as $u"`, what}
	}
	d := New(&spec.Drain{Exec: &spec.ExecDrain{Drain: asNobody("drain"), Undrain: asNobody("undrain"), User: "nobody"}}, nil)
	e, ok := d.(*Exec)
	if !ok {
		t.Fatalf("New(exec) = %T", d)
	}
	if e.Prober == nil || e.Prober.User != "nobody" {
		t.Fatalf("New(exec as nobody).Prober = %+v, want User nobody", e.Prober)
	}
	if err := d.Drain(context.Background()); err != nil {
		t.Errorf("Drain: %v", err)
	}
	if err := d.Undrain(context.Background()); err != nil {
		t.Errorf("Undrain: %v", err)
	}

	d = New(&spec.Drain{Exec: &spec.ExecDrain{Drain: []string{"/bin/true"}, Undrain: []string{"/bin/true"}, User: "no-such-user-baton"}}, nil)
	want := "drain command /bin/true: /bin/true: run as no-such-user-baton: user: unknown user no-such-user-baton" +
		"; and put back: undrain command /bin/true: /bin/true: run as no-such-user-baton: user: unknown user no-such-user-baton"
	if err := d.Drain(context.Background()); err == nil || err.Error() != want {
		t.Errorf("Drain as an unknown user: %v\nwant %s", err, want)
	}
	if err := d.Undrain(context.Background()); err == nil || !strings.Contains(err.Error(), "run as no-such-user-baton") {
		t.Errorf("Undrain as an unknown user: %v", err)
	}
}

func errorsOf(d Drainer) error {
	if err := d.Drain(context.Background()); err != nil {
		return err
	}
	return d.Undrain(context.Background())
}

func TestQuoteArgv(t *testing.T) {
	got := quoteArgv([]string{"/usr/bin/lb", "--host=web-01", "two words", "", `a"b`})
	want := `/usr/bin/lb --host=web-01 "two words" "" "a\"b"`
	if got != want {
		t.Errorf("quoteArgv = %s, want %s", got, want)
	}
}
