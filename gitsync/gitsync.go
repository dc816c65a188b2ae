// Package gitsync fetches the fleet repository and hands out verified revisions; it knows nothing of units.
package gitsync

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/baton-fleet/baton/internal/redact"
)

// Defaults for Options.
const (
	DefaultBranch      = "main"
	DefaultMinBackoff  = time.Second
	DefaultMaxBackoff  = 5 * time.Minute
	DefaultPollTimeout = 10 * time.Minute
	DefaultTokenUser   = "baton"
	// DefaultMaxFetch is the default Options.MaxFetch, 128 MiB.
	DefaultMaxFetch int64 = 128 << 20
)

// Auth holds the credentials for the remote, by file so that a secret never
// sits in the configuration and can be rotated without a restart.
type Auth struct {
	TokenFile      string // https: the token is read from this file (trimmed) at each fetch, sent as HTTP basic auth
	TokenUser      string // https: the basic auth user name; DefaultTokenUser when empty
	SSHKeyFile     string // ssh: private key file (no passphrase), read at each fetch
	KnownHostsFile string // ssh: required for ssh:// URLs; the host key is checked against it, never skipped
}

// Options configure a Syncer.
type Options struct {
	// URL of the remote: https://, ssh:// or file://. http:// is accepted only
	// for loopback hosts (tests). Credentials in the URL are refused. An
	// ssh:// URL without a user logs in as "git". file:// runs the host's
	// git-upload-pack (go-git's file transport does).
	URL    string
	Branch string // the tracked branch; DefaultBranch when empty
	Dir    string // where the local bare repository lives, e.g. <state>/repo.git
	Auth   Auth
	// AllowRewind accepts a head that does not descend from the anchor
	// (repo.allowRewind in agent.yaml); Syncer.SetAllowRewind changes it
	// while the Syncer runs.
	AllowRewind bool
	// MinBackoff and MaxBackoff bound the retry delay of Watch after a
	// failed poll; DefaultMinBackoff and DefaultMaxBackoff when zero.
	MinBackoff, MaxBackoff time.Duration
	// PollTimeout bounds one Poll made by Watch (the first one clones);
	// DefaultPollTimeout when zero.
	PollTimeout time.Duration
	// Verify names the keys that commit signatures are checked against
	// (repo.verify in agent.yaml), by Syncer.Verify and by Poll, which
	// moves the anchor only to a head that verifies.
	Verify VerifyOptions
	// MaxFetch bounds one poll (repo.maxFetch in agent.yaml): over http(s)
	// the bytes of every response body, the ref advertisement included;
	// over ssh and file the bytes of the pack. A fetch over it is refused
	// and nothing of it is kept. It also bounds what the pack may unpack
	// to, its objects and its scratch files (unpackFactor, objectBytes,
	// scratchFactor). From 1 MiB to 16 GiB; DefaultMaxFetch when zero.
	MaxFetch int64
}

var (
	// ErrRewound is wrapped in the error of a Poll whose remote head does
	// not descend from the anchor.
	ErrRewound = errors.New("branch rewound")
	// ErrUnknownCommit is wrapped in the error of Descends when the
	// ancestor asked about is not in the local repository (it was cloned
	// again, or the commit left the branch before this clone was made):
	// whether the other commit descends from it cannot be told.
	ErrUnknownCommit = errors.New("not in the local repository")
)

// Update is the outcome of a successful Poll.
type Update struct {
	// Commit is the head: the remote head, once it passed the rewind
	// check (40 hex). With Options.Verify it may not verify: the caller
	// verifies it before applying it (Syncer.Verify); Syncer.Anchor is
	// Commit when Poll found it verified.
	Commit   string
	Previous string // the head before, "" on the first clone
	Changed  bool   // Commit != Previous
	Fetched  bool   // objects were downloaded in this poll
}

// Syncer keeps a local bare copy of one branch of the fleet repository. Its
// methods are safe for concurrent use.
type Syncer struct {
	opts   Options
	scheme string
	log    *slog.Logger
	// http carries the requests of every poll over http(s), so that
	// connections are reused; each poll wraps it to count its bytes.
	http *http.Transport

	// polls lets one Poll run at a time. A poll holds it throughout, and mu only for
	// its parts on the repository: the ref listing and the pack's download, the
	// parts that wait on the git server, hold no lock that Export, Verify or
	// Descends wait for (the agent's loop calls them while the fleet's fetcher
	// polls beside it).
	polls   sync.Mutex
	mu      sync.Mutex // guards repo, store, objects and the repository on disk
	repo    *git.Repository
	store   *filesystem.Storage // repo's storage
	objects cache.Object        // store's object cache
	// maxPacks is the number of packs above which a fetch compacts the
	// repository (compact): the constant maxPacks unless a test sets it.
	maxPacks int

	allowRewind atomic.Bool // Options.AllowRewind, or what SetAllowRewind said since

	state   sync.Mutex // guards the fields below, never held during I/O
	head    string     // the head: the last remote head that passed the rewind check
	anchor  string     // the last head that passed it and verified; what the next one must descend from
	lastErr error
	errAt   time.Time
	// notBefore is when the server's last refusal (a ServerError) lets Poll ask
	// it again.
	notBefore time.Time
}

// New checks opts and returns a Syncer. It reads no network and touches no
// repository; the first Poll clones or opens Dir. A nil logger discards.
func New(opts Options, logger *slog.Logger) (*Syncer, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.Branch == "" {
		opts.Branch = DefaultBranch
	}
	if opts.Auth.TokenUser == "" {
		opts.Auth.TokenUser = DefaultTokenUser
	}
	if opts.MinBackoff == 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	if opts.PollTimeout == 0 {
		opts.PollTimeout = DefaultPollTimeout
	}
	if opts.MaxFetch == 0 {
		opts.MaxFetch = DefaultMaxFetch
	}
	scheme, err := validate(&opts)
	if err != nil {
		return nil, err
	}
	s := &Syncer{
		opts:   opts,
		scheme: scheme,
		log:    logger.With("repo", redact.URL(opts.URL), "branch", opts.Branch),
		http:   http.DefaultTransport.(*http.Transport).Clone(),

		maxPacks: maxPacks,
	}
	s.allowRewind.Store(opts.AllowRewind)
	return s, nil
}

// SetAllowRewind changes Options.AllowRewind for the polls that follow
// (repo.allowRewind reloaded).
func (s *Syncer) SetAllowRewind(allow bool) { s.allowRewind.Store(allow) }

// locked runs f with s.mu held, and lets it go however f ends.
func (s *Syncer) locked(f func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return f()
}

// AllowsRewind reports whether a rewound branch is followed now.
func (s *Syncer) AllowsRewind() bool { return s.allowRewind.Load() }

// validate checks opts (defaults already applied) and returns the URL scheme.
func validate(o *Options) (string, error) {
	scheme, why := CheckURL(o.URL)
	if why != "" {
		return "", errors.New("repo url: " + why)
	}
	if why := CheckBranch(o.Branch); why != "" {
		return "", fmt.Errorf("repo branch %q is not a valid branch name: %s", o.Branch, why)
	}
	if o.Dir == "" {
		return "", errors.New("repo dir is empty")
	}
	o.Dir = filepath.Clean(o.Dir)
	if o.MinBackoff < 0 || o.MaxBackoff < o.MinBackoff {
		return "", fmt.Errorf("repo backoff: want 0 <= min (%v) <= max (%v)", o.MinBackoff, o.MaxBackoff)
	}
	if o.PollTimeout < 0 {
		return "", fmt.Errorf("repo poll timeout %v is negative", o.PollTimeout)
	}
	if o.MaxFetch < minMaxFetch || o.MaxFetch > maxMaxFetch {
		return "", fmt.Errorf("repo max fetch %s is not between %s and %s", formatSize(o.MaxFetch), formatSize(minMaxFetch), formatSize(maxMaxFetch))
	}
	a := o.Auth
	switch scheme {
	case "ssh":
		if a.TokenFile != "" {
			return "", errors.New("repo auth: tokenFile is for https URLs, not ssh")
		}
		if a.KnownHostsFile == "" {
			return "", errors.New("repo auth: knownHostsFile is required for ssh URLs (the host key is always checked)")
		}
		if a.SSHKeyFile == "" {
			return "", errors.New("repo auth: sshKeyFile is required for ssh URLs")
		}
		return scheme, checkFiles(a.KnownHostsFile, a.SSHKeyFile)
	case "https", "http":
		if a.SSHKeyFile != "" || a.KnownHostsFile != "" {
			return "", fmt.Errorf("repo auth: sshKeyFile and knownHostsFile are for ssh URLs, not %s", scheme)
		}
		if a.TokenFile != "" {
			return scheme, checkFiles(a.TokenFile)
		}
		return scheme, nil
	default: // file
		if a.TokenFile != "" || a.SSHKeyFile != "" || a.KnownHostsFile != "" {
			return "", errors.New("repo auth: file URLs take no credentials")
		}
		return scheme, nil
	}
}

func checkFiles(paths ...string) error {
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("repo auth: %w", err)
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("repo auth: %s is not a regular file", p)
		}
	}
	return nil
}

// formatSize writes n bytes for a message: "128 MiB", "1536 KiB", "100 bytes".
func formatSize(n int64) string {
	for _, u := range []struct {
		size int64
		name string
	}{{1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.name)
		}
	}
	if n == 1 {
		return "1 byte"
	}
	return fmt.Sprintf("%d bytes", n)
}

// Head returns the head: the last remote head that passed the rewind
// check, "" before the first Poll that accepted one (or opened a Dir that
// had one). With Options.Verify it may be a head that does not verify;
// after a restart it is the anchor.
func (s *Syncer) Head() string {
	s.state.Lock()
	defer s.state.Unlock()
	return s.head
}

// Anchor returns the commit a new head must descend from (unless
// AllowRewind): the last head that passed the rewind check and, with
// Options.Verify, verified. It is kept in Dir across restarts. Without
// Options.Verify it is Head.
func (s *Syncer) Anchor() string {
	s.state.Lock()
	defer s.state.Unlock()
	return s.anchor
}

// LastError returns the error of the last Poll and when it failed; nil
// (and the zero time) after a successful one.
//
//lint:ignore ST1008 the error is the value asked for, not a failure of the call
func (s *Syncer) LastError() (error, time.Time) {
	s.state.Lock()
	defer s.state.Unlock()
	return s.lastErr, s.errAt
}

// setHeads sets the head and the anchor.
func (s *Syncer) setHeads(head, anchor string) {
	s.state.Lock()
	s.head, s.anchor = head, anchor
	s.state.Unlock()
}

func (s *Syncer) recordResult(err error) {
	s.state.Lock()
	defer s.state.Unlock()
	if err == nil {
		s.lastErr, s.errAt = nil, time.Time{}
		return
	}
	s.lastErr, s.errAt = err, time.Now()
}
