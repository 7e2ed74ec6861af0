// Package evidence captures, at the moment an alert fires, what an on-call engineer
// would otherwise have to look up by hand once the session is long gone: the sessions of
// the alert's role and client, the statement that made it fire and its counters, the
// role's privileges on the table and how it got them, and the role's other recent
// alerts. Evidence is stored per alert in the state directory (bounded, expiring),
// read by `pgtripwire evidence`, `pgtripwire respond` and /api/v1/evidence.
//
// Evidence never holds a literal value: statement texts are redact.Statement's, and
// nothing is read from the sensitive tables themselves.
//
// It is not the response: package detector/response turns evidence into SQL that
// stops a read.
package evidence

import (
	"time"

	"github.com/pgtripwire/pgtripwire/model"
)

// Evidence is what was true when one alert fired. Its JSON form is what the evidence
// command and endpoint print; a field that could not be captured is left empty and the
// reason is in Problems.
type Evidence struct {
	Fingerprint string            `json:"fingerprint"`
	Rule        string            `json:"rule"`
	Severity    model.Severity    `json:"severity"`
	Summary     string            `json:"summary,omitempty"`
	Labels      map[string]string `json:"labels"`
	// FiredAt is the firing line's time; CapturedAt when the server was asked.
	FiredAt    time.Time `json:"fired_at"`
	CapturedAt time.Time `json:"captured_at"`
	// Trigger is the event that made the alert fire, when one did (an alert that fires
	// after its `for` fires on the clock, with none).
	Trigger *Trigger `json:"trigger,omitempty"`
	// Sessions are the sessions of the alert's role (and, when the alert names one, of
	// its client address) at CapturedAt, with the triggering session first when it is
	// still connected. Empty when the alert names no role or none was connected.
	Sessions []Session `json:"sessions"`
	// Statement is pg_stat_statements' entry of the triggering statement for the role
	// and database, when the trigger has a query id.
	Statement *Statement `json:"statement,omitempty"`
	// Privileges are the role's rights on the alert's table and how it holds them.
	Privileges *Privileges `json:"privileges,omitempty"`
	// Related are the role's other alerts of the hour before FiredAt that this detector
	// fired since it started, newest first.
	Related []Related `json:"related_alerts"`
	// Problems say what could not be captured and why ("sessions: permission denied
	// for view pg_stat_activity").
	Problems []string `json:"problems,omitempty"`
}

// Trigger is the event that made an alert fire, as far as the alert contract may show
// it: Statement is redacted, never raw.
type Trigger struct {
	Source        string    `json:"source"`
	Time          time.Time `json:"time"`
	Database      string    `json:"database,omitempty"`
	Role          string    `json:"role,omitempty"`
	ClientAddr    string    `json:"client_addr,omitempty"`
	Application   string    `json:"application,omitempty"`
	Operation     string    `json:"operation,omitempty"`
	Relation      string    `json:"relation,omitempty"`
	SensitiveRead []string  `json:"sensitive_read,omitempty"`
	Rows          int64     `json:"rows"`
	Calls         int64     `json:"calls"`
	RowsRead      int64     `json:"rows_read,omitempty"`
	Access        string    `json:"access,omitempty"`
	Shapes        []string  `json:"shapes,omitempty"`
	PID           int32     `json:"pid,omitempty"`
	QueryID       int64     `json:"query_id,omitempty"`
	// RunningSeconds is how long the statement had been running when it was seen
	// (activity and COPY progress); 0 otherwise.
	RunningSeconds float64 `json:"running_seconds,omitempty"`
	Statement      string  `json:"statement,omitempty"`
	Kind           string  `json:"kind,omitempty"`
	Object         string  `json:"object,omitempty"`
}

// Session is one row of pg_stat_activity. BackendStart is what tells this session from
// a later one that reuses its pid: a response acts on the pair, never on a pid alone.
type Session struct {
	PID           int32      `json:"pid"`
	BackendStart  time.Time  `json:"backend_start"`
	Role          string     `json:"role"`
	Database      string     `json:"database,omitempty"`
	ClientAddr    string     `json:"client_addr,omitempty"`
	ClientPort    int32      `json:"client_port,omitempty"`
	Application   string     `json:"application,omitempty"`
	State         string     `json:"state,omitempty"`
	XactStart     *time.Time `json:"xact_start,omitempty"`
	QueryStart    *time.Time `json:"query_start,omitempty"`
	WaitEventType string     `json:"wait_event_type,omitempty"`
	WaitEvent     string     `json:"wait_event,omitempty"`
	QueryID       int64      `json:"query_id,omitempty"`
	// Statement is the session's current or last statement, redacted.
	Statement string `json:"statement,omitempty"`
	// Trigger marks the session the triggering event came from (its pid).
	Trigger bool `json:"trigger,omitempty"`
}

// Statement is a pg_stat_statements entry: cumulative counters since the entry was
// created or reset, not the delta that fired the alert (that is the Trigger's).
type Statement struct {
	QueryID        int64   `json:"query_id"`
	Text           string  `json:"text,omitempty"`
	Calls          int64   `json:"calls"`
	Rows           int64   `json:"rows"`
	TotalExecMS    float64 `json:"total_exec_ms"`
	MeanExecMS     float64 `json:"mean_exec_ms"`
	SharedBlksHit  int64   `json:"shared_blks_hit"`
	SharedBlksRead int64   `json:"shared_blks_read"`
}

// Privileges are a role's rights on a table: what it may do (Effective) and every way
// it holds SELECT (Grants), which is what decides how a response can take it away.
type Privileges struct {
	Role      string `json:"role"`
	Table     string `json:"table"`
	Superuser bool   `json:"superuser"`
	BypassRLS bool   `json:"bypassrls"`
	CanLogin  bool   `json:"can_login"`
	// Effective lists the table privileges the role has, however it got them
	// (SELECT, INSERT, UPDATE, DELETE, TRUNCATE).
	Effective []string `json:"effective"`
	Grants    []Grant  `json:"grants"`
}

// How a role holds a privilege on a table.
const (
	ViaSuperuser  = "superuser"        // the role is a superuser: every check passes
	ViaOwner      = "owner"            // the role owns the table (or is a member of its owner)
	ViaDirect     = "direct"           // granted to the role itself
	ViaMembership = "membership"       // granted to a role it is a member of (Grantee)
	ViaPublic     = "public"           // granted to PUBLIC
	ViaReadAll    = "pg_read_all_data" // membership of pg_read_all_data (PostgreSQL 14+)
)

// Grant is one way a role holds SELECT on the table or some of its columns.
type Grant struct {
	Via string `json:"via"`
	// Grantee is the role the grant names (the role itself, the role it is a member
	// of, the owner, or "PUBLIC").
	Grantee string `json:"grantee"`
	// Columns, for a column-level grant, the columns; empty for the whole table.
	Columns []string `json:"columns,omitempty"`
}

// Related is another alert of the same role.
type Related struct {
	Fingerprint string         `json:"fingerprint"`
	Rule        string         `json:"rule"`
	Severity    model.Severity `json:"severity"`
	Time        time.Time      `json:"time"`
	Summary     string         `json:"summary,omitempty"`
}
