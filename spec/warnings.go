package spec

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	"github.com/baton-fleet/baton/internal/yamldoc"
)

// Warnings lists what a valid repository asks for that agents refuse by default, each
// at the file and line of its value: an artifact over plain http://, which every agent
// refuses unless its artifacts.allowInsecure names the host. They do not make the
// repository invalid; `baton validate` prints them so that CI shows them.
func (r *Repo) Warnings() yamldoc.Errors {
	var out yamldoc.Errors
	for _, name := range slices.Sorted(maps.Keys(r.Services)) {
		s := r.Services[name]
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
