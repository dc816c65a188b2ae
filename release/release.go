// Package release stages a service version's artifacts into its release directory, and prunes old ones.
package release

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/baton-fleet/baton/internal/atomicfile"
	"github.com/baton-fleet/baton/spec"
)

// MarkerFile is written last into a release directory: a directory that holds it is complete.
const MarkerFile = ".baton-release"

// stagingPrefix starts the name of every directory or file that is not (yet, or any
// longer) a release: staging directories, downloads in flight, releases being removed.
const stagingPrefix = ".staging-"

// Default limits.
const (
	DefaultMaxArtifactBytes = 1 << 30 // 1 GiB
	DefaultMaxUnpackedBytes = 4 << 30 // 4 GiB
	DefaultMaxFiles         = 100_000
)

// Limits bound what one artifact may cost. A zero (or negative) field takes its default.
type Limits struct {
	MaxArtifactBytes int64 // one download; default 1 GiB
	MaxUnpackedBytes int64 // one archive's total unpacked size; default 4 GiB
	MaxFiles         int   // entries in one archive; default 100,000
}

// DefaultLimits are the limits a zero Limits stands for.
var DefaultLimits = Limits{
	MaxArtifactBytes: DefaultMaxArtifactBytes,
	MaxUnpackedBytes: DefaultMaxUnpackedBytes,
	MaxFiles:         DefaultMaxFiles,
}

// withDefaults returns l with every unset field set to its default.
func (l Limits) withDefaults() Limits {
	if l.MaxArtifactBytes <= 0 {
		l.MaxArtifactBytes = DefaultLimits.MaxArtifactBytes
	}
	if l.MaxUnpackedBytes <= 0 {
		l.MaxUnpackedBytes = DefaultLimits.MaxUnpackedBytes
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultLimits.MaxFiles
	}
	return l
}

// Stager downloads, verifies and unpacks releases under StateDir/releases/. Set its
// fields before the first Stage; a Stager may then be used from several goroutines.
type Stager struct {
	StateDir string
	// Client makes the requests; nil: a default one (see newClient). Whichever it is,
	// the Stager uses a copy whose waits between attempts are capped at its
	// RetryWaitMax, a server's Retry-After included, and whose redirects obey
	// AllowInsecure as the artifact's URL does.
	Client *retryablehttp.Client
	Limits Limits       // zero fields take the defaults
	Logger *slog.Logger // nil: no logs
	// AllowInsecure names the hosts whose artifacts may come over plain http://;
	// every other artifact, and every redirect, must come over https://, and a
	// download that reached https:// is never redirected back to http://.
	AllowInsecure []string
	// RetryBudget bounds the attempts of one download, from the first request to the
	// response that starts the body; zero: DefaultRetryBudget.
	RetryBudget time.Duration

	once sync.Once
	cli  *retryablehttp.Client
}

func (s *Stager) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// client returns the client of every download, made once from Client.
func (s *Stager) client() *retryablehttp.Client {
	s.once.Do(func() {
		c := s.Client
		if c == nil {
			c = newClient(s.logger())
		}
		s.cli = bounded(c, s.policy())
	})
	return s.cli
}

func (s *Stager) policy() policy { return policy{allowInsecure: s.AllowInsecure} }

// Stage makes sure the release directory of r exists and is complete, and returns its
// path: r.Service.ReleaseDir(StateDir), which is r.Vars.Release when r was rendered for
// this state directory (Stage refuses an r rendered for another one).
//
// A complete directory (one holding MarkerFile, which is written last) is returned as
// is, without downloading anything. Otherwise Stage builds the release in a staging
// directory beside it, <state>/releases/<service>/.staging-<release>-<random>: it
// downloads each artifact to a temporary file while hashing it, refuses it when it is
// larger than Limits.MaxArtifactBytes or its SHA-256 differs, then places it (unpack
// none: the file Artifact.Name, mode 0755; tar and tar.gz: Unpack, in the order of
// r.Artifacts, into the same directory, never replacing a name placed before). It then
// writes the marker, syncs the whole tree to disk, renames the staging directory into
// place and syncs its parent. On any error the staging directory is removed and nothing
// is left in place.
//
// Two Stage calls for the same release may race: both build, the first rename wins and
// the other returns the winner's directory. Stage must not run beside Prune of the same
// service, which removes staging directories.
func (s *Stager) Stage(ctx context.Context, r *spec.Rendered) (string, error) {
	if r == nil {
		return "", errors.New("stage release: no service")
	}
	id := r.Service.ReleaseID()
	dir, err := s.stage(ctx, r, id)
	if err != nil {
		return "", fmt.Errorf("stage %s release %s: %w", r.Name, id, err)
	}
	return dir, nil
}

func (s *Stager) stage(ctx context.Context, r *spec.Rendered, id string) (string, error) {
	dir, err := s.releaseDir(r, id)
	if err != nil {
		return "", err
	}
	log := s.logger().With("service", r.Name, "release", id)
	if complete(dir) {
		if err := checkMarker(dir, r, id); err != nil {
			return "", err
		}
		log.Debug("release already staged", "dir", dir)
		return dir, nil
	}
	start := time.Now()
	lim := s.Limits.withDefaults()
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", err
	}
	staging, err := os.MkdirTemp(parent, stagingPrefix+id+"-")
	if err != nil {
		return "", err
	}
	placed := false
	defer func() {
		if !placed {
			os.RemoveAll(staging)
		}
	}()
	total, err := s.fill(ctx, r, id, staging, parent, lim)
	if err != nil {
		return "", err
	}
	if _, err := os.Lstat(dir); err == nil {
		// Not complete (checked above) unless another Stage just finished it.
		if complete(dir) {
			return dir, checkMarker(dir, r, id)
		}
		log.Warn("replacing an incomplete release directory", "dir", dir)
		if err := removeAside(dir); err != nil {
			return "", err
		}
	}
	if err := os.Rename(staging, dir); err != nil {
		if complete(dir) {
			return dir, checkMarker(dir, r, id) // another Stage won the race
		}
		return "", err
	}
	placed = true
	if err := atomicfile.SyncDir(parent); err != nil {
		return "", err
	}
	if err := atomicfile.SyncDir(filepath.Dir(parent)); err != nil {
		return "", err
	}
	log.Info("release staged", "dir", dir, "artifacts", len(r.Artifacts), "bytes", total, "took", time.Since(start).Round(time.Millisecond))
	return dir, nil
}

// releaseDir returns the directory r stages into as release id, refusing a
// name that would not be one directory and an r rendered for another
// directory.
func (s *Stager) releaseDir(r *spec.Rendered, id string) (string, error) {
	if s.StateDir == "" {
		return "", errors.New("the stager has no state directory")
	}
	if err := checkDirName("service name", r.Name); err != nil {
		return "", err
	}
	if err := checkDirName("release id", id); err != nil {
		return "", err
	}
	dir := r.Service.ReleaseDir(s.StateDir)
	if r.Vars.Release != "" && filepath.Clean(r.Vars.Release) != dir {
		return "", fmt.Errorf("rendered for release directory %s, but it stages into %s", r.Vars.Release, dir)
	}
	return dir, nil
}

// fill places every artifact of r in the staging directory, downloading into
// tmpDir, then the marker, and syncs the whole tree to disk, so that once
// renamed into place the release is complete even across a crash. It returns
// the bytes downloaded.
func (s *Stager) fill(ctx context.Context, r *spec.Rendered, id, staging, tmpDir string, lim Limits) (int64, error) {
	var total int64
	for i, a := range r.Artifacts {
		n, err := s.place(ctx, a, i, staging, tmpDir, id, lim)
		if err != nil {
			return 0, err
		}
		total += n
	}
	if err := writeMarker(staging, r, id); err != nil {
		return 0, err
	}
	if err := os.Chmod(staging, 0o755); err != nil {
		return 0, err
	}
	if err := syncTree(staging); err != nil {
		return 0, fmt.Errorf("sync %s: %w", staging, err)
	}
	return total, nil
}

// place downloads artifact i into a temporary file in tmpDir and puts it into staging.
// It returns the size of the download.
func (s *Stager) place(ctx context.Context, a spec.Artifact, i int, staging, tmpDir, id string, lim Limits) (int64, error) {
	mode := cmp.Or(a.Unpack, spec.UnpackNone)
	switch mode {
	case spec.UnpackNone:
		if err := checkFileName(a.Name); err != nil {
			return 0, fmt.Errorf("artifact %d: %w", i+1, err)
		}
	case spec.UnpackTar, spec.UnpackTarGz:
	default:
		return 0, fmt.Errorf("artifact %d: unpack %q is not one of none, tar, tar.gz", i+1, mode)
	}
	f, err := os.CreateTemp(tmpDir, stagingPrefix+id+"-*.download")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	where, n, err := s.download(ctx, a, i, f, lim.MaxArtifactBytes)
	if err != nil {
		return 0, err
	}
	if mode == spec.UnpackNone {
		if err := f.Chmod(0o755); err != nil {
			return 0, err
		}
		// A link, not a rename: it never replaces a name an archive placed before.
		if err := os.Link(f.Name(), filepath.Join(staging, a.Name)); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return 0, fmt.Errorf("artifact %s: %s is already in the release", where, a.Name)
			}
			return 0, fmt.Errorf("artifact %s: %w", where, err)
		}
		return n, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	in := &ctxReader{ctx: ctx, r: bufio.NewReaderSize(f, 64<<10)}
	if err := Unpack(in, mode, staging, lim); err != nil {
		if ctx.Err() == nil && !isIOError(err) {
			err = badArtifact{err}
		}
		return 0, fmt.Errorf("artifact %s: %w", where, err)
	}
	return n, nil
}

// marker is the content of MarkerFile for release id of r: what the directory holds,
// down to each artifact's digest, so that a directory is reused only for the release
// it was built for.
func marker(r *spec.Rendered, id string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "service %s\nversion %s\nrelease %s\n", r.Name, r.Version, id)
	for _, a := range r.Artifacts {
		fmt.Fprintf(&b, "artifact %s unpack=%s", a.SHA256, cmp.Or(a.Unpack, spec.UnpackNone))
		if a.Name != "" {
			fmt.Fprintf(&b, " name=%s", a.Name)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// ErrBadArtifact is wrapped in the error of a Stage that the release itself caused,
// the same on every host: an artifact that does not match its sha256 or is over the
// size limit, an archive that breaks the unpacking rules or limits, a URL or redirect
// the artifact policy refuses. Trying again cannot help until the repository changes.
// Other errors (the release server down, a full disk) may pass.
var ErrBadArtifact = errors.New("bad artifact")

// badArtifact marks err as ErrBadArtifact, its text unchanged.
type badArtifact struct{ err error }

func (e badArtifact) Error() string        { return e.err.Error() }
func (e badArtifact) Unwrap() error        { return e.err }
func (e badArtifact) Is(target error) bool { return target == ErrBadArtifact }

// isIOError reports whether err came from the host's file system (a full disk, a
// read-only mount), not from the archive's content.
func isIOError(err error) bool {
	var pe *fs.PathError
	var le *os.LinkError
	return errors.As(err, &pe) || errors.As(err, &le) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EIO) || errors.Is(err, syscall.EROFS)
}

// ErrOtherRelease is wrapped in the error of a Stage whose release directory exists,
// complete, but was built for other artifacts: the release id (the version and a
// prefix of the artifacts' digest) is the same, the marker is not.
var ErrOtherRelease = errors.New("the release directory holds another release")

// maxMarker bounds the marker read back: a line per artifact.
const maxMarker = 1 << 20

// checkMarker makes sure the complete release directory dir was built for release id
// of r, as its marker says, before it is reused. A directory built for other artifacts
// (a collision of the id, or a directory put there by someone else) is neither reused
// nor replaced: units may run from it.
func checkMarker(dir string, r *spec.Rendered, id string) error {
	f, err := os.Open(filepath.Join(dir, MarkerFile))
	if err != nil {
		return err
	}
	defer f.Close()
	got, err := io.ReadAll(io.LimitReader(f, maxMarker+1))
	if err != nil {
		return fmt.Errorf("read the marker of %s: %w", dir, err)
	}
	if string(got) != marker(r, id) {
		return fmt.Errorf("%w: %s was built for other artifacts than those of %s %s (its %s differs); remove it once no unit runs from it", ErrOtherRelease, dir, r.Name, r.Version, MarkerFile)
	}
	return nil
}

// writeMarker writes MarkerFile, refusing to replace one an archive brought along.
func writeMarker(staging string, r *spec.Rendered, id string) error {
	f, err := os.OpenFile(filepath.Join(staging, MarkerFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("an artifact holds %s, a name baton keeps for itself", MarkerFile)
	}
	if err != nil {
		return err
	}
	if _, err := f.WriteString(marker(r, id)); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// complete reports whether dir is a directory (not a link) holding a regular MarkerFile.
func complete(dir string) bool {
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() {
		return false
	}
	fi, err = os.Lstat(filepath.Join(dir, MarkerFile))
	return err == nil && fi.Mode().IsRegular()
}

// removeAside renames dir to a staging name (so that a crash half way through leaves
// nothing that looks like a release) and removes it.
func removeAside(dir string) error {
	aside := filepath.Join(filepath.Dir(dir), stagingPrefix+"removed-"+filepath.Base(dir)+"-"+rand.Text()[:8])
	if err := os.Rename(dir, aside); err != nil {
		return err
	}
	return os.RemoveAll(aside)
}

// checkDirName checks a name used as one path component under the state directory.
func checkDirName(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("empty %s", what)
	case s == "." || s == ".." || strings.ContainsAny(s, "/\x00") || strings.HasPrefix(s, "."):
		return fmt.Errorf("%s %q is not a plain name", what, s)
	}
	return nil
}

// checkFileName checks the name of an artifact that is not unpacked.
func checkFileName(s string) error {
	switch {
	case s == "":
		return errors.New("no file name (set name)")
	case s == "." || s == ".." || strings.ContainsAny(s, "/\x00"):
		return fmt.Errorf("name %q is not a plain file name", s)
	case s == MarkerFile:
		return fmt.Errorf("name %q is kept for baton's own marker", s)
	}
	return nil
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
