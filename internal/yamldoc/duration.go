package yamldoc

import (
	"fmt"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as Go writes it ("500ms", "10s", "1h30m", or "0").
// A negative duration, or a bare number other than 0, is refused: "30" is too easily
// meant as seconds.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler; its errors carry the line.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if n.Kind != yaml.ScalarNode {
		err = fmt.Errorf("expected a duration such as 10s, got %s", yamlKind(n.Tag, ""))
	}
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	*d = Duration(v)
	return nil
}

// ParseDuration parses s as a Duration does.
func ParseDuration(s string) (time.Duration, error) {
	if s == "0" {
		return 0, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: expected a number with a unit, such as 500ms, 10s or 5m", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("invalid duration %q: must not be negative", s)
	}
	return v, nil
}

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes d as Go writes a duration, for JSON and YAML output.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }
