package gitsync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"

	"github.com/baton-fleet/baton/internal/commitid"
)

// Limits of Export, variables so that tests can lower them.
var (
	maxExportFiles       = 10000    // regular files, and separately directories
	maxExportBytes int64 = 64 << 20 // total size of the regular files
)

// Export writes the tree of commit into dst, which must be missing or an
// empty directory. It writes regular files (mode 0644, or 0755 when
// executable) and directories only; a symbolic link or a submodule in the
// tree is an error naming its path, as is a name that could leave dst.
// At most maxExportFiles files and maxExportBytes bytes are written. On
// error, dst is left as it was found. Files are not fsynced: an export is
// rebuilt from the repository at will.
func (s *Syncer) Export(ctx context.Context, commit, dst string) (err error) {
	h, err := parseHash(commit)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	repo, err := s.openRepo()
	if err != nil {
		return err
	}
	c, err := loadCommit(repo.Storer, h)
	if err != nil {
		return fmt.Errorf("export %s: %w", commitid.ShortOrNone(commit), err)
	}
	tree, err := loadTree(repo.Storer, c.TreeHash)
	if err != nil {
		return fmt.Errorf("export %s: %w", commitid.ShortOrNone(commit), err)
	}
	created, err := prepareDir(dst)
	if err != nil {
		return fmt.Errorf("export %s: %w", commitid.ShortOrNone(commit), err)
	}
	defer func() {
		if err != nil {
			clearDir(dst, created)
		}
	}()
	root, err := os.OpenRoot(dst)
	if err != nil {
		return fmt.Errorf("export %s: %w", commitid.ShortOrNone(commit), err)
	}
	defer root.Close()
	x := exporter{ctx: ctx, st: repo.Storer, root: root}
	if err := x.tree(tree, ""); err != nil {
		return fmt.Errorf("export %s: %w", commitid.ShortOrNone(commit), err)
	}
	return nil
}

// prepareDir makes sure dst is an empty directory and says whether it
// had to create it.
func prepareDir(dst string) (bool, error) {
	entries, err := os.ReadDir(dst)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.Mkdir(dst, 0o755); err != nil {
			return false, err
		}
		return true, nil
	case err != nil:
		return false, err
	case len(entries) > 0:
		return false, fmt.Errorf("%s is not empty", dst)
	}
	return false, nil
}

// clearDir undoes a failed export: it removes dst if Export created it,
// or else empties it.
func clearDir(dst string, created bool) {
	if created {
		_ = os.RemoveAll(dst)
		return
	}
	entries, _ := os.ReadDir(dst)
	for _, e := range entries {
		_ = os.RemoveAll(filepath.Join(dst, e.Name()))
	}
}

type exporter struct {
	ctx   context.Context
	st    storer.EncodedObjectStorer
	root  *os.Root
	files int
	dirs  int
	bytes int64
}

// ErrBadTree is wrapped in the error of an Export that the commit's tree itself
// refuses (an unsafe name, a symbolic link, a submodule, too many or too large files):
// the commit is bad input. Other errors (a full disk, a damaged clone) are the host's.
var ErrBadTree = errors.New("the commit's tree cannot be exported")

// badTreeError is a refusal of the tree's content; its text is the reason alone.
type badTreeError struct{ msg string }

func (e badTreeError) Error() string        { return e.msg }
func (e badTreeError) Is(target error) bool { return target == ErrBadTree }

func badTree(format string, args ...any) error {
	return badTreeError{fmt.Sprintf(format, args...)}
}

func (x *exporter) tree(t *object.Tree, dir string) error {
	for _, e := range t.Entries {
		if err := x.ctx.Err(); err != nil {
			return err
		}
		p := path.Join(dir, e.Name)
		if !safeName(e.Name) {
			return badTree("%q: unsafe name in tree", p)
		}
		switch e.Mode {
		case filemode.Dir:
			if x.dirs++; x.dirs > maxExportFiles {
				return badTree("more than %d directories", maxExportFiles)
			}
			sub, err := loadTree(x.st, e.Hash)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if err := x.root.Mkdir(p, 0o755); err != nil {
				return err
			}
			if err := x.root.Chmod(p, 0o755); err != nil {
				return err
			}
			if err := x.tree(sub, p); err != nil {
				return err
			}
		case filemode.Regular, filemode.Deprecated:
			if err := x.file(p, e, 0o644); err != nil {
				return err
			}
		case filemode.Executable:
			if err := x.file(p, e, 0o755); err != nil {
				return err
			}
		case filemode.Symlink:
			return badTree("%s: symbolic links are not allowed in the repository", p)
		case filemode.Submodule:
			return badTree("%s: submodules are not allowed in the repository", p)
		default:
			return badTree("%s: unsupported file mode %v", p, e.Mode)
		}
	}
	return nil
}

func (x *exporter) file(p string, e object.TreeEntry, mode os.FileMode) error {
	if x.files++; x.files > maxExportFiles {
		return badTree("more than %d files", maxExportFiles)
	}
	blob, err := object.GetBlob(x.st, e.Hash)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if x.bytes += blob.Size; x.bytes > maxExportBytes {
		return badTree("more than %s of files (at %s)", formatSize(maxExportBytes), p)
	}
	r, err := blob.Reader()
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer r.Close()
	f, err := x.root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = io.CopyN(f, r, blob.Size)
	if err == nil {
		err = f.Chmod(mode) // whatever the umask
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// safeName accepts one path element that stays where it is written.
func safeName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\\\x00")
}
