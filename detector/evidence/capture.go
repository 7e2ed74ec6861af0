package evidence

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/detector/redact"
	"github.com/pgtripwire/pgtripwire/model"
)

// maxSessionsText bounds the sessions one piece of evidence lists: a role with a pool of
// hundreds of connections is described by its first fifty, oldest first, with the
// triggering session always among them.
const maxSessionsText = "50"

// Input is what the detector knows when an alert fires.
type Input struct {
	Alert model.Alert
	// Trigger is the event that made the alert fire; nil when it fired on the clock.
	Trigger *model.Event
	// Related are the role's other alerts of the hour before, newest first.
	Related []Related
}

// New returns the evidence the detector holds without asking the server: the alert,
// its trigger and the related alerts. Capture adds what the server says.
func New(in Input, now time.Time) *Evidence {
	a := in.Alert
	e := &Evidence{
		Fingerprint: a.Fingerprint,
		Rule:        a.Rule,
		Severity:    a.Severity,
		Summary:     a.Annotations[model.AnnotationSummary],
		Labels:      a.Labels,
		FiredAt:     a.Time,
		CapturedAt:  now,
		Sessions:    []Session{},
		Related:     in.Related,
	}
	if e.Related == nil {
		e.Related = []Related{}
	}
	if ev := in.Trigger; ev != nil {
		e.Trigger = &Trigger{
			Source: string(ev.Source), Time: ev.Time, Database: ev.Database, Role: ev.Role,
			ClientAddr: ev.ClientAddr, Application: ev.Application, Operation: ev.Operation,
			Relation: ev.Relation, SensitiveRead: ev.SensitiveRead, Rows: ev.Rows, Calls: ev.Calls,
			RowsRead: ev.RowsRead, Access: ev.Access, Shapes: ev.Shapes, PID: ev.PID, QueryID: ev.QueryID,
			RunningSeconds: ev.Running.Seconds(), Statement: ev.Statement, Kind: ev.Kind, Object: ev.Object,
		}
	}
	return e
}

// Capture asks the server on conn what was true as the alert fired: the sessions of
// its role and client, the triggering statement's counters and the role's privileges
// on the table. It never fails as a whole: what it cannot learn (a view it may not
// read, a table of another database, a server gone) is said in e.Problems and the rest
// is kept.
func Capture(ctx context.Context, conn *pgx.Conn, e *Evidence) {
	role, table := e.Labels[model.LabelRole], e.Labels[model.LabelTable]
	var pid int32
	var queryID int64
	if e.Trigger != nil {
		pid, queryID = e.Trigger.PID, e.Trigger.QueryID
		role = cmpOr(role, e.Trigger.Role)
		table = cmpOr(table, e.Trigger.Relation)
	}
	if role != "" || pid != 0 {
		if err := sessions(ctx, conn, e, role, e.Labels[model.LabelClientAddr], pid); err != nil {
			e.Problems = append(e.Problems, "sessions: "+err.Error())
		}
	}
	if queryID != 0 && role != "" {
		if err := statement(ctx, conn, e, queryID, role, cmpOr(e.Labels[model.LabelDatabase], e.Trigger.Database)); err != nil {
			e.Problems = append(e.Problems, "statement counters: "+err.Error())
		}
	}
	if role != "" && table != "" {
		if err := privileges(ctx, conn, e, role, table, e.Labels[model.LabelDatabase]); err != nil {
			e.Problems = append(e.Problems, "privileges: "+err.Error())
		}
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// sessionsQuery lists the sessions of a role ($1), from one client address when $2 is
// not empty ("local" for a Unix socket, as the sources name it), and the session $3
// whatever its role, the triggering one first, then oldest first.
const sessionsQuery = `SELECT a.pid, a.backend_start, coalesce(a.usename::text, ''), coalesce(a.datname::text, ''),
  CASE WHEN a.client_port = -1 THEN 'local' ELSE coalesce(host(a.client_addr), '') END, coalesce(a.client_port, 0),
  coalesce(a.application_name, ''), coalesce(a.state, ''), a.xact_start, a.query_start,
  coalesce(a.wait_event_type, ''), coalesce(a.wait_event, ''), coalesce(a.query_id, 0), coalesce(a.query, '')
FROM pg_stat_activity a
WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid() AND a.backend_start IS NOT NULL AND (
  a.pid = $3 OR (a.usename = $1 AND ($2 = '' OR $2 = CASE WHEN a.client_port = -1 THEN 'local' ELSE coalesce(host(a.client_addr), '') END)))
ORDER BY a.pid = $3 DESC, a.backend_start, a.pid
LIMIT ` + maxSessionsText

func sessions(ctx context.Context, conn *pgx.Conn, e *Evidence, role, client string, pid int32) error {
	rows, err := conn.Query(ctx, sessionsQuery, role, client, pid)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var s Session
		var text string
		if err := rows.Scan(&s.PID, &s.BackendStart, &s.Role, &s.Database, &s.ClientAddr, &s.ClientPort,
			&s.Application, &s.State, &s.XactStart, &s.QueryStart, &s.WaitEventType, &s.WaitEvent, &s.QueryID, &text); err != nil {
			return err
		}
		if text != "" {
			// pg_stat_activity shows the text as the client sent it, literals included.
			s.Statement = redact.Statement(text)
		}
		s.Trigger = pid != 0 && s.PID == pid
		e.Sessions = append(e.Sessions, s)
	}
	return rows.Err()
}

// statementQuery reads the cumulative counters of one pg_stat_statements entry, without
// its text (the trigger's redacted text is the one shown).
const statementQuery = `SELECT s.calls, s.rows, s.total_exec_time, s.mean_exec_time, s.shared_blks_hit, s.shared_blks_read
FROM pg_stat_statements(false) s
JOIN pg_roles r ON r.oid = s.userid JOIN pg_database d ON d.oid = s.dbid
WHERE s.queryid = $1 AND r.rolname = $2 AND d.datname = $3 AND s.toplevel
LIMIT 1`

func statement(ctx context.Context, conn *pgx.Conn, e *Evidence, queryID int64, role, database string) error {
	st := Statement{QueryID: queryID, Text: e.Trigger.Statement}
	err := conn.QueryRow(ctx, statementQuery, queryID, role, database).Scan(
		&st.Calls, &st.Rows, &st.TotalExecMS, &st.MeanExecMS, &st.SharedBlksHit, &st.SharedBlksRead)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("no pg_stat_statements entry for query id %d of %s in %s (evicted, or reset)", queryID, role, database)
	}
	if err != nil {
		return err
	}
	e.Statement = &st
	return nil
}

// privilegesQuery describes a role ($1) and what it may do to a table ($2, as the
// sources name it), and whether the detector is connected to the table's database.
const privilegesQuery = `SELECT r.rolsuper, r.rolbypassrls, r.rolcanlogin,
  array_remove(ARRAY[
    CASE WHEN has_table_privilege(r.oid, c.oid, 'SELECT') THEN 'SELECT' END,
    CASE WHEN has_table_privilege(r.oid, c.oid, 'INSERT') THEN 'INSERT' END,
    CASE WHEN has_table_privilege(r.oid, c.oid, 'UPDATE') THEN 'UPDATE' END,
    CASE WHEN has_table_privilege(r.oid, c.oid, 'DELETE') THEN 'DELETE' END,
    CASE WHEN has_table_privilege(r.oid, c.oid, 'TRUNCATE') THEN 'TRUNCATE' END], NULL),
  pg_get_userbyid(c.relowner)::text, pg_has_role(r.oid, c.relowner, 'USAGE'),
  coalesce((SELECT pg_has_role(r.oid, g.oid, 'USAGE') FROM pg_roles g WHERE g.rolname = 'pg_read_all_data'), false)
FROM pg_roles r, pg_class c
WHERE r.rolname = $1 AND c.oid = to_regclass($2)`

// grantsQuery lists who holds SELECT on the table ($2) or some of its columns such that
// the role ($1) has it: the role itself, a role it inherits the rights of, PUBLIC. A
// table without an ACL has the owner's default one.
const grantsQuery = `WITH r AS (SELECT oid FROM pg_roles WHERE rolname = $1), c AS (SELECT oid, relowner, relacl FROM pg_class WHERE oid = to_regclass($2))
SELECT CASE WHEN g.grantee = 0 THEN '' ELSE pg_get_userbyid(g.grantee)::text END, g.columns FROM (
  SELECT a.grantee, NULL::text[] AS columns
  FROM c CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
  WHERE a.privilege_type = 'SELECT'
  UNION ALL
  SELECT a.grantee, array_agg(att.attname::text ORDER BY att.attnum)
  FROM c JOIN pg_attribute att ON att.attrelid = c.oid CROSS JOIN LATERAL aclexplode(att.attacl) a
  WHERE att.attnum > 0 AND NOT att.attisdropped AND a.privilege_type = 'SELECT'
  GROUP BY a.grantee
) g, r
WHERE g.grantee = 0 OR g.grantee = r.oid OR pg_has_role(r.oid, g.grantee, 'USAGE')
ORDER BY g.columns IS NOT NULL, g.grantee`

func privileges(ctx context.Context, conn *pgx.Conn, e *Evidence, role, table, database string) error {
	var current string
	if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&current); err != nil {
		return err
	}
	if database != "" && database != current {
		return fmt.Errorf("%s is in database %s; the detector is connected to %s", table, database, current)
	}
	p := Privileges{Role: role, Table: table}
	var owner string
	var ownsIt, readAll bool
	err := conn.QueryRow(ctx, privilegesQuery, role, table).Scan(&p.Superuser, &p.BypassRLS, &p.CanLogin,
		&p.Effective, &owner, &ownsIt, &readAll)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("no role %s or no table %s any more", role, table)
	}
	if err != nil {
		return err
	}
	p.Grants = []Grant{}
	switch {
	case p.Superuser:
		p.Grants = append(p.Grants, Grant{Via: ViaSuperuser, Grantee: role})
	default:
		if ownsIt {
			p.Grants = append(p.Grants, Grant{Via: ViaOwner, Grantee: owner})
		}
		if readAll {
			p.Grants = append(p.Grants, Grant{Via: ViaReadAll, Grantee: "pg_read_all_data"})
		}
		if err := grants(ctx, conn, &p, owner); err != nil {
			return err
		}
	}
	e.Privileges = &p
	return nil
}

func grants(ctx context.Context, conn *pgx.Conn, p *Privileges, owner string) error {
	rows, err := conn.Query(ctx, grantsQuery, p.Role, p.Table)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var grantee string
		var columns []string
		if err := rows.Scan(&grantee, &columns); err != nil {
			return err
		}
		g := Grant{Grantee: grantee, Columns: columns}
		switch {
		case grantee == "":
			g.Via, g.Grantee = ViaPublic, "PUBLIC"
		case grantee == owner && columns == nil:
			continue // the owner's own rights: reported once, as ownership
		case grantee == p.Role:
			g.Via = ViaDirect
		default:
			g.Via = ViaMembership
		}
		if !slices.ContainsFunc(p.Grants, func(x Grant) bool {
			return x.Via == g.Via && x.Grantee == g.Grantee && strings.Join(x.Columns, ",") == strings.Join(g.Columns, ",")
		}) {
			p.Grants = append(p.Grants, g)
		}
	}
	return rows.Err()
}
