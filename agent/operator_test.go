package agent_test

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/baton-fleet/baton/api"
	goldenfile "github.com/baton-fleet/baton/internal/golden"
)

// TestOperatorRollback drives `baton rollback` on a real host: refused while the host
// has nothing to go back to; after v1 -> v2, it puts v1 back under the lease,
// quarantines v2 so that the next polls leave it alone, and says so in the status
// (a golden table). Every journal line of the rollback carries its transaction,
// group, commit, service and step.
func TestOperatorRollback(t *testing.T) {
	h := newHarness(t)
	c1 := h.push(release{version: "1.0.0", mode: "ok"})
	h.startAgent()
	h.settled(c1)

	out, err := h.host.Exec(context.Background(), "/usr/local/bin/baton", "rollback")
	if err == nil || !strings.Contains(string(out), "this host has run only "+short(c1)) {
		t.Errorf("rollback with no earlier revision: %v\n%s", err, out)
	}

	c2 := h.push(release{version: "2.0.0", mode: "ok"})
	h.settled(c2)
	if h.host.Served() != "2.0.0" {
		t.Fatalf("serving %q after the upgrade to 2.0.0", h.host.Served())
	}
	out, err = h.host.Exec(context.Background(), "/usr/local/bin/baton", "rollback", "--to", "deadbeef")
	if err == nil || !strings.Contains(string(out), "deadbeef is not a revision this host ran before "+short(c2)+" (it ran, newest first: "+short(c1)+")") {
		t.Errorf("rollback to a revision the host never ran: %v\n%s", err, out)
	}

	out, err = h.host.Exec(context.Background(), "/usr/local/bin/baton", "rollback", "--to", short(c2))
	if err == nil || !strings.Contains(string(out), short(c2)+" is the revision this host runs") {
		t.Errorf("rollback to the running revision: %v\n%s", err, out)
	}

	journalBefore := len(h.journal())
	type result struct {
		out []byte
		err error
	}
	first := make(chan result, 1)
	go func() {
		out, err := h.host.Exec(context.Background(), "/usr/local/bin/baton", "rollback")
		first <- result{out, err}
	}()
	// A second request while the first runs is refused; it would go back one more.
	h.waitFor("the rollback to start", 30*time.Second, func() bool { return h.host.TxnState() != "" })
	out, err = h.host.Exec(context.Background(), "/usr/local/bin/baton", "rollback", "--wait=false")
	if err == nil || !strings.Contains(string(out), "rolling back to "+short(c1)+" is in progress") {
		t.Errorf("a second rollback while the first runs: %v\n%s", err, out)
	}
	r := <-first
	out, err = r.out, r.err
	if err != nil {
		t.Fatalf("baton rollback: %v\n%s", err, out)
	}
	t.Logf("baton rollback:\n%s", out)
	for _, want := range []string{
		"rolling back " + short(c2) + " -> " + short(c1) + " under the group's lease",
		"rolling back " + short(c2) + " -> " + short(c1) + ": verifying",
		"rolled back " + short(c2) + " -> " + short(c1),
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("baton rollback does not say %q", want)
		}
	}
	if lg := h.host.LastGood(); lg.Revision != c1 || h.host.Served() != "1.0.0" {
		t.Errorf("after the rollback: last good %s, serving %q; want %s, 1.0.0", short(lg.Revision), h.host.Served(), short(c1))
	}
	if got, want := h.host.QuarantineReason(c2), "rolled back by an operator on h1"; got != want {
		t.Errorf("quarantine of %s: %q, want %q", short(c2), got, want)
	}
	st := h.status()
	if st.LastResult == nil || st.LastResult.Outcome != api.OutcomeRolledBack || st.LastResult.From != c2 || st.LastResult.To != c1 {
		t.Errorf("last result after the rollback: %+v", st.LastResult)
	}
	// The head is still c2: the agent polls it and leaves it alone.
	time.Sleep(3 * time.Second)
	if lg := h.host.LastGood(); lg.Revision != c1 || h.host.TxnState() != "" {
		t.Errorf("the agent went back to %s (txn %q) after the rollback", short(lg.Revision), h.host.TxnState())
	}

	checkTxnLines(t, h.journal()[journalBefore:])
	table := h.host.MustExec(t, "/usr/local/bin/baton", "status")
	t.Logf("baton status after the rollback:\n%s", table)
	golden(t, "status-rolled-back", maskStatus(table, map[string]string{c1: "C1", c2: "C2"}))

	// A newer commit moves the host forward again, as usual.
	c3 := h.push(release{version: "3.0.0", mode: "ok"})
	h.settled(c3)
	if h.host.LastGood().Revision != c3 {
		t.Errorf("a commit after the rollback was not applied")
	}
	h.consistent()
}

// checkTxnLines checks that every line of the journal logged inside a transaction
// carries its id, group, commit, service and step.
func checkTxnLines(t *testing.T, journal string) {
	t.Helper()
	inside, seen := false, 0
	for line := range strings.SplitSeq(journal, "\n") {
		if strings.Contains(line, ": preparing") {
			inside = true
		}
		if !inside {
			continue
		}
		seen++
		for _, key := range []string{"host=", "txn=", "group=", "commit=", "service=", "step="} {
			if !strings.Contains(line, " "+key) {
				t.Errorf("a line of the transaction lacks %s: %s", key, line)
			}
		}
		if strings.Contains(line, "upgrade committed") {
			inside = false
			t.Logf("the journal's last line of the transaction: %s", line)
		}
	}
	if seen < 5 {
		t.Errorf("found %d lines of the transaction in the journal:\n%s", seen, journal)
	}
}

// maskStatus replaces what changes from run to run in `baton status`: commits by
// their names, ages and times by placeholders.
func maskStatus(out string, commits map[string]string) string {
	for full, name := range commits {
		out = strings.ReplaceAll(out, full, name)
		out = strings.ReplaceAll(out, short(full), name)
	}
	out = regexp.MustCompile(`\b\d+(\.\d+)?(ms|s|m|h)\b`).ReplaceAllString(out, "<age>")
	out = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`).ReplaceAllString(out, "<time>")
	out = regexp.MustCompile(`\b\d\d:\d\d:\d\d\b`).ReplaceAllString(out, "<time>")
	out = regexp.MustCompile(`\b\d{4}-\d\d-\d\d\b`).ReplaceAllString(out, "<date>")
	out = regexp.MustCompile(`verifying( \d+/\d+ s, \d+/\d+ checks passing)?\n`).ReplaceAllString(out, "verifying <progress>\n")
	out = regexp.MustCompile(`\b[0-9a-f]{8}\b`).ReplaceAllString(out, "<txn>")
	return out
}

// golden compares got with testdata/golden/name.txt; -update rewrites it.
func golden(t *testing.T, name, got string) {
	t.Helper()
	goldenfile.Check(t, filepath.Join("testdata", "golden", name+".txt"), []byte(got))
}
