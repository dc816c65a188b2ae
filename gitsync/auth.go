package gitsync

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"
	xknownhosts "golang.org/x/crypto/ssh/knownhosts"
)

// sshDialTimeout bounds the TCP connect of an ssh fetch. go-git v5 dials
// without the poll's context, so this (and TCP keep-alives, on by default
// in Go) is what stops an unreachable host from stalling a poll.
const sshDialTimeout = 30 * time.Second

// defaultSSHUser is the user name of an ssh:// URL that names none.
const defaultSSHUser = "git"

// maxSecretFile bounds what is read from a token or key file.
const maxSecretFile = 64 << 10

// authMethod returns the credentials for one fetch, reading the files anew
// so that a rotated token or key is picked up. nil means anonymous.
func (s *Syncer) authMethod() (transport.AuthMethod, error) {
	a := s.opts.Auth
	switch s.scheme {
	case "https", "http":
		if a.TokenFile == "" {
			return nil, nil
		}
		b, err := readSecret(a.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("read token: %w", err)
		}
		token := strings.TrimSpace(string(b))
		if token == "" {
			return nil, fmt.Errorf("read token: %s is empty", a.TokenFile)
		}
		return &githttp.BasicAuth{Username: a.TokenUser, Password: token}, nil
	case "ssh":
		return s.sshAuth()
	}
	return nil, nil
}

func readSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSecretFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxSecretFile)
	}
	return b, nil
}

func (s *Syncer) sshAuth() (transport.AuthMethod, error) {
	a := s.opts.Auth
	u, err := url.Parse(s.opts.URL)
	if err != nil {
		return nil, errors.New("repo url does not parse") // checked by New; never reached
	}
	user := u.User.Username()
	if user == "" {
		user = defaultSSHUser
	}
	pem, err := readSecret(a.SSHKeyFile)
	if err != nil {
		return nil, fmt.Errorf("read ssh key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, fmt.Errorf("read ssh key %s: it is protected by a passphrase, which is not supported", a.SSHKeyFile)
		}
		return nil, fmt.Errorf("read ssh key %s: %w", a.SSHKeyFile, err)
	}
	db, err := knownhosts.NewDB(a.KnownHostsFile)
	if err != nil {
		return nil, fmt.Errorf("read known_hosts: %w", err)
	}
	port := u.Port()
	if port == "" {
		port = "22"
	}
	hostPort := net.JoinHostPort(u.Hostname(), port)
	return &sshAuth{
		user:     user,
		signer:   signer,
		check:    hostKeyCheck(db.HostKeyCallback(), a.KnownHostsFile),
		algos:    db.HostKeyAlgorithms(hostPort),
		hostPort: hostPort,
	}, nil
}

// hostKeyCheck wraps a known_hosts callback so that a refusal says what
// went wrong in words an operator acts on.
func hostKeyCheck(cb ssh.HostKeyCallback, file string) ssh.HostKeyCallback {
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		err := cb(hostname, remote, key)
		if err == nil {
			return nil
		}
		fp := ssh.FingerprintSHA256(key)
		var ke *xknownhosts.KeyError
		if errors.As(err, &ke) {
			if len(ke.Want) == 0 {
				return fmt.Errorf("host key %s %s of %s is not in known_hosts file %s (unknown host, refused)", key.Type(), fp, hostname, file)
			}
			return fmt.Errorf("host key %s %s of %s does not match known_hosts file %s (host key changed or man in the middle, refused)", key.Type(), fp, hostname, file)
		}
		return fmt.Errorf("host key %s of %s refused: %w", fp, hostname, err)
	}
}

// sshAuth is a go-git ssh.AuthMethod that carries a dial timeout and the
// host key algorithms known for the host, so that a server offering several
// key types is asked for one known_hosts can check.
type sshAuth struct {
	user     string
	signer   ssh.Signer
	check    ssh.HostKeyCallback
	algos    []string
	hostPort string
}

func (a *sshAuth) Name() string   { return "ssh-public-keys" }
func (a *sshAuth) String() string { return "user: " + a.user + ", name: " + a.Name() }

func (a *sshAuth) ClientConfig() (*ssh.ClientConfig, error) {
	return &ssh.ClientConfig{
		User:              a.user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(a.signer)},
		HostKeyCallback:   a.check,
		HostKeyAlgorithms: a.algos,
		Timeout:           sshDialTimeout,
	}, nil
}
