package spec

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	"github.com/baton-fleet/baton/internal/yamldoc"
)

// Warnings lists what a valid repository asks for that agents refuse by default, or
// that does not do what it seems to, each at the file and line of its value: an
// artifact over plain http://, which every agent refuses unless its
// artifacts.allowInsecure names the host; a check of a bluegreen service that
// reaches the same place for both colors, and so does not check the new color
// before clients reach it. They do not make the repository invalid; `baton
// validate` prints them so that CI shows them.
func (r *Repo) Warnings() yamldoc.Errors {
	var out yamldoc.Errors
	for _, name := range slices.Sorted(maps.Keys(r.Services)) {
		s := r.Services[name]
		out = append(out, s.colorBlindChecks()...)
		for i, a := range s.Artifacts {
			host, ok := plainHTTPHost(a.URL)
			if !ok {
				continue
			}
			pos := yamldoc.Pos{File: name}
			if s.doc != nil {
				pos = s.doc.At("artifacts", i, "url")
			}
			out.Add(pos.Errorf("artifacts[%d].url: plain http:// from %s: every agent refuses it unless its artifacts.allowInsecure names that host; use https://", i, host))
		}
	}
	return out
}

// plainHTTPHost returns the host of raw, a URL template, when it is a plain http://
// URL; "the host in the template" when the host is templated.
func plainHTTPHost(raw string) (string, bool) {
	scheme, rest, ok := strings.Cut(strings.TrimSpace(raw), "://")
	if !ok || !strings.EqualFold(scheme, "http") {
		return "", false
	}
	authority := rest
	if i := strings.IndexAny(authority, "/?#"); i >= 0 {
		authority = authority[:i]
	}
	if strings.Contains(authority, "{{") {
		return "the host of the template", true
	}
	u, err := url.Parse("http://" + authority[strings.LastIndex(authority, "@")+1:])
	if err != nil || u.Hostname() == "" {
		return "its host", true
	}
	return fmt.Sprintf("%q", u.Hostname()), true
}

// colorBlindChecks warns of each http or tcp check of a bluegreen service whose
// address uses neither {{ .Port }} nor {{ .Color }}: both colors would check the
// same place (the balancer, or the active color), not the new color on its port.
// An exec check is left alone: its command may find the color's port otherwise.
func (s *Service) colorBlindChecks() yamldoc.Errors {
	if !s.BlueGreen() || s.doc == nil {
		return nil
	}
	var out yamldoc.Errors
	for i, c := range s.Checks {
		var field, value string
		switch {
		case c.HTTP != nil:
			field, value = "http", c.HTTP.URL
		case c.TCP != nil:
			field, value = "tcp", c.TCP.Address
		default:
			continue
		}
		if !strings.Contains(value, ".Port") && !strings.Contains(value, ".Color") {
			key := map[string]string{"http": "url", "tcp": "address"}[field]
			out.Add(s.doc.At("checks", i, field, key).Errorf("check %q: %s.%s uses neither {{ .Port }} nor {{ .Color }}: it reaches the same place for both colors, not the new color on its own port before clients do", c.Name, field, key))
		}
	}
	return out
}
