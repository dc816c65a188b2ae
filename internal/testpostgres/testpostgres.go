// Package testpostgres runs a private PostgreSQL cluster for a test, from Debian's
// postgresql package: initdb in a temporary directory, the server on a loopback port
// and a socket directory of its own, run as the postgres user and ended by its PID.
package testpostgres

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// StartTimeout bounds how long the server may take to answer.
var StartTimeout = 30 * time.Second

// Server is a running PostgreSQL owned by one test.
type Server struct {
	Port      int
	SocketDir string // where the server's unix socket lies
	LogFile   string
	bin       string // the directory of initdb, postgres and psql
	cmd       *exec.Cmd
	done      chan struct{}
}

// BinDir is the bin directory of the newest PostgreSQL that Debian's packages
// installed, /usr/lib/postgresql/<major>/bin.
func BinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return major(b) - major(a) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("PostgreSQL is not installed (Debian's postgresql package)")
}

func major(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// Require skips the test when PostgreSQL, the postgres user or root is missing; in
// CI (CI=true) it fails instead.
func Require(t testing.TB) (string, *syscall.Credential) {
	t.Helper()
	fail := func(err error) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("testpostgres: %v (CI must install it and run as root)", err)
		}
		t.Skipf("testpostgres: %v", err)
	}
	bin, err := BinDir()
	if err != nil {
		fail(err)
	}
	if os.Geteuid() != 0 {
		fail(errors.New("needs root, to run the server as the postgres user"))
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		fail(fmt.Errorf("the postgres user: %v", err))
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return bin, &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// Start makes a cluster in a temporary directory and starts its server; t.Cleanup
// stops it (SIGINT, a fast shutdown, to its PID; SIGKILL after 30 s) and removes
// the directory. The superuser is postgres, trusted over the socket and loopback.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, cred := Require(t)
	dir, err := os.MkdirTemp("", "testpostgres-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &Server{SocketDir: filepath.Join(dir, "sock"), LogFile: filepath.Join(dir, "postgres.log"), bin: bin}
	data := filepath.Join(dir, "data")
	for _, d := range []string{data, s.SocketDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	if err := s.start(t, data, cred); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *Server) start(t testing.TB, data string, cred *syscall.Credential) error {
	log, err := os.Create(s.LogFile)
	if err != nil {
		return err
	}
	defer log.Close()
	s.Port = freePort(t)
	s.cmd = exec.Command(filepath.Join(s.bin, "postgres"), "-D", data, "-k", s.SocketDir, "-p", strconv.Itoa(s.Port),
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=40")
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	s.cmd.Dir = filepath.Dir(data)
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	s.done = make(chan struct{})
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(s.stop)
	deadline := time.Now().Add(StartTimeout)
	for {
		out, err := exec.Command(filepath.Join(s.bin, "psql"), s.Args("SELECT 1")...).CombinedOutput()
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			b, _ := os.ReadFile(s.LogFile)
			return fmt.Errorf("postgres exited at start:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres does not answer after %s: %v: %s", StartTimeout, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop ends the server by its PID: a fast shutdown, then SIGKILL to its group.
func (s *Server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
}

// Psql is the path of the psql of the server's version.
func (s *Server) Psql() string { return filepath.Join(s.bin, "psql") }

// Args are psql's arguments to run sql against the server's postgres database as
// postgres, over its socket, stopping at the first error, printing bare values.
func (s *Server) Args(sql string) []string {
	return []string{"-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", s.SocketDir, "-p", strconv.Itoa(s.Port), "-U", "postgres", "-d", "postgres", "-c", sql}
}

// Command is the argv of psql running sql, for a migration or a check.
func (s *Server) Command(sql string) []string { return append([]string{s.Psql()}, s.Args(sql)...) }

// Query runs sql and returns its output, trimmed; an error fails the test.
func (s *Server) Query(t testing.TB, sql string) string {
	t.Helper()
	out, err := exec.Command(s.Psql(), s.Args(sql)...).CombinedOutput()
	if err != nil {
		t.Fatalf("psql %q: %v: %s", sql, err, out)
	}
	return strings.TrimSpace(string(out))
}

// freePort finds a TCP port free on 127.0.0.1 now.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
