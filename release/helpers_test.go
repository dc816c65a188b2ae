package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// ent is one entry of a test archive.
type ent struct {
	name string
	typ  byte // tar.TypeReg when zero
	body string
	link string
	mode int64 // 0644 for files, 0755 for directories when zero
	size int64 // the header's size when body is empty and size is set (the data is zeros)
}

func file(name, body string) ent  { return ent{name: name, body: body} }
func dir(name string) ent         { return ent{name: name, typ: tar.TypeDir} }
func symlink(name, to string) ent { return ent{name: name, typ: tar.TypeSymlink, link: to} }
func hardlink(name, to string) ent {
	return ent{name: name, typ: tar.TypeLink, link: to}
}

// tarball builds a tar archive, gzip-compressed when gz is set.
func tarball(t testing.TB, gz bool, entries ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	var tw *tar.Writer
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		tw = tar.NewWriter(zw)
	} else {
		tw = tar.NewWriter(&buf)
	}
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, Format: tar.FormatPAX}
		if e.typ == tar.TypeXGlobalHeader {
			h = &tar.Header{Typeflag: e.typ, PAXRecords: map[string]string{"comment": "0123456789abcdef"}}
		}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 && h.Typeflag != tar.TypeXGlobalHeader {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
			if e.body == "" && e.size > 0 {
				h.Size = e.size
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("write header %q: %v", e.name, err)
		}
		switch {
		case e.body != "":
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		case h.Typeflag == tar.TypeReg && e.size > 0:
			zeros := make([]byte, 64<<10)
			for left := e.size; left > 0; {
				n := min(left, int64(len(zeros)))
				if _, err := tw.Write(zeros[:n]); err != nil {
					t.Fatal(err)
				}
				left -= n
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// checkConfined checks what Unpack may leave in dst, whether it failed or not: only
// directories, regular files and links, no setuid, setgid or sticky bits, no link that
// resolves outside dst, no hard link shared with a file outside dst, and no more file
// content than lim allows.
func checkConfined(t testing.TB, dst string, lim Limits) {
	t.Helper()
	lim = lim.withDefaults()
	type inode struct{ dev, ino uint64 }
	seen := map[inode]int{}
	nlink := map[inode]uint64{}
	var total int64
	err := filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dst, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
			t.Errorf("%s has mode %v", rel, fi.Mode())
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			if escapes(dst, filepath.ToSlash(rel)) {
				target, _ := os.Readlink(p)
				t.Errorf("link %s -> %s resolves outside dst", rel, target)
			}
		case fi.Mode().IsRegular():
			st := fi.Sys().(*syscall.Stat_t)
			in := inode{uint64(st.Dev), uint64(st.Ino)}
			if seen[in] == 0 {
				total += fi.Size()
			}
			seen[in]++
			nlink[in] = uint64(st.Nlink)
		case fi.IsDir():
		default:
			t.Errorf("%s has type %v", rel, fi.Mode().Type())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk dst: %v", err)
	}
	for in, n := range seen {
		if nlink[in] != uint64(n) {
			t.Errorf("inode %d has %d links, %d of them in dst: a hard link leaves dst", in.ino, nlink[in], n)
		}
	}
	if total > lim.MaxUnpackedBytes {
		t.Errorf("dst holds %d bytes of files, over the limit of %d", total, lim.MaxUnpackedBytes)
	}
}

// escapes reports whether resolving rel (slash-separated, relative to dst) leaves dst,
// following links as the kernel does. A missing name or a loop ends the resolution
// inside: the kernel would fail there.
func escapes(dst, rel string) bool {
	var at []string // the real directory reached, under dst
	todo := strings.Split(rel, "/")
	for hops := 0; len(todo) > 0; {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(at) == 0 {
				return true
			}
			at = at[:len(at)-1]
			continue
		}
		p := filepath.Join(append([]string{dst}, append(slices.Clone(at), c)...)...)
		fi, err := os.Lstat(p)
		if err != nil {
			return false
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			if hops++; hops > 40 {
				return false
			}
			target, err := os.Readlink(p)
			if err != nil {
				return false
			}
			if strings.HasPrefix(target, "/") {
				return true
			}
			todo = append(strings.Split(target, "/"), todo...)
			continue
		}
		if !fi.IsDir() && len(todo) > 0 {
			return false
		}
		at = append(at, c)
	}
	return false
}

// names lists a directory's entries.
func names(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}
