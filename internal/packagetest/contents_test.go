package packagetest

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// shipped are the files both packages install, apart from the zsh completion, whose
// directory differs (Debian's zsh reads vendor-completions, others site-functions), and
// the license files (below).
var shipped = []string{
	"/etc/baton/agent.yaml",
	"/usr/bin/baton",
	"/usr/lib/systemd/system/baton.service",
	"/usr/share/bash-completion/completions/baton",
	"/usr/share/fish/vendor_completions.d/baton.fish",
	"/usr/share/doc/baton/README.md",
	"/usr/share/doc/baton/packaging.md",
	"/usr/share/doc/baton/repository-format.md",
	"/usr/share/doc/baton/transaction.md",
	"/usr/share/man/man1/baton.1.gz",
	"/usr/share/man/man1/baton-agent.1.gz",
	"/usr/share/man/man1/baton-validate.1.gz",
	"/usr/share/man/man1/baton-validate-config.1.gz",
	"/usr/share/man/man1/baton-version.1.gz",
	"/usr/share/man/man1/baton-completion-bash.1.gz",
}

const (
	debZsh = "/usr/share/zsh/vendor-completions/_baton"
	rpmZsh = "/usr/share/zsh/site-functions/_baton"
)

// The license files, each package's where its format puts them: Debian's copyright file
// with the docs, rpm's as %license files of their own directory. Both carry baton's
// NOTICE and the license and notice files of the modules linked in.
var (
	debLicense = map[string]string{ // installed file -> what it is a copy of
		"/usr/share/doc/baton/copyright":            "packaging/copyright",
		"/usr/share/doc/baton/NOTICE":               "NOTICE",
		"/usr/share/doc/baton/third-party-licenses": "",
	}
	rpmLicense = map[string]string{
		"/usr/share/licenses/baton/LICENSE":              "LICENSE",
		"/usr/share/licenses/baton/NOTICE":               "NOTICE",
		"/usr/share/licenses/baton/third-party-licenses": "",
	}
)

const thirdParty = "third-party-licenses" // in the stage, by scripts/licenses --texts

// licenseSource is the file that a license file of debLicense or rpmLicense copies: one
// of the repository (under root), or else the stage's thirdParty.
func (p *Packages) licenseSource(root, src string) string {
	if src == "" {
		return filepath.Join(p.Stage, thirdParty)
	}
	return filepath.Join(root, src)
}

// debFiles lists the regular files of a .deb, with their modes and owners.
func debFiles(t *testing.T, deb string) map[string]string {
	t.Helper()
	files := map[string]string{}
	for line := range strings.Lines(run(t, "dpkg-deb", "--contents", deb)) {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasPrefix(f[0], "-") {
			continue
		}
		files[strings.TrimPrefix(f[5], ".")] = f[0] + " " + f[1]
	}
	return files
}

func TestDeb(t *testing.T) {
	requireTools(t, "dpkg-deb")
	p := build(t, crossTag)
	root := moduleRoot(t)
	for _, arch := range []string{runtime.GOARCH, otherArch()} {
		t.Run(arch, func(t *testing.T) {
			deb := p.Deb(arch)
			info := run(t, "dpkg-deb", "--info", deb)
			for _, want := range []string{
				"Package: baton\n", "Version: 1.0.0\n", "Architecture: " + arch + "\n",
				"Depends: systemd\n", "Recommends: git\n", "Section: admin\n",
			} {
				if !strings.Contains(info, " "+want) {
					t.Errorf("control has no %q:\n%s", strings.TrimSpace(want), info)
				}
			}
			if !regexp.MustCompile(`(?m)^ Maintainer: \S`).MatchString(info) {
				t.Errorf("control has no maintainer:\n%s", info)
			}

			files := debFiles(t, deb)
			for _, f := range append(slices.Concat(shipped, slices.Collect(maps.Keys(debLicense))), debZsh) {
				if _, ok := files[f]; !ok {
					t.Errorf("no %s in the .deb", f)
				}
			}
			for f, mode := range files {
				want := "-rw-r--r-- root/root"
				if f == "/usr/bin/baton" {
					want = "-rwxr-xr-x root/root"
				}
				if mode != want {
					t.Errorf("%s is %s, want %s", f, mode, want)
				}
				if _, rpmOnly := rpmLicense[f]; strings.Contains(f, "baton-man") || f == rpmZsh || rpmOnly {
					t.Errorf("the .deb ships %s", f)
				}
			}

			// The control archive: the conffile, and the maintainer scripts as written.
			ctrl := t.TempDir()
			run(t, "dpkg-deb", "--control", deb, ctrl)
			if got := readFile(t, filepath.Join(ctrl, "conffiles")); got != "/etc/baton/agent.yaml\n" {
				t.Errorf("conffiles = %q, want only /etc/baton/agent.yaml", got)
			}
			for script, src := range map[string]string{"postinst": "postinstall.sh", "prerm": "preremove.sh", "postrm": "postremove.sh"} {
				if got, want := readFile(t, filepath.Join(ctrl, script)), readFile(t, filepath.Join(root, "packaging", "scripts", src)); got != want {
					t.Errorf("%s differs from packaging/scripts/%s", script, src)
				}
			}

			// The payload: the unit and the configuration as written, and a binary
			// for the package's architecture with the version stamped in.
			fs := t.TempDir()
			run(t, "dpkg-deb", "--extract", deb, fs)
			for dst, src := range map[string]string{
				"/usr/lib/systemd/system/baton.service": "packaging/baton.service",
				"/etc/baton/agent.yaml":                 "packaging/agent.yaml",
				"/usr/share/doc/baton/packaging.md":     "docs/packaging.md",
			} {
				if readFile(t, filepath.Join(fs, dst)) != readFile(t, filepath.Join(root, src)) {
					t.Errorf("%s differs from %s", dst, src)
				}
			}
			for dst, src := range debLicense {
				src = p.licenseSource(root, src)
				if readFile(t, filepath.Join(fs, dst)) != readFile(t, src) {
					t.Errorf("%s differs from %s", dst, src)
				}
			}
			checkCopyright(t, readFile(t, filepath.Join(fs, "usr/share/doc/baton/copyright")))
			tp := readFile(t, filepath.Join(fs, "usr/share/doc/baton", thirdParty))
			for _, want := range []string{"The baton binary is built from", "\ngo.etcd.io/etcd/client/v3 v", "\nGo standard library go"} {
				if !strings.Contains(tp, want) {
					t.Errorf("%s has no %q:\n%s", thirdParty, want, firstLines(tp, 10))
				}
			}
			bin := filepath.Join(fs, "usr/bin/baton")
			wantMachine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
			if f, err := elf.Open(bin); err != nil {
				t.Error(err)
			} else {
				if f.Machine != wantMachine {
					t.Errorf("/usr/bin/baton is for %v, want %v", f.Machine, wantMachine)
				}
				if f.Section(".interp") != nil {
					t.Errorf("/usr/bin/baton is linked dynamically; the packages declare no libc dependency")
				}
				f.Close()
			}
			if arch == runtime.GOARCH {
				out := run(t, bin, "version")
				if !strings.HasPrefix(out, "baton v1.0.0 (commit ") {
					t.Errorf("baton version = %q, want it to start with \"baton v1.0.0 (commit \"", out)
				}
			}
			man := run(t, "sh", "-c", "gzip -dc "+filepath.Join(fs, "usr/share/man/man1/baton-agent.1.gz"))
			if !strings.Contains(man, `.TH "BATON" "1"`) || !strings.Contains(man, "baton v1.0.0") {
				t.Errorf("baton-agent.1 has no header with the version:\n%s", firstLines(man, 3))
			}
			if c := readFile(t, filepath.Join(fs, "usr/share/bash-completion/completions/baton")); !strings.Contains(c, "__start_baton") {
				t.Errorf("the bash completion is not cobra's:\n%s", firstLines(c, 3))
			}
		})
	}
}

func TestRPM(t *testing.T) {
	requireTools(t, "rpm")
	p := build(t, crossTag)
	root := moduleRoot(t)
	for _, arch := range []string{runtime.GOARCH, otherArch()} {
		t.Run(arch, func(t *testing.T) {
			rpm := p.RPM(arch)
			q := func(args ...string) string { return run(t, "rpm", append([]string{"-qp"}, append(args, rpm)...)...) }

			if got, want := q("--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE}\n"), "baton 1.0.0 1 "+rpmArch(arch)+" Apache-2.0\n"; got != want {
				t.Errorf("name version release arch license = %q, want %q", got, want)
			}
			if info := q("-i"); !strings.Contains(info, "Summary     : Upgrade this host's systemd services") {
				t.Errorf("rpm -qip:\n%s", info)
			}

			files := strings.Split(strings.TrimSpace(q("-l")), "\n")
			for _, f := range append(slices.Concat(shipped, slices.Collect(maps.Keys(rpmLicense))),
				rpmZsh, "/etc/baton", "/usr/share/doc/baton", "/usr/share/licenses/baton") {
				if !slices.Contains(files, f) {
					t.Errorf("no %s in the .rpm", f)
				}
			}
			for _, f := range files {
				if _, debOnly := debLicense[f]; f == debZsh || debOnly {
					t.Errorf("the .rpm ships %s", f)
				}
			}
			if got := q("--configfiles"); got != "/etc/baton/agent.yaml\n" {
				t.Errorf("config files = %q, want only /etc/baton/agent.yaml", got)
			}
			// c: %config; n: noreplace (an upgrade leaves a changed file alone); l: %license
			// (installed even with --excludedocs). The digests are SHA-256 (algorithm 8).
			if got := q("--qf", "%{FILEDIGESTALGO}"); got != "8" {
				t.Fatalf("file digest algorithm %s, want 8 (SHA-256)", got)
			}
			for line := range strings.Lines(q("--qf", "[%{FILEMODES:perms}|%{FILEFLAGS:fflags}|%{FILEUSERNAME}:%{FILEGROUPNAME}|%{FILENAMES}|%{FILEDIGESTS}\n]")) {
				f := strings.Split(strings.TrimSpace(line), "|")
				if src, ok := rpmLicense[f[3]]; ok {
					src = p.licenseSource(root, src)
					if f[1] != "l" {
						t.Errorf("%s flags %q, want l (%%license)", f[3], f[1])
					}
					if want := sha256File(t, src); f[4] != want {
						t.Errorf("%s has digest %s, want %s's %s", f[3], f[4], src, want)
					}
					continue
				}
				if strings.Contains(f[1], "l") {
					t.Errorf("%s is a %%license file: %s", f[3], line)
				}
				switch f[3] {
				case "/etc/baton/agent.yaml":
					if f[1] != "cn" {
						t.Errorf("agent.yaml flags %q, want cn (config, noreplace)", f[1])
					}
				case "/usr/bin/baton":
					if f[0] != "-rwxr-xr-x" || f[2] != "root:root" {
						t.Errorf("/usr/bin/baton: %s", line)
					}
				}
			}

			requires := q("-R")
			for _, want := range []string{"systemd", "/usr/sbin/groupadd"} {
				if !slices.Contains(strings.Fields(requires), want) {
					t.Errorf("requires has no %s:\n%s", want, requires)
				}
			}
			if got := q("--recommends"); got != "git\n" {
				t.Errorf("recommends = %q, want git", got)
			}

			scripts := q("--scripts")
			for phase, src := range map[string]string{"postinstall": "postinstall.sh", "preuninstall": "preremove.sh", "postuninstall": "postremove.sh"} {
				body := scriptlet(scripts, phase)
				if want := readFile(t, filepath.Join(root, "packaging", "scripts", src)); strings.TrimSpace(body) != strings.TrimSpace(want) {
					t.Errorf("%s scriptlet differs from packaging/scripts/%s:\n%s", phase, src, body)
				}
			}
		})
	}
}

// scriptlet is the body of one scriptlet in the output of rpm --scripts.
func scriptlet(scripts, phase string) string {
	_, rest, ok := strings.Cut(scripts, phase+" scriptlet (using /bin/sh):\n")
	if !ok {
		return ""
	}
	if i := regexp.MustCompile(`(?m)^[a-z]+ scriptlet \(using `).FindStringIndex(rest); i != nil {
		rest = rest[:i[0]]
	}
	return rest
}

// TestDefaultConfig: the shipped configuration is refused until an administrator sets
// the repository, and is a valid configuration once its examples are uncommented.
func TestDefaultConfig(t *testing.T) {
	p := build(t, crossTag)
	shippedConfig := filepath.Join(moduleRoot(t), "packaging", "agent.yaml")
	out, err := exec.Command(p.Baton(), "validate-config", shippedConfig).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "repo.url: required") {
		t.Errorf("validate-config on the shipped file: %v\n%s\nwant it refused for repo.url: required", err, out)
	}

	// Uncomment the keys (#key: or #  key:), not the notes (# text, #  # text).
	key := regexp.MustCompile(`^#((?:  )*(?:[A-Za-z]+:|- ))`)
	var b strings.Builder
	for line := range strings.Lines(readFile(t, shippedConfig)) {
		b.WriteString(key.ReplaceAllString(line, "$1"))
	}
	uncommented := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(uncommented, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(p.Baton(), "validate-config", uncommented).CombinedOutput(); err != nil {
		t.Errorf("validate-config on the template with its keys uncommented: %v\n%s\n%s", err, out, b.String())
	}
}

// TestLicenses: every module linked into baton has a license that a binary under
// Apache-2.0 can carry, as scripts/licenses (make licenses) classifies them.
func TestLicenses(t *testing.T) {
	requireTools(t, "go")
	cmd := exec.Command(filepath.Join(moduleRoot(t), "scripts", "licenses"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/licenses: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`(?m)^github.com/baton-fleet/baton +\(this module\) +Apache-2.0 +LICENSE$`).Match(out) {
		t.Errorf("scripts/licenses does not list baton itself under Apache-2.0:\n%s", out)
	}
}

// checkCopyright checks a Debian copyright file in the machine-readable format
// (DEP-5): all of baton's files under Apache-2.0, whose text Debian systems have.
func checkCopyright(t *testing.T, text string) {
	t.Helper()
	paras := dep5(text)
	if len(paras) == 0 || paras[0]["Format"] != "https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/" || paras[0]["Upstream-Name"] != "baton" {
		t.Fatalf("copyright has no header paragraph of the machine-readable format:\n%s", text)
	}
	var files, license map[string]string
	for _, p := range paras[1:] {
		switch {
		case p["Files"] == "*":
			files = p
		case p["Files"] == "" && firstLines(p["License"], 1) == "Apache-2.0":
			license = p
		}
	}
	if files == nil || files["License"] != "Apache-2.0" || files["Copyright"] == "" {
		t.Errorf("copyright has no Files: * paragraph with a Copyright and License: Apache-2.0:\n%s", text)
	}
	if license == nil || !strings.Contains(license["License"], "/usr/share/common-licenses/Apache-2.0") {
		t.Errorf("copyright has no License: Apache-2.0 paragraph naming /usr/share/common-licenses/Apache-2.0:\n%s", text)
	}
}

// dep5 is the paragraphs of a Debian control-style file, each field's lines joined
// with newlines (continuation lines without their leading space).
func dep5(text string) []map[string]string {
	var paras []map[string]string
	var p map[string]string
	var field string
	for line := range strings.Lines(text) {
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.TrimSpace(line) == "":
			p = nil
		case line[0] == ' ' || line[0] == '\t':
			if p != nil && field != "" {
				p[field] += "\n" + line[1:]
			}
		default:
			name, value, _ := strings.Cut(line, ":")
			if p == nil {
				p = map[string]string{}
				paras = append(paras, p)
			}
			field = name
			p[field] = strings.TrimSpace(value)
		}
	}
	return paras
}

func sha256File(t testing.TB, name string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(readFile(t, name)))
	return hex.EncodeToString(sum[:])
}

func readFile(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}
