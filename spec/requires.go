package spec

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/Masterminds/semver/v3"

	"github.com/baton-fleet/baton/internal/yamldoc"
)

// MaxRangeLen bounds a requires: range, so that a hostile repository cannot make
// every gate parse a megabyte.
const MaxRangeLen = 256

// Range is a requires: value: a semver range over another service's version, such as
// ">=2.0.0 <3.0.0", or one exact version that is not semver.
//
// A version is semver when it is MAJOR.MINOR.PATCH with an optional -prerelease and
// an optional build suffix after a plus sign (semver.org 2.0.0; no leading v, no
// missing part). A semver range admits the semver versions it matches, as github.com/Masterminds/semver/v3 reads it: a
// prerelease only when the range names one. A version that is not semver (2024-01-15,
// 1.2, v1.2.3) compares only for equality: a range admits it only when it is that
// version itself, written alone or after "=".
type Range struct {
	Text  string
	exact string              // the one non-semver version admitted, or ""
	c     *semver.Constraints // nil when exact is set
}

// ParseRange reads a requires: value.
func ParseRange(s string) (Range, error) {
	text := strings.TrimSpace(s)
	switch {
	case text == "":
		return Range{}, fmt.Errorf("empty; write a semver range such as >=2.0.0 <3.0.0")
	case len(text) > MaxRangeLen:
		return Range{}, fmt.Errorf("longer than %d characters", MaxRangeLen)
	}
	if v := strings.TrimSpace(strings.TrimPrefix(text, "=")); versionRE.MatchString(v) && !IsSemver(v) {
		return Range{Text: text, exact: v}, nil
	}
	c, err := semver.NewConstraint(text)
	if err != nil {
		return Range{}, fmt.Errorf("%q is neither a semver range (such as >=2.0.0 <3.0.0, ^1.4, ~2.1.0) nor one version", text)
	}
	return Range{Text: text, c: c}, nil
}

// IsSemver reports whether version is a semantic version, MAJOR.MINOR.PATCH with an
// optional -prerelease and +build: only those compare by order.
func IsSemver(version string) bool {
	_, err := semver.StrictNewVersion(version)
	return err == nil
}

// Admits reports whether version is in the range.
func (r Range) Admits(version string) bool {
	if r.c == nil {
		return r.exact != "" && version == r.exact
	}
	v, err := semver.StrictNewVersion(version)
	return err == nil && r.c.Check(v)
}

// Older reports whether version a comes before b: by semver order when both are
// semver, and, when either is not, whenever they differ (such versions compare only
// for equality, so a different one may be older).
func Older(a, b string) bool {
	va, errA := semver.StrictNewVersion(a)
	vb, errB := semver.StrictNewVersion(b)
	if errA != nil || errB != nil {
		return a != b
	}
	return va.LessThan(vb)
}

// checkRequires checks the requires: of one service on its own: each key names a
// service of the repository other than itself, each value is a range.
func (s *Service) checkRequires(doc *yamldoc.Doc, services map[string]bool) yamldoc.Errors {
	var errs yamldoc.Errors
	for _, dep := range slices.Sorted(maps.Keys(s.Requires)) {
		at := doc.At("requires", dep)
		switch {
		case dep == s.Name:
			errs.Add(at.Errorf("requires: %s: a service cannot require itself", dep))
			continue
		case !services[dep]:
			errs.Add(at.Errorf("requires: unknown service %q: there is no services/%s/service.yaml", dep, dep))
			continue
		}
		if _, err := ParseRange(s.Requires[dep]); err != nil {
			errs.Add(at.Errorf("requires: %s: %v", dep, err))
		}
	}
	return errs
}

// checkRequirements checks that the repository's own versions satisfy every range:
// once a rollout ends, every service runs the version the repository names, so a
// range that refuses it could never be met.
func (r *Repo) checkRequirements() yamldoc.Errors {
	var errs yamldoc.Errors
	for _, name := range slices.Sorted(maps.Keys(r.Services)) {
		s := r.Services[name]
		for _, dep := range slices.Sorted(maps.Keys(s.Requires)) {
			d, ok := r.Services[dep]
			rng, err := ParseRange(s.Requires[dep])
			if !ok || err != nil {
				continue // reported by checkRequires
			}
			if rng.Admits(d.Version) {
				continue
			}
			msg := fmt.Sprintf("requires: %s %s requires %s %s, but the repository's %s is %s: the rollout could never finish", name, s.Version, dep, rng.Text, dep, d.Version)
			if !IsSemver(d.Version) {
				msg += fmt.Sprintf(" (%s is not semver, so it compares only for equality: require %q)", d.Version, d.Version)
			}
			errs.Add(s.doc.At("requires", dep).Errorf("%s", msg))
		}
	}
	return errs
}
