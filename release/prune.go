package release

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Prune removes release directories of service under stateDir except those whose
// names are in keep and the newest `newest` others (by modification time, then by
// name), and every leftover whose name starts with ".staging-" (staging directories,
// downloads, removals that a crash interrupted). It returns the paths it removed.
//
// A release is first renamed to a staging name, then removed, so that a crash half
// way through never leaves a damaged directory under a release's name. Entries that
// are not directories, and other hidden names, are left alone. Prune must not run
// beside a Stage of the same service, whose staging directory it would remove.
func Prune(stateDir, service string, keep []string, newest int) ([]string, error) {
	if err := checkDirName("service name", service); err != nil {
		return nil, fmt.Errorf("prune releases: %w", err)
	}
	dir := filepath.Join(stateDir, "releases", service)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("prune releases of %s: %w", service, err)
	}
	var removed []string
	var errs []error
	type release struct {
		name string
		mod  time.Time
	}
	var releases []release
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, stagingPrefix):
			p := filepath.Join(dir, name)
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
				continue
			}
			removed = append(removed, p)
		case strings.HasPrefix(name, "."), !e.IsDir(), slices.Contains(keep, name):
		default:
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			releases = append(releases, release{name, fi.ModTime()})
		}
	}
	slices.SortFunc(releases, func(a, b release) int {
		return cmp.Or(b.mod.Compare(a.mod), strings.Compare(b.name, a.name))
	})
	for i, r := range releases {
		if i < newest {
			continue
		}
		p := filepath.Join(dir, r.name)
		if err := removeAside(p); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, p)
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("prune releases of %s: %w", service, err)
	}
	return removed, nil
}

// PruneServices removes the release directories of every service under stateDir
// that is not in keep: services the host no longer runs (dropped from its group) and
// services whose first upgrade failed; and every leftover whose name starts with
// ".staging-" (a service's directory set aside for removal when a crash interrupted
// it). Any other name that is not a plain service name, and anything that is not a
// directory, is left alone. It returns the paths it removed. Like Prune, it must not
// run beside a Stage, whose service directory it may remove.
func PruneServices(stateDir string, keep []string) ([]string, error) {
	root := filepath.Join(stateDir, "releases")
	entries, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("prune services' releases: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		name := e.Name()
		p := filepath.Join(root, name)
		if strings.HasPrefix(name, stagingPrefix) {
			// Already aside: what is left is to remove it.
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
				continue
			}
			removed = append(removed, p)
			continue
		}
		if !e.IsDir() || slices.Contains(keep, name) || checkDirName("service name", name) != nil {
			continue
		}
		if err := removeAside(p); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, p)
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("prune services' releases: %w", err)
	}
	return removed, nil
}
