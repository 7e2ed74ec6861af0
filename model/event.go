package model

import "time"

// Source names where the evidence of an event came from: a source's name (its
// configuration section under sources:, "statements", "wal", …) or the kind of message
// the WAL source decoded ("ddl", "canary"). The values are part of the alert contract
// (the "source" label); each source declares its own.
type Source string

// The detector's own events: what it observes about itself that an operator must know,
// evaluated by rules like every other event.
const (
	// SourceDetector is the source of the detector's own events.
	SourceDetector Source = "detector"
	// KindStateLost: a state file of the detector (Object: its path under state_dir)
	// was damaged or untrustworthy and could not be restored from a good generation;
	// Operation says what was lost ("rule state", "replay guard", "delivery state").
	KindStateLost = "state_lost"
)

// Event is one observation about one relation. A statement that reads two sensitive
// tables yields two events, one per relation, so that rules group by table without
// unpacking lists.
type Event struct {
	Time   time.Time
	Source Source

	// Cluster and Instance name the server the event was observed on: the
	// configuration's targets[].cluster ("" for the minimal configuration) and the
	// server's name or host:port. The detector stamps them on every event of a
	// target's sources; sources leave them alone. Every alert carries them as the
	// cluster and instance labels (rules group by them implicitly: ServerFields).
	Cluster  string
	Instance string

	Database string
	Role     string
	// ApplicationRole is true when Role is one of the configuration's
	// roles.application: the pipeline sets it, sources leave it alone.
	ApplicationRole bool
	ClientAddr      string // "" when the source cannot know it
	Application     string // "" when the source cannot know it

	// Operation is the statement's kind as the classifier names it ("SELECT", "COPY", …).
	Operation string
	// Relation is the schema-qualified relation the event is about ("public.users"), or
	// "" for a statement that returned rows but could not be classified and names no
	// sensitive table we know: it may still have read one.
	Relation string
	// SensitiveRead lists the sensitive columns of Relation whose values left the
	// statement, sorted; SensitiveReferenced those only used in predicates, ordering or
	// grouping.
	SensitiveRead       []string
	SensitiveReferenced []string
	// Complete is false when the statement could not be fully resolved (truncated text,
	// unknown relation): such an event is never evidence of safety.
	Complete bool

	// Rows and Calls are the rows returned and executions observed since the previous
	// observation of the same statement.
	Rows  int64
	Calls int64
	// RowsRead is how many rows of Relation the statement read to produce what left it,
	// as far as the source can tell: Rows, unless the statement folded sensitive values
	// of many rows into few (string_agg, array_agg, json_agg, ARRAY(subquery), …: Shapes
	// holds "folded"), when it is estimated from the blocks the statement touched
	// (docs/sources.md says how exact that is). A source that does not estimate it
	// leaves it 0: rules then see Rows (ReadRows).
	RowsRead int64
	// Visited is how many tuples of Relation the statement visited, read or not, as far
	// as the source can estimate (the blocks it touched, for all but point lookups): a
	// SELECT count(*) or a listing sorted by an unindexed column visits every tuple and
	// returns few. It explains the table counters' reads; 0 when unknown.
	Visited int64
	// Access is how the statement reached Relation's rows, as the classifier judged it
	// from the query and the relation's indexes: "point" (equality on every column of a
	// unique index: a lookup of one row, such as a login), "range" (a bounded range or
	// a keyed page), "page" (an OFFSET page or a LIMIT without a key), "scan" (every
	// row), or "" when unknown.
	Access string
	// Shapes name what the classifier recognised in the statement beyond the columns
	// it reads, sorted: "folded" (values of many rows folded into few), "server_file"
	// (values leave through a server-side file, program or large object export:
	// COPY … TO FILE/PROGRAM, lo_export, pg_read_file), "catalog_columns" and
	// "catalog_roles" (enumeration of user tables' columns or of roles: an intruder's
	// reconnaissance), "dynamic_sql" (SQL built at run time). docs/classification.md
	// lists them.
	Shapes []string

	// Changed lists, for a WAL UPDATE event, the sensitive columns whose values changed
	// in at least one row, sorted. Complete is false when old values were not available
	// (no REPLICA IDENTITY FULL): then which columns changed is unknown, not "none".
	Changed []string
	// LSN is, for WAL events, the end of the committed transaction (0 otherwise): the
	// position the slot is confirmed to once the event is handled.
	LSN uint64
	// MessagePrefix is, for a logical decoding message, its prefix (pgtripwire.*); the
	// message content is not carried.
	MessagePrefix string

	// Kind says what happened, for events that are not row counts: a catalog watch
	// ("role_attribute", "slot_created", "stats_reset", …), a DDL event, a canary read.
	// The values are documented with each source; "" for statement and WAL events.
	Kind string
	// Object names what Kind happened to (a role, a slot, a setting, a policy), ""
	// when Kind needs none. Never a value read from a row or a literal of a query.
	Object string
	// PID is the backend process id the observation comes from (activity, COPY
	// progress, canary), 0 when the source cannot know it: what an on-call engineer
	// passes to pg_terminate_backend.
	PID int32
	// Running is, for a statement observed while it runs (activity, COPY progress),
	// how long it has been running; 0 otherwise.
	Running time.Duration

	QueryID int64
	// Statement is the statement's text as redact.Statement returns it: every literal
	// replaced by a $n placeholder, comments dropped, or a "<statement not shown: N
	// bytes>" placeholder when it cannot be redacted with certainty. Never raw text:
	// pg_stat_statements keeps the literals of utility statements (DECLARE, ALTER ROLE
	// … PASSWORD) on PostgreSQL 14 and 15, and the server log and canary messages carry
	// the statement as the client sent it. Set by the sources that know the text (the
	// statements source, a canary visit, the server log); "" when the text is unknown.
	// Never a label (one value per statement).
	Statement string
}

// RowsPerCall is Rows divided by Calls, or Rows when Calls is zero.
func (e Event) RowsPerCall() int64 {
	if e.Calls <= 0 {
		return e.Rows
	}
	return e.Rows / e.Calls
}

// ReadRows is the rows the event's statement read as rules see them (rows_read):
// RowsRead, or Rows when that is more (a source that does not estimate RowsRead).
func (e Event) ReadRows() int64 { return max(e.RowsRead, e.Rows) }

// ReadRowsPerCall is ReadRows divided by Calls, or ReadRows when Calls is zero.
func (e Event) ReadRowsPerCall() int64 {
	if e.Calls <= 0 {
		return e.ReadRows()
	}
	return e.ReadRows() / e.Calls
}
