package agent

import (
	"fmt"
	"os"
)

// checkSecrets refuses to start when a file holding a secret (a token, a private key,
// a password, a webhook key) can be read by users other than its owner and group: on
// a shared host, that would hand the fleet to any local user.
func checkSecrets(cfg *Config) error {
	files := map[string]string{
		"repo.auth.tokenFile":  cfg.Repo.Auth.TokenFile,
		"repo.auth.sshKeyFile": cfg.Repo.Auth.SSHKeyFile,
	}
	if e := cfg.Lease.Etcd; e != nil {
		files["lease.etcd.passwordFile"] = e.PasswordFile
		files["lease.etcd.tls.keyFile"] = e.TLS.KeyFile
	}
	for i, w := range cfg.Webhooks {
		files[fmt.Sprintf("webhooks[%d].secretFile", i)] = w.SecretFile
	}
	for field, file := range files {
		if file == "" {
			continue
		}
		info, err := os.Stat(file)
		if err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		if perm := info.Mode().Perm(); perm&0o007 != 0 {
			return fmt.Errorf("%s: %s can be read by any user (mode %04o); run chmod o-rwx %s", field, file, perm, file)
		}
	}
	return nil
}
