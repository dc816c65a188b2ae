package spec

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/baton-fleet/baton/internal/yamldoc"
)

// Check and drain defaults, used when service.yaml leaves a knob out.
const (
	DefaultCheckInterval  = 1 * time.Second
	DefaultCheckTimeout   = 2 * time.Second
	DefaultCheckSuccesses = 3
	DefaultCheckFailures  = 3
	DefaultHTTPStatus     = 200
	DefaultDrainTimeout   = 30 * time.Second
)

// Unpack modes of an artifact.
const (
	UnpackNone  = "none"
	UnpackTar   = "tar"
	UnpackTarGz = "tar.gz"
)

// Service is services/<name>/service.yaml: one service's version, units, artifacts,
// drain, checks and analysis. String fields marked "template" are rendered per host.
type Service struct {
	Name      string     `yaml:"-" json:"name"`
	Version   string     `yaml:"version" json:"version"`
	Units     []string   `yaml:"units" json:"units"`
	Restart   []string   `yaml:"restart" json:"restart"`
	Artifacts []Artifact `yaml:"artifacts" json:"artifacts,omitempty"`
	Drain     *Drain     `yaml:"drain" json:"drain,omitempty"`
	Checks    []Check    `yaml:"checks" json:"checks,omitempty"`
	Deploy    *Deploy    `yaml:"deploy" json:"deploy,omitempty"` // nil: deployed by restart
	Analysis  *Analysis  `yaml:"analysis" json:"analysis,omitempty"`
	// Requires maps another service's name to the range of its versions this version
	// needs running across the fleet (see Range).
	Requires map[string]string `yaml:"requires" json:"requires,omitempty"`
	// Migrations are run once for the fleet, in this order within their phase.
	Migrations []Migration `yaml:"migrations" json:"migrations,omitempty"`

	// UnitFiles holds each unit file's template text, by unit name.
	UnitFiles map[string]string `yaml:"-" json:"-"`

	doc *yamldoc.Doc // where each field came from, for errors found when rendering
}

// Artifact is a file the service needs, downloaded into its release directory.
type Artifact struct {
	URL    string `yaml:"url" json:"url"` // template
	SHA256 string `yaml:"sha256" json:"sha256"`
	Unpack string `yaml:"unpack" json:"unpack"`
	Name   string `yaml:"name" json:"name,omitempty"`
}

// Drain takes the host out of its load balancer around a restart: one of HAProxy or Exec.
type Drain struct {
	HAProxy *HAProxyDrain `yaml:"haproxy" json:"haproxy,omitempty"`
	Exec    *ExecDrain    `yaml:"exec" json:"exec,omitempty"`
}

// HAProxyDrain drains one server of one backend over HAProxy's runtime API.
type HAProxyDrain struct {
	Socket  string           `yaml:"socket" json:"socket"`   // template: a unix socket path or host:port
	Backend string           `yaml:"backend" json:"backend"` // template
	Server  string           `yaml:"server" json:"server"`   // template
	Timeout yamldoc.Duration `yaml:"timeout" json:"timeout"`
}

// ExecDrain runs a command to drain and another to undrain, as User when set.
type ExecDrain struct {
	Drain   []string `yaml:"drain" json:"drain"`     // templates
	Undrain []string `yaml:"undrain" json:"undrain"` // templates
	User    string   `yaml:"user" json:"user,omitempty"`
}

// Check is a smoke check: exactly one of HTTP, TCP and Exec.
type Check struct {
	Name      string           `yaml:"name" json:"name"`
	HTTP      *HTTPCheck       `yaml:"http" json:"http,omitempty"`
	TCP       *TCPCheck        `yaml:"tcp" json:"tcp,omitempty"`
	Exec      *ExecCheck       `yaml:"exec" json:"exec,omitempty"`
	Interval  yamldoc.Duration `yaml:"interval" json:"interval"`
	Timeout   yamldoc.Duration `yaml:"timeout" json:"timeout"`
	Successes int              `yaml:"successes" json:"successes"`
	Failures  int              `yaml:"failures" json:"failures"`
}

// HTTPCheck passes when a GET of URL answers Status and its body holds Contains.
type HTTPCheck struct {
	URL      string `yaml:"url" json:"url"` // template
	Status   int    `yaml:"status" json:"status"`
	Contains string `yaml:"contains" json:"contains,omitempty"` // template
}

// TCPCheck passes when Address accepts a connection.
type TCPCheck struct {
	Address string `yaml:"address" json:"address"` // template
}

// ExecCheck passes when Command, run as User when set, exits 0.
type ExecCheck struct {
	Command []string `yaml:"command" json:"command"` // templates
	User    string   `yaml:"user" json:"user,omitempty"`
}

// parseService decodes services/<name>/service.yaml, applies defaults and checks all
// that needs no template rendering. unitFile reads a unit file beside it; services
// is the set of service directories, for the names requires: uses; a reserved unit
// name is refused unless opts allows it.
func parseService(name, file string, data []byte, unitFile func(string) (string, error), services map[string]bool, opts LoadOptions) (*Service, yamldoc.Errors) {
	var s Service
	var errs yamldoc.Errors
	doc, err := yamldoc.Decode(file, data, &s)
	errs.AddErr(file, err)
	if len(errs) > 0 {
		return nil, errs
	}
	s.Name, s.doc = name, doc
	switch {
	case !doc.Has("version"):
		errs.Add(doc.At().Errorf("version: required"))
	case len(s.Version) > 128 || !versionRE.MatchString(s.Version):
		errs.Add(doc.At("version").Errorf("version: invalid %q: use letters, digits and ._+~-, starting with a letter or digit", s.Version))
	}
	if len(s.Units) == 0 {
		errs.Add(doc.At("units").Errorf("units: at least one unit file is required"))
	}
	s.UnitFiles = map[string]string{}
	for i, u := range s.Units {
		at := doc.At("units", i)
		if err := CheckUnitName(u); err != nil {
			errs.Add(at.Errorf("units: %v", err))
			continue
		}
		if reason, reserved := opts.reserved(u); reserved {
			errs.Add(at.Errorf("units: %s is reserved: %s; an agent accepts it only when its config allows it by name", u, reason))
			continue
		}
		if _, dup := s.UnitFiles[u]; dup {
			errs.Add(at.Errorf("units: %s is listed twice", u))
			continue
		}
		text, err := unitFile(u)
		if err != nil {
			errs.Add(at.Errorf("units: %s: %v", u, err))
			continue
		}
		s.UnitFiles[u] = text
	}
	errs = append(errs, s.checkArtifacts(doc)...)
	errs = append(errs, s.checkDrain(doc)...)
	errs = append(errs, s.checkDeploy(doc, opts)...)
	errs = append(errs, s.checkColorUnitNames(doc, opts)...)
	errs = append(errs, s.checkRestart(doc)...)
	errs = append(errs, s.checkChecks(doc)...)
	errs = append(errs, s.checkAnalysis(doc)...)
	errs = append(errs, s.checkRequires(doc, services)...)
	errs = append(errs, s.checkMigrations(doc)...)
	return &s, errs
}

func (s *Service) checkRestart(doc *yamldoc.Doc) yamldoc.Errors {
	var errs yamldoc.Errors
	if s.BlueGreen() {
		s.Restart = nil // refused by checkDeploy when given
		return nil
	}
	if !doc.Has("restart") {
		s.Restart = nil
		for _, u := range s.Units {
			if unitType(u) == "service" && !isTemplate(u) {
				s.Restart = append(s.Restart, u)
			}
		}
		return nil
	}
	for i, u := range s.Restart {
		at := doc.At("restart", i)
		switch {
		case unitType(u) == "socket":
			errs.Add(at.Errorf("restart: %s: a socket is never restarted (it keeps listening while its service restarts); name the .service", u))
		case unitType(u) != "service":
			errs.Add(at.Errorf("restart: %s: only .service units are restarted", u))
		case isTemplate(u):
			errs.Add(at.Errorf("restart: %s is a template; name its instances, such as %s", u, strings.Replace(u, "@.", "@1.", 1)))
		case !slices.Contains(s.Units, u) && !slices.Contains(s.Units, templateOf(u)):
			errs.Add(at.Errorf("restart: %s is not one of this service's units", u))
		}
	}
	return errs
}

func (s *Service) checkArtifacts(doc *yamldoc.Doc) yamldoc.Errors {
	var errs yamldoc.Errors
	names := map[string]bool{}
	for i := range s.Artifacts {
		a := &s.Artifacts[i]
		at := func(p ...any) yamldoc.Pos { return doc.At(append([]any{"artifacts", i}, p...)...) }
		if a.URL == "" {
			errs.Add(at().Errorf("artifacts: url: required"))
		}
		switch {
		case !doc.Has("artifacts", i, "sha256"):
			errs.Add(at().Errorf("artifacts: sha256: required: the artifact's SHA-256, 64 hex digits"))
		case !sha256RE.MatchString(a.SHA256):
			errs.Add(at("sha256").Errorf("artifacts: sha256: %q is not 64 lower-case hex digits", a.SHA256))
		}
		if a.Unpack == "" {
			a.Unpack = UnpackNone
		}
		switch a.Unpack {
		case UnpackNone:
			if a.Name == "" {
				a.Name = path.Base(strings.SplitN(a.URL, "?", 2)[0])
			}
			if !fileRE.MatchString(a.Name) {
				errs.Add(at("name").Errorf("artifacts: name: %q is not a plain file name; set name", a.Name))
			} else if names[a.Name] {
				errs.Add(at("name").Errorf("artifacts: two artifacts are named %q", a.Name))
			}
			names[a.Name] = true
		case UnpackTar, UnpackTarGz:
			if a.Name != "" {
				errs.Add(at("name").Errorf("artifacts: name: only for unpack: none (an archive unpacks its own names)"))
			}
		default:
			errs.Add(at("unpack").Errorf("artifacts: unpack: %q is not one of none, tar, tar.gz", a.Unpack))
		}
	}
	return errs
}

func (s *Service) checkDrain(doc *yamldoc.Doc) yamldoc.Errors {
	d := s.Drain
	if d == nil {
		return nil
	}
	var errs yamldoc.Errors
	switch {
	case d.HAProxy == nil && d.Exec == nil:
		errs.Add(doc.At("drain").Errorf("drain: set one of haproxy, exec"))
	case d.HAProxy != nil && d.Exec != nil:
		errs.Add(doc.At("drain").Errorf("drain: set only one of haproxy, exec"))
	case d.HAProxy != nil:
		h := d.HAProxy
		at := func(k string) yamldoc.Pos { return doc.At("drain", "haproxy", k) }
		if h.Socket == "" {
			errs.Add(at("socket").Errorf("drain.haproxy.socket: required: the runtime API's unix socket path or host:port"))
		} else if !path.IsAbs(h.Socket) && !isHostPort(h.Socket) {
			errs.Add(at("socket").Errorf("drain.haproxy.socket: %q is neither an absolute path nor host:port", h.Socket))
		}
		if h.Backend == "" {
			errs.Add(at("backend").Errorf("drain.haproxy.backend: required"))
		}
		if h.Server == "" {
			errs.Add(at("server").Errorf("drain.haproxy.server: required"))
		}
		if !doc.Has("drain", "haproxy", "timeout") {
			h.Timeout = yamldoc.Duration(DefaultDrainTimeout)
		}
	default:
		for _, k := range []string{"drain", "undrain"} {
			cmd := d.Exec.Drain
			if k == "undrain" {
				cmd = d.Exec.Undrain
			}
			if err := checkCommand(cmd); err != nil {
				errs.Add(doc.At("drain", "exec", k).Errorf("drain.exec.%s: %v", k, err))
			}
		}
		if d.Exec.User != "" || doc.Has("drain", "exec", "user") { // set, perhaps by a merge key
			if err := checkUser(d.Exec.User); err != nil {
				errs.Add(doc.At("drain", "exec", "user").Errorf("drain.exec.user: %v", err))
			}
		}
	}
	return errs
}

func (s *Service) checkChecks(doc *yamldoc.Doc) yamldoc.Errors {
	var errs yamldoc.Errors
	names := map[string]bool{}
	for i := range s.Checks {
		c := &s.Checks[i]
		switch {
		case !checkRE.MatchString(c.Name):
			errs.Add(doc.At("checks", i, "name").Errorf("checks: name: %q: use letters, digits and ._-", c.Name))
		case names[c.Name]:
			errs.Add(doc.At("checks", i, "name").Errorf("checks: %q is defined twice", c.Name))
		}
		names[c.Name] = true
		checkKind(doc, i, c, &errs)
		checkCadence(doc, i, c, &errs)
	}
	return errs
}

// checkKind checks that check i, c, is exactly one of http, tcp and exec, and
// the settings of that kind, adding what is wrong to errs; it sets the HTTP
// status expected when none is given.
func checkKind(doc *yamldoc.Doc, i int, c *Check, errs *yamldoc.Errors) {
	at := func(p ...any) yamldoc.Pos { return doc.At(append([]any{"checks", i}, p...)...) }
	var kinds []string
	if c.HTTP != nil {
		kinds = append(kinds, "http")
		if !doc.Has("checks", i, "http", "status") {
			c.HTTP.Status = DefaultHTTPStatus
		}
		if err := checkHTTPURL(c.HTTP.URL); err != nil {
			errs.Add(at("http", "url").Errorf("check %q: http.url: %v", c.Name, err))
		}
		if c.HTTP.Status < 100 || c.HTTP.Status > 599 {
			errs.Add(at("http", "status").Errorf("check %q: http.status: %d is not an HTTP status", c.Name, c.HTTP.Status))
		}
	}
	if c.TCP != nil {
		kinds = append(kinds, "tcp")
		if !isHostPort(c.TCP.Address) {
			errs.Add(at("tcp", "address").Errorf("check %q: tcp.address: %q is not host:port", c.Name, c.TCP.Address))
		}
	}
	if c.Exec != nil {
		kinds = append(kinds, "exec")
		if err := checkCommand(c.Exec.Command); err != nil {
			errs.Add(at("exec", "command").Errorf("check %q: exec.command: %v", c.Name, err))
		}
		if c.Exec.User != "" || doc.Has("checks", i, "exec", "user") {
			if err := checkUser(c.Exec.User); err != nil {
				errs.Add(at("exec", "user").Errorf("check %q: exec.user: %v", c.Name, err))
			}
		}
	}
	switch len(kinds) {
	case 0:
		errs.Add(at().Errorf("check %q: set one of http, tcp, exec", c.Name))
	case 1:
	default:
		errs.Add(at().Errorf("check %q: has %d kinds (%s); set exactly one", c.Name, len(kinds), strings.Join(kinds, ", ")))
	}
}

// checkCadence sets the defaults of check i, c, for how many results in a row
// decide (successes, failures) and how often and how long it probes (interval,
// timeout), and adds to errs what is wrong with the values given.
func checkCadence(doc *yamldoc.Doc, i int, c *Check, errs *yamldoc.Errors) {
	at := func(k string) yamldoc.Pos { return doc.At("checks", i, k) }
	has := func(k string) bool { return doc.Has("checks", i, k) }
	defaults := []struct {
		key string
		v   *int
		def int
	}{{"successes", &c.Successes, DefaultCheckSuccesses}, {"failures", &c.Failures, DefaultCheckFailures}}
	for _, d := range defaults {
		if !has(d.key) {
			*d.v = d.def
		} else if *d.v < 1 {
			errs.Add(at(d.key).Errorf("check %q: %s: must be at least 1, got %d", c.Name, d.key, *d.v))
		}
	}
	if !has("interval") {
		c.Interval = yamldoc.Duration(DefaultCheckInterval)
	} else if c.Interval <= 0 {
		errs.Add(at("interval").Errorf("check %q: interval: must be longer than 0", c.Name))
	}
	if !has("timeout") {
		c.Timeout = yamldoc.Duration(DefaultCheckTimeout)
	} else if c.Timeout <= 0 {
		errs.Add(at("timeout").Errorf("check %q: timeout: must be longer than 0", c.Name))
	}
}

// checkCommand checks an argv: not empty, and an absolute program path unless it is
// a template, which is checked again after rendering.
func checkCommand(argv []string) error {
	switch {
	case len(argv) == 0:
		return fmt.Errorf("required: a command and its arguments, as a list")
	case !path.IsAbs(argv[0]) && !strings.Contains(argv[0], "{{"):
		return fmt.Errorf("%q: the program must be an absolute path", argv[0])
	}
	return nil
}

func checkHTTPURL(s string) error {
	if strings.Contains(s, "{{") {
		return nil // checked after rendering
	}
	u, err := url.Parse(s)
	switch {
	case s == "":
		return fmt.Errorf("required")
	case err != nil:
		return fmt.Errorf("invalid URL %q", s)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%q: the scheme must be http or https", s)
	case u.Host == "":
		return fmt.Errorf("%q has no host", s)
	}
	return nil
}

func isHostPort(s string) bool {
	if strings.Contains(s, "{{") {
		return true // checked after rendering
	}
	host, port, err := net.SplitHostPort(s)
	return err == nil && host != "" && port != ""
}
