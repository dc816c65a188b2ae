package spec

import (
	"maps"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/baton-fleet/baton/internal/yamldoc"
)

// Strategies of deploy.strategy.
const (
	StrategyRestart   = "restart"   // the default: drain, restart the units in place, undrain
	StrategyBlueGreen = "bluegreen" // two colors of the units; the new one is checked, then switched to
)

// Defaults and bounds of a bluegreen deploy block.
const (
	DefaultSwitchDrainTimeout = 2 * time.Minute  // deploy.drainTimeout
	DefaultSwitchDrainIdle    = 10 * time.Second // deploy.drainIdle
	MaxSwitchDrainTimeout     = 24 * time.Hour
	MinSwitchDrainIdle        = 1 * time.Second
	maxColorName              = 32
)

var colorRE = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)

// Deploy is service.yaml's deploy block: how a new release replaces the running one.
// A service without the block has Deploy nil and is deployed by restart.
type Deploy struct {
	Strategy     string           `yaml:"strategy" json:"strategy"`
	Colors       map[string]Color `yaml:"colors" json:"colors,omitempty"`
	DrainTimeout yamldoc.Duration `yaml:"drainTimeout" json:"drainTimeout,omitempty"`
	DrainIdle    yamldoc.Duration `yaml:"drainIdle" json:"drainIdle,omitempty"`

	// ColorNames are the colors' names in the order service.yaml lists them.
	ColorNames []string `yaml:"-" json:"-"`
}

// Color is one of the two colors of a bluegreen service: where its copy listens.
type Color struct {
	Port int `yaml:"port" json:"port"`
}

// BlueGreen reports whether the service is deployed as two colors.
func (s *Service) BlueGreen() bool {
	return s.Deploy != nil && s.Deploy.Strategy == StrategyBlueGreen
}

// ColorUnit is the name under which a color of a bluegreen service runs one of its
// units: "shop.service" in color blue is "shop@blue.service", a unit file of its
// own (not an instance of a template), so that writing one color's file never
// touches the other's.
func ColorUnit(unit, color string) string {
	ext := path.Ext(unit)
	return strings.TrimSuffix(unit, ext) + "@" + color + ext
}

// ColorUnits returns the names every color of the service installs, color by color
// in ColorNames order; nil for a service that is not bluegreen.
func (s *Service) ColorUnits() []string {
	if !s.BlueGreen() {
		return nil
	}
	var out []string
	for _, c := range s.Deploy.ColorNames {
		for _, u := range s.Units {
			out = append(out, ColorUnit(u, c))
		}
	}
	return out
}

// checkDeploy checks the deploy block and fills in its defaults.
func (s *Service) checkDeploy(doc *yamldoc.Doc, opts LoadOptions) yamldoc.Errors {
	d := s.Deploy
	if d == nil {
		return nil
	}
	var errs yamldoc.Errors
	at := func(p ...any) yamldoc.Pos { return doc.At(append([]any{"deploy"}, p...)...) }
	switch d.Strategy {
	case "":
		d.Strategy = StrategyRestart
	case StrategyRestart, StrategyBlueGreen:
	default:
		errs.Add(at("strategy").Errorf("deploy.strategy: %q is not one of restart, bluegreen", d.Strategy))
		return errs
	}
	if d.Strategy == StrategyRestart {
		for _, k := range []string{"colors", "drainTimeout", "drainIdle"} {
			if doc.Has("deploy", k) {
				errs.Add(at(k).Errorf("deploy.%s: only for strategy: bluegreen; this service is deployed by restart", k))
			}
		}
		return errs
	}
	errs = append(errs, d.checkColors(doc)...)
	errs = append(errs, d.checkDrainTimes(doc)...)
	errs = append(errs, s.checkBlueGreenUnits(doc)...)
	switch {
	case s.Drain == nil:
		errs.Add(at("strategy").Errorf("deploy.strategy: bluegreen needs drain.haproxy: the switch from one color to the other is made in the load balancer"))
	case s.Drain.Exec != nil:
		errs.Add(doc.At("drain", "exec").Errorf("drain.exec: bluegreen needs drain.haproxy: the switch and the wait for the old color's sessions use HAProxy's runtime API"))
	case doc.Has("drain", "haproxy", "timeout"):
		errs.Add(doc.At("drain", "haproxy", "timeout").Errorf("drain.haproxy.timeout: not for bluegreen, whose old color drains for deploy.drainIdle, at most deploy.drainTimeout"))
	case s.Drain.HAProxy != nil:
		s.Drain.HAProxy.Timeout = d.DrainTimeout // the bound of each color's drain
	}
	return errs
}

// checkColors checks that there are exactly two colors, well named, on distinct
// ports, and records their order.
func (d *Deploy) checkColors(doc *yamldoc.Doc) yamldoc.Errors {
	var errs yamldoc.Errors
	d.ColorNames = doc.Keys("deploy", "colors")
	for _, name := range slices.Sorted(maps.Keys(d.Colors)) {
		if !slices.Contains(d.ColorNames, name) { // from a merge key
			d.ColorNames = append(d.ColorNames, name)
		}
	}
	if len(d.ColorNames) != 2 {
		errs.Add(doc.At("deploy", "colors").Errorf("deploy.colors: bluegreen needs exactly two colors, such as blue: {port: 8081} and green: {port: 8082}; got %d", len(d.ColorNames)))
	}
	ports := map[int]string{}
	for _, name := range d.ColorNames {
		at := func(p ...any) yamldoc.Pos { return doc.At(append([]any{"deploy", "colors", name}, p...)...) }
		switch {
		case len(name) > maxColorName:
			errs.Add(at().Errorf("deploy.colors: %q is longer than %d characters", name, maxColorName))
		case !colorRE.MatchString(name):
			errs.Add(at().Errorf("deploy.colors: %q: a color is named with lower-case letters, digits and '-', starting with a letter", name))
		}
		port := d.Colors[name].Port
		switch other, dup := ports[port]; {
		case !doc.Has("deploy", "colors", name, "port"):
			errs.Add(at().Errorf("deploy.colors.%s.port: required: the port this color's copy listens on", name))
		case port < 1 || port > 65535:
			errs.Add(at("port").Errorf("deploy.colors.%s.port: %d is not a port (1-65535)", name, port))
		case dup:
			errs.Add(at("port").Errorf("deploy.colors.%s.port: %d is also the port of %s; the two colors run side by side and need a port each", name, port, other))
		}
		ports[port] = name
	}
	return errs
}

// checkDrainTimes fills in and bounds drainTimeout and drainIdle.
func (d *Deploy) checkDrainTimes(doc *yamldoc.Doc) yamldoc.Errors {
	var errs yamldoc.Errors
	if !doc.Has("deploy", "drainTimeout") {
		d.DrainTimeout = yamldoc.Duration(DefaultSwitchDrainTimeout)
	} else if t := d.DrainTimeout.D(); t < MinSwitchDrainIdle || t > MaxSwitchDrainTimeout {
		errs.Add(doc.At("deploy", "drainTimeout").Errorf("deploy.drainTimeout: %s is not between %s and %s", t, MinSwitchDrainIdle, MaxSwitchDrainTimeout))
	}
	if !doc.Has("deploy", "drainIdle") {
		d.DrainIdle = yamldoc.Duration(min(DefaultSwitchDrainIdle, d.DrainTimeout.D()))
	} else if i := d.DrainIdle.D(); i < MinSwitchDrainIdle || i > d.DrainTimeout.D() {
		errs.Add(doc.At("deploy", "drainIdle").Errorf("deploy.drainIdle: %s is not between %s and drainTimeout (%s)", i, MinSwitchDrainIdle, d.DrainTimeout))
	}
	return errs
}

// checkBlueGreenUnits checks that every unit can run once per color: a plain
// .service, not a socket (which would hold the port both colors need in turn), not
// a template or an instance (the color is the instance).
func (s *Service) checkBlueGreenUnits(doc *yamldoc.Doc) yamldoc.Errors {
	var errs yamldoc.Errors
	for i, u := range s.Units {
		at := doc.At("units", i)
		switch {
		case unitType(u) == "socket":
			errs.Add(at.Errorf("units: %s: bluegreen runs each color on its own port, so no socket can hold the port across a switch; listen in the service, on {{ .Port }}", u))
		case unitType(u) != "service":
			errs.Add(at.Errorf("units: %s: bluegreen runs .service units once per color; ship a .%s in a service deployed by restart", u, unitType(u)))
		case strings.Contains(u, "@"):
			errs.Add(at.Errorf("units: %s: bluegreen names each color's copy %s; a unit of a bluegreen service has no @", u, ColorUnit(strings.SplitN(u, "@", 2)[0]+path.Ext(u), "<color>")))
		}
	}
	if doc.Has("restart") {
		errs.Add(doc.At("restart").Errorf("restart: not for bluegreen, which starts the new color and stops the old one instead of restarting"))
	}
	return errs
}

// checkColorUnitNames checks the names each color's units are installed under, as
// parseService checks the names of units: valid, and not reserved unless opts
// allows them.
func (s *Service) checkColorUnitNames(doc *yamldoc.Doc, opts LoadOptions) yamldoc.Errors {
	if !s.BlueGreen() {
		return nil
	}
	var errs yamldoc.Errors
	for i, u := range s.Units {
		if strings.Contains(u, "@") || unitType(u) != "service" {
			continue // refused by checkBlueGreenUnits
		}
		for _, c := range s.Deploy.ColorNames {
			name := ColorUnit(u, c)
			if !colorRE.MatchString(c) {
				continue // refused by checkColors
			}
			if err := CheckUnitName(name); err != nil {
				errs.Add(doc.At("units", i).Errorf("units: %s in color %s: %v", u, c, err))
			} else if reason, reserved := opts.reserved(name); reserved {
				errs.Add(doc.At("units", i).Errorf("units: %s in color %s runs as %s, which is reserved: %s", u, c, name, reason))
			}
		}
	}
	return errs
}

// colorVars are the variables of one color of a bluegreen service.
func (v Vars) color(name string, c Color) Vars {
	v.Color, v.Port = name, c.Port
	return v
}

// checkColorsDiffer refuses a bluegreen drain whose server renders alike for both
// colors: the switch would set one server ready and drain it at once.
func checkColorsDiffer(s *Service, colors []RenderedColor) *yamldoc.Error {
	if len(colors) != 2 || colors[0].Drain == nil || colors[0].Drain.HAProxy == nil {
		return nil
	}
	a, b := colors[0].Drain.HAProxy, colors[1].Drain.HAProxy
	if a.Backend+"/"+a.Server != b.Backend+"/"+b.Server {
		return nil
	}
	e := s.doc.At("drain", "haproxy", "server").Errorf(
		"drain.haproxy.server: both colors render to %s/%s; name each color's server, such as \"{{ .Host }}-{{ .Color }}\"", a.Backend, a.Server)
	return &e
}
