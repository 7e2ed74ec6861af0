package yamlfile

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Pos is a place in a file. Line and Column are 1-based; Column is 0 when
// only the line is known (some YAML syntax errors), Line is 0 when the
// problem is about the file as a whole (it cannot be read, or a setting
// from outside it replaces one of its values).
type Pos struct {
	File         string
	Line, Column int
}

// String formats p as "file:line:col", dropping what is unknown (0), as
// compilers do.
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

// Error is one problem in a file, at the place in the file where it is.
type Error struct {
	Pos
	Msg string
}

// Error formats e as "file:line:col: message".
func (e Error) Error() string { return e.String() + ": " + e.Msg }

// Errors is every problem found in one or more files. The loaders return it
// whenever a file is not usable, so that its author can fix all of them in
// one pass. A nil Errors means success; each element is reachable with
// errors.As(err, &Error{}).
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

// Sort orders the errors of each file as they appear in it; errors about
// the file as a whole (line 0) come first. Files keep the order in which
// their first error appears, and the sort is stable, so that two problems at
// the same place keep the order in which they were found.
func (es Errors) Sort() {
	files := map[string]int{}
	for _, e := range es {
		if _, ok := files[e.File]; !ok {
			files[e.File] = len(files)
		}
	}
	slices.SortStableFunc(es, func(a, b Error) int {
		return cmp.Or(cmp.Compare(files[a.File], files[b.File]), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
}
