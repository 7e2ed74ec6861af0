// Package registry is the table of the detector's sources: each line names one source
// package's Definition. Adding a source is its package and one line here; the
// configuration file's sources: section, the detector's wiring, health and metrics all
// follow from the table.
//
// It is not where sources are built or run (the detector does that) nor configured
// (package config decodes each source's section into the Settings its Definition
// returns).
package registry

import (
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/detector/source/activity"
	"github.com/pgtripwire/pgtripwire/detector/source/canary"
	"github.com/pgtripwire/pgtripwire/detector/source/catalogwatch"
	logsource "github.com/pgtripwire/pgtripwire/detector/source/log"
	"github.com/pgtripwire/pgtripwire/detector/source/replication"
	"github.com/pgtripwire/pgtripwire/detector/source/statements"
	"github.com/pgtripwire/pgtripwire/detector/source/tables"
	"github.com/pgtripwire/pgtripwire/detector/source/wal"
)

// Sources are the sources the detector can run, in the order the configuration
// documents them.
var Sources = []source.Definition{
	wal.Definition,
	statements.Definition,
	activity.Definition,
	activity.CopyDefinition,
	tables.Definition,
	catalogwatch.Definition,
	replication.Definition,
	canary.Definition,
	logsource.Definition,
}
