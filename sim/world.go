// Package sim is a deterministic simulation of a fleet upgrading: agents that run the
// real decisions of baton (core.Machine, core.Gate, core.Backoff, the fleet state's own
// reading of its keys) against a simulated etcd, simulated systemd and checks, and a
// simulated clock, under a seeded schedule of faults: crashes at any step, restarts,
// partitions, etcd outages and leader changes, lost requests, slow drains, bad
// releases. After every event the promises of a rollout are checked (invariants.go);
// a seed that breaks one replays exactly, with a trace.
package sim

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/baton-fleet/baton/fleet"
	"github.com/baton-fleet/baton/internal/yamldoc"
	"github.com/baton-fleet/baton/rollback"
	"github.com/baton-fleet/baton/spec"
)

// Config is one simulated rollout.
type Config struct {
	Seed        uint64
	Hosts       int           // 3 to 6 when 0: chosen by the seed
	MaxParallel int           // 1 or 2 when 0: chosen by the seed
	Faulty      time.Duration // how long commits are pushed and faults injected
	Settle      time.Duration // how long after that the fleet has to converge
	Trace       bool          // keep a trace of every step (for a failing seed)
}

// Result is what one seed did.
type Result struct {
	Seed       uint64
	Events     int // clock events run
	Steps      int // transaction steps performed
	Faults     int
	Commits    int
	Superseded int    // transactions a newer commit ended while their host waited for the lease
	Violation  string // the first promise broken, "" when none
	Trace      []string
	SimElapsed time.Duration
}

// The simulated fleet's settings.
const (
	prefix          = "/baton"
	group           = "web"
	service         = "web"
	ttl             = 10 * time.Second // the etcd lease's TTL
	pollEvery       = 5 * time.Second
	minHealthy      = 10 * time.Second
	healthyDeadline = 30 * time.Second
)

// World is the fleet, its etcd and its clock, for one seed.
type World struct {
	cfg     Config
	rng     *rand.Rand
	clock   *Clock
	etcd    *Etcd
	group   *spec.Group
	hosts   []*Host
	commits []commit // pushed so far, in order; the last is the branch's head

	res      Result
	verdicts map[string]*verdict  // the bad releases found, by version
	sight    *sight               // the fleet state as last read (see sightAt)
	leg      func() time.Duration // how long the next leg of a request takes: drawLeg, or a test's
	trace    []string
}

// commit is one commit of the fleet repository: it changes the service's release.
type commit struct {
	id   string
	rel  fleet.Release
	good bool // the release passes its checks on every host
}

// verdict is a release found bad by its checks on a host.
type verdict struct {
	host string
	at   time.Duration
	// chance is when the host could first have written its halt (up, and etcd
	// reachable), -1 until then.
	chance time.Duration
}

// Run simulates one seed.
func Run(cfg Config) Result {
	w := newWorld(cfg)
	w.schedule()
	end := Epoch.Add(cfg.Faulty + cfg.Settle)
	for w.res.Violation == "" && w.clock.Pending() > 0 && w.clock.Now().Before(end) {
		w.clock.Step()
		w.res.Events++
		w.checkAlways()
	}
	if w.res.Violation == "" {
		w.checkConverged()
	}
	w.res.SimElapsed = w.clock.Elapsed()
	w.res.Trace = w.trace
	return w.res
}

func newWorld(cfg Config) *World {
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	if cfg.Hosts == 0 {
		cfg.Hosts = 3 + rng.IntN(4)
	}
	if cfg.MaxParallel == 0 {
		cfg.MaxParallel = 1 + rng.IntN(2)
	}
	clock := NewClock()
	w := &World{cfg: cfg, rng: rng, clock: clock, etcd: NewEtcd(clock, rng), verdicts: map[string]*verdict{}}
	w.leg = w.drawLeg
	if cfg.Trace {
		w.etcd.Expired = func(id int64) { w.tracef("-", "etcd: lease %d expired", id) }
	}
	w.res.Seed = cfg.Seed
	w.group = &spec.Group{Name: group}
	w.group.Rollout.MaxParallel = cfg.MaxParallel
	w.group.Rollout.MinHealthy = yamldoc.Duration(minHealthy)
	w.group.Rollout.HealthyDeadline = yamldoc.Duration(healthyDeadline)
	w.push(true) // the revision every host runs at the start
	for i := range cfg.Hosts {
		h := &Host{w: w, name: fmt.Sprintf("h%d", i+1), up: true, quarantine: map[string]bool{}, touchedSince: -1, rate: 1}
		if rng.IntN(4) == 0 {
			h.rate = 0.8 + 0.2*rng.Float64() // a clock that runs slow: up to a fifth
		}
		h.lastGood, h.units = w.commits[0].id, w.commits[0].id
		w.hosts = append(w.hosts, h)
	}
	return w
}

// push adds a commit whose release is good or not.
func (w *World) push(good bool) {
	n := len(w.commits)
	c := commit{id: fmt.Sprintf("%040x", n+1), good: good,
		rel: fleet.Release{Service: service, Version: fmt.Sprintf("1.%d.0", n), Fingerprint: fmt.Sprintf("f%d", n)}}
	w.commits = append(w.commits, c)
	w.res.Commits = len(w.commits) - 1
	w.tracef("-", "push %s (%s, good=%v)", c.id[len(c.id)-4:], c.rel.Version, good)
}

func (w *World) head() commit { return w.commits[len(w.commits)-1] }

// commitOf finds a pushed commit by id.
func (w *World) commitOf(id string) commit {
	for _, c := range w.commits {
		if c.id == id {
			return c
		}
	}
	panic("sim: unknown commit " + id)
}

// schedule starts the hosts' loops and lays out the seed's pushes and faults.
func (w *World) schedule() {
	for _, h := range w.hosts {
		h.start()
	}
	// A good release last, so that the fleet has somewhere to converge to; pushed while
	// the faults go on, so that a host's last transaction runs under them too (a slot
	// left held by a failed release, say, only shows when no later one frees it).
	last := w.between(w.cfg.Faulty/2, w.cfg.Faulty)
	pushes := 2 + w.rng.IntN(4)
	for range pushes {
		good := w.rng.IntN(10) < 7
		w.clock.After(w.between(0, last), func() { w.push(good) })
	}
	w.clock.After(last, func() { w.push(true) })
	for t := w.between(5*time.Second, 60*time.Second); t < w.cfg.Faulty; t += w.between(5*time.Second, 90*time.Second) {
		w.clock.After(t, w.fault)
	}
}

// between is a random duration in [lo, hi).
func (w *World) between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(w.rng.Int64N(int64(hi-lo)))
}

// fault injects one fault, chosen by the seed.
func (w *World) fault() {
	w.res.Faults++
	h := w.hosts[w.rng.IntN(len(w.hosts))]
	switch k := w.rng.IntN(60); {
	case k < 24:
		h.crash(w.between(time.Second, 2*time.Minute))
	case k < 36:
		d := w.between(5*time.Second, 2*time.Minute)
		w.tracef(h.name, "fault: cut off from etcd for %v", d)
		w.etcd.Partition(h.name)
		w.clock.After(d, func() { w.etcd.Heal(h.name); w.tracef(h.name, "fault: reaches etcd again") })
	case k < 42:
		d := w.between(2*time.Second, time.Minute)
		w.tracef("-", "fault: etcd down for %v", d)
		w.etcd.Down()
		w.clock.After(d, func() { w.etcd.Up(); w.tracef("-", "fault: etcd up") })
	case k < 48:
		w.tracef("-", "fault: etcd leader change")
		w.etcd.LeaderChange()
	case k < 50:
		states := []rollback.State{rollback.Switching, rollback.Verifying, rollback.RollingBack}
		h.poison, h.poisonUntil = states[w.rng.IntN(len(states))], w.clock.Elapsed()+20*time.Minute
		w.tracef(h.name, "fault: the agent dies each time it enters %s, for 20m", h.poison)
	case k < 55:
		d := w.between(time.Second, 30*time.Second)
		w.tracef(h.name, "fault: the host is paused for %v when its next etcd request goes out", d)
		h.pauseNext = d
	default:
		mode := FailMode(w.rng.IntN(2))
		w.tracef(h.name, "fault: its next etcd request is lost (mode %d)", mode)
		w.etcd.FailNext(h.name, mode)
	}
}

// tracef keeps a line of the trace, when tracing.
func (w *World) tracef(who, format string, args ...any) {
	if !w.cfg.Trace {
		return
	}
	w.trace = append(w.trace, fmt.Sprintf("%9.3fs %-3s %s", w.clock.Elapsed().Seconds(), who, fmt.Sprintf(format, args...)))
}

// violate records the first promise broken.
func (w *World) violate(format string, args ...any) {
	if w.res.Violation == "" {
		w.res.Violation = fmt.Sprintf("at %v: ", w.clock.Elapsed()) + fmt.Sprintf(format, args...)
		w.tracef("!", "VIOLATION %s", w.res.Violation)
	}
}

// short is the last digits of a commit id, for traces.
func short(id string) string { return id[max(0, len(id)-4):] }
