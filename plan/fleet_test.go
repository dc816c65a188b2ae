package plan

import (
	"strings"
	"testing"
	"testing/fstest"

	"github.com/baton-fleet/baton/spec"
)

// TestFleetTwoGroupsOneService: a service that two groups run is mixed from the
// first group's step to the last's; its contract migrations wait for the last.
func TestFleetTwoGroupsOneService(t *testing.T) {
	unit := &fstest.MapFile{Data: []byte("[Service]\nExecStart={{ .Release }}/run\n")}
	fsys := fstest.MapFS{
		"fleet.yaml": {Data: []byte(`apiVersion: baton/v1
groups:
  - {name: east, hosts: ["east-*"], services: [api]}
  - {name: west, hosts: ["west-*"], services: [api, cron], after: [east]}
  - {name: data, hosts: ["db-*"], services: [db]}
`)},
		"services/api/service.yaml": {Data: []byte(`version: "2.0.0"
units: [api.service]
requires: {db: "^2"}
migrations:
  - {id: "1", phase: expand, command: [/bin/true]}
  - {id: "2", phase: contract, command: [/bin/true]}
`)},
		"services/api/api.service":   unit,
		"services/cron/service.yaml": {Data: []byte("version: \"1\"\nunits: [cron.service]\n")},
		"services/cron/cron.service": unit,
		"services/db/service.yaml":   {Data: []byte("version: \"2.3.0\"\nunits: [db.service]\n")},
		"services/db/db.service":     unit,
	}
	r, err := spec.Load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Fleet(r, "abc")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range p.Steps {
		line := strings.Join(s.Groups, ",") + ":"
		for _, svc := range []string{"api", "cron", "db"} {
			line += " " + svc + "=" + strings.Join(s.Running[svc], "+")
		}
		line += " expand=" + strings.Join(s.Expand, ",") + " contract=" + strings.Join(s.Contract, ",")
		got = append(got, line)
	}
	want := []string{
		"data: api=old cron=old db=old+2.3.0 expand= contract=",
		"east: api=old+2.0.0 cron=old db=2.3.0 expand=api contract=",
		"west: api=old+2.0.0 cron=old+1 db=2.3.0 expand= contract=api",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("steps:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if p.Final["api"] != "2.0.0" || p.Final["cron"] != "1" || len(p.Final) != 3 {
		t.Errorf("final = %v", p.Final)
	}
}
