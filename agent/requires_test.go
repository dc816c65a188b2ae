package agent_test

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/internal/testfleet"
	"github.com/baton-fleet/baton/internal/testpostgres"
	"github.com/baton-fleet/baton/migrate"
)

// dataAndWeb puts h1 in group data, running db and api, and h2 and h3 in group web,
// running api two at a time: a version of api starts on all three hosts at once.
const dataAndWeb = `apiVersion: baton/v1
groups:
  - name: data
    hosts: [h1]
    services: [db, api]
    rollout: {minHealthy: 2s, healthyDeadline: 30s}
  - name: web
    hosts: [h2, h3]
    services: [api]
    rollout: {maxParallel: 2, minHealthy: 2s, healthyDeadline: 30s}
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
		"fleet.yaml":                dataAndWeb,
		"services/db/service.yaml":  service("db", dbVersion, "8081"),
		"services/db/db.service":    serviceUnit("db", "8081"),
		"services/api/service.yaml": service("api", apiVersion, "8082") + extra,
		"services/api/api.service":  serviceUnit("api", "8082"),
	})
}

// migrationDB is the test's PostgreSQL, reached from the hosts through a relay on the
// gateway. Each migration of the test writes a row to runs, stamped by the server.
type migrationDB struct {
	pg         *testpostgres.Server
	host, port string // the relay, as the hosts reach it
}

func startMigrationDB(t *testing.T, h *harness) *migrationDB {
	pg := testpostgres.Start(t)
	pg.Query(t, "CREATE TABLE runs (id text NOT NULL, release text, at timestamptz NOT NULL DEFAULT clock_timestamp())")
	relay := testfleet.Forward(t, h.gateway, "127.0.0.1:"+strconv.Itoa(pg.Port))
	host, port, _ := strings.Cut(relay, ":")
	return &migrationDB{pg: pg, host: host, port: port}
}

// migration is an entry of migrations: that runs each of sqls with psql, in a
// transaction of its own.
func (db *migrationDB) migration(id, phase string, sqls ...string) string {
	argv := []string{db.pg.Psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", db.host, "-p", db.port, "-U", "postgres", "-d", "postgres"}
	for _, s := range sqls {
		argv = append(argv, "-c", s)
	}
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = strconv.Quote(a)
	}
	return fmt.Sprintf("  - id: %s\n    phase: %s\n    command: [%s]\n    timeout: 10m\n", id, phase, strings.Join(quoted, ", "))
}

// insert is the SQL that records a run of the migration id.
func insert(id string) string { return fmt.Sprintf("INSERT INTO runs (id) VALUES ('%s')", id) }

// insertRelease records a run of the migration id and the release it ran from: a
// command that names its release, as one that runs a tool the release ships does.
func insertRelease(id string) string {
	return fmt.Sprintf("INSERT INTO runs (id, release) VALUES ('%s', '{{ .Release }}')", id)
}

// runs is how many times the migration id ran, by its rows.
func (db *migrationDB) runs(t *testing.T, id string) int {
	t.Helper()
	n, err := strconv.Atoi(db.pg.Query(t, fmt.Sprintf("SELECT count(*) FROM runs WHERE id = '%s'", id)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// ranAt is when the migration id wrote its row, by the server's clock (the machine's,
// which the hosts share).
func (db *migrationDB) ranAt(t *testing.T, id string) time.Time {
	t.Helper()
	out := db.pg.Query(t, fmt.Sprintf(`SELECT to_char(max(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') FROM runs WHERE id = '%s'`, id))
	at, err := time.Parse(time.RFC3339Nano, out)
	if err != nil {
		t.Fatalf("the time of migration %s: %q: %v", id, out, err)
	}
	return at
}

// ledger reads the migrations ledger of api with `baton migrations --json`, by id,
// and the host that holds the migration lock.
func (h *harness) ledger() (map[string]migrate.Entry, string) {
	h.t.Helper()
	var l struct {
		Lock       string          `json:"lock"`
		Migrations []migrate.Entry `json:"migrations"`
	}
	out := h.host.MustExec(h.t, "/usr/local/bin/baton", "migrations", "api", "--json")
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		h.t.Fatalf("baton migrations --json: %v\n%s", err, out)
	}
	byID := map[string]migrate.Entry{}
	for _, e := range l.Migrations {
		byID[e.ID] = e
	}
	return byID, l.Lock
}

// apiStarted is when the host's api.service last started its process: when the host
// switched to the version it runs.
func (h *harness) apiStarted() time.Time {
	h.t.Helper()
	out := strings.TrimSpace(h.host.MustExec(h.t, "systemctl", "show", "--timestamp=us+utc", "-p", "ExecMainStartTimestamp", "--value", "api.service"))
	at, err := time.Parse("Mon 2006-01-02 15:04:05.000000 MST", out)
	if err != nil {
		h.t.Fatalf("api.service's start on %s: %q: %v", h.host.Name, out, err)
	}
	return at
}

// said waits until the agent's journal holds want: a phase is logged as it changes.
func (h *harness) said(want string) {
	h.t.Helper()
	h.waitFor(h.host.Name+" to say "+want, 2*time.Minute, func() bool { return strings.Contains(h.journal(), want) })
}

// TestRequiresAndMigrations runs the rules of requires: and migrations: on one fleet
// of real hosts against a real PostgreSQL, each case a phase that leaves the fleet
// settled for the next: h1 runs db and api (group data), h2 and h3 run api (group web,
// two at a time), all on the etcd lease.
//
//  1. api 2.0.0 starts on all three hosts at once: each expand migration runs once,
//     and ends before any host starts the new api. (Every later release keeps them,
//     one naming its {{ .Release }}: they are the ones that ran, not changed ones.)
//  2. api 2.1.0 requires db >=2.0.0 <3.0.0, which only h1 brings: h2 and h3 wait,
//     saying why, while h1 runs a slow migration (pg_sleep) and its agent is killed
//     (SIGKILL). It is not run again: the hosts say it was interrupted, and so do
//     baton migrations and baton fleet, until baton migration resolve --done; then
//     the rollout goes on, db first.
//  3. A migration that fails (SELECT 1/0) holds api in both groups: no host switches,
//     each says which migration failed, where, and the command that resolves it.
//  4. Fixed under its id and resolved with --rerun, it runs once; the contract
//     migration runs once, after the last host committed.
//  5. db 3.0.0 waits while h2 and h3 run api 2.2.0, which requires db <3.0.0, and
//     names them; they move to api 2.3.0 (<4.0.0) first.
func TestRequiresAndMigrations(t *testing.T) {
	_, hosts := newEtcdFleet(t, 3)
	h1, h2, h3 := hosts[0], hosts[1], hosts[2]
	db := startMigrationDB(t, h1)
	settled := func(c string) {
		for _, h := range hosts {
			h.settled(c)
		}
	}
	c1 := h1.pushServices("1.0.0", "1.0.0", "")
	for _, h := range hosts {
		h.startAgent()
	}
	settled(c1)

	expand := db.migration("0001-runs", "expand", insertRelease("0001")) +
		db.migration("0002-index", "expand", "CREATE INDEX runs_id ON runs (id)", insert("0002"))
	c2 := h1.pushServices("1.0.0", "2.0.0", "migrations:\n"+expand)
	settled(c2)
	onceBeforeSwitches(t, db, hosts, "0001-runs", "0002-index")
	if rel := db.pg.Query(t, "SELECT release FROM runs WHERE id = '0001'"); !strings.Contains(rel, "/releases/api/2.0.0-") {
		t.Errorf("migration 0001 ran from %q, want api 2.0.0's release", rel)
	}

	slow := db.migration("0003-slow", "expand", insert("0003"), "SELECT pg_sleep(600)")
	requiresDB2 := "requires: {db: \">=2.0.0 <3.0.0\"}\nmigrations:\n"
	c3 := h1.pushServices("2.0.0", "2.1.0", requiresDB2+expand+slow)
	killedMidMigration(t, db, h1, h2)
	for _, h := range []*harness{h2, h3} {
		h.said("waiting: api 2.1.0 requires db >=2.0.0 <3.0.0; h1 runs 1.0.0")
	}
	resolved := time.Now()
	out := h2.host.MustExec(t, "/usr/local/bin/baton", "migration", "resolve", "api", "0003-slow", "--done")
	if !strings.Contains(out, "marked done") {
		t.Errorf("baton migration resolve said %q", out)
	}
	settled(c3)
	t.Logf("h1 started api 2.1.0 %v after the resolve (--done)", h1.apiStarted().Sub(resolved).Round(time.Millisecond))
	if n := db.runs(t, "0003"); n != 1 {
		t.Errorf("the interrupted migration ran %d times, want once (resolved as done)", n)
	}
	for _, h := range []*harness{h2, h3} {
		if !h.apiStarted().After(h1.host.LastGood().Time) {
			t.Errorf("%s switched api to 2.1.0 before h1 committed db 2.0.0", h.host.Name)
		}
	}

	fails := db.migration("0004-fails", "expand", "SELECT 1/0")
	h1.pushServices("2.0.0", "2.2.0", requiresDB2+expand+slow+fails)
	haltedByFailure(t, hosts, c3)

	fixed := db.migration("0004-fails", "expand", insert("0004"))
	contract := db.migration("0005-contract", "contract", insert("0005"))
	c5 := h1.pushServices("2.0.0", "2.2.0", requiresDB2+expand+slow+fixed+contract)
	for _, h := range hosts { // resolved before a host sees the fix, it would run the failing one again
		h.waitFor(h.host.Name+" to fetch the fix", time.Minute, func() bool { return h.status().Tracked == c5 })
	}
	resolved = time.Now()
	h2.host.MustExec(t, "/usr/local/bin/baton", "migration", "resolve", "api", "0004-fails", "--rerun")
	settled(c5)
	t.Logf("the first host started api 2.2.0 %v after the resolve (--rerun)", firstStart(hosts).Sub(resolved).Round(time.Millisecond))
	h1.waitFor("the contract migration", time.Minute, func() bool { return db.runs(t, "0005") > 0 })
	contractAfterAll(t, db, hosts)

	requiresDB3 := "requires: {db: \">=2.0.0 <4.0.0\"}\nmigrations:\n"
	c6 := h1.pushServices("3.0.0", "2.3.0", requiresDB3+expand+slow+fixed+contract)
	settled(c6)
	// By name, h2 first; h3 once h2 moved, if h1 looked only then.
	journal := h1.journal()
	if !strings.Contains(journal, "waiting: db 3.0.0 is outside what api 2.2.0 requires db >=2.0.0 <3.0.0; h2 runs api 2.2.0") &&
		!strings.Contains(journal, "waiting: db 3.0.0 is outside what api 2.2.0 requires db >=2.0.0 <3.0.0; h3 runs api 2.2.0") {
		t.Errorf("h1 never said that db 3.0.0 waits for api on h2 or h3:\n%s", journal)
	}
	for _, h := range []*harness{h2, h3} {
		if !h1.host.LastGood().Time.After(h.host.LastGood().Time) {
			t.Errorf("h1 committed db 3.0.0 before %s left api 2.2.0 (requires db <3.0.0)", h.host.Name)
		}
	}
	for id, want := range map[string]int{"0001": 1, "0002": 1, "0003": 1, "0004": 1, "0005": 1} {
		if n := db.runs(t, id); n != want {
			t.Errorf("at the end, migration %s ran %d times, want %d", id, n, want)
		}
	}
}

// onceBeforeSwitches checks that each migration of ids ran once, by its rows and the
// ledger, and ended before any host started the api it migrated for.
func onceBeforeSwitches(t *testing.T, db *migrationDB, hosts []*harness, ids ...string) {
	t.Helper()
	ledger, _ := hosts[0].ledger()
	for _, id := range ids {
		row := strings.SplitN(id, "-", 2)[0]
		e := ledger[id]
		if n := db.runs(t, row); n != 1 || e.State != migrate.StateDone {
			t.Errorf("migration %s ran %d times (ledger: %s on %s), want once, done", id, n, e.State, e.Host)
		}
		ranAt := db.ranAt(t, row)
		for _, h := range hosts {
			if started := h.apiStarted(); !started.After(ranAt) || !started.After(e.End) {
				t.Errorf("%s started api at %s, before migration %s ended (its row at %s, the ledger's end %s)",
					h.host.Name, started.Format(time.StampMicro), id, ranAt.Format(time.StampMicro), e.End.Format(time.StampMicro))
			}
		}
		t.Logf("migration %s ran once, on %s, %v before the first host started its api", id, e.Host, firstStart(hosts).Sub(e.End).Round(time.Millisecond))
	}
}

func firstStart(hosts []*harness) time.Time {
	first := hosts[0].apiStarted()
	for _, h := range hosts[1:] {
		if s := h.apiStarted(); s.Before(first) {
			first = s
		}
	}
	return first
}

// killedMidMigration kills runner's agent (SIGKILL) while it runs 0003-slow, and
// starts it again: the migration is not run again, and the runner, baton migrations
// and baton fleet (on other) say it was interrupted.
func killedMidMigration(t *testing.T, db *migrationDB, runner, other *harness) {
	t.Helper()
	runner.waitFor("the slow migration to sleep", 2*time.Minute, func() bool {
		return db.pg.Query(t, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(600)'") == "1"
	})
	if e, lock := other.ledger(); e["0003-slow"].State != migrate.StateRunning || e["0003-slow"].Host != runner.host.Name || lock != runner.host.Name {
		t.Fatalf("while it sleeps, the ledger says %+v, the lock is %q's; want it running on %s", e["0003-slow"], lock, runner.host.Name)
	}
	killed := time.Now()
	runner.host.MustExec(t, "systemctl", "kill", "--signal=SIGKILL", "--kill-whom=main", runner.host.AgentUnit())
	runner.waitFor("the agent to die", 30*time.Second, func() bool { return !runner.host.AgentActive() })
	// The server finishes a statement whose client is gone only when it next writes to
	// it: end the sleep, as an operator who found it would.
	db.pg.Query(t, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(600)'")
	other.waitFor("the killed runner's migration lock to expire", time.Minute, func() bool { _, lock := other.ledger(); return lock == "" })
	t.Logf("the killed runner's migration lock was gone %v after the kill (lease TTL 5s)", time.Since(killed).Round(100*time.Millisecond))
	if out := other.host.MustExec(t, "/usr/local/bin/baton", "migrations", "api"); !strings.Contains(out, "INTERRUPTED") || !strings.Contains(out, "api 0003-slow: interrupted on "+runner.host.Name) {
		t.Errorf("baton migrations api does not say 0003-slow was interrupted:\n%s", out)
	}

	runner.startAgent()
	interrupted := "migration 0003-slow interrupted on " + runner.host.Name + " at "
	runner.said(interrupted)
	if p := runner.status().Phase; !strings.Contains(p, interrupted) || !strings.Contains(p, "baton migration resolve api 0003-slow --done") {
		t.Errorf("%s's phase is %q, want it to say the migration was interrupted and how to resolve it", runner.host.Name, p)
	}
	if out := other.host.MustExec(t, "/usr/local/bin/baton", "fleet"); !strings.Contains(out, interrupted) {
		t.Errorf("baton fleet does not say 0003-slow was interrupted:\n%s", out)
	}
	if n := db.runs(t, "0003"); n != 1 {
		t.Errorf("the interrupted migration wrote %d rows, want 1: it ran again", n)
	}
}

// haltedByFailure checks the hosts once the head brings a migration, 0004-fails, that
// fails: every host stays on was, its api not restarted, and says why.
func haltedByFailure(t *testing.T, hosts []*harness, was string) {
	t.Helper()
	started := map[string]time.Time{}
	for _, h := range hosts {
		started[h.host.Name] = h.apiStarted()
	}
	for _, h := range hosts {
		h.said("waiting: migration 0004-fails of api failed on ")
		h.waitFor(h.host.Name+" to end its transaction", time.Minute, func() bool { return h.host.TxnState() == "" })
	}
	for _, h := range hosts {
		lg := h.host.LastGood()
		if lg.Revision != was || lg.Services["api"].Version != "2.1.0" || !h.apiStarted().Equal(started[h.host.Name]) {
			t.Errorf("%s moved past a failed migration: at %s, api %s, started %s (was %s)", h.host.Name, short(lg.Revision),
				lg.Services["api"].Version, h.apiStarted().Format(time.StampMicro), started[h.host.Name].Format(time.StampMicro))
		}
		if p := h.status().Phase; !strings.Contains(p, "division by zero") || !strings.Contains(p, "baton migration resolve api 0004-fails --rerun") {
			t.Errorf("%s's phase is %q, want the migration's error and how to resolve it", h.host.Name, p)
		}
	}
	if out := hosts[0].host.MustExec(t, "/usr/local/bin/baton", "fleet"); !strings.Contains(out, "migration 0004-fails of api failed on") || !strings.Contains(out, "division by zero") {
		t.Errorf("baton fleet does not say that 0004-fails failed:\n%s", out)
	}
}

// contractAfterAll checks that the contract migration ran once, after every host
// committed the version that brought it.
func contractAfterAll(t *testing.T, db *migrationDB, hosts []*harness) {
	t.Helper()
	if n := db.runs(t, "0005"); n != 1 {
		t.Errorf("the contract migration ran %d times, want once", n)
	}
	ranAt := db.ranAt(t, "0005")
	for _, h := range hosts {
		if committed := h.host.LastGood().Time; !ranAt.After(committed) {
			t.Errorf("the contract migration ran at %s, before %s committed api 2.2.0 at %s", ranAt.Format(time.StampMicro), h.host.Name, committed.Format(time.StampMicro))
		}
	}
	ledger, _ := hosts[0].ledger()
	t.Logf("the contract migration ran once, on %s", ledger["0005-contract"].Host)
}
