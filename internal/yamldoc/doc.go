package yamldoc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// MaxSize is the largest file Decode accepts. Fleet files are small; anything near this
// size is a mistake or an attack, and refusing it early keeps memory bounded.
const MaxSize = 1 << 20

// Doc is a decoded file, kept so that later checks can name the line of any value.
type Doc struct {
	File string
	root *yaml.Node // the top-level node, nil for an empty file
}

// Decode parses data, the content of file, into v (a pointer to a struct) strictly:
// a syntax error, an unknown field, a value of the wrong type, a duplicate key, a
// second document, binary data or an oversized file is an error. It reports every
// problem it finds as an Errors list and leaves v partly filled when there are some.
// An empty file decodes to nothing and is not an error: callers check required fields.
func Decode(file string, data []byte, v any) (*Doc, error) {
	doc := &Doc{File: file}
	if len(data) > MaxSize {
		return doc, Error{File: file, Msg: fmt.Sprintf("file is %d bytes; the limit is %d", len(data), MaxSize)}
	}
	if line, ok := binaryAt(data); ok {
		return doc, Error{File: file, Line: line, Msg: "not UTF-8 text (binary data?)"}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var top yaml.Node
	if err := dec.Decode(&top); err != nil {
		if errors.Is(err, io.EOF) {
			return doc, nil
		}
		return doc, placeParseErrors(data, convert(file, err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		line := extra.Line
		if err != nil {
			return doc, placeParseErrors(data, convert(file, err))
		}
		return doc, Error{File: file, Line: line, Msg: "more than one YAML document; a file holds exactly one"}
	}
	if top.Kind == yaml.DocumentNode && len(top.Content) == 1 {
		doc.root = top.Content[0]
	}
	var errs Errors
	checkFields(file, doc.root, reflect.TypeOf(v), &errs)
	if err := top.Decode(v); err != nil {
		errs.AddErr(file, convert(file, err))
	}
	return doc, errs.Err()
}

// binaryAt reports the line of the first NUL byte or invalid UTF-8 sequence in data.
func binaryAt(data []byte) (int, bool) {
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == 0 || (r == utf8.RuneError && size <= 1) {
			return 1 + bytes.Count(data[:i], []byte("\n")), true
		}
		i += size
	}
	return 0, false
}

var (
	lineRE      = regexp.MustCompile(`(?s)^(?:yaml: )?line (\d+): (.*)$`)
	unmarshalRE = regexp.MustCompile("(?s)^cannot unmarshal (!!\\w+)(?: `(.*)`)? into (.+)$")
)

// convert turns a yaml.v3 error into Errors, one per line the library reports.
func convert(file string, err error) error {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	var errs Errors
	for _, m := range msgs {
		e := Error{File: file, Msg: strings.TrimPrefix(m, "yaml: ")}
		if g := lineRE.FindStringSubmatch(m); g != nil {
			e.Line, _ = strconv.Atoi(g[1])
			e.Msg = g[2]
		}
		if g := unmarshalRE.FindStringSubmatch(e.Msg); g != nil {
			e.Msg = fmt.Sprintf("expected %s, got %s", goKind(g[3]), yamlKind(g[1], g[2]))
		}
		if e.Msg == "document contains excessive aliasing" {
			e.Msg = "too many alias expansions (a YAML alias bomb?)"
		}
		errs.Add(e)
	}
	return errs.Err()
}

// unknownAnchorRE is the parser's error for an alias to no anchor, which it gives
// without a line.
var unknownAnchorRE = regexp.MustCompile(`^unknown anchor '(.*)' referenced$`)

// placeParseErrors gives the line the parser leaves out: of an unknown anchor's error,
// the first alias to it; of a control character's, the first such character; of an
// unexpected end of the file, its last line.
func placeParseErrors(data []byte, err error) error {
	errs, ok := err.(Errors)
	if !ok {
		return err
	}
	for i, e := range errs {
		switch g := unknownAnchorRE.FindStringSubmatch(e.Msg); {
		case e.Line != 0:
		case g != nil:
			errs[i].Line = aliasLine(data, g[1])
		case e.Msg == "control characters are not allowed":
			errs[i].Line = controlLine(data)
		case strings.Contains(e.Msg, "end of stream"):
			errs[i].Line = max(1, bytes.Count(bytes.TrimRight(data, "\n"), []byte("\n"))+1) // the last line
		default:
			// The parser numbers lines from 0 internally and leaves out a line of 0:
			// an error it gives without a line is on the first.
			errs[i].Line = 1
		}
	}
	return errs
}

// controlLine is the line of the first character YAML does not allow in a stream
// (YAML 1.2, 5.1: c-printable), 0 when there is none.
func controlLine(data []byte) int {
	for i, r := range string(data) {
		printable := r == '\t' || r == '\n' || r == '\r' || (r >= 0x20 && r <= 0x7e) || r == 0x85 ||
			(r >= 0xa0 && r <= 0xd7ff) || (r >= 0xe000 && r <= 0xfffd && (r != 0xfeff || i == 0)) || r >= 0x10000
		if !printable {
			return 1 + bytes.Count(data[:i], []byte("\n"))
		}
	}
	return 0
}

// aliasLine is the line of the first alias *name in data: a '*' at the start of a
// line or after a blank or an indicator; 0 when there is none.
func aliasLine(data []byte, name string) int {
	re := regexp.MustCompile(`(?m)(?:^|[\s\[{,:-])\*` + regexp.QuoteMeta(name))
	loc := re.FindIndex(data)
	if loc == nil {
		return 0
	}
	star := loc[0]
	if data[star] != '*' {
		star++ // the match starts at the character before it
	}
	return 1 + bytes.Count(data[:star], []byte("\n"))
}

func goKind(t string) string {
	switch {
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map["):
		return "a mapping"
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		return "an integer"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "a string"
	}
	return "a mapping"
}

func yamlKind(tag, value string) string {
	names := map[string]string{
		"!!str": "string", "!!int": "integer", "!!float": "number", "!!bool": "boolean",
		"!!map": "a mapping", "!!seq": "a list", "!!null": "nothing", "!!timestamp": "timestamp",
	}
	name, ok := names[tag]
	if !ok {
		name = tag
	}
	if value != "" {
		return fmt.Sprintf("%s %q", name, value)
	}
	return name
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// checkFields walks n beside the Go type t and reports every mapping key that names no
// field, with a suggestion when one is close. Aliases are not followed: the decoder
// bounds their expansion, and a walk through them could be made to take forever.
func checkFields(file string, n *yaml.Node, t reflect.Type, errs *Errors) {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n == nil || t == nil || n.Kind == yaml.AliasNode || reflect.PointerTo(t).Implements(unmarshalerType) {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return
		}
		fields, names := structFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			if key.Value == "<<" {
				continue
			}
			ft, ok := fields[key.Value]
			if !ok {
				errs.Add(Error{File: file, Line: key.Line, Msg: unknownField(key.Value, names)})
				continue
			}
			checkFields(file, val, ft, errs)
		}
	case reflect.Slice, reflect.Array:
		if n.Kind == yaml.SequenceNode {
			for _, c := range n.Content {
				checkFields(file, c, t.Elem(), errs)
			}
		}
	case reflect.Map:
		if n.Kind == yaml.MappingNode {
			for i := 1; i < len(n.Content); i += 2 {
				checkFields(file, n.Content[i], t.Elem(), errs)
			}
		}
	}
}

func structFields(t reflect.Type) (map[string]reflect.Type, []string) {
	fields := map[string]reflect.Type{}
	var names []string
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		fields[name] = f.Type
		names = append(names, name)
	}
	return fields, names
}

func unknownField(key string, known []string) string {
	best, bestDist := "", max(1, len(key)/3)+1
	for _, k := range known {
		if d := distance(strings.ToLower(key), strings.ToLower(k)); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf("unknown field %q (did you mean %q?)", key, best)
	}
	sorted := slices.Sorted(slices.Values(known))
	return fmt.Sprintf("unknown field %q; known fields: %s", key, strings.Join(sorted, ", "))
}

// distance is the Levenshtein distance between a and b, in bytes.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Pos is a place in a file, from Doc.At.
type Pos struct {
	File string
	Line int
}

// Errorf returns an Error at p.
func (p Pos) Errorf(format string, args ...any) Error {
	return Error{File: p.File, Line: p.Line, Msg: fmt.Sprintf(format, args...)}
}

// At returns the position of the value at path, a list of mapping keys (string) and
// sequence indexes (int). When the path does not exist it returns the position of the
// deepest part that does, so an error about a missing field points at its parent.
func (d *Doc) At(path ...any) Pos {
	n, _ := d.lookup(path)
	line := 0
	if n != nil {
		line = n.Line
	}
	return Pos{File: d.File, Line: line}
}

// Has reports whether path exists and holds a value other than null.
func (d *Doc) Has(path ...any) bool {
	n, ok := d.lookup(path)
	return ok && n != nil && n.Tag != "!!null"
}

// Keys returns the keys of the mapping at path, in the order the file writes them;
// nil when path holds no mapping.
func (d *Doc) Keys(path ...any) []string {
	n, ok := d.lookup(path)
	if !ok || n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	var keys []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i].Value; k != "<<" {
			keys = append(keys, k)
		}
	}
	return keys
}

// lookup returns the node at path (for a mapping key, the key node, which carries the
// line a person looks for) and whether the whole path was found; when it was not, the
// deepest node reached.
func (d *Doc) lookup(path []any) (*yaml.Node, bool) {
	n := d.root
	if n == nil {
		return nil, len(path) == 0
	}
	at := n
	for _, p := range path {
		switch p := p.(type) {
		case string:
			if n.Kind != yaml.MappingNode {
				return at, false
			}
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == p {
					at, n, found = n.Content[i], n.Content[i+1], true
					break
				}
			}
			if !found {
				return at, false
			}
		case int:
			if n.Kind != yaml.SequenceNode || p < 0 || p >= len(n.Content) {
				return at, false
			}
			n = n.Content[p]
			at = n
		default:
			panic(fmt.Sprintf("yamldoc: path element %v is neither string nor int", p))
		}
	}
	// Has must see the value's tag, At the key's line: return the value when the
	// last step was a key, keeping the key's line.
	if at != n {
		v := *n
		v.Line = at.Line
		return &v, true
	}
	return n, true
}
