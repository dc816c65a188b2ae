package spec

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// A unit file is read here exactly as systemd 252 reads it (config_parse() in
// src/shared/conf-parser.c, read_line() in src/basic/fileio.c), so that what baton
// refuses is what systemd would act on:
//
//   - a line ends at "\n", "\r", "\r\n", "\n\r" or a NUL byte;
//   - a line whose first character after spaces and tabs is '#' or ';' is a comment,
//     wherever it lies: a comment never continues, and a comment between the lines of
//     a continued setting is skipped, the setting going on after it;
//   - a UTF-8 byte order mark is dropped from the start of the first line that has one;
//   - a line that ends in an unescaped backslash (an odd run of them) continues: the
//     backslash becomes a space and the next line is appended as it is; a line that
//     ends in "\\" does not continue;
//   - a logical line is stripped of spaces, tabs, CRs and LFs; "[Name]" opens a
//     section; otherwise the key is what comes before the first '=', the value what
//     follows, each stripped; both are compared byte for byte, case included.
//
// Other readers (go-systemd's unit parser, editors, reviewers reading a diff) disagree
// on several of these, and a repository could hide an [Install] Alias= from one
// reading and not the other. lintUnit refuses every line where such readings could
// differ, so a unit file that passes reads the same whichever reader looks at it.

// unitSection is a section of a unit file, in the order systemd meets it. A section
// named twice appears twice; systemd merges them.
type unitSection struct {
	Name     string
	Line     int
	Settings []unitSetting
}

// unitSetting is one Key=value line as systemd reads it.
type unitSetting struct {
	Key, Value string
	Line       int // the physical line the setting starts on
}

// unitProblem is a line that systemd ignores with a warning or refuses to load.
type unitProblem struct {
	Line int
	Msg  string
}

// longLineMax is systemd's LONG_LINE_MAX: a longer line, or continued line, makes the
// whole file fail to load.
const longLineMax = 1 << 20

// utf8BOM is the byte order mark systemd drops once.
const utf8BOM = "\xef\xbb\xbf"

// unitWhitespace is systemd's WHITESPACE, what strstrip() removes.
const unitWhitespace = " \t\n\r"

// physLine is one line of a file as read_line() returns it.
type physLine struct {
	n    int
	text string
}

// splitUnitLines splits data into lines as systemd's read_line() does.
func splitUnitLines(data []byte) []physLine {
	var lines []physLine
	const (
		eolLF = 1 << iota
		eolCR
		eolNUL
	)
	i := 0
	for i < len(data) {
		start, end := i, -1
		seen := 0
		for ; i < len(data); i++ {
			var eol int
			switch data[i] {
			case '\n':
				eol = eolLF
			case '\r':
				eol = eolCR
			case 0:
				eol = eolNUL
			}
			if seen&eolNUL != 0 || (eol == 0 && seen != 0) || (eol != 0 && seen&eol != 0) {
				break
			}
			if eol != 0 {
				if end < 0 {
					end = i
				}
				seen |= eol
			}
		}
		if end < 0 {
			end = i
		}
		lines = append(lines, physLine{n: len(lines) + 1, text: string(data[start:end])})
	}
	return lines
}

// isUnitComment reports whether systemd takes line as a comment.
func isUnitComment(line string) bool {
	l := strings.TrimLeft(line, unitWhitespace)
	return l != "" && (l[0] == '#' || l[0] == ';')
}

// continues reports whether s ends in an unescaped backslash.
func continues(s string) bool {
	return trailingBackslashes(s)%2 == 1
}

func trailingBackslashes(s string) int {
	return len(s) - len(strings.TrimRight(s, `\`))
}

// readUnit reads data as systemd does. It returns the sections and the lines systemd
// would ignore with a warning or refuse (the file then fails to load).
func readUnit(data []byte) ([]unitSection, []unitProblem) {
	var (
		sections []unitSection
		problems []unitProblem
		cont     *strings.Builder // the continued line so far, nil when none
		contLine int              // the line it started on
		bomSeen  bool
		n        int
	)
	for _, pl := range splitUnitLines(data) {
		n = pl.n
		if len(pl.text) >= longLineMax {
			problems = append(problems, unitProblem{n, "line too long: systemd refuses the file"})
			return sections, problems
		}
		if isUnitComment(pl.text) {
			continue
		}
		l := pl.text
		if !bomSeen && strings.HasPrefix(l, utf8BOM) {
			l, bomSeen = l[len(utf8BOM):], true
		}
		p := l
		if cont != nil {
			if cont.Len()+len(l) > longLineMax {
				problems = append(problems, unitProblem{n, "continued line too long: systemd refuses the file"})
				return sections, problems
			}
			cont.WriteString(l)
			p = cont.String()
		}
		if continues(p) {
			if cont == nil {
				cont, contLine = &strings.Builder{}, n
			} else {
				cont.Reset()
			}
			cont.WriteString(p[:len(p)-1] + " ")
			continue
		}
		start := n
		if cont != nil {
			start = contLine
		}
		sections, problems = addLogicalLine(sections, problems, start, n, p)
		cont = nil
	}
	if cont != nil {
		sections, problems = addLogicalLine(sections, problems, contLine, n+1, cont.String())
	}
	return sections, problems
}

// addLogicalLine reads l, a logical line that starts on line start, as a
// section header or a setting of the last section, and returns sections with
// it added; or problems with why systemd ignores it, named at line.
func addLogicalLine(sections []unitSection, problems []unitProblem, start, line int, l string) ([]unitSection, []unitProblem) {
	l = strings.Trim(l, unitWhitespace)
	switch {
	case l == "":
		return sections, problems
	case l[0] == '[':
		if l[len(l)-1] != ']' || len(l) < 2 {
			return sections, append(problems, unitProblem{line, fmt.Sprintf("invalid section header %q", l)})
		}
		return append(sections, unitSection{Name: l[1 : len(l)-1], Line: start}), problems
	case len(sections) == 0:
		return sections, append(problems, unitProblem{line, "a setting outside any section: systemd ignores it"})
	}
	k, v, ok := strings.Cut(l, "=")
	switch {
	case !ok:
		problems = append(problems, unitProblem{line, "missing '=': systemd ignores the line"})
	case k == "":
		problems = append(problems, unitProblem{line, "missing key name before '=': systemd ignores the line"})
	default:
		s := &sections[len(sections)-1]
		s.Settings = append(s.Settings, unitSetting{Key: strings.Trim(k, unitWhitespace), Value: strings.Trim(v, unitWhitespace), Line: start})
	}
	return sections, problems
}

// settingNameRE is what baton accepts as a section or key name: what systemd's own names
// use. Anything else (a leading byte order mark or vertical tab, a non-breaking space,
// a '#' that follows one) is read differently by different readers.
var settingNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)

// lintUnit returns the first line of data where systemd's reading and another
// reader's could differ, and why; 0 when there is none. Its checks come before
// readUnit's, and it numbers lines as systemd does up to the first line it refuses.
func lintUnit(data []byte) (int, string) {
	line := 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			return line, "not valid UTF-8: systemd ignores such a setting, other readers read it"
		case r == '\r' && i+1 < len(data) && data[i+1] == '\n':
		case r == '\r':
			return line, "a carriage return that is not followed by a line feed: systemd ends the line there, other readers do not"
		case r == 0:
			return line, "a NUL byte: systemd ends the line there, other readers do not"
		case r == '\n':
			line++
		case r == '\t':
		case r < 0x20 || r == 0x7f:
			return line, fmt.Sprintf("control character 0x%02x: systemd and other readers strip and split around it differently", r)
		case r == '\ufeff':
			return line, "a byte order mark: systemd drops the first one in the file, wherever it is, other readers keep it"
		}
		i += size
	}
	inCont := false
	lines := strings.Split(string(data), "\n")
	for i, raw := range lines {
		n := i + 1
		l := strings.TrimSuffix(raw, "\r")
		trimmed := strings.TrimRight(l, " \t")
		comment := isUnitComment(l)
		switch {
		case comment && inCont:
			return n, "a comment inside a continued setting: systemd skips it and goes on with the setting, other readers end the setting or take the comment into its value"
		case comment && strings.HasSuffix(trimmed, `\`):
			return n, `a comment that ends in a backslash: systemd ends the comment at the end of the line, other readers continue it onto the next line (and hide that line); remove the backslash`
		case comment:
			continue
		case strings.HasSuffix(raw, "\\\r"):
			return n, "a backslash before a carriage return and line feed: systemd continues the line, readers that keep the carriage return do not (and read the next line as a setting of its own); use plain line feeds or remove the backslash"
		case trimmed != l && strings.HasSuffix(trimmed, `\`):
			return n, "a backslash followed by trailing whitespace: systemd does not continue the line, readers that trim whitespace do; remove the whitespace or the backslash"
		case trailingBackslashes(l) > 1:
			return n, `a line that ends in more than one backslash: systemd reads "\\" as an escaped backslash and continues the line only after an odd count, other readers continue after any; rewrite the line`
		}
		if continues(l) && !inCont {
			if k, _, ok := strings.Cut(l, "="); !ok || !settingNameRE.MatchString(strings.Trim(k, " \t")) {
				return n, "a line continued before its '=': only a setting's value may go on onto the next line"
			}
		}
		if !inCont {
			if err := lintLogical(l); err != "" {
				return n, err
			}
		}
		inCont = continues(l)
		if inCont && (i == len(lines)-1 || (i == len(lines)-2 && lines[i+1] == "")) {
			return n, "the last line ends in a backslash: systemd drops the backslash, other readers keep it in the value"
		}
	}
	return 0, ""
}

// lintLogical checks the first line of a logical line: a section header or a key must
// read the same to every reader.
func lintLogical(l string) string {
	t := strings.Trim(l, " \t")
	switch {
	case t == "":
		return ""
	case t[0] == '[':
		if name, ok := strings.CutSuffix(t[1:], "]"); ok && !settingNameRE.MatchString(name) {
			return fmt.Sprintf("section name %q: expected letters, digits, '-' and '_'", name)
		}
		return ""
	}
	if k, _, ok := strings.Cut(t, "="); ok && !settingNameRE.MatchString(strings.Trim(k, " \t")) {
		return fmt.Sprintf("key %q: expected letters, digits, '-' and '_'", strings.Trim(k, " \t"))
	}
	return ""
}
