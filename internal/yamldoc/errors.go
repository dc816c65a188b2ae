// Package yamldoc decodes YAML files strictly and reports every problem as file:line: message.
package yamldoc

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Error is one problem in one file, at one line (0 when the whole file is at fault).
type Error struct {
	File string
	Line int
	Msg  string
}

func (e Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Errors is every problem found in a set of files. It is an error when not empty.
type Errors []Error

func (l Errors) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Add appends e unless the list already holds the same error.
func (l *Errors) Add(e Error) {
	if !slices.Contains(*l, e) {
		*l = append(*l, e)
	}
}

// AddErr appends err: its entries when it is an Errors or an Error, else one entry for file.
func (l *Errors) AddErr(file string, err error) {
	switch e := err.(type) {
	case nil:
	case Errors:
		for _, x := range e {
			l.Add(x)
		}
	case Error:
		l.Add(e)
	default:
		l.Add(Error{File: file, Msg: err.Error()})
	}
}

// Sort orders the list by file, then line, then message.
func (l Errors) Sort() {
	slices.SortStableFunc(l, func(a, b Error) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Msg, b.Msg))
	})
}

// Err returns the sorted list as an error, or nil when it is empty.
func (l Errors) Err() error {
	if len(l) == 0 {
		return nil
	}
	l.Sort()
	return l
}
