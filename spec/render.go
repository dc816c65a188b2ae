package spec

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"

	"github.com/baton-fleet/baton/internal/yamldoc"
)

// Vars are the values unit files and service.yaml templates see.
type Vars struct {
	Version  string // the service's version
	Host     string // the host's name
	Group    string // the host's group
	Service  string // the service's name
	Revision string // the fleet repository commit
	Release  string // absolute path of this version's release directory
	Color    string // bluegreen: the color rendered (units, drain, checks); "" otherwise
	Port     int    // bluegreen: that color's port; 0 otherwise
}

// Rendered is a service as one host runs it: templates filled in, unit files parsed.
type Rendered struct {
	Service               // a copy, with every template field rendered
	Vars        Vars      // what the templates saw
	ReleaseID   string    // <version>-<digest>: the release directory's name
	Fingerprint string    // the release as every host renders it, see Service.Fingerprint
	Units       UnitFiles // the rendered unit files; nil for bluegreen (see Colors)

	// Colors are the two colors of a bluegreen service, in the order service.yaml
	// lists them; nil for a service deployed by restart.
	Colors []RenderedColor
}

// RenderedColor is one color of a bluegreen service as one host runs it.
type RenderedColor struct {
	Name   string    // as deploy.colors names it
	Port   int       // where this color's copy listens
	Vars   Vars      // what its templates saw
	Units  UnitFiles // its unit files, by ColorUnit name: shop@blue.service
	Drain  *Drain    // its server in the load balancer
	Checks []Check   // run against this color directly, on its port
}

// Color returns the rendered color of that name.
func (r *Rendered) Color(name string) (*RenderedColor, bool) {
	for i := range r.Colors {
		if r.Colors[i].Name == name {
			return &r.Colors[i], true
		}
	}
	return nil, false
}

// OtherColor returns the color that is not name: the idle one when name is active.
func (r *Rendered) OtherColor(name string) (*RenderedColor, bool) {
	if _, ok := r.Color(name); !ok || len(r.Colors) != 2 {
		return nil, false
	}
	if r.Colors[0].Name == name {
		return &r.Colors[1], true
	}
	return &r.Colors[0], true
}

// UnitFiles maps unit names to their rendered content.
type UnitFiles map[string][]byte

// Names returns the unit names in order.
func (u UnitFiles) Names() []string { return slices.Sorted(maps.Keys(u)) }

// ReleaseDigits is how many hex digits of the artifacts' digest a release directory's
// name keeps: 64 bits, so that no repository can make two releases of a version share
// a directory by searching for a collision. (Names of 8 digits, from baton before it,
// are left to the pruning of old releases.)
const ReleaseDigits = 16

// ReleaseID names a version's release directory: the version, then the first
// ReleaseDigits hex digits of the SHA-256 of its artifacts' digests, so that
// re-publishing a version with other artifacts never reuses a directory.
func (s *Service) ReleaseID() string {
	h := sha256.New()
	for _, a := range s.Artifacts {
		fmt.Fprintln(h, a.SHA256)
	}
	return s.Version + "-" + hex.EncodeToString(h.Sum(nil))[:ReleaseDigits]
}

// ReleaseDir is where the service's current version lives under the state directory.
func (s *Service) ReleaseDir(stateDir string) string {
	return filepath.Join(stateDir, "releases", s.Name, s.ReleaseID())
}

// Render fills in the service's templates with v (Version, Service and Release are
// set from the service itself when empty; Color and Port are set per color) and
// parses every rendered unit file. A service deployed by restart is rendered once,
// into Units, Drain and Checks; a bluegreen one once per color, into Colors, with
// Units, Drain, Checks and Restart left empty. Its errors are a yamldoc.Errors
// naming the file and line of each template at fault.
func (s *Service) Render(v Vars) (*Rendered, error) {
	if v.Version == "" {
		v.Version = s.Version
	}
	if v.Service == "" {
		v.Service = s.Name
	}
	v.Color, v.Port = "", 0
	r := &Rendered{Service: *s, Vars: v, ReleaseID: s.ReleaseID(), Fingerprint: s.Fingerprint()}
	var errs yamldoc.Errors
	ren := &renderer{vars: v, doc: s.doc, errs: &errs}
	r.Artifacts = ren.artifacts(s.Artifacts)
	if s.BlueGreen() {
		r.Drain, r.Checks = nil, nil
		for _, name := range s.Deploy.ColorNames {
			cv := v.color(name, s.Deploy.Colors[name])
			cren := &renderer{vars: cv, doc: s.doc, errs: &errs}
			r.Colors = append(r.Colors, RenderedColor{
				Name: name, Port: cv.Port, Vars: cv,
				Units:  cren.units(s, name),
				Drain:  cren.drain(s.Drain),
				Checks: cren.checks(s.Checks),
			})
		}
		if e := checkColorsDiffer(s, r.Colors); e != nil {
			errs.Add(*e)
		}
	} else {
		r.Drain = ren.drain(s.Drain)
		r.Checks = ren.checks(s.Checks)
		r.Units = ren.units(s, "")
	}
	// The analysis reads the host as its clients see it, whatever color serves: it
	// is rendered once, with the host's variables.
	r.Analysis = ren.renderAnalysis(s.Analysis)
	r.Migrations = renderMigrations(s, v, &errs)
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *renderer) artifacts(in []Artifact) []Artifact {
	out := slices.Clone(in)
	for i := range out {
		a := &out[i]
		a.URL = r.str(a.URL, "artifacts", i, "url")
		if a.URL != "" {
			if err := checkHTTPURL(a.URL); err != nil {
				r.errs.Add(r.doc.At("artifacts", i, "url").Errorf("artifacts: url: %v", err))
			}
		}
	}
	return out
}

func (r *renderer) drain(d *Drain) *Drain {
	if d == nil {
		return nil
	}
	out := &Drain{}
	if h := d.HAProxy; h != nil {
		out.HAProxy = &HAProxyDrain{
			Socket:  r.str(h.Socket, "drain", "haproxy", "socket"),
			Backend: r.str(h.Backend, "drain", "haproxy", "backend"),
			Server:  r.str(h.Server, "drain", "haproxy", "server"),
			Timeout: h.Timeout,
		}
	}
	if e := d.Exec; e != nil {
		out.Exec = &ExecDrain{
			Drain:   r.argv(e.Drain, "drain", "exec", "drain"),
			Undrain: r.argv(e.Undrain, "drain", "exec", "undrain"),
			User:    e.User,
		}
	}
	return out
}

func (r *renderer) checks(in []Check) []Check {
	out := slices.Clone(in)
	for i := range out {
		c := &out[i]
		if c.HTTP != nil {
			h := *c.HTTP
			h.URL = r.str(h.URL, "checks", i, "http", "url")
			h.Contains = r.str(h.Contains, "checks", i, "http", "contains")
			if err := checkHTTPURL(h.URL); err != nil && h.URL != "" { // "": the template failed
				r.errs.Add(r.doc.At("checks", i, "http", "url").Errorf("check %q: http.url: %v", c.Name, err))
			}
			c.HTTP = &h
		}
		if c.TCP != nil {
			t := TCPCheck{Address: r.str(c.TCP.Address, "checks", i, "tcp", "address")}
			if !isHostPort(t.Address) && t.Address != "" { // "": the template failed
				r.errs.Add(r.doc.At("checks", i, "tcp", "address").Errorf("check %q: tcp.address: %q is not host:port", c.Name, t.Address))
			}
			c.TCP = &t
		}
		if c.Exec != nil {
			c.Exec = &ExecCheck{Command: r.argv(c.Exec.Command, "checks", i, "exec", "command"), User: c.Exec.User}
		}
	}
	return out
}

// units renders and checks the service's unit files, named for color when it is
// not "" (see ColorUnit).
func (r *renderer) units(s *Service, color string) UnitFiles {
	out := UnitFiles{}
	for _, name := range s.Units {
		text, ok := s.UnitFiles[name]
		if !ok {
			continue // reported by parseService
		}
		file := path.Join("services", s.Name, name)
		if color != "" {
			name = ColorUnit(name, color)
		}
		data, err := renderTemplate(file, text, r.vars)
		if err != nil {
			r.errs.Add(*err)
			continue
		}
		if e := checkUnit(file, name, data); e != nil {
			r.errs.Add(*e)
			continue
		}
		out[name] = data
	}
	return out
}

type renderer struct {
	vars any // Vars, or MigrationVars
	doc  *yamldoc.Doc
	errs *yamldoc.Errors
}

// str renders one template field of service.yaml, found at path.
func (r *renderer) str(s string, path ...any) string {
	if !strings.Contains(s, "{{") {
		return s
	}
	out, err := renderTemplate(r.doc.File, s, r.vars)
	if err != nil {
		r.errs.Add(r.doc.At(path...).Errorf("%s: %s", fieldName(path), err.Msg))
		return ""
	}
	return string(out)
}

func (r *renderer) argv(argv []string, path ...any) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = r.str(a, append(slices.Clone(path), i)...)
	}
	if len(out) > 0 && out[0] != "" && !filepath.IsAbs(out[0]) {
		r.errs.Add(r.doc.At(path...).Errorf("%s: %q: the program must be an absolute path", fieldName(path), out[0]))
	}
	return out
}

func fieldName(path []any) string {
	var parts []string
	for _, p := range path {
		if s, ok := p.(string); ok {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, ".")
}

var (
	templateErrRE = regexp.MustCompile(`^template: [^:]*:(\d+):(?:\d+:)? ?(.*)$`)
	unknownVarRE  = regexp.MustCompile(`^executing "[^"]*" at <[^>]*>: can't evaluate field (\w+) in type spec\.(?:Vars|MigrationVars)$`)
)

// renderTemplate executes text as a Go template over v (Vars or MigrationVars); any
// reference to a variable that does not exist is an error. The error's line is the
// template's own line.
func renderTemplate(file, text string, v any) ([]byte, *yamldoc.Error) {
	fail := func(err error) *yamldoc.Error {
		e := &yamldoc.Error{File: file, Msg: "template: " + err.Error()}
		if g := templateErrRE.FindStringSubmatch(err.Error()); g != nil {
			e.Line, _ = strconv.Atoi(g[1])
			e.Msg = "template: " + g[2]
			if u := unknownVarRE.FindStringSubmatch(g[2]); u != nil {
				e.Msg = fmt.Sprintf("template: unknown variable .%s; there are %s", u[1], varNames(v))
			}
		}
		return e
	}
	t, err := template.New(path.Base(file)).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fail(err)
	}
	if hv, ok := v.(Vars); !ok || hv.Color == "" {
		if e := refuseColorVars(file, text, t); e != nil {
			return nil, e
		}
	}
	var b bytes.Buffer
	if err := t.Execute(&b, v); err != nil {
		return nil, fail(err)
	}
	return b.Bytes(), nil
}

// varNames lists the variables a template over v sees, for errors.
func varNames(v any) string {
	if _, ok := v.(MigrationVars); ok {
		return ".Version .Service .Revision .Release (a migration runs once for the whole fleet: nothing of a host)"
	}
	return ".Version .Host .Group .Service .Revision .Release, and .Color .Port for bluegreen"
}

// sectionFor is the section that holds a unit type's own settings.
var sectionFor = map[string]string{
	"service": "Service", "socket": "Socket", "timer": "Timer", "path": "Path", "mount": "Mount",
	"automount": "Automount", "swap": "Swap", "slice": "Slice", "target": "",
}

// checkUnit reads a rendered unit file as systemd does (readUnit) and checks what
// systemd would otherwise only warn about, or refuse at start: a line it would
// ignore, a misspelt section, a service with nothing to run, a socket or timer with
// nothing to do. It refuses first any line that another reader could read otherwise
// (lintUnit), and the [Install] settings that would make enabling the unit act on
// other units (Alias=, Also=).
func checkUnit(file, name string, data []byte) *yamldoc.Error {
	if n, msg := lintUnit(data); n > 0 {
		return &yamldoc.Error{File: file, Line: n, Msg: "ambiguous unit file: " + msg}
	}
	sections, problems := readUnit(data)
	if len(problems) > 0 {
		return &yamldoc.Error{File: file, Line: problems[0].Line, Msg: "not a valid unit file: expected [Section], Key=value, or a comment"}
	}
	own := sectionFor[unitType(name)]
	has := map[string]bool{}
	ownLine := 0
	for _, sec := range sections {
		switch {
		case sec.Name == own && own != "":
			if ownLine == 0 {
				ownLine = sec.Line
			}
		case sec.Name == "Unit", sec.Name == "Install", strings.HasPrefix(sec.Name, "X-"):
		default:
			want := "[Unit], [Install]"
			if own != "" {
				want += ", [" + own + "]"
			}
			return &yamldoc.Error{File: file, Line: sec.Line, Msg: fmt.Sprintf("unknown section [%s] in a .%s unit; expected %s", sec.Name, unitType(name), want)}
		}
		for _, e := range sec.Settings {
			has[sec.Name+"."+e.Key] = true
			if sec.Name != "Install" || e.Value == "" {
				continue
			}
			switch e.Key {
			case "Alias":
				return &yamldoc.Error{File: file, Line: e.Line, Msg: aliasRefused(e.Value)}
			case "Also":
				return &yamldoc.Error{File: file, Line: e.Line, Msg: alsoRefused(e.Value)}
			}
		}
	}
	var missing string
	switch unitType(name) {
	case "service":
		if !has["Service.ExecStart"] && !has["Service.ExecStop"] {
			missing = "a [Service] section with ExecStart="
		}
	case "socket":
		if !slices.ContainsFunc([]string{"ListenStream", "ListenDatagram", "ListenSequentialPacket", "ListenFIFO", "ListenSpecial", "ListenNetlink", "ListenMessageQueue", "ListenUSBFunction"},
			func(k string) bool { return has["Socket."+k] }) {
			missing = "a [Socket] section with a Listen...= setting"
		}
	case "timer":
		if !slices.ContainsFunc([]string{"OnActiveSec", "OnBootSec", "OnStartupSec", "OnUnitActiveSec", "OnUnitInactiveSec", "OnCalendar"},
			func(k string) bool { return has["Timer."+k] }) {
			missing = "a [Timer] section with an On...= setting"
		}
	}
	if missing != "" {
		return &yamldoc.Error{File: file, Line: ownLine, Msg: fmt.Sprintf("%s needs %s", name, missing)}
	}
	return nil
}

// aliasRefused is the error for an [Install] Alias= setting. Enabling the unit would
// make a symlink under each alias name in the unit directory, which comes before the
// vendor directories: the unit would take over the unit of that name (ssh.service,
// dbus-org.freedesktop.login1.service, ...) without ever being listed under it, out of
// reach of the reserved names and of baton's unit ownership.
func aliasRefused(value string) string {
	names := strings.Fields(value)
	return fmt.Sprintf("[Install] Alias=%s is refused: an alias is a symlink under another unit's name, so enabling this unit would take over %s; ship the unit under that name in units instead",
		strings.Join(names, " "), strings.Join(names, ", "))
}

// alsoRefused is the error for an [Install] Also= setting. Enabling or disabling the
// unit would enable or disable the units it names as well (Also=ssh.service disables
// SSH with the unit; Also=debug-shell.service enables a root shell on a console):
// units baton does not own, out of reach of its unit ownership.
func alsoRefused(value string) string {
	names := strings.Fields(value)
	return fmt.Sprintf("[Install] Also=%s is refused: enabling or disabling this unit would enable or disable %s too, which baton does not own; list the units this service needs in units instead",
		strings.Join(names, " "), strings.Join(names, ", "))
}

// refuseColorVars is the error for a template that uses .Color or .Port where they
// are not set: outside the units, drain and checks of a bluegreen service.
func refuseColorVars(file, text string, t *template.Template) *yamldoc.Error {
	for _, tt := range t.Templates() {
		if tt.Tree == nil {
			continue
		}
		if name, offset, ok := colorVar(tt.Root); ok && offset <= len(text) {
			return &yamldoc.Error{File: file, Line: 1 + strings.Count(text[:offset], "\n"),
				Msg: fmt.Sprintf("template: .%s is set only in the units, drain and checks of a service with deploy.strategy: bluegreen", name)}
		}
	}
	return nil
}

// colorVar finds the first use of .Color or .Port (or $.Color, $.Port) in a
// template's parse tree, and its byte offset in the text.
func colorVar(n parse.Node) (name string, offset int, ok bool) {
	if n == nil || reflect.ValueOf(n).IsNil() {
		return "", 0, false
	}
	var children []parse.Node
	switch n := n.(type) {
	case *parse.FieldNode:
		return colorIdent(n.Ident, n.Pos)
	case *parse.VariableNode:
		if len(n.Ident) > 1 && n.Ident[0] == "$" {
			return colorIdent(n.Ident[1:], n.Pos)
		}
	case *parse.ListNode:
		children = append(children, n.Nodes...)
	case *parse.ActionNode:
		children = append(children, n.Pipe)
	case *parse.PipeNode:
		for _, c := range n.Cmds {
			children = append(children, c)
		}
	case *parse.CommandNode:
		children = append(children, n.Args...)
	case *parse.ChainNode:
		children = append(children, n.Node)
	case *parse.IfNode:
		children = append(children, n.Pipe, n.List, n.ElseList)
	case *parse.RangeNode:
		children = append(children, n.Pipe, n.List, n.ElseList)
	case *parse.WithNode:
		children = append(children, n.Pipe, n.List, n.ElseList)
	case *parse.TemplateNode:
		children = append(children, n.Pipe)
	}
	for _, c := range children {
		if name, offset, ok := colorVar(c); ok {
			return name, offset, true
		}
	}
	return "", 0, false
}

func colorIdent(ident []string, pos parse.Pos) (string, int, bool) {
	if len(ident) > 0 && (ident[0] == "Color" || ident[0] == "Port") {
		return ident[0], int(pos), true
	}
	return "", 0, false
}
