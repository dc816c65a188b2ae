package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// fileKind says what a file named by the configuration is trusted with, and so who
// may read and write it.
type fileKind int

const (
	// secretFile holds a credential (a token, a private key, a password, a webhook
	// key): other users must not read it.
	secretFile fileKind = iota
	// anchorFile is trusted as it is (keys that commits must be signed by, known SSH
	// host keys, the etcd CA, the configuration itself): only its owner may write it.
	anchorFile
)

// hostFile is a file on the host that the configuration names, with the field that
// names it.
type hostFile struct {
	field string
	path  string
	kind  fileKind
}

// hostFiles lists the secrets and trust anchors cfg names, in the order of the file.
func (cfg *Config) hostFiles() []hostFile {
	var out []hostFile
	add := func(kind fileKind, field, path string) {
		if path != "" {
			out = append(out, hostFile{field: field, path: path, kind: kind})
		}
	}
	a := cfg.Repo.Auth
	add(secretFile, "repo.auth.sshKeyFile", a.SSHKeyFile)
	add(anchorFile, "repo.auth.knownHostsFile", a.KnownHostsFile)
	add(secretFile, "repo.auth.tokenFile", a.TokenFile)
	add(anchorFile, "repo.verify.openpgpKeyring", cfg.Repo.Verify.OpenPGPKeyring)
	add(anchorFile, "repo.verify.sshAllowedSigners", cfg.Repo.Verify.SSHAllowedSigners)
	add(anchorFile, "repo.verify.release.openpgpKeyring", cfg.Repo.Verify.Release.OpenPGPKeyring)
	add(anchorFile, "repo.verify.release.sshAllowedSigners", cfg.Repo.Verify.Release.SSHAllowedSigners)
	if e := cfg.Lease.Etcd; e != nil {
		add(anchorFile, "lease.etcd.tls.caFile", e.TLS.CAFile)
		add(secretFile, "lease.etcd.tls.keyFile", e.TLS.KeyFile)
		add(secretFile, "lease.etcd.passwordFile", e.PasswordFile)
	}
	for i, w := range cfg.Webhooks {
		add(secretFile, fmt.Sprintf("webhooks[%d].secretFile", i), w.SecretFile)
	}
	add(secretFile, "listen.webhook.secretFile", cfg.Listen.Webhook.SecretFile)
	add(secretFile, "statuses.tokenFile", cfg.Statuses.TokenFile)
	return out
}

// CheckFiles refuses a configuration whose files on the host could hand the fleet
// to a local user: a secret that users other than its owner and group can read, a
// secret or trust anchor that anyone but its owner can write or whose owner is
// neither root nor the agent's user (a keyring anyone can write defeats signing), and
// an agent.yaml that others can read while it holds a URL whose path or query may be
// a token (see Config.tokenURLs). The agent runs it at start and on every reload.
func (cfg *Config) CheckFiles() error {
	self := os.Geteuid()
	var errs []error
	files := cfg.hostFiles()
	if cfg.file != "" {
		files = append([]hostFile{{field: "the configuration", path: cfg.file, kind: anchorFile}}, files...)
	}
	for _, f := range files {
		info, err := os.Stat(f.path)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.field, err))
			continue
		}
		uid := -1
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			uid = int(st.Uid)
		}
		if why := unsafeFile(f.path, f.kind, info.Mode(), uid, self); why != "" {
			errs = append(errs, fmt.Errorf("%s: %s %s", f.field, f.path, why))
		}
	}
	if cfg.file != "" {
		if info, err := os.Stat(cfg.file); err == nil && info.Mode().Perm()&0o004 != 0 {
			if fields := cfg.TokenURLs(); len(fields) > 0 {
				errs = append(errs, fmt.Errorf("%s: %s can be read by any user (mode %04o), and the path or query of %s may hold a token; run chmod o-rwx %s",
					fields[0], cfg.file, info.Mode().Perm(), fields[0], cfg.file))
			}
		}
	}
	return errors.Join(errs...)
}

// unsafeFile says why the file at path, of kind, with mode, owned by uid (-1:
// unknown), must not be trusted by an agent running as uid self; "" when it may.
func unsafeFile(path string, kind fileKind, mode fs.FileMode, uid, self int) string {
	perm := mode.Perm()
	switch {
	case !mode.IsRegular():
		return "is not a regular file"
	case kind == secretFile && perm&0o007 != 0:
		return fmt.Sprintf("can be read by any user (mode %04o); run chmod o-rwx %s", perm, path)
	case perm&0o022 != 0:
		return fmt.Sprintf("can be written by users other than its owner (mode %04o); run chmod go-w %s", perm, path)
	case uid > 0 && uid != self:
		return fmt.Sprintf("is owned by uid %d, neither root nor the agent's user; run chown root %s", uid, path)
	}
	return ""
}
