package release

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// sandbox makes base/{canary/file, work/dst} and returns dst and a check that nothing
// appeared beside dst or in the canary directory.
func sandbox(t *testing.T) (dst string, outside func()) {
	t.Helper()
	base := t.TempDir()
	canary := filepath.Join(base, "canary")
	dst = filepath.Join(base, "work", "dst")
	if err := os.MkdirAll(canary, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(canary, "file"), []byte("canary"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst, func() {
		t.Helper()
		if got := names(t, base); !slices.Equal(got, []string{"canary", "work"}) {
			t.Errorf("base holds %q, want only canary and work", got)
		}
		if got := names(t, filepath.Dir(dst)); !slices.Equal(got, []string{"dst"}) {
			t.Errorf("dst's parent holds %q, want only dst", got)
		}
		if got := names(t, canary); !slices.Equal(got, []string{"file"}) {
			t.Errorf("canary holds %q, want only file", got)
		}
		if b, err := os.ReadFile(filepath.Join(canary, "file")); err != nil || string(b) != "canary" {
			t.Errorf("canary file: %q, %v", b, err)
		}
	}
}

func TestUnpackRefuses(t *testing.T) {
	small := Limits{MaxUnpackedBytes: 1 << 20, MaxFiles: 10}
	many := []ent{}
	for i := range 11 {
		many = append(many, file("f"+strconv.Itoa(i), "x"))
	}
	chunks := []ent{}
	for i := range 20 {
		chunks = append(chunks, ent{name: "chunk" + strconv.Itoa(i), size: 100 << 10})
	}
	tests := []struct {
		name    string
		entries []ent
		lim     Limits
		want    string // in the error, after the entry's quoted name
		entry   string // the entry the error names
	}{
		{name: "dotdot", entries: []ent{file("../evil", "x")}, want: `".." component`, entry: "../evil"},
		{name: "absolute", entries: []ent{file("/etc/passwd", "x")}, want: "absolute name", entry: "/etc/passwd"},
		{name: "inner dotdot", entries: []ent{dir("a"), file("a/../../x", "x")}, want: `".." component`, entry: "a/../../x"},
		{name: "symlink absolute", entries: []ent{symlink("etc", "/etc")}, want: `link target "/etc" is absolute`, entry: "etc"},
		{name: "symlink up then through", entries: []ent{symlink("a", "../.."), file("a/x", "x")}, want: `link target "../.." leaves the destination`, entry: "a"},
		{name: "symlink one up", entries: []ent{dir("d"), symlink("d/up", "../..")}, want: "leaves the destination", entry: "d/up"},
		{name: "symlink dotdot after a name", entries: []ent{symlink("s", "."), symlink("l", "s/..")}, want: `has ".." after a name`, entry: "l"},
		{name: "write through inner symlink", entries: []ent{dir("real"), symlink("a", "real"), file("a/x", "x")}, want: "a is a symbolic link", entry: "a/x"},
		{name: "deep link through dot link", entries: []ent{symlink("s", "."), symlink("s/s/l", "../..")}, want: "s is a symbolic link", entry: "s/s/l"},
		{name: "hardlink absolute", entries: []ent{hardlink("passwd", "/etc/passwd")}, want: "absolute name", entry: "passwd"},
		{name: "hardlink outside", entries: []ent{hardlink("f", "../../canary/file")}, want: `".." component`, entry: "f"},
		{name: "hardlink to missing", entries: []ent{hardlink("f", "nothing")}, want: "not a regular file already unpacked", entry: "f"},
		{name: "hardlink to dir", entries: []ent{dir("d"), hardlink("f", "d")}, want: "not a regular file already unpacked", entry: "f"},
		{name: "hardlink through symlink", entries: []ent{dir("d"), file("d/x", "x"), symlink("l", "d"), hardlink("f", "l/x")}, want: "l is a symbolic link", entry: "f"},
		{name: "char device", entries: []ent{{name: "null", typ: tar.TypeChar}}, want: "character devices are not allowed", entry: "null"},
		{name: "block device", entries: []ent{{name: "sda", typ: tar.TypeBlock}}, want: "block devices are not allowed", entry: "sda"},
		{name: "fifo", entries: []ent{{name: "pipe", typ: tar.TypeFifo}}, want: "FIFOs are not allowed", entry: "pipe"},
		{name: "setuid", entries: []ent{{name: "su", body: "x", mode: 0o4755}}, want: "mode 04755 has the setuid bit set", entry: "su"},
		{name: "setgid dir", entries: []ent{{name: "g", typ: tar.TypeDir, mode: 0o2755}}, want: "the setgid bit set", entry: "g"},
		{name: "sticky dir", entries: []ent{{name: "tmp", typ: tar.TypeDir, mode: 0o1777}}, want: "the sticky bit set", entry: "tmp"},
		{name: "bomb", entries: []ent{{name: "zeros", size: 10 << 20}}, lim: small, want: "over its limit of 1048576 unpacked bytes", entry: "zeros"},
		{name: "bomb in chunks", entries: chunks, lim: Limits{MaxUnpackedBytes: 1 << 20}, want: "over its limit", entry: "chunk10"},
		{name: "too many files", entries: many, lim: small, want: "more than 10 entries", entry: "f10"},
		{name: "duplicate", entries: []ent{file("a", "1"), file("a", "2")}, want: "exists already", entry: "a"},
		{name: "file over dir", entries: []ent{dir("a"), file("a", "2")}, want: "exists already", entry: "a"},
		{name: "dir over symlink", entries: []ent{symlink("a", "."), dir("a")}, want: "a is a symbolic link", entry: "a"},
		{name: "root as file", entries: []ent{file(".", "x")}, want: "destination directory itself", entry: "."},
	}
	for _, tt := range tests {
		for _, gz := range []bool{false, true} {
			format := map[bool]string{false: "tar", true: "tar.gz"}[gz]
			t.Run(tt.name+"/"+format, func(t *testing.T) {
				dst, outside := sandbox(t)
				err := Unpack(bytes.NewReader(tarball(t, gz, tt.entries...)), format, dst, tt.lim)
				if err == nil {
					t.Fatalf("Unpack succeeded; want an error with %q", tt.want)
				}
				prefix := "unpack entry " + strconv.Quote(tt.entry) + ": "
				if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("error %q\nwant %q...%q", err, prefix, tt.want)
				}
				outside()
				checkConfined(t, dst, tt.lim)
			})
		}
	}
}

func TestUnpackBombStopsAtLimit(t *testing.T) {
	dst, outside := sandbox(t)
	lim := Limits{MaxUnpackedBytes: 1 << 20}
	err := Unpack(bytes.NewReader(tarball(t, true, file("small", "ok"), ent{name: "zeros", size: 10 << 20})), "tar.gz", dst, lim)
	if err == nil || !strings.Contains(err.Error(), `"zeros"`) {
		t.Fatalf("err = %v, want one naming zeros", err)
	}
	if _, err := os.Lstat(filepath.Join(dst, "zeros")); !os.IsNotExist(err) {
		t.Errorf("zeros was created (%v): the limit is checked before writing", err)
	}
	outside()
}

// TestUnpackStreamLimit feeds meta headers (GNU long names) that the tar reader
// consumes itself: they count against the bounded stream, not against any entry.
func TestUnpackStreamLimit(t *testing.T) {
	var buf bytes.Buffer
	for range 3 {
		buf.Write(gnuLongName(t, 900<<10))
	}
	buf.Write(tarball(t, false, file("f", "x")))
	dst, outside := sandbox(t)
	err := Unpack(&buf, "tar", dst, Limits{MaxUnpackedBytes: 1, MaxFiles: 1})
	if err == nil || !strings.Contains(err.Error(), "larger than the limits allow") {
		t.Fatalf("err = %v, want the stream limit", err)
	}
	outside()
}

// gnuLongName is a GNU long-name meta header of size bytes, which archive/tar's writer
// does not write itself: a regular header with its type and checksum patched.
func gnuLongName(t *testing.T, size int) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "././@LongLink", Typeflag: tar.TypeReg, Size: int64(size), Mode: 0o644, Format: tar.FormatGNU}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(bytes.Repeat([]byte("n"), size)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes() // header, data, padding; no end-of-archive blocks
	b[156] = tar.TypeGNULongName
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b[:512] {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func TestUnpackValid(t *testing.T) {
	entries := []ent{
		{name: "./", typ: tar.TypeDir, mode: 0o755},
		{name: "./bin/", typ: tar.TypeDir, mode: 0o750},
		{name: "./bin/api", body: "#!/bin/sh\necho api\n", mode: 0o755},
		{name: "share/doc/README", body: "read me", mode: 0o644}, // parents implied
		{name: "share/doc/world-writable", body: "w", mode: 0o666},
		symlink("current", "bin/api"),
		symlink("share/doc/api", "../../bin/api"),
		symlink("share/here", "."),
		symlink("dangling", "not/yet"),
		hardlink("bin/api2", "bin/api"),
		{name: "lib/", typ: tar.TypeDir, mode: 0o500}, // owner rwx is kept
		{name: "empty", body: ""},
		{typ: tar.TypeXGlobalHeader}, // as git archive writes, with the commit id
	}
	for _, gz := range []bool{false, true} {
		format := map[bool]string{false: "tar", true: "tar.gz"}[gz]
		t.Run(format, func(t *testing.T) {
			dst, outside := sandbox(t)
			if err := Unpack(bytes.NewReader(tarball(t, gz, entries...)), format, dst, Limits{}); err != nil {
				t.Fatal(err)
			}
			outside()
			checkConfined(t, dst, Limits{})
			files := map[string]struct {
				body string
				mode fs.FileMode
			}{
				"bin/api":                  {"#!/bin/sh\necho api\n", 0o755},
				"bin/api2":                 {"#!/bin/sh\necho api\n", 0o755},
				"share/doc/README":         {"read me", 0o644},
				"share/doc/world-writable": {"w", 0o644},
				"empty":                    {"", 0o644},
			}
			for name, want := range files {
				fi, err := os.Lstat(filepath.Join(dst, name))
				if err != nil {
					t.Errorf("%s: %v", name, err)
					continue
				}
				b, _ := os.ReadFile(filepath.Join(dst, name))
				if string(b) != want.body || fi.Mode() != want.mode {
					t.Errorf("%s: %q %v, want %q %v", name, b, fi.Mode(), want.body, want.mode)
				}
			}
			dirs := map[string]fs.FileMode{"bin": 0o750, "share": 0o755, "share/doc": 0o755, "lib": 0o700}
			for name, want := range dirs {
				fi, err := os.Lstat(filepath.Join(dst, name))
				if err != nil || fi.Mode() != fs.ModeDir|want {
					t.Errorf("%s: %v %v, want a directory %v", name, fi.Mode(), err, want)
				}
			}
			links := map[string]string{"current": "bin/api", "share/doc/api": "../../bin/api", "share/here": ".", "dangling": "not/yet"}
			for name, want := range links {
				if got, err := os.Readlink(filepath.Join(dst, name)); got != want {
					t.Errorf("%s -> %q (%v), want %q", name, got, err, want)
				}
			}
			if b, err := os.ReadFile(filepath.Join(dst, "share/doc/api")); err != nil || !strings.Contains(string(b), "echo api") {
				t.Errorf("share/doc/api does not read through to bin/api: %q %v", b, err)
			}
			want := []string{"bin", "current", "dangling", "empty", "lib", "share"}
			if got := names(t, dst); !slices.Equal(got, want) {
				t.Errorf("dst holds %q, want %q", got, want)
			}
		})
	}
}

func TestUnpackBadInput(t *testing.T) {
	dst, outside := sandbox(t)
	tests := []struct {
		format string
		data   []byte
		want   string
	}{
		{"zip", nil, `format "zip" is not one of tar, tar.gz`},
		{"tar.gz", []byte("not gzip"), "not a gzip stream"},
		{"tar", bytes.Repeat([]byte{'x'}, 1024), "read the first entry"},
	}
	for _, tt := range tests {
		err := Unpack(bytes.NewReader(tt.data), tt.format, dst, Limits{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Unpack(%s) = %v, want %q", tt.format, err, tt.want)
		}
	}
	if err := Unpack(bytes.NewReader(tarball(t, false, file("a", "x"))), "tar", filepath.Join(dst, "missing"), Limits{}); err == nil {
		t.Error("Unpack into a missing directory succeeded")
	}
	outside()
}

func TestCheckSymlink(t *testing.T) {
	tests := []struct {
		name, target string
		ok           bool
	}{
		{"a", "b", true},
		{"a", "./b/./c/", true},
		{"a", ".", true},
		{"a", "..", false},
		{"d/a", "..", true},
		{"d/a", "../x", true},
		{"d/a", "./../x", true},
		{"d/a", "../../x", false},
		{"d/e/a", "../../x/y", true},
		{"d/a", "x/../y", false},
		{"d/a", "/x", false},
		{"a", "", false},
	}
	for _, tt := range tests {
		if err := checkSymlink(tt.name, tt.target); (err == nil) != tt.ok {
			t.Errorf("checkSymlink(%q, %q) = %v, want ok %v", tt.name, tt.target, err, tt.ok)
		}
	}
}
