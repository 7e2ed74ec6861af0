package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Error is one problem in a config file, at the place in the file where it is.
type Error struct {
	File string
	// Line is 1-based. It is 0 only for a problem that is not in the file at
	// all: a PGTRIPWIRE_DSN that does not parse.
	Line int
	// Column is 1-based. It is 0 when only the line is known, as for some
	// YAML syntax errors.
	Column int
	Msg    string
}

// Error formats e as "file:line:col: message", dropping the column or the
// line and column when they are unknown (0), as compilers do.
func (e Error) Error() string {
	switch {
	case e.Line <= 0:
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	case e.Column <= 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	default:
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, e.Msg)
	}
}

// Errors is every problem found in one config file, in file order. Load and
// Parse return it (as an error) whenever the file is not usable, so that an
// operator can fix all of them in one pass; get it with errors.As. Each
// element is also reachable with errors.As(err, &Error{}).
type Errors []Error

// Error lists the errors one per line, without a trailing newline.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap exposes each Error to errors.Is and errors.As.
func (es Errors) Unwrap() []error {
	errs := make([]error, len(es))
	for i, e := range es {
		errs[i] = e
	}
	return errs
}

// sortByPosition orders errors as they appear in the file; errors about the
// environment (line 0) come first. The sort is stable so that two problems at
// the same place keep the order in which they were found.
func (es Errors) sortByPosition() {
	slices.SortStableFunc(es, func(a, b Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
}
