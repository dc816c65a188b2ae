package yamldoc

import (
	"fmt"
	"math"
	"regexp"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// ByteSize is a size in bytes, written as a whole number and a binary unit: "128MiB",
// "512KiB", "1GiB", "4096B". A bare number is refused: "128" is too easily meant as MiB.
type ByteSize int64

// Units of ByteSize.
const (
	KiB ByteSize = 1 << 10
	MiB ByteSize = 1 << 20
	GiB ByteSize = 1 << 30
)

var byteSizeUnits = []struct {
	name string
	size ByteSize
}{{"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}, {"B", 1}}

var byteSizeRE = regexp.MustCompile(`^([0-9]+)(B|KiB|MiB|GiB)$`)

// ParseByteSize parses s as a ByteSize is written.
func ParseByteSize(s string) (ByteSize, error) {
	g := byteSizeRE.FindStringSubmatch(s)
	if g == nil {
		return 0, fmt.Errorf("invalid size %q: expected a whole number and a unit (B, KiB, MiB or GiB), such as 128MiB", s)
	}
	for _, u := range byteSizeUnits {
		if u.name != g[2] {
			continue
		}
		n, err := strconv.ParseInt(g[1], 10, 64)
		if err != nil || n > math.MaxInt64/int64(u.size) {
			return 0, fmt.Errorf("invalid size %q: too large", s)
		}
		return ByteSize(n) * u.size, nil
	}
	panic("unreachable: byteSizeRE matched a unit not in byteSizeUnits")
}

// UnmarshalYAML implements yaml.Unmarshaler; its errors carry the line.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseByteSize(n.Value)
	switch n.Kind {
	case yaml.MappingNode:
		err = fmt.Errorf("expected a size such as 128MiB, got a mapping")
	case yaml.SequenceNode:
		err = fmt.Errorf("expected a size such as 128MiB, got a list")
	}
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	*b = v
	return nil
}

// String writes b in the largest unit that holds it whole: "128MiB", "1536KiB", "100B".
func (b ByteSize) String() string {
	for _, u := range byteSizeUnits {
		if b != 0 && b%u.size == 0 {
			return fmt.Sprintf("%d%s", b/u.size, u.name)
		}
	}
	return "0B"
}

// MarshalText writes b as String does, for JSON and YAML output.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }
