// Package pgversion is the one table of the PostgreSQL major versions pgtripwire
// supports and of the features it uses only where the server has them: each code path
// that differs by version (the canary function, the DDL event triggers, the WAL
// source's slot, setup) asks here, and `pgtripwire doctor` prints from here which of
// them a server gets. A fallback exists for every feature: older versions lose no
// detection, only the convenience or the safety the feature adds.
//
// It holds no connection and reads nothing itself beyond the version a caller passes
// (server_version_num). It is not a list of every difference between versions: the
// detector's queries use only what 14 to 18 all have under the same names (its
// pg_stat_statements columns among them), and the compatibility suite (make test)
// checks them on each supported version.
package pgversion

import "fmt"

// Supported lists the major versions tested on every change: `make test` runs the
// compatibility suite on each (scripts/compat-test.sh).
var Supported = []int{14, 15, 16, 17, 18}

// Oldest is the oldest server_version_num pgtripwire runs against: compute_query_id,
// which joins pg_stat_statements to pg_stat_activity, appeared in 14.
const Oldest = 140000

// Feature is one capability of newer servers that pgtripwire uses where it exists.
type Feature struct {
	// Name is how doctor names it.
	Name string
	// Since is the first server_version_num that has it.
	Since int
	// InUse says what pgtripwire does with it; Fallback what it does before Since.
	InUse, Fallback string
}

// Has reports whether a server of version num has f.
func (f Feature) Has(num int) bool { return num >= f.Since }

// SQL is an SQL condition that holds on servers with f, for SQL that must run on every
// version: PL/pgSQL made before a major upgrade, or printed for an operator to run,
// uses f once the server has it.
func (f Feature) SQL() string {
	return fmt.Sprintf("pg_catalog.current_setting('server_version_num')::integer >= %d", f.Since)
}

// Describe is InUse or Fallback for a server of version num.
func (f Feature) Describe(num int) string {
	if f.Has(num) {
		return "in use: " + f.InUse
	}
	return fmt.Sprintf("before %d: %s", f.Since/10000, f.Fallback)
}

// The features, in the order doctor prints them.
var (
	// EmitMessageFlush is pg_logical_emit_message's fourth argument, flush.
	EmitMessageFlush = Feature{
		Name:  "message flush",
		Since: 170000,
		InUse: "the canary function and the DDL event triggers flush their messages as they emit them " +
			"(pg_logical_emit_message(…, flush => true)): a read in a read-only or rolled-back transaction " +
			"reaches the WAL source at once",
		Fallback: "the canary tamper check flushes pending WAL once per interval (one transaction id per " +
			"check, only when WAL is waiting), which brings such a read to the WAL source within a second",
	}
	// FailoverSlots is the failover property of logical slots.
	FailoverSlots = Feature{
		Name:  "failover slot",
		Since: 170000,
		InUse: "setup and the WAL source create the slot with failover => true: standbys with " +
			"sync_replication_slots = on keep a copy, and after a promotion the detector resumes where it " +
			"stopped",
		Fallback: "logical slots are not kept on standbys: after a failover the WAL source creates its slot " +
			"on the new primary (a multi-host DSN follows it) and WALDecodingGap names the changes it could not decode",
	}
)

// Features lists every feature, for doctor.
var Features = []Feature{EmitMessageFlush, FailoverSlots}

// EmitMessage is PL/pgSQL that emits the non-transactional logical decoding message held
// in the text expression content, with prefix (an SQL literal), flushing it where the
// server can (EmitMessageFlush).
func EmitMessage(prefix, content string) string {
	return fmt.Sprintf(`IF %s THEN
		PERFORM pg_catalog.pg_logical_emit_message(false, %s, %s, true);
	ELSE
		PERFORM pg_catalog.pg_logical_emit_message(false, %s, %s);
	END IF;`, EmitMessageFlush.SQL(), prefix, content, prefix, content)
}
