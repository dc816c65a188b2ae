package packagetest

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func pkgversion(t *testing.T, v string) string {
	t.Helper()
	return strings.TrimSpace(run(t, "sh", filepath.Join(moduleRoot(t), "packaging", "pkgversion"), v))
}

// TestPkgVersion: git describe's output becomes a version dpkg and rpm accept.
func TestPkgVersion(t *testing.T) {
	tests := []struct{ describe, want string }{
		{"v1.2.3", "1.2.3"},
		{"1.2.3", "1.2.3"},
		{"v1.2.3-dirty", "1.2.3+dirty"},
		{"v1.2.3-rc.1", "1.2.3~rc.1"},
		{"v1.2.3-rc-1", "1.2.3~rc.1"},
		{"v1.2.3-4-gabc1234", "1.2.3+4.gabc1234"},
		{"v1.2.3-4-gabc1234-dirty", "1.2.3+4.gabc1234.dirty"},
		{"v1.2.3-rc.1-4-gabc1234", "1.2.3~rc.1+4.gabc1234"},
		{"v2.0.0+build.5", "2.0.0+build.5"},
		{"v2.0.0+build.5-1-gabc1234", "2.0.0+build.5.1.gabc1234"},
		{"abc1234", "0.0.0~gitabc1234"},
		{"1234567", "0.0.0~git1234567"}, // a hash of digits only is still a hash
		{"abc1234-dirty", "0.0.0~gitabc1234+dirty"},
		{"0123456789abcdef0123456789abcdef01234567", "0.0.0~git0123456789abcdef0123456789abcdef01234567"},
		{"dev", "0.0.0~dev"},
		{"release/2024 spring", "0.0.0~release.2024.spring"},
		{"", "0.0.0"},
	}
	for _, tt := range tests {
		if got := pkgversion(t, tt.describe); got != tt.want {
			t.Errorf("pkgversion %q = %q, want %q", tt.describe, got, tt.want)
		}
	}
	if err := exec.Command("sh", filepath.Join(moduleRoot(t), "packaging", "pkgversion")).Run(); err == nil {
		t.Error("pkgversion without an argument succeeded")
	}
}

// TestPkgVersionOrder: dpkg and rpm order the versions as the commits go.
func TestPkgVersionOrder(t *testing.T) {
	requireTools(t, "dpkg", "rpm")
	ascending := []string{
		"abc1234",                // no tag yet
		"v0.9.0-12-gdef5678",     // 12 commits after v0.9.0
		"v1.0.0-rc.1",            // a pre-release
		"v1.0.0-rc.1-2-gabc1234", // after it
		"v1.0.0-rc.2",
		"v1.0.0",
		"v1.0.0-2-gabc1234",
		"v1.0.0-10-g0123abc",
		"v1.0.1",
		"v1.9.0",
		"v1.10.0",
	}
	var versions []string
	for _, d := range ascending {
		versions = append(versions, pkgversion(t, d))
	}
	for i := 1; i < len(versions); i++ {
		a, b := versions[i-1], versions[i]
		if err := exec.Command("dpkg", "--compare-versions", a, "lt", b).Run(); err != nil {
			t.Errorf("dpkg: %s (%s) is not older than %s (%s)", a, ascending[i-1], b, ascending[i])
		}
		cmp := strings.TrimSpace(run(t, "rpm", "--eval", `%{lua: print(rpm.vercmp("`+a+`", "`+b+`"))}`))
		if cmp != "-1" {
			t.Errorf("rpm: %s (%s) is not older than %s (%s): vercmp %s", a, ascending[i-1], b, ascending[i], cmp)
		}
	}
	// A build from a changed tree sorts after the clean build of the same commit.
	clean, dirty := pkgversion(t, "v1.0.0-2-gabc1234"), pkgversion(t, "v1.0.0-2-gabc1234-dirty")
	if err := exec.Command("dpkg", "--compare-versions", clean, "lt", dirty).Run(); err != nil {
		t.Errorf("dpkg: %s is not older than %s", clean, dirty)
	}
}
