package spec

import (
	"fmt"
	"path"
	"regexp"
	"strings"
)

var (
	nameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]*$`)
	unitRE    = regexp.MustCompile(`^[A-Za-z0-9@._-]+$`)
	fileRE    = regexp.MustCompile(`^[A-Za-z0-9_+-][A-Za-z0-9._+-]*$`)
	sha256RE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	checkRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	userRE    = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	digitsRE  = regexp.MustCompile(`^[0-9]+$`)
)

// UnitSuffixes are the unit types a repository may ship as files.
var UnitSuffixes = []string{".service", ".socket", ".timer", ".path", ".target", ".mount", ".automount", ".swap", ".slice"}

// checkName checks a group or service name: [a-z0-9][a-z0-9-]*, at most 63 bytes.
func checkName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("required")
	case len(s) > 63:
		return fmt.Errorf("%q is longer than 63 characters", s)
	case !nameRE.MatchString(s):
		return fmt.Errorf("%q: use lower-case letters, digits and '-', starting with a letter or digit", s)
	}
	return nil
}

// checkUser checks the user an exec check or hook runs as: a POSIX user name as
// useradd accepts it by default, [a-z_][a-z0-9_-]*, at most 32 bytes. A numeric uid
// is refused: the user's primary and supplementary groups come from the user
// database, so the user must be in it by name. It is not a template.
func checkUser(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("empty; leave user out to run as the agent does (root)")
	case strings.Contains(s, "{{"):
		return fmt.Errorf("%q: user is not a template; name the user", s)
	case digitsRE.MatchString(s):
		return fmt.Errorf("%q: a numeric uid is not accepted; name the user, as the host's user database knows it", s)
	case len(s) > 32:
		return fmt.Errorf("%q is longer than 32 characters", s)
	case !userRE.MatchString(s):
		return fmt.Errorf("%q is not a user name: use lower-case letters, digits, _ and -, starting with a letter or _", s)
	}
	return nil
}

// CheckUnitName checks a unit file name from the repository: only [A-Za-z0-9@._-], a
// known unit suffix and a non-empty prefix. The check is repeated where units are
// installed, so a name is never trusted because it passed here once.
func CheckUnitName(s string) error {
	ext := path.Ext(s)
	prefix := strings.TrimSuffix(s, ext)
	switch {
	case s == "":
		return fmt.Errorf("empty unit name")
	case len(s) > 255:
		return fmt.Errorf("unit name %q is longer than 255 characters", s)
	case !unitRE.MatchString(s):
		return fmt.Errorf("invalid unit name %q: only letters, digits and @._- are allowed", s)
	case !isUnitSuffix(ext):
		return fmt.Errorf("invalid unit name %q: the suffix must be one of %s", s, strings.Join(UnitSuffixes, " "))
	case prefix == "" || strings.HasPrefix(prefix, ".") || strings.HasPrefix(prefix, "@"):
		return fmt.Errorf("invalid unit name %q: must start with a letter, digit, _ or -", s)
	case strings.Count(prefix, "@") > 1:
		return fmt.Errorf("invalid unit name %q: at most one @", s)
	}
	return nil
}

func isUnitSuffix(ext string) bool {
	for _, s := range UnitSuffixes {
		if ext == s {
			return true
		}
	}
	return false
}

// unitType is the unit's suffix without the dot: "service", "socket", ...
func unitType(name string) string { return strings.TrimPrefix(path.Ext(name), ".") }

// isTemplate reports whether name is a template unit such as "api@.service".
func isTemplate(name string) bool {
	return strings.HasSuffix(strings.TrimSuffix(name, path.Ext(name)), "@")
}

// templateOf returns the template a unit instance comes from ("api@1.service" ->
// "api@.service"), or "" when name is not an instance.
func templateOf(name string) string {
	prefix, rest, ok := strings.Cut(name, "@")
	if !ok || isTemplate(name) {
		return ""
	}
	return prefix + "@" + path.Ext(rest)
}
