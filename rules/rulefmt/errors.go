package rulefmt

import "github.com/pgtripwire/pgtripwire/internal/yamlfile"

// Pos is a place in a rule file. Line and Column are 1-based; Column is 0
// when only the line is known (some YAML syntax errors), Line is 0 when the
// problem is about the file as a whole (it cannot be read). String formats
// it as "file:line:col", dropping what is unknown.
type Pos = yamlfile.Pos

// Error is one problem in a rule file, at the place in the file where it
// is: "file:line:col: message". It is the type of every file pgtripwire
// reads, the config file included (config.Error is the same type).
type Error = yamlfile.Error

// Errors is every problem found in one or more rule files, in file order.
// The loaders return it whenever a file is not usable, so that an author can
// fix all of them in one pass. A nil Errors means success; Err converts it
// to an error that is nil when there is none.
type Errors = yamlfile.Errors
