package release

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/baton-fleet/baton/spec"
)

// Per-entry allowance, on top of Limits.MaxUnpackedBytes, for the bytes of a tar
// stream that are not file content: headers, PAX records, long names, padding.
const (
	entryOverhead  = 8 << 10
	streamOverhead = 1 << 20
)

// setuid, setgid and sticky bits of a tar header's mode.
const specialBits = 0o7000

// Unpack extracts a tar (format "tar") or gzip-compressed tar ("tar.gz") stream into
// dst, an existing directory, so that nothing lands outside it:
//
//   - names are relative, hold no ".." component, and are never created through a
//     symbolic link: every directory on the way is a real directory inside dst;
//   - regular files, directories, symbolic links and hard links only. A symbolic link
//     is relative, its ".." components all come first, and there are no more of them
//     than the link is deep, so it resolves inside dst however the links are arranged.
//     A hard link names a regular file already inside dst;
//   - character and block devices, FIFOs and other types are refused, and so are
//     setuid, setgid and sticky bits (refused, not masked off: such a release is not
//     what its author meant to ship, or not something baton should install);
//   - a name that exists is never replaced (a repeated name is refused), except that
//     a directory entry may name an existing directory;
//   - the sum of file sizes stays within lim.MaxUnpackedBytes, checked from each
//     header before the file is written, and the entries within lim.MaxFiles; the
//     stream read is bounded too, so a decompression bomb stops at the limit.
//
// Modes keep their permission bits except write access for group and others, which is
// dropped; directories always give their owner rwx. Owners and times in the archive are
// ignored. pax global headers are skipped. Errors name the offending entry. On error dst
// may hold part of the archive: the caller removes it.
func Unpack(r io.Reader, format, dst string, lim Limits) error {
	lim = lim.withDefaults()
	// The tar stream's bytes are bounded, whatever the headers say.
	stream := &limitedReader{r: r, n: lim.MaxUnpackedBytes + int64(lim.MaxFiles)*entryOverhead + streamOverhead}
	switch format {
	case spec.UnpackTar:
	case spec.UnpackTarGz:
		gz, err := gzip.NewReader(r)
		if err != nil {
			return fmt.Errorf("unpack: not a gzip stream: %w", err)
		}
		defer gz.Close()
		stream.r = gz // the limit is on the decompressed stream
	default:
		return fmt.Errorf("unpack: format %q is not one of tar, tar.gz", format)
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	defer root.Close()
	u := &unpacker{root: root, lim: lim, dirs: map[string]bool{"": true}}
	tr := tar.NewReader(stream)
	prev := ""
	for n := 1; ; n++ {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if stream.over {
				err = fmt.Errorf("the stream is larger than the limits allow (%d bytes)", stream.limit())
			}
			if prev == "" {
				return fmt.Errorf("unpack: read the first entry: %w", err)
			}
			return fmt.Errorf("unpack: read the entry after %q: %w", prev, err)
		}
		prev = h.Name
		if n > lim.MaxFiles {
			return fmt.Errorf("unpack entry %q: the archive has more than %d entries", h.Name, lim.MaxFiles)
		}
		if err := u.entry(h, tr); err != nil {
			if stream.over {
				err = fmt.Errorf("the stream is larger than the limits allow (%d bytes)", stream.limit())
			}
			return fmt.Errorf("unpack entry %q: %w", h.Name, err)
		}
	}
}

type unpacker struct {
	root  *os.Root
	lim   Limits
	total int64           // bytes of file content written
	dirs  map[string]bool // names known to be real directories ("" is dst)
}

func (u *unpacker) entry(h *tar.Header, r io.Reader) error {
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
	case tar.TypeXGlobalHeader:
		return nil // metadata for the whole archive, such as git archive's commit id
	case tar.TypeChar:
		return errors.New("character devices are not allowed")
	case tar.TypeBlock:
		return errors.New("block devices are not allowed")
	case tar.TypeFifo:
		return errors.New("FIFOs are not allowed")
	default:
		return fmt.Errorf("entry type %q is not allowed: only files, directories and links", h.Typeflag)
	}
	if h.Mode&specialBits != 0 {
		var bits []string
		for _, b := range []struct {
			bit  int64
			name string
		}{{0o4000, "setuid"}, {0o2000, "setgid"}, {0o1000, "sticky"}} {
			if h.Mode&b.bit != 0 {
				bits = append(bits, b.name)
			}
		}
		return fmt.Errorf("mode %#o has the %s bit set, which is not allowed", h.Mode&0o7777, strings.Join(bits, " and "))
	}
	name, err := cleanName(h.Name)
	if err != nil {
		return err
	}
	if name == "" {
		if h.Typeflag == tar.TypeDir {
			return nil // dst itself, as in "./"; its mode is not the archive's to set
		}
		return errors.New("names the destination directory itself")
	}
	if err := u.parents(name, true); err != nil {
		return err
	}
	perm := fs.FileMode(h.Mode) & 0o777 &^ 0o022
	switch h.Typeflag {
	case tar.TypeDir:
		return u.mkdir(name, perm|0o700)
	case tar.TypeReg:
		return u.file(name, perm, h.Size, r)
	case tar.TypeSymlink:
		return u.symlink(name, h.Linkname)
	default:
		return u.hardlink(name, h.Linkname)
	}
}

// cleanName turns an entry name into a relative slash-separated path without "." or
// empty components; "" is dst itself.
func cleanName(s string) (string, error) {
	switch {
	case s == "":
		return "", errors.New("empty name")
	case strings.HasPrefix(s, "/"):
		return "", errors.New("absolute name")
	case strings.ContainsRune(s, 0):
		return "", errors.New("name holds a NUL byte")
	}
	var out []string
	for c := range strings.SplitSeq(s, "/") {
		switch c {
		case "", ".":
		case "..":
			return "", errors.New(`name has a ".." component`)
		default:
			out = append(out, c)
		}
	}
	return strings.Join(out, "/"), nil
}

// parents checks that every directory leading to name is a real directory inside dst,
// creating the missing ones (mode 0755) when create is set.
func (u *unpacker) parents(name string, create bool) error {
	for i := 0; i < len(name); i++ {
		if name[i] != '/' {
			continue
		}
		created, err := u.ensureDir(name[:i], create)
		if err != nil {
			return err
		}
		if created {
			if err := u.chmod(name[:i], 0o755); err != nil {
				return err
			}
		}
	}
	return nil
}

// mkdir makes sure dir is a real directory and gives it perm.
func (u *unpacker) mkdir(dir string, perm fs.FileMode) error {
	if _, err := u.ensureDir(dir, true); err != nil {
		return err
	}
	return u.chmod(dir, perm)
}

// ensureDir makes sure dir is a real directory, not a link to one, creating it (mode
// 0700 until chmod) when it is missing and create is set.
func (u *unpacker) ensureDir(dir string, create bool) (created bool, err error) {
	if u.dirs[dir] {
		return false, nil
	}
	fi, err := u.root.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist) && create:
		if err := u.root.Mkdir(dir, 0o700); err != nil {
			return false, err
		}
		created = true
	case errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("%s does not exist", dir)
	case err != nil:
		return false, err
	case fi.Mode()&fs.ModeSymlink != 0:
		return false, fmt.Errorf("%s is a symbolic link: nothing is unpacked through a link", dir)
	case !fi.IsDir():
		return false, fmt.Errorf("%s exists and is not a directory", dir)
	}
	u.dirs[dir] = true
	return created, nil
}

// chmod sets a directory's mode through a descriptor (so umask does not apply),
// checking once more that the name is a directory.
func (u *unpacker) chmod(dir string, perm fs.FileMode) error {
	d, err := u.root.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if fi, err := d.Stat(); err != nil || !fi.IsDir() {
		return fmt.Errorf("%s is no longer a directory", dir)
	}
	return d.Chmod(perm)
}

func (u *unpacker) file(name string, perm fs.FileMode, size int64, r io.Reader) error {
	if size < 0 {
		return fmt.Errorf("negative size %d", size)
	}
	if size > u.lim.MaxUnpackedBytes-u.total {
		return fmt.Errorf("%d bytes would take the archive over its limit of %d unpacked bytes", size, u.lim.MaxUnpackedBytes)
	}
	f, err := u.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return errors.New("the name exists already")
	}
	if err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(r, size))
	u.total += n
	if err == nil && n != size {
		err = io.ErrUnexpectedEOF
	}
	if err == nil {
		err = f.Chmod(perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (u *unpacker) symlink(name, target string) error {
	if err := checkSymlink(name, target); err != nil {
		return err
	}
	err := u.root.Symlink(target, name)
	if errors.Is(err, fs.ErrExist) {
		return errors.New("the name exists already")
	}
	return err
}

// checkSymlink checks that a link called name (a clean relative path) to target stays
// inside dst. As nothing is created through a link, name's directory is a real one,
// len(dirs) deep; a target whose ".." components all come first and do not outnumber
// that depth climbs to a real directory inside dst, then only goes down, through names
// that are real or links checked the same way.
func checkSymlink(name, target string) error {
	switch {
	case target == "":
		return errors.New("empty link target")
	case strings.HasPrefix(target, "/"):
		return fmt.Errorf("link target %q is absolute", target)
	case strings.ContainsRune(target, 0):
		return fmt.Errorf("link target %q holds a NUL byte", target)
	}
	depth := strings.Count(name, "/")
	up, down := 0, 0
	for c := range strings.SplitSeq(target, "/") {
		switch {
		case c == "" || c == ".":
		case c == ".." && down > 0:
			return fmt.Errorf(`link target %q has ".." after a name, which could climb out through another link`, target)
		case c == "..":
			up++
		default:
			down++
		}
	}
	if up > depth {
		return fmt.Errorf("link target %q leaves the destination", target)
	}
	return nil
}

func (u *unpacker) hardlink(name, target string) error {
	t, err := cleanName(target)
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", target, err)
	}
	if t == "" {
		return fmt.Errorf("hard link target %q is the destination directory", target)
	}
	if err := u.parents(t, false); err != nil {
		return fmt.Errorf("hard link target %q: %w", target, err)
	}
	fi, err := u.root.Lstat(t)
	if err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("hard link target %q is not a regular file already unpacked", target)
	}
	err = u.root.Link(t, name)
	if errors.Is(err, fs.ErrExist) {
		return errors.New("the name exists already")
	}
	return err
}

// limitedReader reads at most n bytes from r, then fails, noting that it did.
type limitedReader struct {
	r    io.Reader
	n    int64
	read int64
	over bool
}

func (l *limitedReader) limit() int64 { return l.n }

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.read >= l.n {
		l.over = true
		return 0, errors.New("stream limit reached")
	}
	if int64(len(p)) > l.n-l.read {
		p = p[:l.n-l.read]
	}
	n, err := l.r.Read(p)
	l.read += int64(n)
	return n, err
}
