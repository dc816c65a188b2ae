package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
)

// Fingerprint identifies a release of a service the same way on every host: its
// definition in service.yaml (version, artifacts, units, checks, drain, analysis) and the text
// of its unit file templates, before any host's values fill them in. A commit that
// leaves a service alone leaves its fingerprint alone; a fix to any part of it
// changes it. A group halts on the fingerprint of a release that failed its checks,
// so that a later commit that changes something else does not carry the same release
// to one more host.
func (s *Service) Fingerprint() string {
	h := sha256.New()
	def, err := json.Marshal(s)
	if err != nil { // plain data: it cannot fail
		panic(fmt.Sprintf("fingerprint of service %s: %v", s.Name, err))
	}
	h.Write(def)
	for _, name := range slices.Sorted(maps.Keys(s.UnitFiles)) {
		text := s.UnitFiles[name]
		fmt.Fprintf(h, "\x00%s\x00%d\x00%s", name, len(text), text)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}
