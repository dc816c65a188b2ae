package fleet

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkUnmet: the gate's decision on requirements for one host of a fleet of
// 10,000 hosts, a third of them running db, api (requiring db) or web (requiring
// api); the host switches api, which is checked both ways against every record.
func BenchmarkUnmet(b *testing.B) {
	now := time.Now()
	snap := &Snapshot{Hosts: map[string]Host{}}
	kinds := []map[string]Run{
		{"db": run("2.1.0")},
		{"api": run("1.5.0", "db", ">=1.0.0 <3.0.0")},
		{"web": run("3.0.0", "api", ">=1.0.0 <3.0.0")},
	}
	const hosts = 10_000
	for i := range hosts {
		name := fmt.Sprintf("h-%05d", i)
		snap.Hosts[name] = Host{Host: name, Commit: "c1", Time: now, Seen: now, Runs: kinds[i%3]}
	}
	to := map[string]Run{"api": run("2.0.0", "db", ">=2.0.0 <3.0.0")}
	b.ReportAllocs()
	for b.Loop() {
		if u := snap.Unmet("h-00001", to, now); u != nil {
			b.Fatal(u)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/hosts*1000, "ns/host")
}
