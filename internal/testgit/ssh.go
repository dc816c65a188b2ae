package testgit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHServer is an in-process SSH server that runs git-upload-pack for one
// repository. Every file it names lives in the test's temporary directory.
type SSHServer struct {
	URL                 string        // ssh://git@127.0.0.1:PORT/repo.git
	Addr                string        // 127.0.0.1:PORT
	ClientKeyFile       string        // the private key the server accepts (OpenSSH format, no passphrase)
	UnauthorizedKeyFile string        // a private key the server refuses
	KnownHostsFile      string        // a known_hosts file with the server's host key
	WrongKnownHostsFile string        // a known_hosts file with another key for the same address
	Served              *atomic.Int64 // bytes git-upload-pack sent to clients

	repo     *Repo
	config   *ssh.ServerConfig
	ctx      context.Context
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	closed   bool
	listener net.Listener
}

// ServeSSH serves repo over SSH on a loopback port until the test ends.
// It accepts only the key in ClientKeyFile and only the commands
// git-upload-pack '/repo.git' (the path of the URL).
func ServeSSH(t testing.TB, repo *Repo) *SSHServer {
	t.Helper()
	dir := t.TempDir()
	hostSigner := newSigner(t)
	wrongHost := newSigner(t)
	client := newSigner(t)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &SSHServer{
		Addr:                ln.Addr().String(),
		ClientKeyFile:       filepath.Join(dir, "id_ed25519"),
		UnauthorizedKeyFile: filepath.Join(dir, "id_other"),
		KnownHostsFile:      filepath.Join(dir, "known_hosts"),
		WrongKnownHostsFile: filepath.Join(dir, "known_hosts.wrong"),
		Served:              new(atomic.Int64),
		repo:                repo,
		ctx:                 ctx,
		conns:               map[net.Conn]struct{}{},
		listener:            ln,
	}
	s.URL = "ssh://git@" + s.Addr + "/" + filepath.Base(repo.Bare)
	writePrivateKey(t, s.ClientKeyFile, client.priv)
	writePrivateKey(t, s.UnauthorizedKeyFile, newSigner(t).priv)
	host := []string{knownhosts.Normalize(s.Addr)}
	writeFile(t, s.KnownHostsFile, knownhosts.Line(host, hostSigner.PublicKey())+"\n")
	writeFile(t, s.WrongKnownHostsFile, knownhosts.Line(host, wrongHost.PublicKey())+"\n")

	allowed := client.PublicKey().Marshal()
	s.config = &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(key.Marshal(), allowed) {
				return &ssh.Permissions{}, nil
			}
			return nil, errors.New("key not authorized")
		},
	}
	s.config.AddHostKey(hostSigner)

	s.wg.Add(1)
	go s.accept()
	t.Cleanup(func() {
		cancel()
		s.mu.Lock()
		s.closed = true
		_ = ln.Close()
		for c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

type keyPair struct {
	ssh.Signer
	priv ed25519.PrivateKey
}

func newSigner(t testing.TB) keyPair {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{Signer: signer, priv: priv}
}

func writePrivateKey(t testing.TB, path string, priv ed25519.PrivateKey) {
	t.Helper()
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (s *SSHServer) accept() {
	defer s.wg.Done()
	for {
		conn, err := s.listener.Accept()
		if err != nil {
			return // closed by the cleanup
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = conn.Close()
			return
		}
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(conn)
	}
}

func (s *SSHServer) serveConn(conn net.Conn) {
	defer s.wg.Done()
	defer func() {
		_ = conn.Close()
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
	}()
	sconn, chans, reqs, err := ssh.NewServerConn(conn, s.config)
	if err != nil {
		return // handshake refused, by either side
	}
	defer sconn.Close()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ssh.DiscardRequests(reqs)
	}()
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, chReqs, err := nc.Accept()
		if err != nil {
			continue
		}
		s.wg.Add(1)
		go s.serveSession(ch, chReqs)
	}
}

func (s *SSHServer) serveSession(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer s.wg.Done()
	started := false
	for req := range reqs {
		if req.Type != "exec" || started {
			_ = req.Reply(false, nil)
			continue
		}
		var payload struct{ Command string }
		if err := ssh.Unmarshal(req.Payload, &payload); err != nil {
			_ = req.Reply(false, nil)
			continue
		}
		started = true
		_ = req.Reply(true, nil)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			code := s.run(ch, payload.Command)
			_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{code}))
			_ = ch.Close()
		}()
	}
}

// run executes command (as sent by a git client) with its standard streams
// wired to ch and returns its exit status.
func (s *SSHServer) run(ch ssh.Channel, command string) uint32 {
	name, arg, _ := strings.Cut(command, " ")
	path, ok := shellUnquote(arg)
	if name != "git-upload-pack" || !ok || strings.TrimPrefix(path, "/") != filepath.Base(s.repo.Bare) {
		fmt.Fprintf(ch.Stderr(), "testgit: refused command %q\n", command)
		return 128
	}
	cmd := exec.CommandContext(s.ctx, "git", "upload-pack", s.repo.Bare)
	cmd.Env = s.repo.Environ()
	cmd.Stdout = &countingPipe{w: ch, n: s.Served}
	cmd.Stderr = ch.Stderr()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 128
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(ch.Stderr(), "testgit: %v\n", err)
		return 128
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_, _ = io.Copy(stdin, ch) // ends when the channel closes or the pipe breaks
		_ = stdin.Close()
	}()
	if err := cmd.Wait(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) && exit.ExitCode() > 0 {
			return uint32(exit.ExitCode())
		}
		return 128
	}
	return 0
}

type countingPipe struct {
	w io.Writer
	n *atomic.Int64
}

func (c *countingPipe) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// shellUnquote undoes git's single quoting of a path (sq_quote_buf in
// git's quote.c): the path goes between single quotes, and a single quote
// or ! inside it closes the quotes, is escaped with a backslash and reopens them.
func shellUnquote(s string) (string, bool) {
	var b strings.Builder
	for len(s) > 0 {
		switch {
		case s[0] == '\'':
			end := strings.IndexByte(s[1:], '\'')
			if end < 0 {
				return "", false
			}
			b.WriteString(s[1 : 1+end])
			s = s[end+2:]
		case s[0] == '\\' && len(s) > 1:
			b.WriteByte(s[1])
			s = s[2:]
		default:
			return "", false
		}
	}
	return b.String(), true
}
