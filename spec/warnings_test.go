package spec

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestWarnings(t *testing.T) {
	fsys := fstest.MapFS{
		"fleet.yaml": {Data: []byte("apiVersion: baton/v1\ngroups:\n  - name: web\n    hosts: [\"web-*\"]\n    services: [api, kv]\n")},
		"services/api/service.yaml": {Data: []byte(`version: "1.0.0"
units: [api.service]
artifacts:
  - url: "https://releases.example.com/api/{{ .Version }}/api"
    sha256: "` + strings.Repeat("a", 64) + `"
    name: api
  - url: "HTTP://mirror.lan:8080/api/{{ .Version }}/static.tar"
    sha256: "` + strings.Repeat("b", 64) + `"
    unpack: tar
`)},
		"services/api/api.service": {Data: []byte("[Service]\nExecStart={{ .Release }}/api\n")},
		"services/kv/service.yaml": {Data: []byte(`version: "2.0.0"
units: [kv.service]
artifacts:
  - url: "http://user@{{ .Host }}.mirror.lan/kv"
    sha256: "` + strings.Repeat("c", 64) + `"
    name: kv
`)},
		"services/kv/kv.service": {Data: []byte("[Service]\nExecStart={{ .Release }}/kv\n")},
	}
	r, err := Load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`services/api/service.yaml:7: artifacts[1].url: plain http:// from "mirror.lan": every agent refuses it unless its artifacts.allowInsecure names that host; use https://`,
		`services/kv/service.yaml:4: artifacts[0].url: plain http:// from the host of the template: every agent refuses it unless its artifacts.allowInsecure names that host; use https://`,
	}
	var got []string
	for _, w := range r.Warnings() {
		got = append(got, w.Error())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Warnings:\n got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestPlainHTTPHost(t *testing.T) {
	for raw, want := range map[string]string{
		"https://releases.example.com/a": "",
		"ftp://x/a":                      "",
		"releases.example.com/a":         "",
		"http://127.0.0.1:8080/a":        `"127.0.0.1"`,
		"http://[::1]:80/a?x=1":          `"::1"`,
		"http://u:p@mirror.lan/a":        `"mirror.lan"`,
		" http://mirror.lan":             `"mirror.lan"`,
		"http://{{ .Host }}/a":           "the host of the template",
		"http://[::1/a":                  "its host",
	} {
		got, ok := plainHTTPHost(raw)
		if ok != (want != "") || got != want {
			t.Errorf("plainHTTPHost(%q) = %q, %v; want %q", raw, got, ok, want)
		}
	}
}
