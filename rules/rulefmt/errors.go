package rulefmt

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Pos is a place in a rule file. Line and Column are 1-based; Column is 0
// when only the line is known (some YAML syntax errors), Line is 0 when the
// problem is about the file as a whole (it cannot be read).
type Pos struct {
	File         string
	Line, Column int
}

// String formats p as "file:line:col", dropping what is unknown.
func (p Pos) String() string {
	switch {
	case p.Line <= 0:
		return p.File
	case p.Column <= 0:
		return fmt.Sprintf("%s:%d", p.File, p.Line)
	default:
		return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Column)
	}
}

// Error is one problem in a rule file, at the place in the file where it is.
type Error struct {
	Pos
	Msg string
}

// Error formats e as "file:line:col: message", as compilers do.
func (e Error) Error() string { return e.String() + ": " + e.Msg }

// Errors is every problem found in one or more rule files, in file order.
// The loaders return it whenever a file is not usable, so that an author can
// fix all of them in one pass. A nil Errors means success.
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

// Err returns es as an error, or nil when es is empty: a nil Errors
// converted to error would not compare equal to nil.
func (es Errors) Err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

// sortByPosition orders errors by file (in the order given), then as they
// appear in the file. The sort is stable so that two problems at the same
// place keep the order in which they were found.
func (es Errors) sortByPosition() {
	slices.SortStableFunc(es, func(a, b Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
}
