package testfleet

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/baton-fleet/baton/internal/testhaproxy"
)

// A bluegreen fleet (Options.BlueGreen) runs the demo service in two colors on every
// host, each a server of HAProxy's backend named <host>-<color>, behind cookie
// persistence.
const (
	// StickyCookie is the backend's cookie persistence with Options.Sticky or
	// BlueGreen: a client keeps its server, by name, until that server leaves.
	StickyCookie = "SRV insert indirect nocache"
	// DrainIdle and DrainTimeout are the bluegreen service's: the old color stops once
	// no request reached it for DrainIdle, at most DrainTimeout after the switch.
	DrainIdle    = 2 * time.Second
	DrainTimeout = 30 * time.Second
)

// Colors are the demo service's colors in a bluegreen fleet: their names and ports.
var Colors = []Color{{"blue", "8081"}, {"green", "8082"}}

// Color is one color of the bluegreen demo service.
type Color struct{ Name, Port string }

// blueGreenChecks is the demo service's health check, on each color's own port.
const blueGreenChecks = `checks:
  - name: health
    http: {url: "http://127.0.0.1:{{ .Port }}/healthz", contains: ok}
    interval: 200ms
    timeout: 1s
    successes: 2
    failures: 3
`

// haproxyServers are the backend's servers: one per host, or one per color of each
// host in a bluegreen fleet.
func (f *Fleet) haproxyServers() []testhaproxy.Server {
	var servers []testhaproxy.Server
	for _, h := range f.Hosts {
		if !f.opts.BlueGreen {
			servers = append(servers, testhaproxy.Server{Name: h.Name, Addr: h.IP + ":" + DemoPort, Check: true})
			continue
		}
		for _, c := range Colors {
			servers = append(servers, testhaproxy.Server{Name: h.Name + "-" + c.Name, Addr: h.IP + ":" + c.Port, Check: true})
		}
	}
	return servers
}

// cookie is the backend's cookie persistence, "" for none.
func (f *Fleet) cookie() string {
	if f.opts.Sticky || f.opts.BlueGreen {
		return StickyCookie
	}
	return ""
}

// blueGreenService is the deploy:, drain: and checks: of the bluegreen demo service,
// and its unit file, rendered per color.
func (f *Fleet) blueGreenService() (yaml, unit string) {
	yaml = "deploy:\n  strategy: bluegreen\n  colors:\n"
	for _, c := range Colors {
		yaml += fmt.Sprintf("    %s: {port: %s}\n", c.Name, c.Port)
	}
	yaml += fmt.Sprintf("  drainTimeout: %v\n  drainIdle: %v\n", DrainTimeout, DrainIdle)
	yaml += fmt.Sprintf("drain:\n  haproxy: {socket: %q, backend: %s, server: \"{{ .Host }}-{{ .Color }}\"}\n", f.LB.AdminTCP, Group)
	unit = DemoUnit("baton demo {{ .Version }} ({{ .Color }})", "{{ .Port }}", f.opts.ServiceFlags)
	return yaml + blueGreenChecks, unit
}

// servers are the host's servers in HAProxy's backend.
func (h *Host) servers() []string {
	if !h.blueGreen() {
		return []string{h.Name}
	}
	var out []string
	for _, c := range Colors {
		out = append(out, h.Name+"-"+c.Name)
	}
	return out
}

// readyColor is the color of a bluegreen host that HAProxy sends new clients to (the
// first ready one), false when none is.
func (h *Host) readyColor() (Color, bool) {
	for _, c := range Colors {
		st, err := h.fleet.haproxyState(h.Name + "-" + c.Name)
		if err == nil && st.Admin.String() == "ready" {
			return c, true
		}
	}
	return Color{}, false
}

// ColorState is what one color of a bluegreen host does: the version answering on its
// port ("" when none) and its server's admin state in HAProxy (ready, drain, maint).
type ColorState struct {
	Color
	Version, Admin string
}

// Colors are the host's colors, in the order of Colors.
func (h *Host) Colors() []ColorState {
	var out []ColorState
	for _, c := range Colors {
		st := ColorState{Color: c, Version: version(h.IP + ":" + c.Port)}
		if s, err := h.fleet.haproxyState(h.Name + "-" + c.Name); err == nil {
			st.Admin = s.Admin.String()
		}
		out = append(out, st)
	}
	return out
}

// ColorMemory is the resident memory of each color of the demo service that answers
// on its port now, by its own process_resident_memory_bytes. It is the processes'
// RSS, not systemd's MemoryCurrent: the test hosts do not account memory.
func (h *Host) ColorMemory() map[string]uint64 {
	out := map[string]uint64{}
	for _, c := range Colors {
		if b, ok := residentMemory(h.IP + ":" + c.Port); ok {
			out[c.Name] = b
		}
	}
	return out
}

// residentMemory reads process_resident_memory_bytes from the demo service at addr.
func residentMemory(addr string) (uint64, bool) {
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "process_resident_memory_bytes "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return uint64(f), err == nil
		}
	}
	return 0, false
}

// memorySample is the most memory that one color, and two colors of one host at
// once, used in a rollout.
type memorySample struct {
	one, two uint64
}

// add takes one host's ColorMemory.
func (m *memorySample) add(colors map[string]uint64) {
	var sum uint64
	for _, b := range colors {
		m.one = max(m.one, b)
		sum += b
	}
	if len(colors) == 2 {
		m.two = max(m.two, sum)
	}
}
