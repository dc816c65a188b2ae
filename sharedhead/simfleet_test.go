package sharedhead

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/baton-fleet/baton/gitsync"
	"github.com/baton-fleet/baton/internal/testetcd"
	"github.com/baton-fleet/baton/internal/testgit"
)

// TestSimulatedFleet is BenchmarkScale's fleet made small, for CI: six simulated
// agents in two processes against one git server and one etcd member, polling
// every minute. One is elected the fetcher; after a push and a sync request every
// agent fetches the commit, the five others because the published head told them
// (their watch), each with one fetch of its own.
func TestSimulatedFleet(t *testing.T) {
	repo := testgit.NewRepo(t)
	repo.WriteFile("fleet.yaml", "apiVersion: baton/v1\n")
	start := repo.Commit("first")
	git := &gitServer{slots: make(chan struct{}, gitServerSlots)}
	gitURL, _ := testgit.ServeHTTP(t, repo, testgit.WithWrap(git.wrap))
	c := testetcd.Start(t)
	procs := startSimProcs(t, simConfig{Count: 6, GitURL: gitURL, Template: cloneTemplate(t, gitURL), Start: start,
		Dir: t.TempDir(), Endpoints: c.Endpoints(), Poll: time.Minute, TTL: testTTL}, 3, nil)
	for i, s := range askAll[simSettled](t, procs, "settle 3m") {
		if s.Settled != procs[i].count {
			t.Fatalf("process %d: %d of %d agents polled and heard the fetcher", i, s.Settled, procs[i].count)
		}
	}
	fetchers := 0
	for _, s := range askAll[simStats](t, procs, "stats") {
		fetchers += s.Fetchers
	}
	if fetchers != 1 {
		t.Fatalf("%d fetchers, want 1", fetchers)
	}

	repo.WriteFile("fleet.yaml", "apiVersion: baton/v1\nfreeze: false\n")
	pushed := repo.Commit("second")
	fetches := git.fetches.Load()
	if err := RequestSync(t.Context(), c.Client(t), "/baton", "main", Sync{By: "test"}); err != nil {
		t.Fatal(err)
	}
	var got simReach
	for _, r := range askAll[simReach](t, procs, "reach "+pushed+" 1m") {
		got.Fetched += r.Fetched
		got.ByWatch += r.ByWatch
	}
	if got.Fetched != 6 || got.ByWatch != 5 {
		t.Errorf("%d agents fetched the push, %d of them told by the published head; want 6 and 5", got.Fetched, got.ByWatch)
	}
	if n := git.fetches.Load() - fetches; n != 6 {
		t.Errorf("%d fetches for the push, want one an agent", n)
	}
}

// simFleetEnv carries a simConfig (JSON): the test binary then runs as a process
// of simulated agents (see TestMain), a child of BenchmarkScale or
// TestSimulatedFleet, which talk to it over its standard input and output
// (simFleet.serve).
const simFleetEnv = "BATON_SCALE_FLEET"

// simConfig is what a process of simulated agents needs.
type simConfig struct {
	First, Count int           // its agents are h<First> to h<First+Count-1>
	GitURL       string        // the smart-HTTP git server
	Template     string        // a clone of the repository: each agent starts from its own copy
	Start        string        // the head of Template
	Dir          string        // where the agents' clones go
	Endpoints    []string      // etcd, with the shared head; none without
	Poll, TTL    time.Duration // repo.poll and the election's TTL
	// NoFetch: a follower only notes that it heard of a new head, and does not
	// fetch it (BenchmarkScale's BATON_SCALE_NOFETCH: etcd's fan-out alone).
	NoFetch bool
	// Splay is repo.splay: the followers past the first FirstGroup (the hosts of the
	// group that goes first) fetch a new head at a random moment within it, through
	// Options.Splay (BATON_SCALE_SPLAY, BATON_SCALE_FIRST).
	Splay      time.Duration
	FirstGroup int
}

// simAgent is an agent without systemd: the real gitsync and, with the shared
// head, the real election and watch (Shared.Run), in the agent's fetch loop
// (agent.fetch and agent.nextPoll): it polls when woken or when OwnPoll says so,
// and the fetcher publishes what it polled, or that its poll failed (AfterPoll). Like an agent it has its own clone on
// disk, its own HTTP transport to the git server (gitsync's) and its own etcd
// client, one gRPC connection that its election and watches share. Unlike one it
// verifies no signature, applies nothing and holds no lease.
type simAgent struct {
	git   *gitsync.Syncer
	cli   *clientv3.Client // nil without the shared head
	sh    *Shared          // nil without the shared head
	start string           // the head it started on
	wake  chan struct{}
	poll  time.Duration
	// noFetch: as a follower, it notes a new head and is not woken (simConfig.NoFetch).
	noFetch    bool
	firstGroup bool // with a splay, it is of the group that goes first: it fetches at once

	polls    atomic.Int64 // the polls it finished, each a ref listing
	ownPolls atomic.Int64 // of them, those of its own turn (not woken)

	mu        sync.Mutex
	knownAt   time.Time // when it learned of a head past start: by its poll, or published
	byWatch   bool      // it learned of it from the published head
	fetchedAt time.Time // when its clone first held a head past start
	pollBegan time.Time // when the poll that brought it began
	published time.Time // when it, the fetcher, first published a head past start
}

func (s *simAgent) signal() {
	if h, _ := s.sh.Head(); h.Commit != "" {
		s.learn(h.Commit, true)
	}
	if s.noFetch && !s.sh.Fetcher() {
		return
	}
	s.poke()
}

// poke wakes the agent's loop to poll.
func (s *simAgent) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *simAgent) learn(commit string, byWatch bool) {
	if commit == s.start {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.knownAt.IsZero() {
		s.knownAt, s.byWatch = time.Now(), byWatch
	}
}

func (s *simAgent) run(ctx context.Context) {
	woken := false
	for {
		own, wait := true, Jitter(s.poll)
		if s.sh != nil {
			own, wait = OwnPoll(s.sh.View())
		}
		if own || woken {
			s.pollOnce(ctx, !woken)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.wake:
			woken = true
		case <-t.C:
			woken = false
		}
		t.Stop()
	}
}

func (s *simAgent) pollOnce(ctx context.Context, own bool) {
	began := time.Now()
	_, err := s.git.Poll(ctx)
	s.polls.Add(1)
	if own {
		s.ownPolls.Add(1)
	}
	if head := s.git.Head(); err == nil && head != s.start {
		s.learn(head, false)
		s.mu.Lock()
		if s.fetchedAt.IsZero() {
			s.fetchedAt, s.pollBegan = time.Now(), began
		}
		s.mu.Unlock()
	}
	if s.sh != nil && s.sh.Fetcher() {
		anchor := s.git.Anchor()
		if s.sh.AfterPoll(ctx, anchor, err, s.git.Descends) == nil && err == nil && anchor != s.start {
			s.mu.Lock()
			if s.published.IsZero() {
				s.published = time.Now()
			}
			s.mu.Unlock()
		}
	}
}

// simFleet is one process's simulated agents.
type simFleet struct {
	cfg    simConfig
	agents []*simAgent
	cancel context.CancelFunc
	wg     sync.WaitGroup
	heap0  uint64 // the heap in use before the agents
	// profiled is closed once the CPU profile asked for is written; nil when
	// none was.
	profiled chan struct{}
}

// runSimFleet is the child process: it starts cfg's agents, prints "ready", and
// answers requests until its standard input closes.
func runSimFleet(spec string) int {
	var cfg simConfig
	if err := json.Unmarshal([]byte(spec), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "simulated fleet:", err)
		return 2
	}
	f, err := startSimFleet(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "simulated fleet:", err)
		return 1
	}
	defer f.stop()
	fmt.Println("ready")
	f.serve(os.Stdin, os.Stdout)
	return 0
}

func startSimFleet(cfg simConfig) (*simFleet, error) {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	ctx, cancel := context.WithCancel(context.Background())
	f := &simFleet{cfg: cfg, cancel: cancel, heap0: m.HeapInuse}
	for i := range cfg.Count {
		a, err := f.newAgent(cfg.First + i)
		if err != nil {
			f.stop()
			return nil, err
		}
		f.agents = append(f.agents, a)
		if a.sh != nil {
			f.wg.Go(func() { a.sh.Run(ctx, a.git.Anchor, a.signal) })
		}
		f.wg.Go(func() { a.run(ctx) })
	}
	return f, nil
}

// newAgent is agent number i of the fleet, host h<i>.
func (f *simFleet) newAgent(i int) (*simAgent, error) {
	host := fmt.Sprintf("h%05d", i)
	dir := filepath.Join(f.cfg.Dir, host+".git")
	if err := copyTree(f.cfg.Template, dir); err != nil {
		return nil, err
	}
	g, err := gitsync.New(gitsync.Options{URL: f.cfg.GitURL, Dir: dir}, nil)
	if err != nil {
		return nil, err
	}
	a := &simAgent{git: g, start: f.cfg.Start, wake: make(chan struct{}, 1), poll: f.cfg.Poll, noFetch: f.cfg.NoFetch,
		firstGroup: f.cfg.Splay > 0 && i < f.cfg.FirstGroup}
	if len(f.cfg.Endpoints) == 0 {
		return a, nil
	}
	a.cli, err = clientv3.New(clientv3.Config{Endpoints: f.cfg.Endpoints, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	o := Options{Prefix: "/baton", Branch: "main", Host: host, Poll: f.cfg.Poll, TTL: f.cfg.TTL}
	if f.cfg.Splay > 0 {
		// As the agent's splay: asked as the follower hears of the head, which
		// it then knows; only its fetch waits.
		o.Splay = func(h Head) time.Duration {
			a.learn(h.Commit, true)
			if a.firstGroup {
				return 0
			}
			return f.cfg.Splay
		}
	}
	a.sh = New(a.cli, o)
	return a, nil
}

func (f *simFleet) stop() {
	f.cancel()
	f.wg.Wait()
	for _, a := range f.agents {
		if a.cli != nil {
			a.cli.Close()
		}
	}
}

// serve answers one request a line, each with one line of JSON:
//
//	settle <timeout>        every agent polled once and, with the shared head, heard the fetcher (simSettled)
//	stats                   memory and counters (simStats)
//	reach <commit> <timeout> when the agents learned of commit and fetched it (simReach)
//	profile <file> <window> start a CPU profile of the process, written to file after window (simProfile)
//	profiled                once that profile is written (simProfile)
func (f *simFleet) serve(in io.Reader, out io.Writer) {
	sc := bufio.NewScanner(in)
	enc := json.NewEncoder(out)
	for sc.Scan() {
		verb, arg, _ := strings.Cut(sc.Text(), " ")
		var reply any
		switch verb {
		case "settle":
			d, _ := time.ParseDuration(arg)
			reply = f.settle(d)
		case "stats":
			reply = f.stats()
		case "reach":
			commit, d, _ := strings.Cut(arg, " ")
			timeout, _ := time.ParseDuration(d)
			reply = f.reach(commit, timeout)
		case "profile":
			file, d, _ := strings.Cut(arg, " ")
			window, _ := time.ParseDuration(d)
			reply = f.profile(file, window)
		case "profiled":
			if f.profiled != nil {
				<-f.profiled
			}
			reply = simProfile{}
		default:
			reply = map[string]string{"error": "unknown request " + strconv.Quote(verb)}
		}
		if err := enc.Encode(reply); err != nil {
			return
		}
	}
}

type simSettled struct{ Settled int }

// hears says whether the agent, a follower, heard the fetcher lately: it does not
// poll at its own turn.
func (s *simAgent) hears() bool {
	poll, _ := OwnPoll(s.sh.View())
	return !poll
}

func (f *simFleet) settle(timeout time.Duration) simSettled {
	deadline := time.Now().Add(timeout)
	for {
		n := 0
		for _, a := range f.agents {
			if a.polls.Load() > 0 && (a.sh == nil || a.sh.Fetcher() || a.hears()) {
				n++
			}
		}
		if n == len(f.agents) || time.Now().After(deadline) {
			return simSettled{n}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// simStats is a process's memory and counters. Heap is what the agents added to
// the heap in use (after a GC); RSS is the whole process's.
type simStats struct {
	Agents, Goroutines, FDs, Fetchers int
	Stale                             int // followers that do not hear the fetcher: they poll on their own
	Heap, RSS                         uint64
	Polls, OwnPolls                   int64
}

func (f *simFleet) stats() simStats {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	fds, _ := os.ReadDir("/proc/self/fd")
	s := simStats{Agents: len(f.agents), Goroutines: runtime.NumGoroutine(), FDs: len(fds), RSS: selfRSS()}
	if m.HeapInuse > f.heap0 {
		s.Heap = m.HeapInuse - f.heap0
	}
	for _, a := range f.agents {
		s.Polls += a.polls.Load()
		s.OwnPolls += a.ownPolls.Load()
		switch {
		case a.sh == nil:
		case a.sh.Fetcher():
			s.Fetchers++
		case !a.hears():
			s.Stale++
		}
	}
	return s
}

// selfRSS is the process's resident set (VmRSS), 0 when it cannot be read.
func selfRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// simReach is how far a commit got in a process: how many agents learned of it
// (ByWatch of them from the published head) and fetched it, and when the last of
// each did (Unix nanoseconds: the processes share the machine's clock). A run
// pushes one commit: any head past the start is it.
type simReach struct {
	Knew, ByWatch, Fetched           int
	Published, LastKnew, LastFetched int64 // Published: when the fetcher, if here, published it
	FirstGroupFetched                int64 // when the last agent of the first group here fetched it (with a splay)
	PollBegan, PollEnded             int64 // when the fetcher's poll that brought it began and ended

	HeardAt []int64 // when each agent told by the published head learned of it
}

func (f *simFleet) reach(commit string, timeout time.Duration) simReach {
	deadline := time.Now().Add(timeout)
	for {
		r := f.count(commit)
		if f.reached(r) || time.Now().After(deadline) {
			return r
		}
		// Each agent keeps its own times: the look only decides when to
		// answer. Not more often, for it takes each agent's lock and the
		// process's CPU, which its agents need during the push.
		time.Sleep(100 * time.Millisecond)
	}
}

// reached says whether every agent has the commit: fetched it or, with NoFetch,
// knows of it.
func (f *simFleet) reached(r simReach) bool {
	if f.cfg.NoFetch {
		return r.Knew == len(f.agents)
	}
	return r.Fetched == len(f.agents)
}

// simProfile is the answer to a profile request: Err is why none is written.
type simProfile struct{ Err string }

// profile starts a CPU profile of this process, written to file after window.
func (f *simFleet) profile(file string, window time.Duration) simProfile {
	out, err := os.Create(file)
	if err != nil {
		return simProfile{err.Error()}
	}
	if err := pprof.StartCPUProfile(out); err != nil {
		out.Close()
		return simProfile{err.Error()}
	}
	f.profiled = make(chan struct{})
	time.AfterFunc(window, func() {
		pprof.StopCPUProfile()
		out.Close()
		close(f.profiled)
	})
	return simProfile{}
}

func (f *simFleet) count(commit string) simReach {
	var r simReach
	for _, a := range f.agents {
		a.mu.Lock()
		knownAt, byWatch, fetchedAt, published, began := a.knownAt, a.byWatch, a.fetchedAt, a.published, a.pollBegan
		a.mu.Unlock()
		if !published.IsZero() {
			r.Published, r.PollBegan, r.PollEnded = published.UnixNano(), began.UnixNano(), fetchedAt.UnixNano()
		}
		if !knownAt.IsZero() {
			r.Knew++
			r.LastKnew = max(r.LastKnew, knownAt.UnixNano())
			if byWatch {
				r.ByWatch++
				r.HeardAt = append(r.HeardAt, knownAt.UnixNano())
			}
		}
		if !fetchedAt.IsZero() && a.git.Head() == commit {
			r.Fetched++
			r.LastFetched = max(r.LastFetched, fetchedAt.UnixNano())
			if a.firstGroup {
				r.FirstGroupFetched = max(r.FirstGroupFetched, fetchedAt.UnixNano())
			}
		}
	}
	return r
}

// copyTree copies the regular files and directories under src to dst.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o750)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o640)
	})
}
