// Package setup prepares a PostgreSQL database for pgtripwire: the detector's
// least-privileged login role, pg_stat_statements, REPLICA IDENTITY FULL on the
// sensitive tables, their publication, the logical replication slot, and the
// event triggers that report security-relevant DDL as logical decoding
// messages (prefix "pgtripwire.ddl", decoded by package ddlmsg).
//
// Everything that serves only the WAL source (REPLICATION, REPLICA IDENTITY
// FULL, the publication, the event triggers, the slot) is planned only when
// Options.WAL says the source is on: a slot nobody consumes retains WAL until
// the disk is full.
//
// Plan returns the steps; each one says which privilege it needs and can be
// printed as SQL for review. Apply runs them on a connection, skipping what is
// already in place, so running it twice is harmless. Nothing here drops or
// narrows what exists: a publication lacking a table gets it added, a role
// lacking LOGIN or REPLICATION gets them, a superuser detector role, or one with
// REPLICATION that the plan does not need, is left as it is (Apply's result
// notes say so).
//
// It is not the detector (which never needs these privileges at run time) and
// it never sets a password: the operator does, from a secret, as the plan says.
package setup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/ha"
	"github.com/pgtripwire/pgtripwire/detector/pgversion"
	"github.com/pgtripwire/pgtripwire/detector/setup/ownership"
	"github.com/pgtripwire/pgtripwire/model"
)

// DefaultRole is the detector's role when Options.Role is empty.
const DefaultRole = "pgtripwire"

// Options are what the plan is made from.
type Options struct {
	// Role is the detector's login role; "" means DefaultRole.
	Role string
	// Tables are the sensitive tables (from the configuration); at least one.
	Tables []config.SensitiveTable
	// Publication and Slot name the publication and logical slot
	// (sources.wal.publication, sources.wal.slot); "" means "pgtripwire".
	Publication, Slot string
	// SkipReplicaIdentityFull leaves the tables' replica identity alone. Without
	// FULL, the WAL source cannot tell which sensitive columns an UPDATE changed.
	SkipReplicaIdentityFull bool
	// WAL says the WAL source is on (sources.wal.enabled). When false the plan
	// leaves out everything only that source uses: REPLICATION for the role,
	// REPLICA IDENTITY FULL, the publication, the DDL event triggers (whose
	// messages only the WAL source reads) and the slot (which, with no consumer,
	// would retain WAL until the disk is full). Omitted says so.
	WAL bool
	// HighAvailability adds the pgtripwire schema where detectors sharing the
	// target keep its rule state and replay guard (high_availability.enabled).
	HighAvailability bool
}

// Omitted returns, as comment lines for the printed plan, what these options
// leave out and why; nil when nothing is left out.
func (o Options) Omitted() []string {
	if o.WAL {
		return nil
	}
	return []string{
		"sources.wal.enabled is false: left out REPLICATION for the role, REPLICA IDENTITY FULL,",
		"the publication, the DDL event triggers and the logical replication slot: only the WAL",
		"source uses them, and a slot that nobody consumes retains WAL until the disk is full;",
		"set it to true for committed changes, DDL events and canary reads, and run setup again.",
	}
}

// OmittedComment is Omitted as SQL comment lines, "" when nothing is left out.
func (o Options) OmittedComment() string {
	var b strings.Builder
	for _, l := range o.Omitted() {
		b.WriteString("-- " + l + "\n")
	}
	return b.String()
}

// Outcome is what Apply did for a step.
type Outcome string

// Outcomes of Apply.
const (
	Created Outcome = "created"
	Updated Outcome = "updated"
	Present Outcome = "already present"
)

// Step is one thing setup makes sure of.
type Step struct {
	// Object names what the step is about: "role pgtripwire", "publication pgtripwire".
	Object string
	// Needs is the privilege the step's statements need.
	Needs string
	// Why explains the step (comment lines of the printed plan).
	Why []string
	// SQL are the statements that create the object from nothing, as printed.
	SQL []string

	// ensure returns what must run now (nothing when the object is in place) and
	// whether that is a creation or an update. Steps that are always safe to run
	// again have no ensure: their SQL runs every time.
	ensure func(ctx context.Context, conn *pgx.Conn) (stmts []string, o Outcome, err error)
	// verify, when set, checks the step's outcome in the transaction that ran its
	// statements, before it commits: an error rolls them back.
	verify func(ctx context.Context, tx pgx.Tx) error
	// note, when set, returns a remark on the applied step ("" for none).
	note func(ctx context.Context, conn *pgx.Conn) string
}

// Result is the outcome of one step of Apply.
type Result struct {
	Step    *Step
	Outcome Outcome
	// Note is a remark for the operator ("is a superuser: doctor flags it").
	Note string
}

// ident quotes an identifier for SQL only when it must be.
func ident(s string) string { return model.QuoteIdent(s) }

func tableIdent(t config.SensitiveTable) string { return ident(t.Schema) + "." + ident(t.Name) }

// Plan returns the steps that prepare the database, in the order they must run.
func Plan(opts Options) ([]*Step, error) {
	if len(opts.Tables) == 0 {
		return nil, errors.New("no sensitive tables: nothing to set up")
	}
	if opts.Role == "" {
		opts.Role = DefaultRole
	}
	if opts.Publication == "" {
		opts.Publication = "pgtripwire"
	}
	if opts.Slot == "" {
		opts.Slot = "pgtripwire"
	}
	role := ident(opts.Role)
	tables := make([]string, len(opts.Tables))
	for i, t := range opts.Tables {
		tables[i] = tableIdent(t)
	}

	roleStep := &Step{
		Object: "role " + opts.Role,
		Needs:  "superuser (or, on PostgreSQL 16+, CREATEROLE held by a role that has REPLICATION)",
		Why: []string{
			"The detector's login role. REPLICATION lets it stream the WAL of every table:",
			"it is the most dangerous right the detector holds (docs/security.md). No table",
			"privileges are granted: it reads statistics views and the replication stream only.",
		},
		SQL:    []string{createRoleSQL(opts.Role, opts.WAL)},
		ensure: ensureRole(opts.Role, opts.WAL),
		note:   roleNote(opts.Role, opts.WAL),
	}
	if !opts.WAL {
		roleStep.Needs = "superuser (or CREATEROLE)"
		roleStep.Why = []string{
			"The detector's login role, without REPLICATION: the WAL source is off. No table",
			"privileges are granted: it reads statistics views only.",
		}
	}
	steps := []*Step{
		roleStep,
		{
			Object: "membership of " + opts.Role + " in pg_monitor",
			Needs:  "superuser (or ADMIN OPTION on pg_monitor)",
			Why: []string{
				"pg_monitor includes pg_read_all_stats: every role's pg_stat_statements entries",
				"and pg_stat_activity rows, with their (normalized) texts.",
			},
			SQL:    []string{fmt.Sprintf("GRANT pg_monitor TO %s", role)},
			ensure: ensureMember(opts.Role, "pg_monitor"),
		},
		{
			Object: "extension pg_stat_statements",
			Needs:  "superuser; the server must also load it (shared_preload_libraries, restart)",
			Why:    []string{"Rows returned per statement, role and database: the statements source."},
			SQL:    []string{"CREATE EXTENSION IF NOT EXISTS pg_stat_statements"},
			ensure: ensureExtension("pg_stat_statements"),
		},
	}
	if opts.HighAvailability {
		steps = append(steps, &Step{
			Object: "schema " + ha.Schema + " (high availability state)",
			Needs:  "CREATE on the database (or superuser)",
			Why: []string{
				"Where the detector that watches the target keeps its rule state (windows,",
				"baselines, first-seen sets, firing alerts) and WAL replay guard, for the detector",
				"that takes the target over. Owned by you: the detector's role may read and upsert",
				"rows, not delete them, change the tables or create anything (docs/security.md).",
			},
			SQL: append(slices.Clone(ha.SchemaSQL), ha.GrantSQL(opts.Role)...),
		})
	}
	if !opts.WAL {
		return steps, nil
	}
	if !opts.SkipReplicaIdentityFull {
		for _, t := range opts.Tables {
			steps = append(steps, &Step{
				Object: "replica identity full of " + t.Table,
				Needs:  "ownership of the table (or superuser); takes a brief ACCESS EXCLUSIVE lock",
				Why: []string{
					"Lets the WAL source tell which sensitive columns an UPDATE changed. Cost: every",
					"UPDATE and DELETE of the table writes the whole old row to the WAL (more WAL, more",
					"replication traffic). Opt out with --no-replica-identity-full: mass changes are then",
					"still counted, but not which columns changed.",
				},
				SQL:    []string{fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY FULL", tableIdent(t))},
				ensure: ensureReplicaIdentityFull(t),
			})
		}
	}
	steps = append(steps,
		&Step{
			Object: "publication " + opts.Publication,
			Needs:  "CREATE on the database and ownership of the tables (or superuser)",
			Why: []string{
				"The sensitive tables only, so that the slot does not decode (nor the detector",
				"receive) changes to any other table.",
			},
			SQL:    []string{fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s", ident(opts.Publication), strings.Join(tables, ", "))},
			ensure: ensurePublication(opts.Publication, opts.Tables),
		},
		ddlTriggerStep(opts.Tables),
		&Step{
			Object: "replication slot " + opts.Slot,
			Needs:  "REPLICATION (or superuser); wal_level = logical",
			Why: []string{
				"A permanent pgoutput slot: changes made while the detector is down are kept for",
				"it. It also keeps WAL: set max_slot_wal_keep_size so that a detector down for",
				"long cannot fill the disk. On PostgreSQL 17 and later it is a failover slot:",
				"standbys with sync_replication_slots = on keep a copy, so that the detector",
				"resumes on the new primary after a promotion.",
			},
			SQL:    []string{createSlotSQL(opts.Slot)},
			ensure: ensureSlot(opts.Slot),
		},
	)
	return steps, nil
}

func ddlTriggerStep(tables []config.SensitiveTable) *Step {
	schema := ident(TriggerSchema)
	fn := func(name, body string) string {
		return fmt.Sprintf("CREATE OR REPLACE FUNCTION %s.%s() RETURNS event_trigger\n"+
			"LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp\nAS $pgtripwire$%s$pgtripwire$",
			schema, name, functionBody(body, tables))
	}
	trigger := func(name, event, fname, when string) []string {
		return []string{
			fmt.Sprintf("CREATE EVENT TRIGGER %s ON %s%s EXECUTE FUNCTION %s.%s()", name, event, when, schema, fname),
			// ALWAYS: also under session_replication_role = replica, which a superuser
			// could otherwise set to run DDL unseen.
			fmt.Sprintf("ALTER EVENT TRIGGER %s ENABLE ALWAYS", name),
		}
	}
	sql := []string{
		// Not IF NOT EXISTS: a schema someone else made first must not be reused
		// silently (ensureTriggers checks an existing one's owners).
		"CREATE SCHEMA " + schema,
		"REVOKE ALL ON SCHEMA " + schema + " FROM PUBLIC",
		fn(funcStart, startBody),
		fn(funcEnd, endBody),
		fn(funcDrop, dropBody),
		fmt.Sprintf("REVOKE ALL ON FUNCTION %[1]s.%[2]s(), %[1]s.%[3]s(), %[1]s.%[4]s() FROM PUBLIC", schema, funcStart, funcEnd, funcDrop),
	}
	sql = append(sql, trigger(triggerStart, "ddl_command_start", funcStart, " WHEN TAG IN ('ALTER TABLE')")...)
	sql = append(sql, trigger(triggerEnd, "ddl_command_end", funcEnd, "")...)
	sql = append(sql, trigger(triggerDrop, "sql_drop", funcDrop, "")...)
	return &Step{
		Object: "DDL event triggers",
		Needs:  "superuser (event triggers are superuser-only; the functions run as their owner)",
		Why: []string{
			"Report security-relevant DDL as logical decoding messages (prefix " + MessagePrefix + ") on the",
			"replication stream: ALTER TABLE ... DISABLE / NO FORCE ROW LEVEL SECURITY, CREATE/ALTER/DROP",
			"POLICY, CREATE/ALTER/DROP PUBLICATION, GRANT/REVOKE, SECURITY DEFINER functions, extensions,",
			"and any DDL on a sensitive table. The message holds the command tag, object type and",
			"identity, session_user and a kind, never a literal of the statement. Not seen by event",
			"triggers: ALTER ROLE, GRANT of roles, CREATE/DROP ROLE, DROP/ALTER EVENT TRIGGER (global",
			"objects, left to the catalog watch).",
			"The functions are SECURITY DEFINER: they run as their owner. --apply refuses a schema " + TriggerSchema,
			"or functions there owned by, or a schema others may CREATE in, any role but a superuser",
			"or the one applying: a role that made them first could rewrite what the triggers run.",
		},
		SQL:    sql,
		ensure: ensureTriggers(sql, tables),
		verify: func(ctx context.Context, tx pgx.Tx) error {
			return ownership.Check(ctx, tx, TriggerSchema)
		},
	}
}

// WritePlan prints the steps made from opts as an SQL script with, before each
// statement, what it is for and which privilege it needs, what opts left out
// (Options.Omitted), then how to set the role's password.
func WritePlan(w io.Writer, steps []*Step, opts Options) error {
	role := opts.Role
	if role == "" {
		role = DefaultRole
	}
	var b strings.Builder
	b.WriteString("-- pgtripwire setup: run as a superuser in the monitored database, e.g.\n" +
		"--   pgtripwire setup --config pgtripwire.yaml --apply --dsn postgres://postgres@db/app\n" +
		"-- --apply skips what is already in place; this script, run by hand, does not.\n")
	if c := opts.OmittedComment(); c != "" {
		b.WriteString("--\n" + c)
	}
	for _, s := range steps {
		fmt.Fprintf(&b, "\n-- %s\n", s.Object)
		for _, l := range s.Why {
			fmt.Fprintf(&b, "--   %s\n", l)
		}
		fmt.Fprintf(&b, "-- needs: %s\n", s.Needs)
		for _, q := range s.SQL {
			b.WriteString(q + ";\n")
		}
	}
	b.WriteString(PasswordHelp(role))
	_, err := io.WriteString(w, b.String())
	return err
}

// PasswordHelp says how to give the role a password without it appearing in a
// shell history, a server log or pg_stat_statements.
func PasswordHelp(role string) string {
	r := ident(role)
	return fmt.Sprintf(`
-- The role has no password: setup never sets one. Set it from a secret, in psql:
--   \password %[1]s
-- (psql hashes it with SCRAM on the client: the server, its log and
-- pg_stat_statements never see the clear text), or from a file:
--   psql -v pw="$(cat /run/secrets/pgtripwire)" <<'EOF'
--   SET password_encryption = 'scram-sha-256';
--   ALTER ROLE %[1]s PASSWORD :'pw';
--   EOF
-- The second form sends the clear text to the server; with log_statement = ddl or
-- all it is logged. Rotation: docs/security.md.
`, r)
}

// Apply runs the steps in order on conn, each step in its own transaction
// (a single statement, such as creating the slot, which must not follow writes
// in a transaction, runs on its own), and reports what it did. It stops at the
// first failure; the error names the step and the privilege it needs, and the
// failed step leaves nothing behind. Steps already applied stay applied:
// running Apply again continues where it stopped.
func Apply(ctx context.Context, conn *pgx.Conn, steps []*Step) ([]Result, error) {
	results := make([]Result, 0, len(steps))
	for _, s := range steps {
		stmts, outcome, err := s.SQL, Created, error(nil)
		if s.ensure != nil {
			stmts, outcome, err = s.ensure(ctx, conn)
			if err != nil {
				return results, fmt.Errorf("%s: %w", s.Object, err)
			}
		}
		if err := run(ctx, conn, s, stmts); err != nil {
			return results, err
		}
		res := Result{Step: s, Outcome: outcome}
		if len(stmts) == 0 {
			res.Outcome = Present
		}
		if s.note != nil {
			res.Note = s.note(ctx, conn)
		}
		results = append(results, res)
	}
	return results, nil
}

// run runs the statements of step s, in one transaction with its verify unless
// there is a single statement and nothing to verify.
func run(ctx context.Context, conn *pgx.Conn, s *Step, stmts []string) error {
	if len(stmts) == 0 {
		return nil
	}
	if len(stmts) == 1 && s.verify == nil {
		if _, err := conn.Exec(ctx, stmts[0]); err != nil {
			return fmt.Errorf("%s (needs %s): %w", s.Object, s.Needs, err)
		}
		return nil
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, q := range stmts {
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("%s (needs %s): %w", s.Object, s.Needs, err)
			}
		}
		if s.verify != nil {
			if err := s.verify(ctx, tx); err != nil {
				return fmt.Errorf("%s: %w", s.Object, err)
			}
		}
		return nil
	})
}

// WriteResults prints one line per step: what Apply did.
func WriteResults(w io.Writer, results []Result) error {
	var b strings.Builder
	for _, r := range results {
		fmt.Fprintf(&b, "%-16s %s", r.Outcome, r.Step.Object)
		if r.Note != "" {
			fmt.Fprintf(&b, " (%s)", r.Note)
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// createRoleSQL creates the detector's role, with REPLICATION only for the WAL
// source.
func createRoleSQL(name string, replication bool) string {
	repl := "NOREPLICATION"
	if replication {
		repl = "REPLICATION"
	}
	return fmt.Sprintf("CREATE ROLE %s WITH LOGIN %s NOSUPERUSER NOCREATEDB NOCREATEROLE", ident(name), repl)
}

func ensureRole(name string, replication bool) func(context.Context, *pgx.Conn) ([]string, Outcome, error) {
	return func(ctx context.Context, conn *pgx.Conn) ([]string, Outcome, error) {
		var login, repl bool
		err := conn.QueryRow(ctx, `SELECT rolcanlogin, rolreplication FROM pg_catalog.pg_roles WHERE rolname = $1`, name).
			Scan(&login, &repl)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return []string{createRoleSQL(name, replication)}, Created, nil
		case err != nil:
			return nil, "", fmt.Errorf("read role: %w", err)
		case login && (repl || !replication):
			return nil, Present, nil
		case replication:
			return []string{fmt.Sprintf("ALTER ROLE %s WITH LOGIN REPLICATION", ident(name))}, Updated, nil
		default:
			return []string{fmt.Sprintf("ALTER ROLE %s WITH LOGIN", ident(name))}, Updated, nil
		}
	}
}

// roleNote flags what setup leaves as it is but should not be: a superuser
// detector role, and REPLICATION the WAL source, being off, does not need.
func roleNote(name string, replication bool) func(context.Context, *pgx.Conn) string {
	return func(ctx context.Context, conn *pgx.Conn) string {
		var super, repl bool
		err := conn.QueryRow(ctx, `SELECT rolsuper, rolreplication FROM pg_catalog.pg_roles WHERE rolname = $1`, name).Scan(&super, &repl)
		switch {
		case err != nil:
			return ""
		case super:
			return "it is a superuser: setup does not demote it; doctor flags it"
		case repl && !replication:
			return fmt.Sprintf("it has REPLICATION, which sources.wal.enabled = false does not need: ALTER ROLE %s NOREPLICATION", ident(name))
		}
		return ""
	}
}

func ensureMember(role, group string) func(context.Context, *pgx.Conn) ([]string, Outcome, error) {
	return func(ctx context.Context, conn *pgx.Conn) ([]string, Outcome, error) {
		var member bool
		if err := conn.QueryRow(ctx, `SELECT pg_catalog.pg_has_role($1, $2, 'MEMBER')`, role, group).Scan(&member); err != nil {
			return nil, "", fmt.Errorf("read membership: %w", err)
		}
		if member {
			return nil, Present, nil
		}
		return []string{fmt.Sprintf("GRANT %s TO %s", ident(group), ident(role))}, Created, nil
	}
}

func ensureExtension(name string) func(context.Context, *pgx.Conn) ([]string, Outcome, error) {
	return func(ctx context.Context, conn *pgx.Conn) ([]string, Outcome, error) {
		var exists bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = $1)`, name).Scan(&exists); err != nil {
			return nil, "", fmt.Errorf("read extensions: %w", err)
		}
		if exists {
			return nil, Present, nil
		}
		return []string{"CREATE EXTENSION IF NOT EXISTS " + ident(name)}, Created, nil
	}
}

func ensureReplicaIdentityFull(t config.SensitiveTable) func(context.Context, *pgx.Conn) ([]string, Outcome, error) {
	return func(ctx context.Context, conn *pgx.Conn) ([]string, Outcome, error) {
		var ident string
		err := conn.QueryRow(ctx, `SELECT c.relreplident::text FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`, t.Schema, t.Name).Scan(&ident)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return nil, "", fmt.Errorf("sensitive table %s does not exist in this database", t.Table)
		case err != nil:
			return nil, "", fmt.Errorf("read replica identity: %w", err)
		case ident == "f":
			return nil, Present, nil
		}
		return []string{fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY FULL", tableIdent(t))}, Updated, nil
	}
}

func ensurePublication(name string, tables []config.SensitiveTable) func(context.Context, *pgx.Conn) ([]string, Outcome, error) {
	return func(ctx context.Context, conn *pgx.Conn) ([]string, Outcome, error) {
		var all bool
		err := conn.QueryRow(ctx, `SELECT puballtables FROM pg_catalog.pg_publication WHERE pubname = $1`, name).Scan(&all)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			idents := make([]string, len(tables))
			for i, t := range tables {
				idents[i] = tableIdent(t)
			}
			return []string{fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s", ident(name), strings.Join(idents, ", "))}, Created, nil
		case err != nil:
			return nil, "", fmt.Errorf("read publication: %w", err)
		case all:
			return nil, Present, nil
		}
		rows, err := conn.Query(ctx, `SELECT schemaname, tablename FROM pg_catalog.pg_publication_tables WHERE pubname = $1`, name)
		if err != nil {
			return nil, "", fmt.Errorf("read publication tables: %w", err)
		}
		have, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
			var p [2]string
			err := r.Scan(&p[0], &p[1])
			return p, err
		})
		if err != nil {
			return nil, "", fmt.Errorf("read publication tables: %w", err)
		}
		var missing []string
		for _, t := range tables {
			if !slices.Contains(have, [2]string{t.Schema, t.Name}) {
				missing = append(missing, tableIdent(t))
			}
		}
		if len(missing) == 0 {
			return nil, Present, nil
		}
		return []string{fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s", ident(name), strings.Join(missing, ", "))}, Updated, nil
	}
}

// ensureTriggers runs the whole trigger script again when any function body
// differs from this version's (new sensitive tables, a newer pgtripwire) or any
// trigger is missing or not enabled ALWAYS; the script is idempotent apart from
// CREATE SCHEMA, left out when the schema exists, and CREATE EVENT TRIGGER,
// which is dropped first.
//
// First of all it checks who owns the schema and what is in it (package
// ownership): CREATE OR REPLACE FUNCTION keeps the owner of a function that
// exists, so if a role with CREATE on the database made the schema or a
// function first, the SECURITY DEFINER trigger functions would be that role's
// to rewrite, and they run for every DDL. It refuses rather than taking
// ownership: ALTER ... OWNER would adopt objects of unknown history (other
// functions, grants the intruder made) and hide what may be a sign of
// compromise, which the operator should look at before one DROP SCHEMA or
// ALTER ... OWNER settles it. Objects already in place but in the wrong hands
// are refused too, never reported "already present".
func ensureTriggers(script []string, tables []config.SensitiveTable) func(context.Context, *pgx.Conn) ([]string, Outcome, error) {
	return func(ctx context.Context, conn *pgx.Conn) ([]string, Outcome, error) {
		if err := ownership.Check(ctx, conn, TriggerSchema); err != nil {
			return nil, "", err
		}
		var schemaExists bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = $1)`,
			TriggerSchema).Scan(&schemaExists); err != nil {
			return nil, "", fmt.Errorf("read schema %s: %w", TriggerSchema, err)
		}
		todo := script
		if schemaExists {
			todo = script[1:] // CREATE SCHEMA
		}
		want := map[string]string{
			funcStart: functionBody(startBody, tables),
			funcEnd:   functionBody(endBody, tables),
			funcDrop:  functionBody(dropBody, tables),
		}
		rows, err := conn.Query(ctx, `SELECT p.proname, p.prosrc, p.prosecdef FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1`, TriggerSchema)
		if err != nil {
			return nil, "", fmt.Errorf("read trigger functions: %w", err)
		}
		type fn struct {
			name, src string
			secdef    bool
		}
		fns, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (fn, error) {
			var f fn
			err := r.Scan(&f.name, &f.src, &f.secdef)
			return f, err
		})
		if err != nil {
			return nil, "", fmt.Errorf("read trigger functions: %w", err)
		}
		same := 0
		for _, f := range fns {
			if w, ok := want[f.name]; ok && w == f.src && f.secdef {
				same++
			}
		}
		var enabled int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_catalog.pg_event_trigger WHERE evtname = ANY($1) AND evtenabled = 'A'`,
			EventTriggers).Scan(&enabled); err != nil {
			return nil, "", fmt.Errorf("read event triggers: %w", err)
		}
		if same == len(want) && enabled == len(EventTriggers) {
			return nil, Present, nil
		}
		var existing int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_catalog.pg_event_trigger WHERE evtname = ANY($1)`,
			EventTriggers).Scan(&existing); err != nil {
			return nil, "", fmt.Errorf("read event triggers: %w", err)
		}
		outcome := Created
		if len(fns) > 0 || existing > 0 {
			outcome = Updated
		}
		stmts := make([]string, 0, len(todo)+len(EventTriggers))
		for _, name := range EventTriggers {
			stmts = append(stmts, "DROP EVENT TRIGGER IF EXISTS "+name)
		}
		return append(stmts, todo...), outcome, nil
	}
}

func ensureSlot(name string) func(context.Context, *pgx.Conn) ([]string, Outcome, error) {
	return func(ctx context.Context, conn *pgx.Conn) ([]string, Outcome, error) {
		var slotType, plugin, db, current string
		err := conn.QueryRow(ctx, `SELECT slot_type, coalesce(plugin, ''), coalesce(database, ''), current_database()
FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`, name).Scan(&slotType, &plugin, &db, &current)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return []string{createSlotSQL(name)}, Created, nil
		case err != nil:
			return nil, "", fmt.Errorf("read slot: %w", err)
		case slotType != "logical" || plugin != "pgoutput" || db != current:
			return nil, "", fmt.Errorf("slot %s exists as a %s slot for plugin %q in database %q, want a pgoutput slot in %q: drop it or choose another sources.wal.slot",
				name, slotType, plugin, db, current)
		}
		return nil, Present, nil
	}
}

// createSlotSQL creates the logical slot, as a failover slot where the server has them
// (pgversion.FailoverSlots). One statement for every version, so that the printed plan
// is right wherever it is run; it must run alone, outside a transaction that wrote.
func createSlotSQL(name string) string {
	return fmt.Sprintf(`DO $pgtripwire$
BEGIN
	IF %s THEN
		PERFORM pg_catalog.pg_create_logical_replication_slot(%s, 'pgoutput', failover => true);
	ELSE
		PERFORM pg_catalog.pg_create_logical_replication_slot(%s, 'pgoutput');
	END IF;
END
$pgtripwire$`, pgversion.FailoverSlots.SQL(), quoteLiteral(name), quoteLiteral(name))
}
