package spec

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/unit"
)

// installCorpus are unit files whose [Install] section systemd and a naive reader
// (go-systemd's parser among them) read differently, and a few plain ones. Each is
// enabled by systemd in a scratch root and read by readUnit: the symlinks must agree.
var installCorpus = []struct {
	name string
	data string
}{
	{"plain", "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"},
	{"comment ending in a backslash", "[Service]\nExecStart=/bin/true\n[Install]\n# note \\\nAlias=cron.service\n"},
	{"comment ending in a backslash and spaces", "[Service]\nExecStart=/bin/true\n[Install]\n# note \\  \nAlias=cron.service\n"},
	{"indented ; comment ending in a backslash", "[Service]\nExecStart=/bin/true\n[Install]\n\t; note \\\nAlias=cron.service\n"},
	{"two trailing backslashes", "[Service]\nExecStart=/bin/true\n[Install]\nX-Note=two \\\\\nAlias=cron.service\n"},
	{"three trailing backslashes", "[Service]\nExecStart=/bin/true\n[Install]\nX-Note=three \\\\\\\nAlias=cron.service\n"},
	{"continued value", "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=a.target \\\n  b.target\n"},
	{"comment inside a continuation", "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=a.target \\\n# c\n b.target\n"},
	{"continued comment inside a continuation", "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=a.target \\\n# c \\\nb.target\nAlias=cron.service\n"},
	{"blank line ends a continuation", "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=a.target \\\n   \nAlias=cron.service\n"},
	{"continuation swallows a setting", "[Service]\nExecStart=/bin/true\n[Install]\nX-Note=x \\\nAlias=cron.service\n"},
	{"continuation at the end of the file", "[Service]\nExecStart=/bin/true\n[Install]\nAlias=cron.service \\"},
	{"key continued before its =", "[Service]\nExecStart=/bin/true\n[Install]\nAlias\\\n=cron.service\n"},
	{"CRLF", "[Service]\r\nExecStart=/bin/true\r\n[Install]\r\nWantedBy=a.target\r\nAlias=cron.service\r\n"},
	{"lone CR ends a comment", "[Service]\nExecStart=/bin/true\n[Install]\n# x\rAlias=cron.service\n"},
	{"LF CR is one line end", "[Service]\nExecStart=/bin/true\n[Install]\n# x\n\rAlias=cron.service\n"},
	{"NUL ends a comment", "[Service]\nExecStart=/bin/true\n[Install]\n# x\x00Alias=cron.service\n"},
	{"byte order mark on a later line", "[Service]\nExecStart=/bin/true\n[Install]\n\ufeffAlias=cron.service\n"},
	{"second byte order mark", "\ufeff[Service]\nExecStart=/bin/true\n[Install]\n\ufeffAlias=cron.service\nWantedBy=a.target\n"},
	{"byte order mark before a #", "[Service]\nExecStart=/bin/true\n[Install]\n\ufeff# x=1\nAlias=cron.service\n"},
	{"vertical tab before the key", "[Service]\nExecStart=/bin/true\n[Install]\n\vAlias=cron.service\nWantedBy=a.target\n"},
	{"non-breaking space before #", "[Service]\nExecStart=/bin/true\n[Install]\n\u00a0# note \\\nAlias=cron.service\nWantedBy=a.target\n"},
	{"spaces around = and the key", "[Service]\nExecStart=/bin/true\n[Install]\n   Alias =  cron.service  \n"},
	{"section opened twice", "[Install]\nWantedBy=a.target\n[Service]\nExecStart=/bin/true\n[Install]\nAlias=cron.service\n"},
	{"case of the key", "[Service]\nExecStart=/bin/true\n[Install]\nalias=cron.service\nWantedBy=a.target\n"},
	{"case of the section", "[Service]\nExecStart=/bin/true\n[install]\nAlias=cron.service\n[Install]\nWantedBy=a.target\n"},
	{"empty value resets", "[Service]\nExecStart=/bin/true\n[Install]\nAlias=cron.service\nAlias=\nWantedBy=a.target\n"},
	{"Also", "[Service]\nExecStart=/bin/true\n[Install]\nAlso=other.service\n"},
	{"include is gone", "[Service]\nExecStart=/bin/true\n[Install]\n.include /dev/null\nAlias=cron.service\n"},
	{"section header with trailing spaces", "[Service]\nExecStart=/bin/true\n[Install]  \nAlias=cron.service\n"},
}

// other is the unit that Also= names in the corpus.
const otherUnit = "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"

// TestReadUnitAgreesWithSystemd enables each unit of installCorpus with the real
// systemctl in a scratch root (systemctl --root=DIR enable: systemd's own [Install]
// reading, nothing booted, the host untouched) and checks that the symlinks it made
// are the ones readUnit's reading of the [Install] section asks for.
func TestReadUnitAgreesWithSystemd(t *testing.T) {
	systemctl := requireBinary(t, "systemctl")
	for _, tt := range installCorpus {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "etc/systemd/system")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			files := map[string]string{"t.service": tt.data, "other.service": otherUnit}
			for name, data := range files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			out, err := exec.Command(systemctl, "--root="+root, "--no-reload", "enable", "t.service").CombinedOutput()
			t.Logf("systemctl enable (%v):\n%s", err, out)

			var got []string
			err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.Type()&fs.ModeSymlink != 0 {
					rel, _ := filepath.Rel(dir, p)
					target, _ := os.Readlink(p)
					got = append(got, rel+" -> "+filepath.Base(target))
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			want := expectedLinks(t, files, "t.service")
			if !slices.Equal(got, want) {
				t.Errorf("systemd made links\n  %q\nbaton's reading makes\n  %q", got, want)
			}
		})
	}
}

// validUnitRE is a unit name systemd accepts in an [Install] list (the corpus uses no
// specifiers, quotes or escapes).
var validUnitRE = regexp.MustCompile(`^[A-Za-z0-9:_.@-]+\.(service|target|socket|timer)$`)

// expectedLinks is what enabling unit does according to readUnit: the [Install] lists
// (an empty assignment resets one), Also= followed.
func expectedLinks(t *testing.T, files map[string]string, unit string) []string {
	var links []string
	done := map[string]bool{}
	var enable func(name string)
	enable = func(name string) {
		if done[name] {
			return
		}
		done[name] = true
		sections, _ := readUnit([]byte(files[name]))
		lists := map[string][]string{}
		for _, s := range sections {
			if s.Name != "Install" {
				continue
			}
			for _, e := range s.Settings {
				if e.Value == "" {
					lists[e.Key] = nil
					continue
				}
				for _, w := range strings.Fields(e.Value) {
					if validUnitRE.MatchString(w) {
						lists[e.Key] = append(lists[e.Key], w)
					}
				}
			}
		}
		for _, a := range lists["Alias"] {
			links = append(links, a+" -> "+name)
		}
		for key, suffix := range map[string]string{"WantedBy": ".wants", "RequiredBy": ".requires", "UpheldBy": ".upholds"} {
			for _, w := range lists[key] {
				links = append(links, w+suffix+"/"+name+" -> "+name)
			}
		}
		for _, also := range lists["Also"] {
			enable(also)
		}
	}
	enable(unit)
	slices.Sort(links)
	return links
}

// requireBinary returns the path of a program the test needs. Without it the test
// skips, except in CI (CI=true), which installs it (scripts/deps: systemd).
func requireBinary(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("needs %s (CI installs it: see scripts/deps)", name)
		}
		t.Skipf("needs %s", name)
	}
	return p
}

// TestCheckUnitRefusesAmbiguousLines: every line that systemd and another reader
// could read differently is refused with its line, and so are Alias= and Also= however
// they are written. Before this check, the first cases passed `baton validate`.
func TestCheckUnitRefusesAmbiguousLines(t *testing.T) {
	const head = "[Service]\nExecStart=/bin/true\n[Install]\n" // lines 1-3
	tests := []struct {
		name string
		data string
		line int
		msg  string // the start of the message
	}{
		{"comment ending in a backslash hides Alias from go-systemd", head + "# note \\\nAlias=cron.service\n", 4, "ambiguous unit file: a comment that ends in a backslash"},
		{"two trailing backslashes", head + "X-Note=x \\\\\nAlias=cron.service\n", 4, "ambiguous unit file: a line that ends in more than one backslash"},
		{"backslash then spaces", head + "X-Note=x \\ \nAlias=cron.service\n", 4, "ambiguous unit file: a backslash followed by trailing whitespace"},
		{"comment inside a continuation", head + "WantedBy=a.target \\\n# c\nb.target\n", 5, "ambiguous unit file: a comment inside a continued setting"},
		{"lone CR", head + "# x\rAlias=cron.service\n", 4, "ambiguous unit file: a carriage return"},
		{"NUL", head + "# x\x00Alias=cron.service\n", 4, "ambiguous unit file: a NUL byte"},
		{"byte order mark", head + "\ufeffAlias=cron.service\n", 4, "ambiguous unit file: a byte order mark"},
		{"vertical tab", head + "\vAlias=cron.service\n", 4, "ambiguous unit file: control character 0x0b"},
		{"invalid UTF-8", head + "Alias=cron.service \xff\n", 4, "ambiguous unit file: not valid UTF-8"},
		{"key continued before its =", head + "Alias\\\n=cron.service\n", 4, "ambiguous unit file: a line continued before its '='"},
		{"section header continued", "[Service]\nExecStart=/bin/true\n[Install]\\\nAlias=cron.service\n", 3, "ambiguous unit file: a line continued before its '='"},
		{"non-breaking space before a key", head + "\u00a0Alias=cron.service\n", 4, `ambiguous unit file: key "\u00a0Alias"`},
		{"Alias", head + "WantedBy=multi-user.target\nAlias=cron.service\n", 5, "[Install] Alias=cron.service is refused"},
		{"Alias with spaces", head + "  Alias =  cron.service \n", 4, "[Install] Alias=cron.service is refused"},
		{"Alias continued", head + "WantedBy=a.target\nAlias=a.service \\\n  cron.service\n", 5, "[Install] Alias=a.service cron.service is refused"},
		{"Alias in a second [Install]", "[Install]\nWantedBy=a.target\n" + head + "Alias=cron.service\n", 6, "[Install] Alias=cron.service is refused"},
		{"Alias after a lone CRLF file", "[Service]\r\nExecStart=/bin/true\r\n[Install]\r\nAlias=cron.service\r\n", 4, "[Install] Alias=cron.service is refused"},
		{"Also", head + "Also=ssh.service debug-shell.service\n", 4, "[Install] Also=ssh.service debug-shell.service is refused: enabling or disabling this unit would enable or disable ssh.service, debug-shell.service too"},
		{"continued last line", head + "X-Note=x \\\n", 4, "ambiguous unit file: the last line ends in a backslash"},
		{"continued before CRLF", head + "X-Note=x \\\r\nAlias=cron.service\r\n", 4, "ambiguous unit file: a backslash before a carriage return"},
		{"continued before CRLF, then blank", "[0]\n0=\\\r\n\n\n", 2, "ambiguous unit file: a backslash before a carriage return"},
		{"setting outside a section", "ExecStart=/bin/true\n" + head, 1, "not a valid unit file"},
		{"missing =", head + "WantedBy\n", 4, "not a valid unit file"},
		{"invalid section header", head + "[Install\n", 4, "not a valid unit file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := checkUnit("t.service", "t.service", []byte(tt.data))
			if e == nil {
				t.Fatalf("checkUnit accepted %q", tt.data)
			}
			if e.Line != tt.line || !strings.HasPrefix(e.Msg, tt.msg) {
				t.Errorf("checkUnit: line %d: %s\nwant line %d: %s...", e.Line, e.Msg, tt.line, tt.msg)
			}
		})
	}
}

// TestCheckUnitAccepts: what unit files usually hold still passes.
func TestCheckUnitAccepts(t *testing.T) {
	for _, data := range []string{
		"[Unit]\nDescription=x\n# a comment\n; another\n\n[Service]\nExecStart=/bin/sh -c 'echo a \\\n  b'\n\n[Install]\nWantedBy=multi-user.target\n",
		"[Service]\r\nExecStart=/bin/true\r\n",
		"[Service]\nExecStart=/bin/true\n[Install]\nAlias=\nAlso=\n",
		"[Service]\nExecStart=/bin/echo \\\\ x\n",
		"[Service]\nEnvironment=A=1 \\\n\tB=2\nExecStart=/bin/true\n[X-Fleet]\nX-Whatever=é\n",
	} {
		if e := checkUnit("t.service", "t.service", []byte(data)); e != nil {
			t.Errorf("checkUnit(%q): %v", data, e)
		}
	}
}

// FuzzReadUnit: readUnit and lintUnit never panic, and a unit file that lintUnit
// accepts and systemd reads without a warning reads the same to go-systemd's parser,
// the other reader: same sections, same keys, same values.
func FuzzReadUnit(f *testing.F) {
	for _, c := range installCorpus {
		f.Add([]byte(c.data))
	}
	f.Add([]byte("[Service]\nExecStart=/bin/sh -c 'a \\\n b'\n"))
	f.Add([]byte("[0]\nA=\\\r\nB=1\r\n")) // systemd reads A="B=1"; go-systemd reads A and B
	f.Fuzz(func(t *testing.T, data []byte) {
		sections, problems := readUnit(data)
		for _, p := range problems {
			if p.Line < 1 || p.Msg == "" {
				t.Fatalf("problem without a line or a message: %+v", p)
			}
		}
		if n, msg := lintUnit(data); n > 0 || len(problems) > 0 {
			if n < 0 || (n > 0 && msg == "") {
				t.Fatalf("lintUnit: line %d, message %q", n, msg)
			}
			return
		}
		other, err := unit.DeserializeSections(bytes.NewReader(data))
		if err != nil {
			return // go-systemd refuses what baton accepts: no hidden setting
		}
		var got, want []string
		for _, s := range sections {
			want = append(want, "["+s.Name+"]")
			for _, e := range s.Settings {
				want = append(want, e.Key+"="+e.Value)
			}
		}
		for _, s := range other {
			got = append(got, "["+s.Section+"]")
			for _, e := range s.Entries {
				got = append(got, e.Name+"="+strings.Trim(strings.ReplaceAll(e.Value, "\\\n", " "), unitWhitespace))
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("baton reads %q\ngo-systemd reads %q", want, got)
		}
	})
}
