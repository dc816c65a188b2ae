package sharedhead

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-fleet/baton/gitsync"
	"github.com/baton-fleet/baton/internal/testchild"
	"github.com/baton-fleet/baton/internal/testetcd"
	"github.com/baton-fleet/baton/internal/testgit"
)

// The knobs of BenchmarkScale, from the environment.
const (
	scaleAgentsEnv  = "BATON_SCALE_AGENTS"  // simulated agents (default 100)
	scalePollEnv    = "BATON_SCALE_POLL"    // their repo.poll (default 2s)
	scaleBoundEnv   = "BATON_SCALE_BOUND"   // how long a push may take to reach them all (default 5m)
	scaleOnlyEnv    = "BATON_SCALE_ONLY"    // "shared": only the run with the shared head
	scaleNoFetchEnv = "BATON_SCALE_NOFETCH" // 1: followers note a new head and do not fetch it
	scaleProfileEnv = "BATON_SCALE_PROFILE" // a directory: CPU profiles of the push's first profileWindow
	scaleProxiesEnv = "BATON_SCALE_PROXIES" // agents reach etcd through this many gRPC proxies (default none)
	scaleSplayEnv   = "BATON_SCALE_SPLAY"   // repo.splay of the followers past the first group (default 0: all at once)
	scaleFirstEnv   = "BATON_SCALE_FIRST"   // with a splay, the agents of the group that goes first, which fetch at once (default 5)
)

// scaleKnobs are BenchmarkScale's knobs.
type scaleKnobs struct {
	agents      int
	poll, bound time.Duration
	// noFetch: followers only note that they heard of the pushed commit, so that
	// the push measures etcd's fan-out alone, without 10,000 fetches competing
	// for the machine.
	noFetch bool
	profile string // where CPU profiles go; none when empty
	// proxies is how many gRPC proxies (etcd grpc-proxy) the agents reach etcd
	// through, the agents of a process through one; 0: the member directly.
	proxies int
	// splay: repo.splay of the followers past the first group of first agents
	// (simConfig.Splay, First).
	splay time.Duration
	first int
}

// profileWindow is how long BATON_SCALE_PROFILE profiles from the push: at
// 10,000 agents on a 2-core machine, the fan-out of the head and the start of
// the fetches.
const profileWindow = 10 * time.Second

// agentsPerProcess is how many simulated agents one child process runs: each has
// a connection to etcd and one to the git server, so 10,000 in one process would
// pass its limit of open files (often 20,000 or less) with the git server's ends.
const agentsPerProcess = 2500

// scaleTTL is the election's TTL in BenchmarkScale: the agent's default
// lease.etcd.ttl, which it passes on.
const scaleTTL = 15 * time.Second

// gitServerSlots bounds the git processes serving at once, as a forge bounds its
// workers: without it 10,000 agents polling at once start 20,000 git processes.
const gitServerSlots = 8

// gitServer counts what a smart-HTTP git server gets: ref listings (GET
// info/refs) and fetches (POST git-upload-pack), as they arrive and as they are
// served; at most gitServerSlots at once are served.
type gitServer struct {
	listings, fetches, served atomic.Int64
	inflight                  atomic.Int64 // requests arrived and not answered yet
	slots                     chan struct{}
}

func (g *gitServer) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.inflight.Add(1)
		defer g.inflight.Add(-1)
		listing := strings.HasSuffix(r.URL.Path, "/info/refs")
		switch {
		case listing:
			g.listings.Add(1)
		case strings.HasSuffix(r.URL.Path, "/git-upload-pack"):
			g.fetches.Add(1)
		}
		select {
		case g.slots <- struct{}{}:
			defer func() { <-g.slots }()
		case <-r.Context().Done(): // the agent gave up waiting
			return
		}
		next.ServeHTTP(w, r)
		if listing {
			g.served.Add(1)
		}
	})
}

// scaleResult is one run of benchScale.
type scaleResult struct {
	agents, procs       int
	shared, noFetch     bool
	proxies             []int         // the process ids of the gRPC proxies the agents reach etcd through
	splay               time.Duration // repo.splay of the followers past the first group (BATON_SCALE_SPLAY)
	first               int           // the agents of the first group, which fetch at once
	coldStart           time.Duration // from starting the agents to every one polled; with the shared head, heard the fetcher, and the git server idle
	listingsServed      float64       // ref listings served a minute while idle
	listingsAsked       float64       // polls the agents made a minute at their own turn while idle
	stale               int           // followers polling on their own, at the start or the end of the idle window
	syncAsked           time.Duration // from the push to the sync request written
	polled, pollEnded   time.Duration // from the push to the fetcher's poll beginning, and ending
	published           time.Duration // from the push to the fetcher's publishing it
	knewAll, fetchedAll time.Duration
	firstFetched        time.Duration    // with a splay: until the agents of the first group fetched it
	heard               [3]time.Duration // from the push to the first, the median and the 99th percentile follower told by the published head
	knew, fetched       int
	cpu                 cpuUse  // used from the push to the end
	fetches             int64   // fetches (git-upload-pack) from the push to the end
	etcdIdle, etcdPush  float64 // etcd requests a second (gRPC messages received)
	etcdSent            float64 // messages etcd sent from the push to the end (watch events mostly)
	etcdRSS             float64 // MiB
	etcdWatchers        float64
	heap, rss           float64 // KiB per agent
	fds                 int
}

// BenchmarkScale runs simulated agents (BATON_SCALE_AGENTS, default 100, in child
// processes of up to 2,500) against one smart-HTTP git server (git http-backend)
// and one etcd member on this machine, without and with the shared head, and
// prints side by side: git ref listings a minute while idle, the time from a push
// to every agent knowing the commit and to every agent having fetched it, the
// fetches it cost, etcd requests a second and etcd's resident memory, and the
// memory of a simulated agent, and the CPU time etcd, the agents and the git
// server used for the push. See simAgent for what a simulated agent is.
//
// Knobs beside the size (see the consts above): BATON_SCALE_ONLY=shared skips
// the run where each agent polls (at 10,000 agents it takes some 15 minutes);
// BATON_SCALE_NOFETCH=1 makes followers only note the new head, which leaves
// etcd's fan-out of it alone on the machine; BATON_SCALE_PROFILE=dir writes CPU
// profiles of the etcd member, of each process of agents and of this process
// (the git server) over the first profileWindow of the push, for go tool pprof;
// BATON_SCALE_PROXIES=n puts n gRPC proxies (etcd grpc-proxy) between the agents
// and the member, the agents of a process behind one; BATON_SCALE_SPLAY=d sets
// repo.splay: the followers past the first BATON_SCALE_FIRST (default 5), the
// group that goes first, fetch a new head at a random moment within d.
//
//	make bench-scale   # or: BATON_SCALE_AGENTS=10000 BATON_SCALE_POLL=30s go test -run '^$' -bench Scale -benchtime 1x -timeout 60m ./sharedhead
func BenchmarkScale(b *testing.B) {
	k := scaleKnobs{
		agents:  envInt(scaleAgentsEnv, 100),
		poll:    envDuration(scalePollEnv, 2*time.Second),
		bound:   envDuration(scaleBoundEnv, 5*time.Minute),
		noFetch: os.Getenv(scaleNoFetchEnv) == "1",
		profile: os.Getenv(scaleProfileEnv),
		proxies: envInt(scaleProxiesEnv, 0),
		splay:   envDuration(scaleSplayEnv, 0),
		first:   envInt(scaleFirstEnv, 5),
	}
	modes := []bool{false, true}
	if os.Getenv(scaleOnlyEnv) == "shared" {
		modes = []bool{true}
	}
	var results []scaleResult
	for _, shared := range modes {
		b.Run(fmt.Sprintf("agents=%d/shared=%v", k.agents, shared), func(b *testing.B) {
			for b.Loop() {
				r := benchScale(b, k, shared)
				r.report(b)
				results = append(results, r)
			}
		})
	}
	printScale(os.Stdout, k.poll, results)
}

func benchScale(b *testing.B, k scaleKnobs, shared bool) scaleResult {
	n, poll := k.agents, k.poll
	r := scaleResult{agents: n, shared: shared, noFetch: shared && k.noFetch, splay: k.splay, first: k.first}
	repo := testgit.NewRepo(b)
	repo.WriteFile("fleet.yaml", "apiVersion: baton/v1\n")
	start := repo.Commit("first")
	git := &gitServer{slots: make(chan struct{}, gitServerSlots)}
	gitURL, _ := testgit.ServeHTTP(b, repo, testgit.WithWrap(git.wrap))
	template := cloneTemplate(b, gitURL)

	var etcd *testetcd.Cluster
	var endpoints, via []string
	if shared {
		etcd = testetcd.StartWith(b, testetcd.Options{NoFsync: true, Pprof: k.profile != ""})
		endpoints = etcd.Endpoints()
		for range k.proxies {
			p := etcd.StartGRPCProxy(b)
			r.proxies = append(r.proxies, p.Pid())
			via = append(via, p.Endpoint)
		}
	}
	started := time.Now()
	procs := startSimProcs(b, simConfig{Count: n, GitURL: gitURL, Template: template, Start: start,
		Dir: b.TempDir(), Endpoints: endpoints, Poll: poll, TTL: scaleTTL,
		NoFetch: r.noFetch, Splay: k.splay, FirstGroup: k.first}, agentsPerProcess, via)
	r.procs = len(procs)
	for i, s := range askAll[simSettled](b, procs, "settle 30m") {
		if want := procs[i].count; s.Settled != want {
			b.Fatalf("process %d: %d of %d agents polled and heard the fetcher", i, s.Settled, want)
		}
	}
	if shared {
		// The polls of the start, each agent's own, may still wait at the git
		// server. (Without the shared head it is never idle at this size.)
		waitIdle(b, git, 10*time.Minute)
	}
	r.coldStart = time.Since(started)
	var fetchers int
	for _, s := range askAll[simStats](b, procs, "stats") {
		r.heap += float64(s.Heap) / float64(n) / 1024
		r.rss += float64(s.RSS) / float64(n) / 1024
		r.fds = max(r.fds, s.FDs)
		fetchers += s.Fetchers
	}
	if shared && fetchers != 1 {
		b.Fatalf("%d fetchers elected, want 1", fetchers)
	}

	r.measureIdle(b, git, procs, etcd, max(20*time.Second, 3*poll))
	r.measurePush(b, repo, git, procs, etcd, k)
	if etcd != nil {
		m := scrapeEtcd(b, etcd)
		r.etcdRSS, r.etcdWatchers = m["process_resident_memory_bytes"]/(1<<20), m["etcd_debugging_mvcc_watcher_total"]
	}
	return r
}

// waitIdle waits until the git server has no request to answer, or fails after d.
func waitIdle(t testing.TB, git *gitServer, d time.Duration) {
	deadline := time.Now().Add(d)
	for git.inflight.Load() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the git server still has %d requests to answer after %v", git.inflight.Load(), d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// measureIdle counts, over window, the ref listings the git server serves, the
// polls the agents make at their own turn, and etcd's requests.
func (r *scaleResult) measureIdle(b *testing.B, git *gitServer, procs []*simProc, etcd *testetcd.Cluster, window time.Duration) {
	own0, stale0 := ownPolls(b, procs)
	served0, etcd0 := git.served.Load(), etcdRequests(b, etcd)
	time.Sleep(window)
	perMinute := float64(time.Minute) / float64(window)
	r.listingsServed = float64(git.served.Load()-served0) * perMinute
	own1, stale1 := ownPolls(b, procs)
	r.listingsAsked = float64(own1-own0) * perMinute
	r.stale = max(stale0, stale1)
	r.etcdIdle = (etcdRequests(b, etcd) - etcd0) / window.Seconds()
}

// measurePush pushes a commit, asks for a sync as a webhook delivery does (with the
// shared head), and waits up to k.bound for every agent to fetch it (with
// k.noFetch, to know of it).
func (r *scaleResult) measurePush(b *testing.B, repo *testgit.Repo, git *gitServer, procs []*simProc, etcd *testetcd.Cluster, k scaleKnobs) {
	var cli *clientv3.Client
	if etcd != nil {
		cli = etcd.Client(b)
	}
	repo.WriteFile("fleet.yaml", "apiVersion: baton/v1\nfreeze: false\n")
	pushed := repo.Commit("second")
	fetches0, etcd0, sent0 := git.fetches.Load(), etcdRequests(b, etcd), etcdSent(b, etcd)
	var profiled func()
	if k.profile != "" {
		profiled = startProfiles(b, k.profile, r.name(), procs, etcd)
	}
	cpu0 := r.readCPU(b, procs, etcd)
	start := time.Now()
	if etcd != nil {
		if err := RequestSync(b.Context(), cli, "/baton", "main", Sync{By: "bench"}); err != nil {
			b.Fatal(err)
		}
		r.syncAsked = time.Since(start)
	}
	var published, polled, pollEnded, lastKnew, lastFetched, firstGroup int64
	var heardAt []int64
	for _, p := range askAll[simReach](b, procs, "reach "+pushed+" "+k.bound.String()) {
		heardAt = append(heardAt, p.HeardAt...)
		r.knew += p.Knew
		r.fetched += p.Fetched
		published, polled, pollEnded = max(published, p.Published), max(polled, p.PollBegan), max(pollEnded, p.PollEnded)
		lastKnew, lastFetched = max(lastKnew, p.LastKnew), max(lastFetched, p.LastFetched)
		firstGroup = max(firstGroup, p.FirstGroupFetched)
	}
	took := time.Since(start)
	r.cpu = r.readCPU(b, procs, etcd).sub(cpu0)
	if profiled != nil {
		profiled()
	}
	for i, q := range []float64{0, 0.5, 0.99} {
		r.heard[i] = quantile(heardAt, q, start)
	}
	if published != 0 {
		r.published, r.polled, r.pollEnded = time.Unix(0, published).Sub(start), time.Unix(0, polled).Sub(start), time.Unix(0, pollEnded).Sub(start)
	}
	r.knewAll = time.Unix(0, lastKnew).Sub(start)
	r.fetchedAll = time.Unix(0, lastFetched).Sub(start)
	if firstGroup != 0 {
		r.firstFetched = time.Unix(0, firstGroup).Sub(start)
	}
	r.fetches = git.fetches.Load() - fetches0
	r.etcdPush = (etcdRequests(b, etcd) - etcd0) / took.Seconds()
	r.etcdSent = etcdSent(b, etcd) - sent0
}

// name is the run's in the files it writes: its size and its mode.
func (r scaleResult) name() string {
	mode := "polls"
	if r.shared {
		mode = "shared"
	}
	if r.noFetch {
		mode += "-nofetch"
	}
	if len(r.proxies) > 0 {
		mode += fmt.Sprintf("-proxies%d", len(r.proxies))
	}
	if r.splay > 0 {
		mode += "-splay" + r.splay.String()
	}
	return fmt.Sprintf("scale-%d-%s", r.agents, mode)
}

// quantile is when the q-quantile of the times at (Unix nanoseconds) came after
// start; 0 for none. It sorts at.
func quantile(at []int64, q float64, start time.Time) time.Duration {
	if len(at) == 0 {
		return 0
	}
	slices.Sort(at)
	return time.Unix(0, at[int(q*float64(len(at)-1))]).Sub(start)
}

func (r scaleResult) report(b *testing.B) {
	b.ReportMetric(r.listingsServed, "git-listings/min-idle")
	if r.knew == r.agents {
		b.ReportMetric(float64(r.knewAll.Milliseconds()), "ms-push-to-all-knew")
	}
	if r.fetched == r.agents {
		b.ReportMetric(float64(r.fetchedAll.Milliseconds()), "ms-push-to-all-fetched")
	}
	b.ReportMetric(float64(r.fetched), "agents-fetched")
	b.ReportMetric(float64(r.fetches), "fetches/push")
	b.ReportMetric(r.heap, "KiB-heap/agent")
	if r.shared {
		b.ReportMetric(r.etcdIdle, "etcd-req/s-idle")
		b.ReportMetric(r.etcdRSS, "MiB-etcd-RSS")
	}
}

// printScale writes the runs side by side.
func printScale(w io.Writer, poll time.Duration, rs []scaleResult) {
	if len(rs) == 0 {
		return
	}
	etcd := "one etcd member"
	switch n := len(rs[len(rs)-1].proxies); n {
	case 0:
	case 1:
		etcd += " behind a gRPC proxy"
	default:
		etcd += fmt.Sprintf(" behind %d gRPC proxies", n)
	}
	fmt.Fprintf(w, "\n%d simulated agents in %d processes, poll %v; %s; one git http-backend serving %d at once\n",
		rs[0].agents, rs[0].procs, poll, etcd, gitServerSlots)
	if r := rs[len(rs)-1]; r.splay > 0 {
		fmt.Fprintf(w, "with the shared head, repo.splay %v: agents h00000 to h%05d (the group that goes first) fetch a new head at once, the others within the splay (%s, %s)\n",
			r.splay, r.first-1, scaleSplayEnv, scaleFirstEnv)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(what string, f func(r scaleResult) string) {
		fmt.Fprint(tw, what)
		for _, r := range rs {
			fmt.Fprint(tw, "\t"+f(r))
		}
		fmt.Fprintln(tw)
	}
	row("", func(r scaleResult) string {
		if r.shared {
			return "shared head"
		}
		return "each agent polls"
	})
	row("start: all polled (shared: heard the fetcher, git idle)", func(r scaleResult) string { return r.coldStart.Round(100 * time.Millisecond).String() })
	row("git ref listings a minute, idle: served", func(r scaleResult) string { return fmt.Sprintf("%.0f", r.listingsServed) })
	row("  polls made at the agents' own turn", func(r scaleResult) string { return fmt.Sprintf("%.0f", r.listingsAsked) })
	row("  followers not hearing the fetcher", func(r scaleResult) string {
		if !r.shared {
			return "-"
		}
		return strconv.Itoa(r.stale)
	})
	row("push -> sync asked / fetcher polls / has it / published", func(r scaleResult) string {
		if !r.shared {
			return "-"
		}
		ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
		return fmt.Sprintf("%v / %v / %v / %v", ms(r.syncAsked), ms(r.polled), ms(r.pollEnded), ms(r.published))
	})
	row("push -> every agent knows the commit", func(r scaleResult) string { return reached(r.knew, r.agents, r.knewAll) })
	row("  followers told by the head: the first / half / 99%", func(r scaleResult) string {
		if !r.shared {
			return "-"
		}
		ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
		return fmt.Sprintf("%v / %v / %v", ms(r.heard[0]), ms(r.heard[1]), ms(r.heard[2]))
	})
	if r := rs[len(rs)-1]; r.splay > 0 {
		row("push -> the first group fetched it", func(r scaleResult) string {
			if r.firstFetched == 0 {
				return "-"
			}
			return r.firstFetched.Round(time.Millisecond).String()
		})
	}
	row("push -> every agent fetched it", func(r scaleResult) string {
		if r.noFetch {
			return "- (followers do not fetch: " + scaleNoFetchEnv + ")"
		}
		return reached(r.fetched, r.agents, r.fetchedAll)
	})
	row("git fetches for the push", func(r scaleResult) string { return strconv.FormatInt(r.fetches, 10) })
	row("etcd requests a second, idle / push", func(r scaleResult) string {
		if !r.shared {
			return "-"
		}
		return fmt.Sprintf("%.1f / %.1f", r.etcdIdle, r.etcdPush)
	})
	row("etcd messages sent for the push", func(r scaleResult) string {
		if !r.shared {
			return "-"
		}
		return fmt.Sprintf("%.0f", r.etcdSent)
	})
	row("etcd resident memory, watchers", func(r scaleResult) string {
		if !r.shared {
			return "-"
		}
		return fmt.Sprintf("%.0f MiB, %.0f", r.etcdRSS, r.etcdWatchers)
	})
	row("CPU for the push: etcd / agents / git server", func(r scaleResult) string {
		s := func(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }
		etcd := s(r.cpu.etcd)
		if len(r.proxies) > 0 {
			etcd += fmt.Sprintf(" + %d proxies %s", len(r.proxies), s(r.cpu.proxies))
		}
		return etcd + " / " + s(r.cpu.agents) + " / " + s(r.cpu.git)
	})
	row("per agent: heap / process RSS", func(r scaleResult) string { return fmt.Sprintf("%.0f / %.0f KiB", r.heap, r.rss) })
	row("open files in a process of agents", func(r scaleResult) string { return strconv.Itoa(r.fds) })
	tw.Flush()
}

func reached(n, of int, took time.Duration) string {
	if n < of {
		return fmt.Sprintf("%d of %d within the bound", n, of)
	}
	return took.Round(time.Millisecond).String()
}

// cloneTemplate clones the repository once with gitsync; each simulated agent
// starts from a copy, as an agent restarted over its state directory does.
func cloneTemplate(t testing.TB, url string) string {
	dir := filepath.Join(t.TempDir(), "template.git")
	g, err := gitsync.New(gitsync.Options{URL: url, Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	return dir
}

// simProc is a child process of simulated agents (runSimFleet).
type simProc struct {
	*testchild.Child
	count int
}

// startSimProcs splits cfg's agents over processes of up to perProcess and returns
// once each has started its agents. They end when the test ends. The agents of the
// i-th process reach etcd at via[i mod len(via)] alone, a gRPC proxy; at
// cfg.Endpoints when via is empty.
func startSimProcs(t testing.TB, cfg simConfig, perProcess int, via []string) []*simProc {
	t.Helper()
	var procs []*simProc
	for first := 0; first < cfg.Count; first += perProcess {
		c := cfg
		c.First, c.Count = first, min(perProcess, cfg.Count-first)
		if len(via) > 0 {
			c.Endpoints = []string{via[len(procs)%len(via)]}
		}
		procs = append(procs, startSimProc(t, c))
	}
	var wg sync.WaitGroup
	errs := make([]error, len(procs))
	for i, p := range procs {
		wg.Go(func() {
			line, err := p.ReadLine()
			if err == nil && line != "ready\n" {
				err = fmt.Errorf("said %q", line)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("process %d of simulated agents: %v", i, err)
		}
	}
	return procs
}

func startSimProc(t testing.TB, cfg simConfig) *simProc {
	spec, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &simProc{Child: testchild.Spawn(t, simFleetEnv+"="+string(spec)), count: cfg.Count}
	// Its input closed, it stops its agents, their election keys given up.
	t.Cleanup(func() { p.Stop(time.Minute) })
	return p
}

func (p *simProc) ask(req string, reply any) error {
	line, err := p.Ask(req)
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(line), reply)
}

// askAll asks every process at once and returns their replies in order.
func askAll[T any](t testing.TB, procs []*simProc, req string) []T {
	t.Helper()
	replies := make([]T, len(procs))
	errs := make([]error, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Go(func() { errs[i] = p.ask(req, &replies[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("process %d of simulated agents, %s: %v", i, req, err)
		}
	}
	return replies
}

// ownPolls is the polls the agents made at their own turn, and how many of them
// poll on their own for not hearing the fetcher.
func ownPolls(t testing.TB, procs []*simProc) (polls int64, stale int) {
	for _, s := range askAll[simStats](t, procs, "stats") {
		polls += s.OwnPolls
		stale += s.Stale
	}
	return polls, stale
}

// etcdRequests is the requests etcd has received (gRPC messages: a unary call is
// one, a watch or keep-alive stream one a message); 0 without etcd.
func etcdRequests(t testing.TB, c *testetcd.Cluster) float64 {
	if c == nil {
		return 0
	}
	return scrapeEtcd(t, c)["grpc_server_msg_received_total"]
}

// etcdSent is the messages etcd has sent (gRPC: answers, watch events); 0
// without etcd.
func etcdSent(t testing.TB, c *testetcd.Cluster) float64 {
	if c == nil {
		return 0
	}
	return scrapeEtcd(t, c)["grpc_server_msg_sent_total"]
}

// scrapeEtcd reads the member's metrics (the Prometheus text at /metrics beside
// its client API), each name's samples summed over their labels.
func scrapeEtcd(t testing.TB, c *testetcd.Cluster) map[string]float64 {
	resp, err := http.Get(c.Endpoints()[0] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(line, " ")
		name, _, _ = strings.Cut(name, "{")
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err == nil {
			m[name] += v
		}
	}
	return m
}

// startProfiles starts CPU profiles over profileWindow, written to dir as
// <name>-etcd.pprof (the member, from its pprof endpoint), <name>-agents<i>.pprof
// (each process of agents) and <name>-git.pprof (this process: the git server).
// The func it returns waits until they are all written.
func startProfiles(b *testing.B, dir, name string, procs []*simProc, etcd *testetcd.Cluster) (wait func()) {
	b.Helper()
	file := func(what string) string { return filepath.Join(dir, name+"-"+what+".pprof") }
	var etcdErr error
	var wg sync.WaitGroup
	if etcd != nil {
		wg.Go(func() { etcdErr = fetchProfile(etcd.Endpoints()[0], profileWindow, file("etcd")) })
	}
	for i, p := range procs {
		var reply simProfile
		err := p.ask(fmt.Sprintf("profile %s %v", file(fmt.Sprintf("agents%d", i)), profileWindow), &reply)
		if err == nil && reply.Err != "" {
			err = errors.New(reply.Err)
		}
		if err != nil {
			b.Fatalf("profile process %d of simulated agents: %v", i, err)
		}
	}
	out, err := os.Create(file("git"))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(out); err != nil {
		b.Fatal(err)
	}
	wg.Go(func() {
		time.Sleep(profileWindow)
		pprof.StopCPUProfile()
		out.Close()
	})
	return func() {
		askAll[simProfile](b, procs, "profiled")
		wg.Wait()
		if etcdErr != nil {
			b.Fatalf("profile etcd: %v", etcdErr)
		}
	}
}

// fetchProfile writes the CPU profile of the next d of the etcd member at
// endpoint to file.
func fetchProfile(endpoint string, d time.Duration, file string) error {
	resp, err := http.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", endpoint, int(d.Seconds())))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	out, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// cpuUse is the CPU time (user and system) the bench's processes used.
type cpuUse struct {
	etcd    time.Duration // the etcd member
	proxies time.Duration // its gRPC proxies
	agents  time.Duration // the processes of simulated agents
	git     time.Duration // this process, which serves git, and the git processes it ran
}

func (c cpuUse) sub(o cpuUse) cpuUse {
	return cpuUse{etcd: c.etcd - o.etcd, proxies: c.proxies - o.proxies, agents: c.agents - o.agents, git: c.git - o.git}
}

// readCPU reads the CPU time used so far: etcd's from its metrics, the proxies'
// and the agents' from /proc, this process's and its reaped children's (the git
// server's git processes) from getrusage.
func (r *scaleResult) readCPU(t testing.TB, procs []*simProc, etcd *testetcd.Cluster) cpuUse {
	var c cpuUse
	if etcd != nil {
		c.etcd = time.Duration(scrapeEtcd(t, etcd)["process_cpu_seconds_total"] * float64(time.Second))
	}
	for _, pid := range r.proxies {
		c.proxies += procCPU(pid)
	}
	for _, p := range procs {
		c.agents += procCPU(p.Pid())
	}
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if syscall.Getrusage(who, &ru) == nil {
			c.git += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	return c
}

// procCPU is the CPU time process pid used (utime and stime of /proc/<pid>/stat,
// in the kernel's clock ticks of 10ms); 0 when it cannot be read.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command's name, "(name)", start at the state (field 3).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
