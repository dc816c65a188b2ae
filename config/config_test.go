package config

import (
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/gitsync"
	"github.com/baton-fleet/baton/internal/yamldoc"
)

// The file name every test parses under, as the messages show it.
const testFile = "agent.yaml"

func dur(s string) yamldoc.Duration {
	d, err := yamldoc.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return yamldoc.Duration(d)
}

// defaults is the configuration of a file that sets only repo.url, on host web-01.
func defaults(url string) Config {
	return Config{
		Host:   "web-01",
		Repo:   Repo{URL: url, Branch: DefaultBranch, Poll: yamldoc.Duration(DefaultPoll), MaxFetch: DefaultMaxFetch},
		Lease:  Lease{Backend: LeaseLocal},
		Listen: Listen{Metrics: DefaultMetricsAddr, API: DefaultAPISocket},
		Paths:  Paths{State: DefaultStateDir, Units: DefaultUnitDir},

		DriftPolicy: DriftReport,
	}
}

// goodConfigs maps each file under testdata/config/good to the configuration it
// gives with the system host name web-01: the defaults applied.
var goodConfigs = map[string]func() Config{
	"minimal.yaml": func() Config {
		return defaults("https://git.example.com/ops/fleet.git")
	},
	"full-etcd.yaml": func() Config {
		return Config{
			Host: "web-01",
			Repo: Repo{
				URL:      "ssh://git@git.example.com/ops/fleet.git",
				Branch:   "release/2024",
				Poll:     dur("1m"),
				MaxFetch: 256 * yamldoc.MiB,
				Auth:     Auth{SSHKeyFile: "/etc/baton/id_ed25519", KnownHostsFile: "/etc/baton/known_hosts"},
				Verify:   Verify{OpenPGPKeyring: "/etc/baton/trusted.asc", SSHAllowedSigners: "/etc/baton/allowed_signers"},

				SharedHead: true,
			},
			Lease: Lease{Backend: LeaseEtcd, Etcd: &Etcd{
				Endpoints:    []string{"https://10.0.0.5:2379", "https://10.0.0.6:2379"},
				Prefix:       "/baton/prod",
				TTL:          dur("20s"),
				TLS:          TLS{CAFile: "/etc/baton/etcd-ca.pem", CertFile: "/etc/baton/etcd.pem", KeyFile: "/etc/baton/etcd-key.pem"},
				Username:     "baton",
				PasswordFile: "/etc/baton/etcd.password",
			}},
			Listen: Listen{Metrics: "[::1]:9732", API: "/run/baton/api.sock",
				Webhook: WebhookListen{Address: "0.0.0.0:9733", SecretFile: "/etc/baton/push.secret"}},
			Paths: Paths{State: "/srv/baton/state", Units: "/etc/systemd/system"},
			Webhooks: []Webhook{
				{URL: "https://hooks.example.com/baton", SecretFile: "/etc/baton/webhook.secret"},
				{URL: "http://127.0.0.1:8080/events"},
			},
			DriftPolicy: DriftReport,
			Statuses: Statuses{Forge: "github", API: "https://api.github.com", Repository: "ops/fleet", TokenFile: "/etc/baton/forge.token",
				TargetURL: "https://grafana.example.com/d/baton?var-commit={{ .Commit }}&var-group={{ .Group }}"},
		}
	},
	"etcd-defaults.yaml": func() Config {
		c := defaults("ssh://git@git.example.com:2222/ops/fleet.git")
		c.Repo.Auth = Auth{SSHKeyFile: "/etc/baton/id_ed25519", KnownHostsFile: "/etc/baton/known_hosts"}
		c.Lease = Lease{Backend: LeaseEtcd, Etcd: &Etcd{
			Endpoints: []string{"http://etcd-1.internal:2379"},
			Prefix:    DefaultEtcdPrefix,
			TTL:       yamldoc.Duration(DefaultEtcdTTL),
		}}
		c.Repo.SharedHead = true // the default with etcd
		return c
	},
	"etcd-loopback-password.yaml": func() Config {
		c := defaults("https://git.example.com/ops/fleet.git")
		c.Lease = Lease{Backend: LeaseEtcd, Etcd: &Etcd{
			Endpoints:    []string{"http://127.0.0.1:2379", "http://[::1]:2379", "http://localhost:2379"},
			Prefix:       DefaultEtcdPrefix,
			TTL:          yamldoc.Duration(DefaultEtcdTTL),
			Username:     "baton",
			PasswordFile: "/etc/baton/etcd.password",
		}}
		c.Repo.SharedHead = true
		return c
	},
	"fleetlock.yaml": func() Config {
		c := defaults("https://git.example.com/ops/fleet.git")
		c.Host = "db-02.dc1.example.com"
		c.Repo.Auth = Auth{TokenFile: "/etc/baton/token", TokenUser: "x-access-token"}
		c.Lease = Lease{Backend: LeaseFleetlock, Fleetlock: &Fleetlock{
			URL: "https://fleetlock.example.com/", Group: DefaultFleetlockGroup,
		}}
		c.Listen.Metrics = "" // off
		c.Webhooks = []Webhook{}
		return c
	},
	"local-file-repo.yaml": func() Config {
		c := defaults("file:///srv/fleet.git")
		c.Host = "demo"
		c.Repo.Poll = dur("1s")
		c.Repo.AllowRewind = true
		c.Listen.Metrics = ":9732"
		return c
	},
	"verify-release.yaml": func() Config {
		c := defaults("https://git.example.com/ops/fleet.git")
		c.Repo.Verify = Verify{
			SSHAllowedSigners: "/etc/baton/allowed_signers",
			OpenPGPKeyring:    "/etc/baton/trusted.asc",
			Release:           ReleaseSigners{SSHAllowedSigners: "/etc/baton/release_signers", OpenPGPKeyring: "/etc/baton/release.asc"},
		}
		return c
	},
	"http-loopback.yaml": func() Config {
		c := defaults("http://localhost:3000/ops/fleet.git")
		c.Repo.Auth.TokenFile = "/etc/baton/token"
		c.Paths.State = "/var/lib/baton-test"
		return c
	},
}

func TestParseConfigGood(t *testing.T) {
	checkListed(t, "testdata/config/good", slices.Collect(maps.Keys(goodConfigs)))
	for name, want := range goodConfigs {
		t.Run(name, func(t *testing.T) {
			got, err := Parse(testFile, readTestdata(t, "good", name), "web-01")
			if err != nil {
				t.Fatalf("Parse:\n%v", err)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate after Parse:\n%v", err)
			}
			got.doc, got.hostFromSystem = nil, false
			if w := want(); !reflect.DeepEqual(*got, w) {
				t.Errorf("Parse:\n got: %s\nwant: %s", asJSON(got), asJSON(w))
			}
		})
	}
}

// badConfigs maps each file under testdata/config/bad to every error it gives.
var badConfigs = []struct {
	file string
	want []string
}{
	{"empty.yaml", []string{
		`agent.yaml: repo.url: required`,
	}},
	{"ftp-scheme.yaml", []string{
		`agent.yaml:4: repo.url: scheme "ftp" not supported; use https://, ssh:// or file://`,
	}},
	{"credentials-in-url.yaml", []string{
		`agent.yaml:3: repo.url: credentials in the URL are refused; put the token in a file named by repo.auth.tokenFile (and the user in repo.auth.tokenUser)`,
	}},
	{"token-as-user.yaml", []string{
		`agent.yaml:3: repo.url: credentials in the URL are refused; put the token in a file named by repo.auth.tokenFile (and the user in repo.auth.tokenUser)`,
		`agent.yaml:5: webhooks[0].url: credentials in the URL are refused; put the signing key in webhooks[].secretFile`,
	}},
	{"ssh-password.yaml", []string{
		`agent.yaml:3: repo.url: a password in the URL is refused; use a key named by repo.auth.sshKeyFile`,
	}},
	{"scp-style.yaml", []string{
		`agent.yaml:3: repo.url: scp-style address; write it as ssh://git@git.example.com/ops/fleet.git`,
	}},
	{"bare-path.yaml", []string{
		`agent.yaml:2: repo.url: a path, not a URL; write it as file:///srv/fleet.git`,
	}},
	{"http-remote.yaml", []string{
		`agent.yaml:3: repo.url: http:// only to a loopback host, not "git.example.com"; use https://`,
	}},
	{"url-without-repo-path.yaml", []string{
		`agent.yaml:2: repo.url: no repository path`,
		`agent.yaml:6: lease.fleetlock.url: not a valid URL: invalid character in the host`,
	}},
	{"file-url-host.yaml", []string{
		`agent.yaml:3: repo.url: a file:// URL names no host, not "srv"; write file:///path`,
		`agent.yaml:5: repo.auth.tokenFile: only for https:// URLs, and repo.url is file://`,
	}},
	{"ssh-no-key.yaml", []string{
		`agent.yaml:4: repo.auth.sshKeyFile: required for ssh:// URLs: the agent logs in with this key (no passphrase)`,
	}},
	{"etcd-credentials-plain.yaml", []string{
		`agent.yaml:9: lease.etcd.endpoints[1]: plain http:// to "10.0.0.6", which is not a loopback host, would send the etcd password (lease.etcd.passwordFile) in clear; use https://`,
		`agent.yaml:11: lease.etcd.endpoints[3]: plain http:// to "etcd.internal", which is not a loopback host, would send the etcd password (lease.etcd.passwordFile) in clear; use https://`,
	}},
	{"etcd-cert-plain.yaml", []string{
		`agent.yaml:7: lease.etcd.endpoints[1]: plain http:// to "10.0.0.6", which is not a loopback host, would talk to etcd without TLS, its client certificate (lease.etcd.tls) unused; use https://`,
	}},
	{"ssh-no-known-hosts.yaml", []string{
		`agent.yaml:4: repo.auth.knownHostsFile: required for ssh:// URLs: host keys are never accepted unchecked`,
	}},
	{"auth-mismatch.yaml", []string{
		`agent.yaml:5: repo.auth.sshKeyFile: only for ssh:// URLs, and repo.url is https://`,
		`agent.yaml:6: repo.auth.knownHostsFile: only for ssh:// URLs, and repo.url is https://`,
		`agent.yaml:7: repo.auth.tokenUser: set without repo.auth.tokenFile`,
	}},
	{"token-on-ssh.yaml", []string{
		`agent.yaml:3: repo.auth.tokenFile: only for https:// URLs, and repo.url is ssh://`,
	}},
	{"bad-branch.yaml", []string{
		`agent.yaml:3: repo.branch: "release..2024 " is not a valid branch name: contains ".."`,
	}},
	{"full-ref-branch.yaml", []string{
		`agent.yaml:3: repo.branch: "refs/heads/main" is not a valid branch name: write the branch name "main", not a full ref`,
	}},
	{"bad-host.yaml", []string{
		`agent.yaml:1: host: "web_01" is not a valid host name (letters, digits, '.' and '-', at most 253)`,
	}},
	{"relative-paths.yaml", []string{
		`agent.yaml:4: repo.auth.knownHostsFile: "/etc/baton/../baton/known_hosts" is not a clean path; write "/etc/baton/known_hosts"`,
		`agent.yaml:4: repo.auth.sshKeyFile: "id_ed25519" is not an absolute path`,
		`agent.yaml:6: repo.verify.openpgpKeyring: "./trusted.asc" is not an absolute path`,
		`agent.yaml:7: repo.verify.sshAllowedSigners: "/etc/baton/allowed_signers/" is not a clean path; write "/etc/baton/allowed_signers"`,
		`agent.yaml:9: paths.state: "var/lib/baton" is not an absolute path`,
		`agent.yaml:10: paths.units: must not be "/"`,
		`agent.yaml:13: webhooks[0].secretFile: "webhook.secret" is not an absolute path`,
	}},
	{"verify-release-bad.yaml", []string{
		`agent.yaml:7: repo.verify.release.sshAllowedSigners: "/etc/baton/./allowed_signers" is not a clean path; write "/etc/baton/allowed_signers"`,
		`agent.yaml:7: repo.verify.release.sshAllowedSigners: the file of repo.verify.sshAllowedSigners: every trusted key would be a release key; name a file of the release keys alone`,
		`agent.yaml:8: repo.verify.release.openpgpKeyring: set without repo.verify.openpgpKeyring: a release key must also be a trusted key`,
	}},
	{"verify-release-paths.yaml", []string{
		`agent.yaml:8: repo.verify.release.sshAllowedSigners: "release_signers" is not an absolute path`,
		`agent.yaml:9: repo.verify.release.openpgpKeyring: "/etc/baton/release.asc/" is not a clean path; write "/etc/baton/release.asc"`,
		`agent.yaml:10: unknown field "releaseSigners"; known fields: openpgpKeyring, sshAllowedSigners`,
	}},
	{"poll-too-short.yaml", []string{
		`agent.yaml:3: repo.poll: 500ms is below the minimum of 1s`,
	}},
	{"max-fetch-too-small.yaml", []string{
		`agent.yaml:3: repo.maxFetch: 512KiB is below the minimum of 1MiB`,
	}},
	{"max-fetch-no-unit.yaml", []string{
		`agent.yaml:4: invalid size "128": expected a whole number and a unit (B, KiB, MiB or GiB), such as 128MiB`,
	}},
	{"explicit-empty.yaml", []string{
		`agent.yaml:2: host: empty; leave it out to use the system host name`,
		`agent.yaml:5: repo.branch: empty; leave it out for the default "main"`,
		`agent.yaml:7: lease.backend: empty; leave it out for the default "local"`,
		`agent.yaml:9: listen.api: empty; leave it out for the default "/run/baton/baton.sock"`,
		`agent.yaml:11: paths.state: empty; leave it out for the default "/var/lib/baton"`,
	}},
	{"unknown-backend.yaml", []string{
		`agent.yaml:4: lease.backend: "consul" not supported; use local, etcd or fleetlock`,
	}},
	{"etcd-not-selected.yaml", []string{
		`agent.yaml:5: lease.etcd is set but lease.backend is local`,
		`agent.yaml:7: lease.fleetlock is set but lease.backend is local`,
	}},
	{"etcd-missing.yaml", []string{
		`agent.yaml:3: lease.etcd.endpoints: required when lease.backend is etcd`,
	}},
	{"etcd-bad.yaml", []string{
		`agent.yaml:8: lease.etcd.endpoints[0]: no scheme; write it as https://host[:port]/...`,
		`agent.yaml:9: lease.etcd.endpoints[1]: credentials in the URL are refused; use lease.etcd.username and lease.etcd.passwordFile`,
		`agent.yaml:10: lease.etcd.endpoints[2]: scheme "unix" not supported; use https:// or http://`,
		`agent.yaml:11: lease.etcd.endpoints[3]: empty`,
		`agent.yaml:12: lease.etcd.prefix: "baton/" does not start with "/"`,
		`agent.yaml:13: lease.etcd.ttl: 2s is below the minimum of 5s`,
		`agent.yaml:15: lease.etcd.tls.keyFile: required with lease.etcd.tls.certFile`,
		`agent.yaml:16: lease.etcd.passwordFile: required with lease.etcd.username`,
		`agent.yaml:17: lease.fleetlock is set but lease.backend is etcd`,
	}},
	{"etcd-tls-plain.yaml", []string{
		`agent.yaml:7: lease.etcd.endpoints[0]: plain http:// to "10.0.0.5", which is not a loopback host, would send the etcd password (lease.etcd.passwordFile) in clear; use https://`,
		`agent.yaml:8: lease.etcd.tls.certFile: required with lease.etcd.tls.keyFile`,
		`agent.yaml:8: lease.etcd.tls: set, but no endpoint is https://`,
		`agent.yaml:9: lease.etcd.username: required with lease.etcd.passwordFile`,
	}},
	{"fleetlock-bad.yaml", []string{
		`agent.yaml:5: lease.fleetlock.url: required when lease.backend is fleetlock`,
		`agent.yaml:6: lease.fleetlock.group: not a valid group: "web servers" has spaces or control characters`,
	}},
	{"listen-bad.yaml", []string{
		`agent.yaml:5: listen.metrics: "9732" is not host:port; write 127.0.0.1:9732, or "" to turn metrics off`,
		`agent.yaml:6: listen.api: path is 108 bytes; a unix socket path is at most 107`,
	}},
	{"listen-bad-port.yaml", []string{
		`agent.yaml:4: listen.metrics: port "http" is not a number from 1 to 65535`,
		`agent.yaml:5: listen.api: "run/baton.sock" is not an absolute path`,
	}},
	{"webhooks-bad.yaml", []string{
		`agent.yaml:4: webhooks[0].url: scheme "ftp" not supported; use https:// or http://`,
		`agent.yaml:5: webhooks[1].url: required`,
		`agent.yaml:6: webhooks[2].url: no scheme; write it as https://host[:port]/...`,
	}},
	{"fetch-bad.yaml", []string{
		`agent.yaml:3: repo.sharedHead: true needs lease.backend etcd, through which the head is shared; leave it out`,
		`agent.yaml:6: listen.webhook.address: the address of listen.metrics`,
		`agent.yaml:6: listen.webhook.secretFile: "etc/baton/push.secret" is not an absolute path`,
	}},
	{"statuses-bad.yaml", []string{
		`agent.yaml:3: statuses.repository: required: owner/name (GitLab: the project's path)`,
		`agent.yaml:3: statuses.tokenFile: required: the file of the token that may post commit statuses`,
		`agent.yaml:3: statuses: statuses are posted by the fleet's fetcher: they need lease.backend etcd and repo.sharedHead`,
		`agent.yaml:4: statuses.forge: "bitbucket" is not one of github, gitea (also for Forgejo), gitlab`,
		`agent.yaml:5: statuses.api: no scheme; write it as https://host[:port]/...`,
		`agent.yaml:6: statuses.targetURL: not a template: template: :1: unclosed action`,
	}},
	{"webhook-listen-bad.yaml", []string{
		`agent.yaml:4: listen.webhook.secretFile: required: the file of the secret shared with the forge`,
		`agent.yaml:5: listen.webhook.address: port "99999" is not a number from 1 to 65535`,
	}},
	{"strict-decode.yaml", []string{
		`agent.yaml:3: unknown field "hots"; known fields: allowUnits, artifacts, driftPolicy, host, lease, listen, paths, repo, statuses, webhooks`,
		`agent.yaml:5: repo.url: scheme "ftp" not supported; use https://, ssh:// or file://`,
		`agent.yaml:6: unknown field "branh" (did you mean "branch"?)`,
		`agent.yaml:7: invalid duration "30": expected a number with a unit, such as 500ms, 10s or 5m`,
		`agent.yaml:9: expected a mapping, got a list`,
	}},
	{"wrong-types.yaml", []string{
		`agent.yaml:3: expected a string, got a list`,
		`agent.yaml:5: expected a string, got a list`,
		`agent.yaml:6: expected a duration such as 10s, got a mapping`,
		`agent.yaml:7: expected true or false, got string "maybe"`,
		`agent.yaml:11: expected a list, got string "https:/..."`,
		`agent.yaml:12: invalid duration "15": expected a number with a unit, such as 500ms, 10s or 5m`,
	}},
	{"syntax-error.yaml", []string{
		`agent.yaml:3: mapping values are not allowed in this context`,
	}},
	{"not-a-mapping.yaml", []string{
		`agent.yaml:1: expected a mapping, got a list`,
	}},
}

// secrets are the credentials written into URLs under testdata/config/bad: no message
// may repeat them.
var secrets = []string{"s3cr3t", "ghp_0123", "hunter2", "pa55", "token=abc"}

func TestParseConfigBad(t *testing.T) {
	var files []string
	for _, tt := range badConfigs {
		files = append(files, tt.file)
	}
	checkListed(t, "testdata/config/bad", files)
	for _, tt := range badConfigs {
		t.Run(tt.file, func(t *testing.T) {
			got, err := Parse(testFile, readTestdata(t, "bad", tt.file), "web-01")
			if err == nil {
				t.Fatalf("Parse: no error, want:\n%s", strings.Join(tt.want, "\n"))
			}
			if got != nil {
				t.Errorf("Parse returned a config with its error")
			}
			var list yamldoc.Errors
			if !errors.As(err, &list) {
				t.Errorf("Parse error is a %T, want yamldoc.Errors", err)
			}
			if msg := err.Error(); msg != strings.Join(tt.want, "\n") {
				t.Errorf("Parse errors:\n got:\n%s\nwant:\n%s", msg, strings.Join(tt.want, "\n"))
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("an error repeats the secret %q:\n%v", s, err)
				}
			}
		})
	}
}

func TestRepoURLs(t *testing.T) {
	for url, want := range map[string]string{
		"https://git.example.com/ops/fleet.git":       "",
		"HTTPS://git.example.com/ops/fleet.git":       "",
		"ssh://git@git.example.com:22/ops/fleet.git":  "",
		"http://127.0.0.2:3000/fleet.git":             "",
		"http://[::1]/fleet.git":                      "",
		"file://localhost/srv/fleet.git":              "",
		"git.example.com/ops/fleet.git":               "repo.url: no scheme; use https://, ssh:// or file://",
		"fleet.example.com:/srv/fleet.git":            "repo.url: scp-style address; write it as ssh://fleet.example.com/srv/fleet.git",
		"user:s3cr3t@git.example.com:ops/fleet.git":   "repo.url: no scheme; use https://, ssh:// or file://",
		"https://git.example.com:s3cr3t/ops":          "repo.url: not a valid URL: invalid port",
		"https://git.example.com/ops/%zz":             `repo.url: not a valid URL: invalid "%" escape`,
		"https:///ops/fleet.git":                      "repo.url: no host",
		"ssh://git@git.example.com":                   "repo.url: no repository path",
		"http://10.1.2.3/fleet.git":                   `repo.url: http:// only to a loopback host, not "10.1.2.3"; use https://`,
		"file:///srv/../fleet.git":                    `repo.url: path "/srv/../fleet.git" is not clean; write "/fleet.git"`,
		"file:///":                                    "repo.url: no repository path",
		"file://u@/srv/fleet.git":                     "repo.url: a file:// URL takes no user; write file:///path",
		"git://git.example.com/ops/fleet.git":         `repo.url: scheme "git" not supported; use https://, ssh:// or file://`,
		"https://:s3cr3t@git.example.com/ops/x.git":   "repo.url: credentials in the URL are refused; put the token in a file named by repo.auth.tokenFile (and the user in repo.auth.tokenUser)",
		"https://git.example.com/ops/fleet.git#main":  `repo.url: a fragment ("#...") means nothing to git; set repo.branch`,
		"https://git.example.com/x.git?t=s3cr3t":      "repo.url: a query string is refused: it may hold a token; put the token in a file named by repo.auth.tokenFile",
		"/srv/fleet\n.git":                            "repo.url: no scheme; use https://, ssh:// or file://",
		"ssh://git:s3cr3t@git.example.com:2222/x.git": "repo.url: a password in the URL is refused; use a key named by repo.auth.sshKeyFile",
	} {
		// An ssh URL needs known hosts; the check of auth is not under test here.
		data := "repo:\n  auth: {sshKeyFile: /etc/baton/id_ed25519, knownHostsFile: /etc/baton/known_hosts}\n  url: " + jsonString(url) + "\n"
		if !strings.HasPrefix(strings.ToLower(url), "ssh://") {
			data = "repo:\n  url: " + jsonString(url) + "\n"
		}
		_, err := Parse(testFile, []byte(data), "web-01")
		got := ""
		if err != nil {
			got = strings.TrimPrefix(err.Error(), "agent.yaml:")
			_, got, _ = strings.Cut(got, ": ")
		}
		if got != want {
			t.Errorf("repo.url %q:\n got: %s\nwant: %s", url, got, want)
		}
		if strings.Contains(got, "s3cr3t") {
			t.Errorf("repo.url %q: the error repeats the secret", url)
		}
		// The agent starts with the same rules: validate-config and start-up agree.
		if _, why := gitsync.CheckURL(url); "repo.url: "+why != want && why+want != "" {
			t.Errorf("repo.url %q: the agent's start-up says %q, validate-config %q", url, why, want)
		}
	}
}

func TestMaxFetch(t *testing.T) {
	const unit = `: expected a whole number and a unit (B, KiB, MiB or GiB), such as 128MiB`
	for value, want := range map[string]string{
		"128MiB":                "",
		"1MiB":                  "",
		"1048576B":              "",
		"1536KiB":               "",
		"16GiB":                 "",
		"512KiB":                "repo.maxFetch: 512KiB is below the minimum of 1MiB",
		"0B":                    "repo.maxFetch: 0B is below the minimum of 1MiB",
		"17GiB":                 "repo.maxFetch: 17GiB is above the maximum of 16GiB",
		"128":                   `invalid size "128"` + unit,
		"0":                     `invalid size "0"` + unit,
		"128MB":                 `invalid size "128MB"` + unit,
		"128mib":                `invalid size "128mib"` + unit,
		"128 MiB":               `invalid size "128 MiB"` + unit,
		"1.5GiB":                `invalid size "1.5GiB"` + unit,
		"-1MiB":                 `invalid size "-1MiB"` + unit,
		"1TiB":                  `invalid size "1TiB"` + unit,
		"9999999999GiB":         `invalid size "9999999999GiB": too large`,
		"99999999999999999999B": `invalid size "99999999999999999999B": too large`,
		"{a: 1}":                "expected a size such as 128MiB, got a mapping",
		"[128MiB]":              "expected a size such as 128MiB, got a list",
	} {
		data := "repo:\n  url: https://git.example.com/ops/fleet.git\n  maxFetch: " + value + "\n"
		c, err := Parse(testFile, []byte(data), "web-01")
		got := ""
		if err != nil {
			got = strings.TrimPrefix(err.Error(), "agent.yaml:3: ")
		}
		if got != want {
			t.Errorf("repo.maxFetch %q:\n got: %s\nwant: %s", value, got, want)
		}
		if err == nil {
			if s, _ := c.Repo.MaxFetch.MarshalText(); string(s) != value && value != "1048576B" {
				t.Errorf("repo.maxFetch %q is written back as %q", value, s)
			}
		}
	}
}

// TestSplay: repo.splay is a duration from 0 to an hour; it is 0 when left out.
func TestSplay(t *testing.T) {
	for value, want := range map[string]string{
		"":    "",
		"0s":  "",
		"5m":  "",
		"1h":  "",
		"-1s": `invalid duration "-1s": must not be negative`,
		"2h":  "repo.splay: 2h0m0s is above the maximum of 1h0m0s",
		"5":   `invalid duration "5"`,
	} {
		data := "repo:\n  url: https://git.example.com/ops/fleet.git\n"
		if value != "" {
			data += "  splay: " + value + "\n"
		}
		c, err := Parse(testFile, []byte(data), "web-01")
		got := ""
		if err != nil {
			got = strings.TrimPrefix(err.Error(), "agent.yaml:3: ")
		}
		if !strings.HasPrefix(got, want) || (want == "") != (got == "") {
			t.Errorf("repo.splay %q:\n got: %s\nwant: %s", value, got, want)
		}
		if err == nil && value == "" && c.Repo.Splay != 0 {
			t.Errorf("repo.splay left out = %v, want 0", c.Repo.Splay)
		}
	}
}

func TestSystemHostName(t *testing.T) {
	data := []byte("repo: {url: https://git.example.com/ops/fleet.git}\n")
	long := strings.Repeat("a", 254)
	for _, tt := range []struct {
		hostname, file, want string
	}{
		{"web-01.dc1.example.com", "", ""},
		{"", "", "agent.yaml:1: host: not set, and the system host name is unknown"},
		{"web_01", "", `agent.yaml:1: host: the system host name "web_01" is not a valid host name (letters, digits, '.' and '-', at most 253); set host`},
		{long, "", `agent.yaml:1: host: the system host name "` + long + `" is not a valid host name (letters, digits, '.' and '-', at most 253); set host`},
		{"web_01", "host: web-01\n", ""}, // the file wins
		{"", "host: web-01\n", ""},
	} {
		c, err := Parse(testFile, append([]byte(tt.file), data...), tt.hostname)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("system host name %q, file %q:\n got: %s\nwant: %s", tt.hostname, tt.file, got, tt.want)
		}
		if err == nil && tt.file == "" && c.Host != tt.hostname {
			t.Errorf("system host name %q: Host = %q", tt.hostname, c.Host)
		}
	}
}

func TestValidateBuiltInCode(t *testing.T) {
	c := defaults("https://git.example.com/ops/fleet.git")
	if err := c.Validate(); err != nil {
		t.Errorf("Validate of the defaults: %v", err)
	}
	c.Repo.URL = "ftp://git.example.com/fleet.git"
	c.Lease.Backend = LeaseEtcd
	c.Repo.Poll = 0
	want := strings.Join([]string{
		`agent config: lease.etcd.endpoints: required when lease.backend is etcd`,
		`agent config: repo.poll: 0s is below the minimum of 1s`,
		`agent config: repo.url: scheme "ftp" not supported; use https://, ssh:// or file://`,
	}, "\n")
	if err := c.Validate(); err == nil || err.Error() != want {
		t.Errorf("Validate:\n got: %v\nwant: %s", err, want)
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(path, readTestdata(t, "good", "minimal.yaml"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if hostname, err := os.Hostname(); err == nil && validHostName(hostname) && c.Host != hostname {
		t.Errorf("Load: Host = %q, want the host name %q", c.Host, hostname)
	}

	if err := os.WriteFile(path, readTestdata(t, "bad", "ftp-scheme.yaml"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path)
	if want := path + ":4: repo.url: "; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Load of a bad file: %v, want an error starting %q", err, want)
	}

	_, err = Load(filepath.Join(dir, "missing.yaml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "load agent config: ") {
		t.Errorf("Load of a missing file: %v", err)
	}

	big := append([]byte("host: web-01\n#"), make([]byte, yamldoc.MaxSize*2)...)
	if err := os.WriteFile(path, big, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path)
	if want := path + ": file is "; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Load of a huge file: %v, want an error starting %q", err, want)
	}
}

func FuzzParseConfig(f *testing.F) {
	seeds, err := filepath.Glob("testdata/config/*/*.yaml")
	if err != nil || len(seeds) == 0 {
		f.Fatalf("no seeds under testdata/config: %v", err)
	}
	for _, name := range seeds {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, "web-01")
	}
	f.Add([]byte("repo: {url: https://git.example.com/x.git}\n"), "")
	f.Fuzz(func(t *testing.T, data []byte, hostname string) {
		start := time.Now()
		c, err := Parse(testFile, data, hostname)
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("Parse took %v", d)
		}
		if err != nil {
			if c != nil {
				t.Fatal("Parse returned a config with its error")
			}
			var list yamldoc.Errors
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("Parse error is not a yamldoc.Errors list: %T %v", err, err)
			}
			for _, e := range list {
				if e.File != testFile || !strings.HasPrefix(e.Error(), testFile) {
					t.Fatalf("error does not name the file: %q", e.Error())
				}
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted what Validate refuses: %v", err)
		}
		if c.Host == "" || c.Repo.Poll.D() < MinPoll || c.Repo.MaxFetch < MinMaxFetch || c.Paths.State == "" || c.Listen.API == "" {
			t.Fatalf("Parse accepted a config without its defaults: %+v", c)
		}
	})
}

// checkListed fails t unless the .yaml files in dir are exactly names.
func checkListed(t *testing.T, dir string, names []string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range files {
		files[i] = filepath.Base(f)
	}
	slices.Sort(files)
	names = slices.Sorted(slices.Values(names))
	if !slices.Equal(files, names) {
		t.Errorf("files in %s: %q\nthe test lists: %q", dir, files, names)
	}
}

func readTestdata(t *testing.T, dir, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "config", dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func asJSON(v any) string {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestReleaseSignersAreTrustAnchors: the release keys are checked at start and on
// reload as the trusted keys are: a file others can write, or a missing one, is
// refused with its field.
func TestReleaseSignersAreTrustAnchors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string { return writeMode(t, dir, name, "ssh-ed25519 AAAA", mode) }
	signers, keyring := write("allowed_signers", 0o644), write("trusted.asc", 0o644)
	release := func(ssh, pgp string) *Config {
		return &Config{Repo: Repo{Verify: Verify{SSHAllowedSigners: signers, OpenPGPKeyring: keyring,
			Release: ReleaseSigners{SSHAllowedSigners: ssh, OpenPGPKeyring: pgp}}}}
	}
	missing := filepath.Join(dir, "missing")
	for _, tt := range []struct {
		name string
		cfg  *Config
		want string
	}{
		{"readable by all", release(write("release_signers", 0o644), write("release.asc", 0o444)), ""},
		{"group-writable release signers", release(write("release_signers-g", 0o664), ""),
			"repo.verify.release.sshAllowedSigners: " + filepath.Join(dir, "release_signers-g") + " can be written by users other than its owner (mode 0664); run chmod go-w " + filepath.Join(dir, "release_signers-g")},
		{"world-writable release keyring", release("", write("release-o.asc", 0o646)),
			"repo.verify.release.openpgpKeyring: " + filepath.Join(dir, "release-o.asc") + " can be written by users other than its owner (mode 0646); run chmod go-w " + filepath.Join(dir, "release-o.asc")},
		{"missing", release(missing, ""), "repo.verify.release.sshAllowedSigners: stat " + missing + ": no such file or directory"},
		{"a directory", release("", dir), "repo.verify.release.openpgpKeyring: " + dir + " is not a regular file"},
	} {
		err := tt.cfg.CheckFiles()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || err.Error() != tt.want):
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
}
