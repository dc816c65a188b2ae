package release

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/baton-fleet/baton/internal/golden"
)

// fuzzLimits are small, so that a run explores limits rather than writing megabytes.
var fuzzLimits = Limits{MaxArtifactBytes: 1 << 20, MaxUnpackedBytes: 64 << 10, MaxFiles: 64}

// FuzzUnpack feeds arbitrary bytes to Unpack as tar and as tar.gz: it must not panic,
// must create nothing beside dst, and must leave in dst only what checkConfined allows.
func FuzzUnpack(f *testing.F) {
	base := f.TempDir() // one per process; a worker runs one input at a time
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, format := range []string{"tar", "tar.gz"} {
			dst := filepath.Join(base, "dst")
			if err := os.Mkdir(dst, 0o755); err != nil {
				t.Fatal(err)
			}
			_ = Unpack(bytes.NewReader(data), format, dst, fuzzLimits)
			if got := names(t, base); !slices.Equal(got, []string{"dst"}) {
				t.Fatalf("%s: dst's parent holds %q, want only dst", format, got)
			}
			checkConfined(t, dst, fuzzLimits)
			if err := os.RemoveAll(dst); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// seeds are the seed corpus: names starting "valid-" unpack, the others are refused.
func seeds(t *testing.T) map[string][]byte {
	valid := []ent{
		dir("bin"), {name: "bin/api", body: "#!/bin/sh\n", mode: 0o755}, file("etc/api.conf", "port=1\n"),
		symlink("current", "bin/api"), symlink("etc/up", "../bin"), hardlink("bin/api2", "bin/api"),
	}
	evil := map[string][]ent{
		"dotdot":        {file("../evil", "x")},
		"absolute":      {file("/evil", "x")},
		"inner-dotdot":  {dir("a"), file("a/../../x", "x")},
		"symlink-abs":   {symlink("etc", "/etc"), file("etc/evil", "x")},
		"symlink-up":    {symlink("a", "../.."), file("a/x", "x")},
		"symlink-dot":   {symlink("s", "."), symlink("l", "s/..")},
		"through-link":  {symlink("s", "."), symlink("s/s/l", "../..")},
		"hardlink-out":  {hardlink("passwd", "/etc/passwd")},
		"hardlink-up":   {hardlink("f", "../f")},
		"char-device":   {{name: "null", typ: tar.TypeChar}},
		"fifo":          {{name: "pipe", typ: tar.TypeFifo}},
		"setuid":        {{name: "su", body: "x", mode: 0o4755}},
		"bomb":          {{name: "zeros", size: 1 << 20}},
		"duplicate":     {file("a", "1"), file("a", "2")},
		"dir-over-link": {symlink("a", "."), dir("a")},
	}
	out := map[string][]byte{
		"valid-tar":    tarball(t, false, valid...),
		"valid-tar.gz": tarball(t, true, valid...),
	}
	for name, entries := range evil {
		gz := len(name)%2 == 0 || name == "bomb" // half of them compressed, and the bomb
		suffix := map[bool]string{false: "-tar", true: "-tar.gz"}[gz]
		out["evil-"+name+suffix] = tarball(t, gz, entries...)
	}
	return out
}

// TestFuzzCorpus checks that every seed in testdata/fuzz/FuzzUnpack does what its name
// says; with -update it first writes the seeds afresh.
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzUnpack")
	if golden.Update() {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range seeds(t) {
			text := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(data)))
			if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < 10 {
		t.Fatalf("the seed corpus holds %d files; run go test -run TestFuzzCorpus -update", len(entries))
	}
	for _, e := range entries {
		t.Run(e.Name(), func(t *testing.T) {
			text, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			lit, ok := strings.CutPrefix(string(text), "go test fuzz v1\n[]byte(")
			lit, ok2 := strings.CutSuffix(strings.TrimSpace(lit), ")")
			data, err := strconv.Unquote(lit)
			if !ok || !ok2 || err != nil {
				t.Fatalf("not a go fuzz corpus file of one []byte: %v", err)
			}
			format := "tar"
			if strings.HasSuffix(e.Name(), "-tar.gz") {
				format = "tar.gz"
			}
			dst := t.TempDir()
			err = Unpack(strings.NewReader(data), format, dst, fuzzLimits)
			if valid := strings.HasPrefix(e.Name(), "valid-"); valid != (err == nil) {
				t.Errorf("Unpack = %v; want success %v", err, valid)
			}
			checkConfined(t, dst, fuzzLimits)
		})
	}
}

// FuzzArchiveScript builds archives from a script, one entry a line: a type (f file,
// d directory, l symbolic link, h hard link, c char device, p FIFO), a name, and for
// links a target, so that the fuzzer explores arrangements of names and links that
// raw bytes, with their header checksums, seldom reach.
func FuzzArchiveScript(f *testing.F) {
	f.Add("d a\nf a/x\nl b a/x\nh c a/x")
	f.Add("l s .\nl s/s/l ../..\nf s/s/l/x")
	f.Add("d a\nd a/b\nl a/b/up ../..\nl a/b/l up/..\nf a/b/l/x")
	f.Add("l a b\nl b a\nf a/x")
	f.Add("d d\nl d/l ..\nl d/m l/..\nh e d/m/x")
	base := f.TempDir()
	f.Fuzz(func(t *testing.T, script string) {
		var entries []ent
		for line := range strings.SplitSeq(script, "\n") {
			fields := strings.Fields(line)
			if len(fields) < 2 || len(entries) == 20 {
				continue
			}
			e := ent{name: fields[1]}
			target := ""
			if len(fields) > 2 {
				target = fields[2]
			}
			switch fields[0] {
			case "f":
				e.body = "x"
			case "d":
				e.typ = tar.TypeDir
			case "l":
				e = symlink(e.name, target)
			case "h":
				e = hardlink(e.name, target)
			case "c":
				e.typ = tar.TypeChar
			case "p":
				e.typ = tar.TypeFifo
			default:
				continue
			}
			entries = append(entries, e)
		}
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range entries {
			h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: 0o755, Size: int64(len(e.body)), Format: tar.FormatPAX}
			if h.Typeflag == 0 {
				h.Typeflag = tar.TypeReg
			}
			if tw.WriteHeader(h) != nil {
				return
			}
			tw.Write([]byte(e.body))
		}
		tw.Close()
		dst := filepath.Join(base, "dst")
		if err := os.Mkdir(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		_ = Unpack(&buf, "tar", dst, fuzzLimits)
		if got := names(t, base); !slices.Equal(got, []string{"dst"}) {
			t.Fatalf("dst's parent holds %q, want only dst", got)
		}
		checkConfined(t, dst, fuzzLimits)
		if err := os.RemoveAll(dst); err != nil {
			t.Fatal(err)
		}
	})
}
