package units

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// configDir is the directory of a host's own system units, where baton installs them.
const configDir = "/etc/systemd/system"

// systemUnitDirs are the directories systemd (252) loads system units from, first
// match wins, as `systemd-analyze unit-paths` lists them: a file in any of them, or a
// mask there, defines the unit of its name.
var systemUnitDirs = []string{
	"/etc/systemd/system.control", "/run/systemd/system.control", "/run/systemd/transient",
	"/run/systemd/generator.early", configDir, "/etc/systemd/system.attached",
	"/run/systemd/system", "/run/systemd/system.attached", "/run/systemd/generator",
	"/usr/local/lib/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system",
	"/run/systemd/generator.late",
}

// searchPath is where systemd looks for the units of d's host. When d is
// <root>/etc/systemd/system (the agent's own, or a test's host under a root), it is
// systemd's search path under <root>, d included; otherwise d alone.
func (d Dir) searchPath() []string {
	clean := filepath.Clean(d.Path)
	root, ok := strings.CutSuffix(clean, configDir)
	if !ok {
		return []string{clean}
	}
	dirs := make([]string, len(systemUnitDirs))
	for i, dir := range systemUnitDirs {
		dirs[i] = filepath.Join("/", root, dir)
	}
	return dirs
}

// Taken returns the file that already defines the unit name on d's host without
// baton owning it, "" when there is none: a file, symlink or mask of that name in d
// that owned(name) is false for, or in any other directory systemd loads units from;
// and for an instance (x@i.service), a template x@.service found the same way, as
// systemd loads the instance from it: a file of the instance's name would override
// that template for the instance without systemd listing the name as taken. A unit
// that baton owns is never taken. owned reports whether baton installed a unit in d.
func (d Dir) Taken(name string, owned func(string) bool) (string, error) {
	if _, err := d.path(name); err != nil {
		return "", fmt.Errorf("check unit: %w", err)
	}
	if owned(name) {
		return "", nil
	}
	names := []string{name}
	if t := templateOf(name); t != "" {
		names = append(names, t)
	}
	own := filepath.Clean(d.Path)
	for _, n := range names {
		for _, dir := range d.searchPath() {
			if dir == own && owned(n) {
				continue
			}
			p := filepath.Join(dir, n)
			_, err := os.Lstat(p)
			switch {
			case err == nil:
				return p, nil
			case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
			default:
				return "", fmt.Errorf("check unit %s: %w", name, err)
			}
		}
	}
	return "", nil
}

// templateOf returns the template an instance name is loaded from (x@i.service:
// x@.service), "" for a name that is not an instance.
func templateOf(name string) string {
	prefix, rest, ok := strings.Cut(name, "@")
	if !ok || isTemplate(name) {
		return ""
	}
	return prefix + "@" + path.Ext(rest)
}
