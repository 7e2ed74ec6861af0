// Package rules holds pgtripwire's default rule pack, rules/default.yml,
// embedded in the binary so that a detector with no rule file of its own
// still detects what the README promises.
//
// It is not the rule language (package rulefmt) nor the engine that
// evaluates rules (package engine).
package rules

import (
	_ "embed"

	"github.com/pgtripwire/pgtripwire/rules/rulefmt"
)

// DefaultPackName is the name the embedded pack has in positions of errors
// and in logs.
const DefaultPackName = "<embedded>/rules/default.yml"

//go:embed default.yml
var defaultPack []byte

// DefaultPack returns the text of the default pack.
func DefaultPack() []byte { return defaultPack }

// LoadDefaultPack parses and compiles the default pack. It fails only if the
// embedded file is broken, which the package's tests rule out.
func LoadDefaultPack() (*rulefmt.File, rulefmt.Errors) {
	return rulefmt.Parse(DefaultPackName, defaultPack)
}
