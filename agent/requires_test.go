package agent_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testfleet"
	"github.com/baton-fleet/baton/internal/testpostgres"
)

// twoGroups puts h1 in group db (service db) and h2 in group api (service api); db's
// rollout holds each host 20 s, so that a wait on it can be seen.
const twoGroups = `apiVersion: baton/v1
groups:
  - name: db
    hosts: [h1]
    services: [db]
    rollout: {minHealthy: 20s, healthyDeadline: 60s}
  - name: api
    hosts: [h2]
    services: [api]
    rollout: {minHealthy: 3s, healthyDeadline: 30s}
`

// serviceUnit runs the demo service as name on port.
func serviceUnit(name, port string) string {
	return fmt.Sprintf("[Unit]\nDescription=%s {{ .Version }}\n\n[Service]\nExecStart={{ .Release }}/demo --listen 0.0.0.0:%s\n\n[Install]\nWantedBy=multi-user.target\n", name, port)
}

// pushServices commits the db and api services at dbVersion and apiVersion; extra is
// appended to api's service.yaml.
func (h *harness) pushServices(dbVersion, apiVersion, extra string) string {
	h.t.Helper()
	service := func(name, version, port string) string {
		url, sum := h.rel.Publish(h.t, version, "ok")
		return fmt.Sprintf("version: %q\nunits: [%s.service]\nartifacts:\n  - {url: %q, sha256: %q, name: demo}\nchecks:\n  - {name: up, http: {url: \"http://127.0.0.1:%s/healthz\"}, interval: 200ms}\n", version, name, url, sum, port)
	}
	return h.repo.CommitFiles("db "+dbVersion+", api "+apiVersion, map[string]string{
		"fleet.yaml":                twoGroups,
		"services/db/service.yaml":  service("db", dbVersion, "8081"),
		"services/db/db.service":    serviceUnit("db", "8081"),
		"services/api/service.yaml": service("api", apiVersion, "8082") + extra,
		"services/api/api.service":  serviceUnit("api", "8082"),
	})
}

// TestRequiresAndMigrations: db on h1 and api on h2, two groups on the etcd lease. A
// commit brings db 2.0.0 and api 2.0.0, which requires db >=2.0.0 <3.0.0 and has an
// expand migration against a real PostgreSQL: api waits, saying why, until h1 runs db
// 2.0.0, then runs the migration exactly once and switches.
func TestRequiresAndMigrations(t *testing.T) {
	_, hosts := newEtcdFleet(t, 2)
	h1, h2 := hosts[0], hosts[1]
	pg := testpostgres.Start(t)
	pg.Query(t, "CREATE TABLE runs (id text)")
	relay := testfleet.Forward(t, h1.gateway, "127.0.0.1:"+strconv.Itoa(pg.Port))
	host, port, _ := strings.Cut(relay, ":")
	// migration is an expand migration that runs sql with psql, through the relay.
	migration := func(id, sql string) string {
		return fmt.Sprintf("  - id: %s\n    phase: expand\n    command: [%q, \"-X\", \"-q\", \"-v\", \"ON_ERROR_STOP=1\", \"-h\", %q, \"-p\", %q, \"-U\", \"postgres\", \"-d\", \"postgres\", \"-c\", %q]\n    timeout: 1m\n",
			id, pg.Psql(), host, port, sql)
	}
	requires := "requires:\n  db: \">=2.0.0 <3.0.0\"\nmigrations:\n"
	insert := migration("0001-runs", "INSERT INTO runs VALUES ('0001')")

	c1 := h1.pushServices("1.0.0", "1.0.0", "")
	for _, h := range hosts {
		h.startAgent()
	}
	for _, h := range hosts {
		h.settled(c1)
	}
	c2 := h1.pushServices("2.0.0", "2.0.0", requires+insert)
	sawWait := false
	h2.waitFor("h2 to commit api 2.0.0", 4*time.Minute, func() bool {
		if strings.Contains(h2.status().Phase, "waiting: api 2.0.0 requires db >=2.0.0 <3.0.0; h1 runs 1.0.0") {
			sawWait = true
		}
		return h2.host.LastGood().Revision == c2 && h2.host.TxnState() == ""
	})
	h1.settled(c2)
	if !sawWait {
		t.Errorf("h2 never said it waited for db 2.0.0 on h1:\n%s", h2.journal())
	}
	db, api := h1.host.LastGood(), h2.host.LastGood()
	if db.Revision != c2 || !api.Time.After(db.Time) {
		t.Errorf("api 2.0.0 committed at %v, db 2.0.0 at %v (last good %s): api must wait for db", api.Time, db.Time, short(db.Revision))
	}
	if n := pg.Query(t, "SELECT count(*) FROM runs"); n != "1" {
		t.Errorf("the expand migration ran %s times, want once", n)
	}

	// A migration that fails: no host switches to its release, and the host says why
	// and what the operator does.
	c3 := h1.pushServices("2.0.0", "2.1.0", requires+insert+migration("0002-fails", "SELECT 1/0"))
	h2.waitFor("h2 to stop on the failed migration", 2*time.Minute, func() bool {
		p := h2.status().Phase
		return strings.Contains(p, "migration 0002-fails of api failed on h2") && strings.Contains(p, "baton migration resolve api 0002-fails --rerun")
	})
	if lg := h2.host.LastGood(); lg.Revision == c3 || lg.Services["api"].Version != "2.0.0" {
		t.Errorf("h2 moved to %s (api %s) past a failed migration", short(lg.Revision), lg.Services["api"].Version)
	}
	if n := pg.Query(t, "SELECT count(*) FROM runs"); n != "1" {
		t.Errorf("the done migration ran again: %s rows", n)
	}
}
