// Package config reads and checks the agent's configuration, /etc/baton/agent.yaml: the
// counterpart of spec/, which reads the fleet repository. Parse applies the defaults and
// reports every problem at its file:line, so `baton validate-config` and the agent's start
// (and reload) cannot disagree.
package config

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/baton-fleet/baton/gitsync"
	"github.com/baton-fleet/baton/internal/quieturl"
	"github.com/baton-fleet/baton/internal/yamldoc"
	"github.com/baton-fleet/baton/lease"
	"github.com/baton-fleet/baton/spec"
)

// DefaultPath is where the packages install the agent configuration.
const DefaultPath = "/etc/baton/agent.yaml"

// Defaults for the agent configuration, applied to keys a file leaves out.
const (
	DefaultBranch         = "main"
	DefaultPoll           = 30 * time.Second
	DefaultMaxFetch       = 128 * yamldoc.MiB
	DefaultLeaseBackend   = LeaseLocal
	DefaultEtcdPrefix     = "/baton"
	DefaultEtcdTTL        = 15 * time.Second
	DefaultFleetlockGroup = "default"
	DefaultMetricsAddr    = "127.0.0.1:9732"
	DefaultAPISocket      = "/run/baton/baton.sock"
	DefaultStateDir       = "/var/lib/baton"
	DefaultUnitDir        = "/etc/systemd/system"
)

// Limits on configured values.
const (
	MinPoll     = time.Second
	MaxSplay    = time.Hour
	MinMaxFetch = 1 * yamldoc.MiB
	MaxMaxFetch = 16 * yamldoc.GiB
	MinEtcdTTL  = 5 * time.Second
	// maxSocketPath is the longest path a unix socket can be bound to (sun_path less its NUL).
	maxSocketPath = 107
	maxHostName   = 253
)

// Drift policies, the values of driftPolicy.
const (
	DriftReport  = "report"  // report a hand edit (status, metric, event) and leave it
	DriftRestore = "restore" // report it, then put back what baton installed
)

// Lease backends, the values of lease.backend.
const (
	LeaseLocal     = "local"
	LeaseEtcd      = "etcd"
	LeaseFleetlock = "fleetlock"
)

// Config is the agent configuration, /etc/baton/agent.yaml. Build it with Parse or
// Load: they apply the defaults and validate it.
type Config struct {
	Host     string    `yaml:"host"` // default: the system host name
	Repo     Repo      `yaml:"repo"`
	Lease    Lease     `yaml:"lease"`
	Listen   Listen    `yaml:"listen"`
	Paths    Paths     `yaml:"paths"`
	Webhooks []Webhook `yaml:"webhooks"`
	// DriftPolicy says what to do when a managed unit is edited, or given a drop-in,
	// outside baton: report (default) or restore.
	DriftPolicy string `yaml:"driftPolicy"`
	// AllowUnits names reserved units (baton.service, systemd-*, systemd's targets,
	// ssh, ...) that the fleet repository may nevertheless install on this host.
	AllowUnits []string `yaml:"allowUnits"`
	// Artifacts is the policy for downloading artifacts.
	Artifacts Artifacts `yaml:"artifacts"`
	// Statuses reports each group's rollout of the head to the forge as commit
	// statuses; off unless set.
	Statuses Statuses `yaml:"statuses"`

	doc            *yamldoc.Doc // the file, for the line of each value; nil when built in code
	hostFromSystem bool         // Host was taken from the system host name
	file           string       // the file Load read, checked with the secrets; "" otherwise
}

// Repo says which fleet repository to follow and how to trust it.
type Repo struct {
	URL         string           `yaml:"url"` // https://, ssh:// or file:// (http:// to a loopback host)
	Branch      string           `yaml:"branch"`
	Poll        yamldoc.Duration `yaml:"poll"`
	AllowRewind bool             `yaml:"allowRewind"` // accept a force-pushed or rewound branch
	// MaxFetch bounds one poll: a fetch that downloads more (or unpacks to more than
	// 32 times as much) is refused, and nothing of it is kept.
	MaxFetch yamldoc.ByteSize `yaml:"maxFetch"`
	Auth     Auth             `yaml:"auth"`
	Verify   Verify           `yaml:"verify"`
	// SharedHead, with the etcd backend (its default there), has one elected agent
	// poll the repository and publish its verified head in etcd for the others.
	SharedHead bool `yaml:"sharedHead"`
	// Splay, with the shared head, spreads the fleet's fetches of a new head: an
	// agent whose group waits for another (after:) fetches it at a random moment
	// within Splay of hearing of it; the hosts of the groups that go first fetch at
	// once. 0 (the default): every agent at once.
	Splay yamldoc.Duration `yaml:"splay"`
}

// Auth names the files that hold the credentials for the repository: an SSH key
// and known hosts for ssh://, a token (and optional user name) for https://.
type Auth struct {
	SSHKeyFile     string `yaml:"sshKeyFile"`
	KnownHostsFile string `yaml:"knownHostsFile"`
	TokenFile      string `yaml:"tokenFile"`
	TokenUser      string `yaml:"tokenUser"`
}

// Verify names the keys that commit signatures are checked against.
type Verify struct {
	OpenPGPKeyring    string `yaml:"openpgpKeyring"`
	SSHAllowedSigners string `yaml:"sshAllowedSigners"`
	// Release narrows which of those keys may sign a commit that is applied.
	Release ReleaseSigners `yaml:"release"`
}

// ReleaseSigners names the release keys: of the trusted keys, the ones whose
// signature gets a commit applied (gitsync.ReleaseSigners). Without them any trusted
// key's commit that a pusher fast-forwards the branch to is applied.
type ReleaseSigners struct {
	OpenPGPKeyring    string `yaml:"openpgpKeyring"`
	SSHAllowedSigners string `yaml:"sshAllowedSigners"`
}

// Lease selects the lease backend. Etcd and Fleetlock are nil unless the file sets
// them, and only the selected backend's section may be set.
type Lease struct {
	Backend   string     `yaml:"backend"` // local, etcd or fleetlock
	Etcd      *Etcd      `yaml:"etcd"`
	Fleetlock *Fleetlock `yaml:"fleetlock"`
}

// Etcd is the etcd lease backend.
type Etcd struct {
	Endpoints    []string         `yaml:"endpoints"`
	Prefix       string           `yaml:"prefix"`
	TTL          yamldoc.Duration `yaml:"ttl"`
	TLS          TLS              `yaml:"tls"`
	Username     string           `yaml:"username"`
	PasswordFile string           `yaml:"passwordFile"`
}

// TLS names the files for a TLS client.
type TLS struct {
	CAFile   string `yaml:"caFile"`
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
}

// Fleetlock is the FleetLock lease backend: a server speaking Zincati's protocol.
type Fleetlock struct {
	URL   string `yaml:"url"`
	Group string `yaml:"group"`
}

// Artifacts is the artifact download policy.
type Artifacts struct {
	// AllowInsecure names the hosts from which artifacts may come over plain
	// http://; from any other host they must come over https://.
	AllowInsecure []string `yaml:"allowInsecure"`
}

// Listen is where the agent serves: Metrics a host:port ("" turns metrics off),
// API the unix socket behind `baton status`, Webhook the receiver of the forge's push
// events (off unless set).
type Listen struct {
	Metrics string        `yaml:"metrics"`
	API     string        `yaml:"api"`
	Webhook WebhookListen `yaml:"webhook"`
}

// Statuses is where the fleet's fetcher posts commit statuses: Forge github,
// gitea (and Forgejo) or gitlab; API the base URL of its API; Repository owner/name
// (GitLab: the project's path); TokenFile the token; TargetURL a template of the link
// each status carries (.Commit, .Group, .Context).
type Statuses struct {
	Forge      string `yaml:"forge"`
	API        string `yaml:"api"`
	Repository string `yaml:"repository"`
	TokenFile  string `yaml:"tokenFile"`
	TargetURL  string `yaml:"targetURL"`
}

// WebhookListen is the receiver of push events: Address a host:port, SecretFile
// the secret shared with the forge.
type WebhookListen struct {
	Address    string `yaml:"address"`
	SecretFile string `yaml:"secretFile"`
}

// Paths is where the agent keeps its state and installs units.
type Paths struct {
	State string `yaml:"state"`
	Units string `yaml:"units"`
}

// Webhook is one receiver of rollout events; SecretFile holds the key that signs them.
type Webhook struct {
	URL        string `yaml:"url"`
	SecretFile string `yaml:"secretFile"`
}

// Load reads and parses the agent configuration in file, defaulting the host to
// the system host name.
func Load(file string) (*Config, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("load agent config: %w", err)
	}
	defer f.Close()
	// One byte over the limit is enough for yamldoc to refuse the file.
	data, err := io.ReadAll(io.LimitReader(f, yamldoc.MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("load agent config: %w", err)
	}
	hostname, _ := os.Hostname() // "" when unknown: then the file must set host
	c, err := Parse(file, data, hostname)
	if err != nil {
		return nil, err
	}
	c.file = file
	return c, nil
}

// Parse parses data, the content of file, strictly; applies the defaults, with
// hostname as the default host; and validates the result. It reports every problem,
// from decoding and from Validate, as one yamldoc.Errors list of file:line: message.
// A value that does not decode is reported by the decoder alone: its checks would
// only see the zero value left in its place.
func Parse(file string, data []byte, hostname string) (*Config, error) {
	c := &Config{}
	doc, err := yamldoc.Decode(file, data, c)
	var errs yamldoc.Errors
	errs.AddErr(file, err)
	if err != nil && doc.At().Line == 0 {
		return nil, errs.Err() // not YAML at all: nothing to check
	}
	c.doc = doc
	c.setDefaults(hostname)
	bad := map[int]bool{}
	for _, e := range errs {
		bad[e.Line] = true
	}
	// The decoder reports a value of the wrong kind at its first line: the key's, or
	// for a block list, its first item's.
	broken := func(path []any) bool {
		item := append(slices.Clip(path), 0)
		return bad[doc.At(path...).Line] || (doc.Has(item...) && bad[doc.At(item...).Line])
	}
	errs.AddErr(file, c.validate(broken))
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

// setDefaults fills in the keys the file leaves out (or sets to null). A key set to an
// empty string keeps it, for Validate to refuse, except listen.metrics where "" turns
// metrics off.
func (c *Config) setDefaults(hostname string) {
	has := c.doc.Has
	if !has("driftPolicy") {
		c.DriftPolicy = DriftReport
	}
	if !has("host") {
		c.Host, c.hostFromSystem = hostname, true
	}
	if !has("repo", "branch") {
		c.Repo.Branch = DefaultBranch
	}
	if !has("repo", "poll") {
		c.Repo.Poll = yamldoc.Duration(DefaultPoll)
	}
	if !has("repo", "maxFetch") {
		c.Repo.MaxFetch = DefaultMaxFetch
	}
	if !has("lease", "backend") {
		c.Lease.Backend = DefaultLeaseBackend
	}
	if !has("repo", "sharedHead") {
		c.Repo.SharedHead = c.Lease.Backend == LeaseEtcd
	}
	if e := c.Lease.Etcd; e != nil {
		if !has("lease", "etcd", "prefix") {
			e.Prefix = DefaultEtcdPrefix
		}
		if !has("lease", "etcd", "ttl") {
			e.TTL = yamldoc.Duration(DefaultEtcdTTL)
		}
	}
	if f := c.Lease.Fleetlock; f != nil && !has("lease", "fleetlock", "group") {
		f.Group = DefaultFleetlockGroup
	}
	if !has("listen", "metrics") {
		c.Listen.Metrics = DefaultMetricsAddr
	}
	if !has("listen", "api") {
		c.Listen.API = DefaultAPISocket
	}
	if !has("paths", "state") {
		c.Paths.State = DefaultStateDir
	}
	if !has("paths", "units") {
		c.Paths.Units = DefaultUnitDir
	}
}

// Validate checks c and returns every problem as a yamldoc.Errors list, each at the line
// of the value when c came from a file. It does not apply defaults.
func (c *Config) Validate() error {
	return c.validate(nil)
}

// validate is Validate, leaving out the problems at the paths for which skip is true.
func (c *Config) validate(skip func(path []any) bool) error {
	k := &configCheck{doc: c.doc, skip: skip}
	if k.doc == nil {
		k.doc = &yamldoc.Doc{File: "agent config"}
	}
	c.checkHost(k)
	c.Repo.check(k)
	c.Lease.check(k)
	c.Listen.check(k)
	c.checkSync(k)
	k.dir(c.Paths.State, DefaultStateDir, "paths", "state")
	k.dir(c.Paths.Units, DefaultUnitDir, "paths", "units")
	if c.DriftPolicy != DriftReport && c.DriftPolicy != DriftRestore {
		k.fail(fmt.Sprintf("%q is not one of report, restore", c.DriftPolicy), "driftPolicy")
	}
	for i, h := range c.Artifacts.AllowInsecure {
		if h == "" || strings.ContainsAny(h, "/:@ ") && net.ParseIP(h) == nil {
			k.fail(fmt.Sprintf("%q is not a host name or address", h), "artifacts", "allowInsecure", i)
		}
	}
	for i, u := range c.AllowUnits {
		if err := spec.CheckUnitName(u); err != nil {
			k.fail(err.Error(), "allowUnits", i)
		}
	}
	for i, w := range c.Webhooks {
		if w.URL == "" {
			k.fail("required", "webhooks", i, "url")
		} else {
			k.httpURL(w.URL, "put the signing key in webhooks[].secretFile", "webhooks", i, "url")
		}
		k.file(w.SecretFile, "webhooks", i, "secretFile")
	}
	return k.errs.Err()
}

// configCheck collects the problems Validate finds.
type configCheck struct {
	doc  *yamldoc.Doc
	skip func(path []any) bool // nil: report everything
	errs yamldoc.Errors
}

// report adds msg at the line of the value at path.
func (k *configCheck) report(path []any, format string, args ...any) {
	if k.skip == nil || !k.skip(path) {
		k.errs.Add(k.doc.At(path...).Errorf(format, args...))
	}
}

// fail reports msg about the value at path, as "field: msg".
func (k *configCheck) fail(msg string, path ...any) {
	k.report(path, "%s: %s", configField(path), msg)
}

// failBeside reports msg about the value at path, a missing one, at the line of the
// value at near, which asks for it.
func (k *configCheck) failBeside(near []any, msg string, path ...any) {
	k.report(near, "%s: %s", configField(path), msg)
}

// configField writes path as a person names the field: lease.etcd.endpoints[0].
func configField(path []any) string {
	var b strings.Builder
	for _, p := range path {
		switch p := p.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", p)
		default:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			fmt.Fprint(&b, p)
		}
	}
	return b.String()
}

var hostNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]*$`)

func validHostName(s string) bool {
	return len(s) <= maxHostName && hostNameRE.MatchString(s)
}

func (c *Config) checkHost(k *configCheck) {
	switch {
	case c.Host == "" && c.hostFromSystem:
		k.fail("not set, and the system host name is unknown", "host")
	case c.Host == "":
		k.fail("empty; leave it out to use the system host name", "host")
	case !validHostName(c.Host) && c.hostFromSystem:
		k.fail(fmt.Sprintf("the system host name %q is not a valid host name (letters, digits, '.' and '-', at most %d); set host", c.Host, maxHostName), "host")
	case !validHostName(c.Host):
		k.fail(fmt.Sprintf("%q is not a valid host name (letters, digits, '.' and '-', at most %d)", c.Host, maxHostName), "host")
	}
}

func (r *Repo) check(k *configCheck) {
	scheme := k.repoURL(r.URL)
	if r.Branch == "" {
		k.fail(fmt.Sprintf("empty; leave it out for the default %q", DefaultBranch), "repo", "branch")
	} else if why := gitsync.CheckBranch(r.Branch); why != "" {
		k.fail(fmt.Sprintf("%q is not a valid branch name: %s", r.Branch, why), "repo", "branch")
	}
	if r.Poll.D() < MinPoll {
		k.fail(fmt.Sprintf("%v is below the minimum of %v", r.Poll, MinPoll), "repo", "poll")
	}
	if r.Splay.D() > MaxSplay {
		k.fail(fmt.Sprintf("%v is above the maximum of %v", r.Splay, MaxSplay), "repo", "splay")
	}
	switch {
	case r.MaxFetch < MinMaxFetch:
		k.fail(fmt.Sprintf("%v is below the minimum of %v", r.MaxFetch, MinMaxFetch), "repo", "maxFetch")
	case r.MaxFetch > MaxMaxFetch:
		k.fail(fmt.Sprintf("%v is above the maximum of %v", r.MaxFetch, MaxMaxFetch), "repo", "maxFetch")
	}

	a := r.Auth
	k.file(a.SSHKeyFile, "repo", "auth", "sshKeyFile")
	k.file(a.KnownHostsFile, "repo", "auth", "knownHostsFile")
	k.file(a.TokenFile, "repo", "auth", "tokenFile")
	if a.TokenUser != "" && a.TokenFile == "" {
		k.fail("set without repo.auth.tokenFile", "repo", "auth", "tokenUser")
	}
	// A token also goes to http://, which repoURL allows only to a loopback host.
	tokenOK := scheme == "https" || scheme == "http"
	onlyFor := func(ok bool, want, field, value string) {
		if value != "" && scheme != "" && !ok {
			k.fail(fmt.Sprintf("only for %s:// URLs, and repo.url is %s://", want, scheme), "repo", "auth", field)
		}
	}
	onlyFor(scheme == "ssh", "ssh", "sshKeyFile", a.SSHKeyFile)
	onlyFor(scheme == "ssh", "ssh", "knownHostsFile", a.KnownHostsFile)
	onlyFor(tokenOK, "https", "tokenFile", a.TokenFile)
	onlyFor(tokenOK, "https", "tokenUser", a.TokenUser)
	if scheme == "ssh" && a.KnownHostsFile == "" {
		k.fail("required for ssh:// URLs: host keys are never accepted unchecked", "repo", "auth", "knownHostsFile")
	}
	if scheme == "ssh" && a.SSHKeyFile == "" {
		k.fail("required for ssh:// URLs: the agent logs in with this key (no passphrase)", "repo", "auth", "sshKeyFile")
	}

	k.verify(r.Verify)
}

// verify checks repo.verify: the files are paths, and each release file has the
// trusted file of its kind, which it narrows.
func (k *configCheck) verify(v Verify) {
	k.file(v.OpenPGPKeyring, "repo", "verify", "openpgpKeyring")
	k.file(v.SSHAllowedSigners, "repo", "verify", "sshAllowedSigners")
	for _, f := range []struct{ field, release, trusted string }{
		{"openpgpKeyring", v.Release.OpenPGPKeyring, v.OpenPGPKeyring},
		{"sshAllowedSigners", v.Release.SSHAllowedSigners, v.SSHAllowedSigners},
	} {
		at := []any{"repo", "verify", "release", f.field}
		k.file(f.release, at...)
		switch {
		case f.release == "":
		case f.trusted == "":
			k.fail("set without repo.verify."+f.field+": a release key must also be a trusted key", at...)
		case filepath.Clean(f.release) == filepath.Clean(f.trusted):
			k.fail("the file of repo.verify."+f.field+": every trusted key would be a release key; name a file of the release keys alone", at...)
		}
	}
}

// repoURL checks repo.url with gitsync's rules (gitsync.CheckURL: the same the agent
// starts with) at its line, and returns its scheme when it is one baton reads.
func (k *configCheck) repoURL(raw string) string {
	scheme, why := gitsync.CheckURL(raw)
	if why != "" {
		k.fail(why, "repo", "url")
	}
	return scheme
}

// httpURL checks raw, a URL of a service baton calls: http or https, with a host and no
// credentials (hint says where they go instead). It never quotes the URL.
func (k *configCheck) httpURL(raw, hint string, at ...any) {
	scheme, userinfo, ok := quieturl.Split(raw)
	if !ok {
		k.fail("no scheme; write it as https://host[:port]/...", at...)
		return
	}
	if scheme != "https" && scheme != "http" {
		k.fail(fmt.Sprintf("scheme %q not supported; use https:// or http://", scheme), at...)
		return
	}
	if userinfo != "" {
		k.fail("credentials in the URL are refused; "+hint, at...)
		return
	}
	u, why := quieturl.Parse(raw)
	if u == nil {
		k.fail(why, at...)
		return
	}
	if u.Hostname() == "" {
		k.fail("no host", at...)
	}
}

// file checks an optional path to a file: absolute and clean when set.
func (k *configCheck) file(p string, at ...any) {
	if p != "" {
		k.path(p, at...)
	}
}

// dir checks a required directory that has a default.
func (k *configCheck) dir(p, def string, at ...any) {
	switch {
	case p == "":
		k.fail(fmt.Sprintf("empty; leave it out for the default %q", def), at...)
	case p == "/":
		k.fail(`must not be "/"`, at...)
	default:
		k.path(p, at...)
	}
}

func (k *configCheck) path(p string, at ...any) {
	switch {
	case quieturl.HasControl(p):
		k.fail(fmt.Sprintf("%q contains a control character", p), at...)
	case !filepath.IsAbs(p):
		k.fail(fmt.Sprintf("%q is not an absolute path", p), at...)
	case filepath.Clean(p) != p:
		k.fail(fmt.Sprintf("%q is not a clean path; write %q", p, filepath.Clean(p)), at...)
	}
}

func (l *Lease) check(k *configCheck) {
	switch l.Backend {
	case LeaseLocal, LeaseEtcd, LeaseFleetlock:
		// A section for another backend is a mistake: the one meant is not in use.
		if l.Etcd != nil && l.Backend != LeaseEtcd {
			k.report([]any{"lease", "etcd"}, "lease.etcd is set but lease.backend is %s", l.Backend)
		}
		if l.Fleetlock != nil && l.Backend != LeaseFleetlock {
			k.report([]any{"lease", "fleetlock"}, "lease.fleetlock is set but lease.backend is %s", l.Backend)
		}
	case "":
		k.fail(fmt.Sprintf("empty; leave it out for the default %q", DefaultLeaseBackend), "lease", "backend")
	default:
		k.fail(fmt.Sprintf("%q not supported; use local, etcd or fleetlock", l.Backend), "lease", "backend")
	}
	switch l.Backend {
	case LeaseEtcd:
		e := l.Etcd
		if e == nil {
			e = &Etcd{Prefix: DefaultEtcdPrefix, TTL: yamldoc.Duration(DefaultEtcdTTL)}
		}
		e.check(k)
	case LeaseFleetlock:
		f := l.Fleetlock
		if f == nil {
			f = &Fleetlock{Group: DefaultFleetlockGroup}
		}
		f.check(k)
	}
}

func (e *Etcd) check(k *configCheck) {
	if len(e.Endpoints) == 0 {
		k.fail("required when lease.backend is etcd", "lease", "etcd", "endpoints")
	}
	https := false
	for i, ep := range e.Endpoints {
		if ep == "" {
			k.fail("empty", "lease", "etcd", "endpoints", i)
			continue
		}
		k.httpURL(ep, "use lease.etcd.username and lease.etcd.passwordFile", "lease", "etcd", "endpoints", i)
		if scheme, _, _ := quieturl.Split(ep); scheme == "https" {
			https = true
		}
	}
	switch {
	case !strings.HasPrefix(e.Prefix, "/"):
		k.fail(fmt.Sprintf("%q does not start with \"/\"", e.Prefix), "lease", "etcd", "prefix")
	case e.Prefix == "/" || path.Clean(e.Prefix) != e.Prefix:
		k.fail(fmt.Sprintf("%q is not a clean key prefix (no trailing \"/\", \"//\" or \"..\")", e.Prefix), "lease", "etcd", "prefix")
	}
	if e.TTL.D() < MinEtcdTTL {
		k.fail(fmt.Sprintf("%v is below the minimum of %v", e.TTL, MinEtcdTTL), "lease", "etcd", "ttl")
	}
	t := e.TLS
	k.file(t.CAFile, "lease", "etcd", "tls", "caFile")
	k.file(t.CertFile, "lease", "etcd", "tls", "certFile")
	k.file(t.KeyFile, "lease", "etcd", "tls", "keyFile")
	if t.CertFile != "" && t.KeyFile == "" {
		k.failBeside([]any{"lease", "etcd", "tls", "certFile"}, "required with lease.etcd.tls.certFile", "lease", "etcd", "tls", "keyFile")
	}
	if t.KeyFile != "" && t.CertFile == "" {
		k.failBeside([]any{"lease", "etcd", "tls", "keyFile"}, "required with lease.etcd.tls.keyFile", "lease", "etcd", "tls", "certFile")
	}
	if t != (TLS{}) && !https && len(e.Endpoints) > 0 {
		k.fail("set, but no endpoint is https://", "lease", "etcd", "tls")
	}
	k.file(e.PasswordFile, "lease", "etcd", "passwordFile")
	if risk := e.plainHTTPRisk(); risk != "" {
		for i, ep := range e.Endpoints {
			if u, _ := quieturl.Parse(ep); u != nil && strings.EqualFold(u.Scheme, "http") && !sendsInClearSafely(u) {
				k.fail(fmt.Sprintf("plain http:// to %q, which is not a loopback host, %s; use https://", u.Hostname(), risk), "lease", "etcd", "endpoints", i)
			}
		}
	}
	if e.Username != "" && e.PasswordFile == "" {
		k.failBeside([]any{"lease", "etcd", "username"}, "required with lease.etcd.username", "lease", "etcd", "passwordFile")
	}
	if e.PasswordFile != "" && e.Username == "" {
		k.failBeside([]any{"lease", "etcd", "passwordFile"}, "required with lease.etcd.passwordFile", "lease", "etcd", "username")
	}
}

// plainHTTPRisk says what a plain http:// endpoint would do to the credentials e
// authenticates with, or "" when it has none.
func (e *Etcd) plainHTTPRisk() string {
	switch {
	case e.Username != "" || e.PasswordFile != "":
		return "would send the etcd password (lease.etcd.passwordFile) in clear"
	case e.TLS.CertFile != "" || e.TLS.KeyFile != "":
		return "would talk to etcd without TLS, its client certificate (lease.etcd.tls) unused"
	}
	return ""
}

// sendsInClearSafely reports whether a credential may go to u: an https:// URL, or a
// plain http:// one to a loopback host, where it never leaves the machine. It is the
// one rule for every credential the agent sends (the repository token: repoURL allows
// plain http only to a loopback host; the etcd password and client certificate).
func sendsInClearSafely(u *url.URL) bool {
	switch strings.ToLower(u.Scheme) {
	case "https":
		return true
	case "http":
		return quieturl.Loopback(u.Hostname())
	}
	return false
}

// TokenURLs names the fields of URLs whose path or query may hold a token, as many
// webhook services' URLs do: a file holding them is a secret (see CheckFiles).
func (c *Config) TokenURLs() []string {
	var out []string
	mayHold := func(raw string, path bool) bool {
		u, _ := quieturl.Parse(raw)
		return u != nil && (u.RawQuery != "" || u.Fragment != "" || path && u.Path != "" && u.Path != "/")
	}
	for i, w := range c.Webhooks {
		if mayHold(w.URL, true) {
			out = append(out, configField([]any{"webhooks", i, "url"}))
		}
	}
	if e := c.Lease.Etcd; e != nil {
		for i, ep := range e.Endpoints {
			if mayHold(ep, false) {
				out = append(out, configField([]any{"lease", "etcd", "endpoints", i}))
			}
		}
	}
	return out
}

func (f *Fleetlock) check(k *configCheck) {
	if f.URL == "" {
		k.fail("required when lease.backend is fleetlock", "lease", "fleetlock", "url")
	} else {
		k.httpURL(f.URL, "the FleetLock protocol takes none", "lease", "fleetlock", "url")
		// What the agent would refuse at its first Acquire, refused here.
		if u, _ := quieturl.Parse(f.URL); u != nil && (u.RawQuery != "" || u.ForceQuery || strings.Contains(f.URL, "#")) {
			k.fail("a query or fragment is refused: the FleetLock protocol appends /v1/pre-reboot to the URL", "lease", "fleetlock", "url")
		}
	}
	if err := lease.CheckFleetlockGroup(f.Group); err != nil {
		k.fail(fmt.Sprintf("not a valid group: %v", err), "lease", "fleetlock", "group")
	}
}

func (l *Listen) check(k *configCheck) {
	if l.Metrics != "" {
		if why := badListenAddr(l.Metrics, `, or "" to turn metrics off`); why != "" {
			k.fail(why, "listen", "metrics")
		}
	}
	switch {
	case l.API == "":
		k.fail(fmt.Sprintf("empty; leave it out for the default %q", DefaultAPISocket), "listen", "api")
	case len(l.API) > maxSocketPath:
		k.fail(fmt.Sprintf("path is %d bytes; a unix socket path is at most %d", len(l.API), maxSocketPath), "listen", "api")
	default:
		k.path(l.API, "listen", "api")
	}
}

// badListenAddr says why s is not an address to listen on, host:port, or ""; off
// ends the hint, after an example.
func badListenAddr(s, off string) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Sprintf("%q is not host:port; write %s%s", s, DefaultMetricsAddr, off)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Sprintf("port %q is not a number from 1 to 65535", port)
	}
	if host != "" && net.ParseIP(host) == nil && !validHostName(host) {
		return fmt.Sprintf("host %q is not an IP address or host name", host)
	}
	return ""
}
