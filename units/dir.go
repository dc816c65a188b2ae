// Package units installs unit files under a directory and drives systemd over D-Bus.
package units

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/baton-fleet/baton/internal/atomicfile"
	"github.com/baton-fleet/baton/spec"
)

// ErrNotOwned refuses to overwrite or remove a unit that baton did not install.
var ErrNotOwned = errors.New("unit file exists and baton does not own it")

// unitFileMode is the mode of every unit file Install writes.
const unitFileMode = 0o644

// Dir is a unit directory such as /etc/systemd/system (a temp dir in tests). Every
// method checks the unit name again (spec.CheckUnitName) before it touches the disk,
// and none follows a symlink at the unit's path.
type Dir struct{ Path string }

// path checks name and returns where its file lies.
func (d Dir) path(name string) (string, error) {
	if err := spec.CheckUnitName(name); err != nil {
		return "", err
	}
	return filepath.Join(d.Path, name), nil
}

// regular returns an error unless info is a regular file: a symlink (an enablement
// link, a mask to /dev/null, a link into a vendor directory) or a directory at a
// unit's path is never baton's to write, read or delete.
func regular(p string, info fs.FileInfo) error {
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file (%s)", p, info.Mode().Type())
	}
	return nil
}

// Install writes data as the unit file name, atomically (temp file, fsync, rename,
// fsync dir), with mode 0644. A file that already exists is overwritten only when
// owned is true (baton recorded it as its own); otherwise Install returns ErrNotOwned,
// wrapped with the path. A symlink or anything else that is not a regular file at the
// path is refused whether owned or not.
func (d Dir) Install(name string, data []byte, owned bool) error {
	p, err := d.checkInstall(name, owned)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(p, data, unitFileMode); err != nil {
		return fmt.Errorf("install unit %s: %w", name, err)
	}
	return nil
}

// checkInstall returns the path Install(name, _, owned) would write, or the error it
// would refuse with.
func (d Dir) checkInstall(name string, owned bool) (string, error) {
	p, err := d.path(name)
	if err != nil {
		return "", fmt.Errorf("install unit: %w", err)
	}
	info, err := os.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return "", fmt.Errorf("install unit %s: %w", name, err)
	default:
		if err := regular(p, info); err != nil {
			return "", fmt.Errorf("install unit %s: %w", name, err)
		}
		if !owned {
			return "", fmt.Errorf("install unit %s: %s: %w", name, p, ErrNotOwned)
		}
	}
	return p, nil
}

// Read returns the content of the unit file name. A missing file gives an error that
// matches fs.ErrNotExist; a symlink or a non-regular file is refused.
func (d Dir) Read(name string) ([]byte, error) {
	p, err := d.path(name)
	if err != nil {
		return nil, fmt.Errorf("read unit: %w", err)
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ELOOP) {
		err = fmt.Errorf("%s is a symlink", p)
	}
	if err != nil {
		return nil, fmt.Errorf("read unit %s: %w", name, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err == nil {
		err = regular(p, info)
	}
	if err != nil {
		return nil, fmt.Errorf("read unit %s: %w", name, err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read unit %s: %w", name, err)
	}
	return data, nil
}

// Remove deletes the unit file name and makes the removal durable. A missing file is
// not an error; a symlink or a non-regular file is refused. Remove does not touch
// enablement symlinks: Systemd.Disable removes those, and must run first.
func (d Dir) Remove(name string) error {
	p, err := d.path(name)
	if err != nil {
		return fmt.Errorf("remove unit: %w", err)
	}
	info, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		err = regular(p, info)
	}
	if err == nil {
		err = os.Remove(p)
	}
	if err == nil {
		err = atomicfile.SyncDir(d.Path)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove unit %s: %w", name, err)
	}
	return nil
}

// Exists reports whether anything (a file, a symlink, a directory) lies at the unit's
// path.
func (d Dir) Exists(name string) (bool, error) {
	p, err := d.path(name)
	if err != nil {
		return false, fmt.Errorf("stat unit: %w", err)
	}
	_, err = os.Lstat(p)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("stat unit %s: %w", name, err)
	}
}
