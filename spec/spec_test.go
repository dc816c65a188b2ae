package spec

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"golang.org/x/tools/txtar"

	goldenfile "github.com/baton-fleet/baton/internal/golden"
	"github.com/baton-fleet/baton/internal/yamldoc"
)

// txtarFS turns an archive into a file system.
func txtarFS(a *txtar.Archive) fstest.MapFS {
	fsys := fstest.MapFS{}
	for _, f := range a.Files {
		fsys[f.Name] = &fstest.MapFile{Data: f.Data, Mode: 0o644}
	}
	return fsys
}

// TestLoadBad loads each broken repository of testdata/bad (a txtar archive whose
// comment is the exact error output expected) and compares every error.
func TestLoadBad(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.txtar")
	if len(files) < 25 {
		t.Fatalf("only %d bad repositories in testdata/bad", len(files))
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			a, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Load(txtarFS(a))
			if err == nil {
				t.Fatalf("Load: no error for a bad repository")
			}
			var list yamldoc.Errors
			if !errors.As(err, &list) {
				t.Fatalf("Load error is %T, not yamldoc.Errors: %v", err, err)
			}
			for _, e := range list {
				if e.File == "" || e.Msg == "" {
					t.Errorf("error without a file or a message: %#v", e)
				}
			}
			got := err.Error() + "\n"
			if goldenfile.Update() {
				a.Comment = []byte(got)
				if err := os.WriteFile(file, txtar.Format(a), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if want := string(a.Comment); got != want {
				t.Errorf("errors:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func loadExample(t *testing.T) *Repo { t.Helper(); return loadDir(t, "../examples/fleet") }

// loadDir loads the repository in dir, failing the test on any error.
func loadDir(t *testing.T, dir string) *Repo {
	t.Helper()
	r, err := Load(os.DirFS(dir))
	if err != nil {
		t.Fatalf("Load(%s): %v", dir, err)
	}
	return r
}

func TestLoadExampleDefaults(t *testing.T) {
	r := loadExample(t)
	var web, db *Group
	for i := range r.Fleet.Groups {
		switch g := &r.Fleet.Groups[i]; g.Name {
		case "web":
			web = g
		case "db":
			db = g
		}
	}
	if web == nil || db == nil {
		t.Fatalf("groups = %+v, want web and db", r.Fleet.Groups)
	}
	if got, want := db.Rollout, (Rollout{MaxParallel: 1, CanaryPause: Pause{Manual: true}, MinHealthy: yamldoc.Duration(10 * time.Second), HealthyDeadline: yamldoc.Duration(5 * time.Minute)}); got != want {
		t.Errorf("db rollout defaults = %+v, want %+v", got, want)
	}
	api := r.Services["api"]
	if got := strings.Join(api.Restart, ","); got != "api.service" {
		t.Errorf("api restart = %q, want the .service units only", got)
	}
	c := api.Checks[1] // port: only a tcp address given
	if c.Interval.D() != DefaultCheckInterval || c.Timeout.D() != DefaultCheckTimeout || c.Successes != DefaultCheckSuccesses || c.Failures != DefaultCheckFailures {
		t.Errorf("check defaults not applied: %+v", c)
	}
	if api.Artifacts[0].Unpack != UnpackTarGz || api.Drain.HAProxy.Timeout.D() != 30*time.Second {
		t.Errorf("artifact or drain defaults: %+v %+v", api.Artifacts[0], api.Drain.HAProxy)
	}
}

func TestGroupFor(t *testing.T) {
	r := loadExample(t)
	for _, tt := range []struct{ host, group, err string }{
		{"web-01", "web", ""},
		{"db-1", "db", ""},
		{"mail-1", "", `fleet.yaml:4: host "mail-1": no group's hosts match this host`},
	} {
		g, err := r.GroupFor(tt.host)
		switch {
		case tt.err != "":
			if err == nil || err.Error() != tt.err || !errors.Is(err, ErrNoGroup) {
				t.Errorf("GroupFor(%s) error = %v, want %s", tt.host, err, tt.err)
			}
		case err != nil:
			t.Errorf("GroupFor(%s): %v", tt.host, err)
		case g.Name != tt.group:
			t.Errorf("GroupFor(%s) = %s, want %s", tt.host, g.Name, tt.group)
		}
	}
	r.Fleet.Groups = append(r.Fleet.Groups, Group{Name: "all", Hosts: []string{"*"}, Line: 40})
	if _, err := r.GroupFor("web-01"); err == nil || err.Error() != `fleet.yaml:40: host "web-01" matches groups "web" (line 8) and "all"; a host belongs to one group` {
		t.Errorf("GroupFor with two matching groups: %v", err)
	}
}

// TestForHostGolden renders the example fleet for one host and compares the result,
// templates filled in, with testdata/forhost-web-01.golden.
func TestForHostGolden(t *testing.T) {
	hs, got := renderWeb01(t, loadExample(t))
	golden(t, "testdata/forhost-web-01.golden", got)
	if !strings.Contains(got, "/var/lib/baton/releases/api/1.4.3-") || !strings.Contains(got, `"server": "web-01"`) || len(hs.Services[0].Colors) != 0 {
		t.Errorf("templates not rendered for the host:\n%s", got)
	}
}

// renderWeb01 renders r for host web-01 and writes out each service, its unit
// files and, for bluegreen, each color's drain, checks and unit files.
func renderWeb01(t *testing.T, r *Repo) (*HostSpec, string) {
	t.Helper()
	hs, err := r.ForHost("web-01", "3f2a1c0000000000000000000000000000000000", "/var/lib/baton")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	units := func(files UnitFiles) {
		for _, u := range files.Names() {
			b.WriteString("== unit " + u + "\n" + string(files[u]))
		}
	}
	for _, s := range hs.Services {
		j, _ := json.MarshalIndent(s.Service, "", "  ")
		b.WriteString("== service " + s.Name + " release " + s.ReleaseID + "\n" + string(j) + "\n")
		units(s.Units)
		for _, c := range s.Colors {
			j, _ := json.MarshalIndent(struct {
				Drain  *Drain
				Checks []Check
			}{c.Drain, c.Checks}, "", "  ")
			b.WriteString("== color " + c.Name + " port " + strconv.Itoa(c.Port) + "\n" + string(j) + "\n")
			units(c.Units)
		}
	}
	return hs, b.String()
}

func golden(t *testing.T, file, got string) {
	t.Helper()
	goldenfile.Check(t, file, []byte(got))
}

func TestReleaseIDChangesWithArtifacts(t *testing.T) {
	s := &Service{Name: "api", Version: "1.0", Artifacts: []Artifact{{SHA256: strings.Repeat("a", 64)}}}
	a := s.ReleaseID()
	s.Artifacts[0].SHA256 = strings.Repeat("b", 64)
	if b := s.ReleaseID(); a == b || !strings.HasPrefix(a, "1.0-") || len(a) != len("1.0-")+ReleaseDigits {
		t.Errorf("ReleaseID = %q then %q; want 1.0-<%d hex>, different for other artifacts", a, b, ReleaseDigits)
	}
}

func TestCheckUnitName(t *testing.T) {
	for name, ok := range map[string]bool{
		"api.service": true, "api@.service": true, "api@1.service": true, "a_b-c.d.timer": true,
		"api": false, "../api.service": false, "api/x.service": false, ".service": false,
		"@.service": false, "api.conf": false, "a b.service": false, "a@b@c.service": false,
		".hidden.service": false, "": false, strings.Repeat("a", 250) + ".service": false,
	} {
		if err := CheckUnitName(name); (err == nil) != ok {
			t.Errorf("CheckUnitName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

func TestReservedUnit(t *testing.T) {
	for name, want := range map[string]bool{
		"baton.service": true, "baton.socket": true, "baton@.service": true, "baton@x.service": true,
		"systemd-x.service": true, "systemd-journald.socket": true, "multi-user.target": true,
		"default.target": true, "network-online.target": true, "-.mount": true, "-.slice": true,
		"init.scope": true, "dbus.service": true, "ssh.service": true, "sshd.service": true,
		"getty@.service": true, "getty@tty1.service": true, "user@1000.service": true,
		"api.service": false, "baton-exporter.service": false, "my-baton.service": false,
		"api.target": false, "systemd.service": false, "web@.service": false, "web@1.service": false,
		"Baton.service": false, "multi-user.target.wants": false,
	} {
		reason, got := ReservedUnit(name)
		if got != want || (reason != "") != want {
			t.Errorf("ReservedUnit(%q) = %q, %v; want reserved=%v with a reason", name, reason, got, want)
		}
	}
}

// TestLoadWithAllowUnits loads a repository that ships reserved units: Load refuses
// every one, LoadWith only those its AllowUnits do not name.
func TestLoadWithAllowUnits(t *testing.T) {
	unit := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	fsys := fstest.MapFS{
		"fleet.yaml":                     unit("apiVersion: baton/v1\ngroups: [{name: web, hosts: [\"web-*\"], services: [api]}]\n"),
		"services/api/service.yaml":      unit("version: \"1\"\nunits: [api.service, multi-user.target, getty@.service]\nrestart: [api.service]\n"),
		"services/api/api.service":       unit("[Service]\nExecStart=/bin/true\n"),
		"services/api/multi-user.target": unit("[Unit]\nDescription=x\n"),
		"services/api/getty@.service":    unit("[Service]\nExecStart=/bin/true\n"),
	}
	for _, tt := range []struct {
		allow []string
		want  string // the units refused, as the sorted errors name them
	}{
		{nil, "getty@.service multi-user.target"},
		{[]string{"multi-user.target"}, "getty@.service"},
		{[]string{"getty@tty1.service", "api.service"}, "getty@.service multi-user.target"},
		{[]string{"getty@.service", "multi-user.target"}, ""},
	} {
		r, err := LoadWith(fsys, LoadOptions{AllowUnits: tt.allow})
		var refused []string
		var list yamldoc.Errors
		if errors.As(err, &list) {
			for _, e := range list {
				name, _, _ := strings.Cut(strings.TrimPrefix(e.Msg, "units: "), " ")
				if !strings.Contains(e.Msg, " is reserved: ") {
					t.Errorf("allow %v: unexpected error %v", tt.allow, e)
				}
				refused = append(refused, name)
			}
		} else if err != nil {
			t.Fatalf("allow %v: %v", tt.allow, err)
		}
		if got := strings.Join(refused, " "); got != tt.want {
			t.Errorf("LoadWith(allow %v) refused %q, want %q", tt.allow, got, tt.want)
		}
		if tt.want == "" && (r == nil || len(r.Services["api"].UnitFiles) != 3) {
			t.Errorf("LoadWith(allow %v) = %+v, want the three units", tt.allow, r)
		}
	}
	if _, err := Load(fsys); err == nil {
		t.Errorf("Load: no error for reserved units")
	}
}

func TestCheckUser(t *testing.T) {
	for _, tt := range []struct {
		user string
		err  string // substring of the error; "" when the name is accepted
	}{
		{"nobody", ""}, {"haproxy", ""}, {"_apt", ""}, {"www-data", ""}, {"svc_01", ""},
		{"a", ""}, {"root", ""}, {strings.Repeat("a", 32), ""},
		{"", "empty"},
		{"0", "numeric uid"}, {"1000", "numeric uid"},
		{"{{ .Service }}", "not a template"},
		{strings.Repeat("a", 33), "longer than 32"},
		{"Nobody", "not a user name"}, {"-nobody", "not a user name"}, {"1abc", "not a user name"},
		{"www data", "not a user name"}, {"host$", "not a user name"}, {"a.b", "not a user name"},
		{"a/b", "not a user name"}, {"nobody\n", "not a user name"}, {"ñu", "not a user name"},
	} {
		err := checkUser(tt.user)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("checkUser(%q) = %v, want nil", tt.user, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("checkUser(%q) = %v, want an error containing %q", tt.user, err, tt.err)
		}
	}
}

// TestExecUser loads a service whose exec check and exec drain name a user, and
// renders it: the users are kept as written (they are not templates) and survive
// rendering beside the rendered commands.
func TestExecUser(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	fsys := fstest.MapFS{
		"fleet.yaml": file("apiVersion: baton/v1\ngroups: [{name: web, hosts: [\"web-*\"], services: [api]}]\n"),
		"services/api/service.yaml": file(`version: "1.0"
units: [api.service]
drain:
  exec: {drain: [/usr/local/bin/lb, drain, "{{ .Host }}"], undrain: [/usr/local/bin/lb, undrain, "{{ .Host }}"], user: haproxy}
checks:
  - name: smoke
    exec: {command: ["{{ .Release }}/smoke"], user: nobody}
  - name: as-agent
    exec: {command: [/bin/true]}
  - name: null-user
    exec: {command: [/bin/true], user: ~}
`),
		"services/api/api.service": file("[Service]\nExecStart={{ .Release }}/api\n"),
	}
	r, err := Load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	api := r.Services["api"]
	if got := []string{api.Drain.Exec.User, api.Checks[0].Exec.User, api.Checks[1].Exec.User, api.Checks[2].Exec.User}; strings.Join(got, ",") != "haproxy,nobody,," {
		t.Errorf("parsed users = %q, want haproxy, nobody and none", got)
	}
	hs, err := r.ForHost("web-01", "3f2a1c0000000000000000000000000000000000", "/var/lib/baton")
	if err != nil {
		t.Fatal(err)
	}
	rs := hs.Services[0]
	if d := rs.Drain.Exec; d.User != "haproxy" || d.Drain[2] != "web-01" || d.Undrain[2] != "web-01" {
		t.Errorf("rendered drain = %+v, want user haproxy and the host rendered", d)
	}
	c := rs.Checks[0].Exec
	if c.User != "nobody" || !strings.HasPrefix(c.Command[0], "/var/lib/baton/releases/api/1.0-") {
		t.Errorf("rendered check = %+v, want user nobody and the release rendered", c)
	}
	if rs.Checks[1].Exec.User != "" {
		t.Errorf("rendered check without a user = %+v", rs.Checks[1].Exec)
	}
	j, _ := json.Marshal(rs.Service)
	for _, want := range []string{`"user":"haproxy"`, `"user":"nobody"`} {
		if !strings.Contains(string(j), want) {
			t.Errorf("JSON of the rendered service lacks %s: %s", want, j)
		}
	}
	if strings.Count(string(j), `"user"`) != 2 {
		t.Errorf("JSON of the rendered service shows an empty user: %s", j)
	}
}

// FuzzLoad feeds arbitrary fleet.yaml, service.yaml (of api and of db, which api may
// require) and unit file contents to Load: it must never panic, and every error it
// returns must name a file of the repository.
func FuzzLoad(f *testing.F) {
	files, _ := filepath.Glob("testdata/bad/*.txtar")
	for _, file := range files {
		a, err := txtar.ParseFile(file)
		if err != nil {
			f.Fatal(err)
		}
		fsys := txtarFS(a)
		get := func(n string) []byte {
			if m, ok := fsys[n]; ok {
				return m.Data
			}
			return nil
		}
		f.Add(get("fleet.yaml"), get("services/api/service.yaml"), get("services/api/api.service"), get("services/db/service.yaml"))
	}
	f.Add([]byte("apiVersion: baton/v1\ngroups: [{name: web, hosts: [\"web-*\"], services: [api]}]\n"),
		[]byte("version: \"2\"\nunits: [api.service]\ndeploy: {strategy: bluegreen, colors: {blue: {port: 8081}, green: {port: 8082}}, drainIdle: 2s}\n"+
			"drain: {haproxy: {socket: /run/h.sock, backend: web, server: \"{{ .Host }}-{{ .Color }}\"}}\nchecks: [{name: up, tcp: {address: \"127.0.0.1:{{ .Port }}\"}}]\n"),
		[]byte("[Service]\nExecStart={{ .Release }}/api -port {{ .Port }} -color {{ .Color }}\n"), []byte(nil))
	f.Fuzz(func(t *testing.T, fleet, svc, unit, db []byte) {
		fsys := fstest.MapFS{
			"fleet.yaml":                {Data: fleet},
			"services/api/service.yaml": {Data: svc},
			"services/api/api.service":  {Data: unit},
			"services/api/api.socket":   {Data: unit},
		}
		if db != nil { // a second service, for requires:
			fsys["services/db/service.yaml"] = &fstest.MapFile{Data: db}
			fsys["services/db/db.service"] = &fstest.MapFile{Data: unit}
		}
		r, err := Load(fsys)
		if err == nil {
			if r == nil || r.Fleet == nil {
				t.Fatal("Load returned no repository and no error")
			}
			for _, g := range r.Fleet.Groups {
				for _, h := range g.Hosts {
					if _, err := r.ForHost(strings.ReplaceAll(h, "*", "x"), "0", "/var/lib/baton"); err != nil && !errors.Is(err, ErrNoGroup) && !strings.Contains(err.Error(), "matches groups") {
						t.Fatalf("ForHost after a clean Load: %v", err)
					}
				}
			}
			return
		}
		var list yamldoc.Errors
		if !errors.As(err, &list) {
			t.Fatalf("Load error is %T: %v", err, err)
		}
		for _, e := range list {
			if _, ok := fsys[e.File]; !ok && !strings.HasPrefix(e.File, "services") {
				t.Fatalf("error names %q, not a file of the repository: %v", e.File, e)
			}
		}
	})
}
