package chaos

import (
	"strings"
	"testing"
	"time"
)

func TestReportWrite(t *testing.T) {
	r := Report{
		Seed: 42, Took: 90 * time.Second, Hosts: 3, EtcdMembers: 3, Pushed: 5, Bad: 1,
		Txns:       map[Outcome]int{Committed: 12, Failed: 1, Aborted: 2},
		Faults:     map[string]int{"etcd down": 1, "agent SIGKILL": 2},
		Violations: []Violation{{MaxParallel, "2 hosts switched at 10:00:01.000, limit 1: h1, h2"}},
	}
	var b strings.Builder
	if err := r.Write(&b); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(strings.Fields(b.String()), " ")
	for _, want := range []string{
		"seed 42, 1m30s, 3 hosts, 3 etcd members",
		"12 committed, 1 failed, 2 aborted, 0 open",
		"fault: agent SIGKILL 2 fault: etcd down 1 faults 3",
		"violation: max-parallel 1 invariant violations 1 max-parallel: 2 hosts switched",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}
