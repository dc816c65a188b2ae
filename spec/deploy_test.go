package spec

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func loadBlueGreen(t *testing.T) *Repo { t.Helper(); return loadDir(t, "testdata/bluegreen") }

// TestBlueGreenParse loads a bluegreen service: the colors keep the order of the
// file, the defaults fill in, restart stays empty, and an explicit strategy:
// restart leaves a service as it was.
func TestBlueGreenParse(t *testing.T) {
	r := loadBlueGreen(t)
	shop := r.Services["shop"]
	if !shop.BlueGreen() {
		t.Fatalf("shop is not bluegreen: %+v", shop.Deploy)
	}
	d := shop.Deploy
	if got := strings.Join(d.ColorNames, ","); got != "green,blue" {
		t.Errorf("ColorNames = %q, want the file's order green,blue", got)
	}
	if d.Colors["blue"].Port != 8081 || d.Colors["green"].Port != 8082 {
		t.Errorf("Colors = %+v", d.Colors)
	}
	if d.DrainTimeout.D() != DefaultSwitchDrainTimeout || d.DrainIdle.D() != 5*time.Second {
		t.Errorf("drainTimeout %s, drainIdle %s; want the default %s and the 5s given", d.DrainTimeout, d.DrainIdle, DefaultSwitchDrainTimeout)
	}
	if shop.Restart != nil {
		t.Errorf("Restart = %q, want none for bluegreen", shop.Restart)
	}
	if got := strings.Join(shop.ColorUnits(), ","); got != "shop@green.service,shop@blue.service" {
		t.Errorf("ColorUnits = %q", got)
	}
	cron := r.Services["cron"]
	if cron.BlueGreen() || cron.Deploy.Strategy != StrategyRestart || strings.Join(cron.Restart, ",") != "cron-job.service" || cron.ColorUnits() != nil {
		t.Errorf("cron (strategy: restart) = %+v, restart %q", cron.Deploy, cron.Restart)
	}
}

func TestBlueGreenDrainIdleDefault(t *testing.T) {
	fsys := repoFS(map[string]string{
		"services/shop/service.yaml": `version: "1"
units: [shop.service]
deploy: {strategy: bluegreen, colors: {a: {port: 1}, b: {port: 2}}, drainTimeout: 3s}
drain: {haproxy: {socket: /run/h.sock, backend: web, server: "s-{{ .Color }}"}}
`,
		"services/shop/shop.service": "[Service]\nExecStart=/bin/true {{ .Port }}\n",
	})
	r, err := Load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	if d := r.Services["shop"].Deploy; d.DrainTimeout.D() != 3*time.Second || d.DrainIdle.D() != 3*time.Second {
		t.Errorf("drainTimeout %s, drainIdle %s: want drainIdle's default cut to a shorter drainTimeout", d.DrainTimeout, d.DrainIdle)
	}
}

// TestBlueGreenForHostGolden renders the bluegreen repository for one host: each
// color's units under their own names with the color's port, drain server and
// checks; testdata/bluegreen-web-01.golden holds the result.
func TestBlueGreenForHostGolden(t *testing.T) {
	hs, got := renderWeb01(t, loadBlueGreen(t))
	golden(t, "testdata/bluegreen-web-01.golden", got)

	shop := hs.Services[0]
	if shop.Units != nil || shop.Drain != nil || shop.Checks != nil || len(shop.Colors) != 2 {
		t.Fatalf("bluegreen rendered: units %v, drain %v, checks %v, %d colors; want only colors", shop.Units, shop.Drain, shop.Checks, len(shop.Colors))
	}
	for _, tt := range []struct{ color, other, server, unit, listen string }{
		{"green", "blue", "web-01-green", "shop@green.service", "127.0.0.1:8082 -color green"},
		{"blue", "green", "web-01-blue", "shop@blue.service", "127.0.0.1:8081 -color blue"},
	} {
		c, ok := shop.Color(tt.color)
		if !ok {
			t.Fatalf("no color %s", tt.color)
		}
		if o, ok := shop.OtherColor(tt.color); !ok || o.Name != tt.other {
			t.Errorf("OtherColor(%s) = %v, %v; want %s", tt.color, o, ok, tt.other)
		}
		if c.Drain.HAProxy.Server != tt.server {
			t.Errorf("%s: drain server %q, want %q", tt.color, c.Drain.HAProxy.Server, tt.server)
		}
		if got := c.Units.Names(); !slices.Equal(got, []string{tt.unit}) || !strings.Contains(string(c.Units[tt.unit]), tt.listen) {
			t.Errorf("%s: units %v: %s; want %s listening on %s", tt.color, got, c.Units[tt.unit], tt.unit, tt.listen)
		}
		if port := ":" + strconv.Itoa(c.Port); !strings.Contains(c.Checks[0].HTTP.URL, port) || !strings.HasSuffix(c.Checks[1].TCP.Address, port) || c.Checks[2].Exec.Command[2] != strconv.Itoa(c.Port) {
			t.Errorf("%s: checks not rendered for port %d: %+v %+v %+v", tt.color, c.Port, c.Checks[0].HTTP, c.Checks[1].TCP, c.Checks[2].Exec)
		}
		if c.Checks[0].HTTP.Contains != tt.color || c.Vars.Color != tt.color || c.Vars.Host != "web-01" {
			t.Errorf("%s: vars %+v, contains %q", tt.color, c.Vars, c.Checks[0].HTTP.Contains)
		}
	}
	if _, ok := shop.OtherColor("red"); ok {
		t.Errorf("OtherColor of an unknown color found one")
	}
	if hs.Services[1].Colors != nil || len(hs.Services[1].Units) != 1 {
		t.Errorf("restart service rendered %+v", hs.Services[1])
	}
}

// TestFingerprintCoversDeploy: a change to the deploy block is a new release; a
// service without one has the fingerprint it had before deploy existed.
func TestFingerprintCoversDeploy(t *testing.T) {
	r := loadBlueGreen(t)
	shop := r.Services["shop"]
	base := shop.Fingerprint()
	for _, change := range []func(d *Deploy){
		func(d *Deploy) { d.DrainIdle *= 2 },
		func(d *Deploy) { d.DrainTimeout *= 2 },
		func(d *Deploy) { d.Colors["blue"] = Color{Port: 9000} },
		func(d *Deploy) { d.Strategy = StrategyRestart },
	} {
		c := *shop
		d := *shop.Deploy
		d.Colors = map[string]Color{"blue": d.Colors["blue"], "green": d.Colors["green"]}
		change(&d)
		c.Deploy = &d
		if c.Fingerprint() == base {
			t.Errorf("deploy %+v has the fingerprint of %+v", d, *shop.Deploy)
		}
	}
	api := loadExample(t).Services["api"]
	j, _ := json.Marshal(api)
	if strings.Contains(string(j), "deploy") {
		t.Errorf("a service without deploy marshals one, so every fingerprint changed: %s", j)
	}
}

func TestColorUnit(t *testing.T) {
	for in, want := range map[[2]string]string{
		{"shop.service", "blue"}:     "shop@blue.service",
		{"shop-api.service", "g-2"}:  "shop-api@g-2.service",
		{"a.b.service", "green"}:     "a.b@green.service",
		{"worker.service", "canary"}: "worker@canary.service",
	} {
		if got := ColorUnit(in[0], in[1]); got != want {
			t.Errorf("ColorUnit(%q, %q) = %q, want %q", in[0], in[1], got, want)
		}
		if err := CheckUnitName(want); err != nil {
			t.Errorf("%s: %v", want, err)
		}
	}
}

// TestColorVarsOnlyForBlueGreen: .Color and .Port are refused, at the template's
// line, however a restart service's template reaches them.
func TestColorVarsOnlyForBlueGreen(t *testing.T) {
	for _, tt := range []struct {
		text string
		line int
		name string
	}{
		{"{{ .Port }}", 1, "Port"},
		{"a\nb {{ .Color }}", 2, "Color"},
		{"{{ if .Host }}\n\n{{ .Color }}{{ end }}", 3, "Color"},
		{"{{ with .Host }}{{ $.Port }}{{ end }}", 1, "Port"},
		{"{{ range $i, $x := .Host }}{{ else }}\n{{ printf \"%d\" .Port }}{{ end }}", 2, "Port"},
		{"{{ define \"x\" }}\n{{ .Color }}{{ end }}{{ template \"x\" . }}", 2, "Color"},
		{"{{ (.Color) }}", 1, "Color"},
	} {
		_, err := renderTemplate("f", tt.text, Vars{Host: "h"})
		if err == nil || err.Line != tt.line || !strings.Contains(err.Msg, "."+tt.name+" is set only") {
			t.Errorf("renderTemplate(%q) = %v, want .%s refused at line %d", tt.text, err, tt.name, tt.line)
		}
		if _, err := renderTemplate("f", strings.ReplaceAll(tt.text, "range $i, $x := .Host", "range $i, $x := .Version"), Vars{Host: "h", Version: "", Color: "blue", Port: 1}); err != nil && strings.Contains(err.Msg, "is set only") {
			t.Errorf("renderTemplate(%q) with a color: %v", tt.text, err)
		}
	}
	for _, ok := range []string{"{{ .Host }}", "Color=blue Port=1", "{{ \".Color\" }}", "{{ $Color := 1 }}{{ $Color }}"} {
		if _, err := renderTemplate("f", ok, Vars{Host: "h"}); err != nil {
			t.Errorf("renderTemplate(%q): %v", ok, err)
		}
	}
}

// repoFS is a repository of group web (hosts web-*) running service shop, with files.
func repoFS(files map[string]string) fstest.MapFS {
	fsys := fstest.MapFS{"fleet.yaml": {Data: []byte("apiVersion: baton/v1\ngroups: [{name: web, hosts: [\"web-*\"], services: [shop]}]\n")}}
	for name, data := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(data)}
	}
	return fsys
}

// TestWarningsColorBlindChecks: a bluegreen check that reaches the same address
// for both colors is warned of; one on the color's port, an exec check and a
// service deployed by restart are not.
func TestWarningsColorBlindChecks(t *testing.T) {
	r, err := Load(repoFS(map[string]string{
		"services/shop/service.yaml": `version: "1"
units: [shop.service]
deploy: {strategy: bluegreen, colors: {blue: {port: 8081}, green: {port: 8082}}}
drain: {haproxy: {socket: /run/h.sock, backend: web, server: "s-{{ .Color }}"}}
checks:
  - name: through-the-balancer
    http: {url: "http://127.0.0.1:80/healthz"}
  - name: own-port
    http: {url: "http://127.0.0.1:{{ .Port }}/healthz"}
  - name: tcp
    tcp: {address: "127.0.0.1:8080"}
  - name: by-name
    tcp: {address: "{{ .Color }}.shop.internal:80"}
  - name: smoke
    exec: {command: [/usr/local/bin/smoke]}
`,
		"services/shop/shop.service": "[Service]\nExecStart=/bin/true {{ .Port }}\n",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := `services/shop/service.yaml:7: check "through-the-balancer": http.url uses neither {{ .Port }} nor {{ .Color }}: it reaches the same place for both colors, not the new color on its own port before clients do
services/shop/service.yaml:11: check "tcp": tcp.address uses neither {{ .Port }} nor {{ .Color }}: it reaches the same place for both colors, not the new color on its own port before clients do`
	if got := r.Warnings().Error(); got != want {
		t.Errorf("warnings:\n%s\nwant:\n%s", got, want)
	}
	if w := loadBlueGreen(t).Warnings(); len(w) != 0 {
		t.Errorf("testdata/bluegreen: %v", w)
	}
}

// TestBlueGreenRefusedUnlessRun: a reader that does not run bluegreen upgrades
// (LoadOptions.BlueGreen false, as an agent whose transaction does not) refuses
// the service at its strategy line; Load accepts it.
