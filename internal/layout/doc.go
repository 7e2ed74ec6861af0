// Package layout holds no code: its test checks that the house keeps its shape: the rule
// engine stands apart from the daemon, and no test kit is linked into production code.
package layout
