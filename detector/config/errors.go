package config

import "github.com/pgtripwire/pgtripwire/internal/yamlfile"

// Error is one problem in a config file, at the place in the file where it
// is: "file:line:col: message". Its Line is 0 only for a problem that is not
// in the file at all (a PGTRIPWIRE_DSN that does not parse), its Column 0
// when only the line is known. It is the type of every file pgtripwire
// reads, rule files included (rulefmt.Error is the same type).
type Error = yamlfile.Error

// Errors is every problem found in one config file, in file order. Load and
// Parse return it (as an error) whenever the file is not usable, so that an
// operator can fix all of them in one pass; get it with errors.As. Each
// element is also reachable with errors.As(err, &Error{}).
type Errors = yamlfile.Errors

// Pos is the place of an Error.
type Pos = yamlfile.Pos
