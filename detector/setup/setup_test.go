package setup_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/ddlmsg"
	"github.com/pgtripwire/pgtripwire/detector/setup"
	"github.com/pgtripwire/pgtripwire/detector/setup/ownership"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func sensitive(t *testing.T, tables ...string) []config.SensitiveTable {
	t.Helper()
	var out []config.SensitiveTable
	for _, name := range tables {
		st, err := config.NewSensitiveTable(name, "email", "password_hash")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, st)
	}
	return out
}

func TestPlanSaysWhatEachStatementNeeds(t *testing.T) {
	opts := setup.Options{Tables: sensitive(t, "public.users", `"Auth"."Accounts"`), Publication: "pub", Slot: "slot", WAL: true}
	steps, err := setup.Plan(opts)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := setup.WritePlan(&b, steps, opts); err != nil {
		t.Fatal(err)
	}
	plan := b.String()
	for _, want := range []string{
		"CREATE ROLE pgtripwire WITH LOGIN REPLICATION NOSUPERUSER",
		"GRANT pg_monitor TO pgtripwire;",
		"CREATE EXTENSION IF NOT EXISTS pg_stat_statements;",
		"ALTER TABLE public.users REPLICA IDENTITY FULL;",
		`ALTER TABLE "Auth"."Accounts" REPLICA IDENTITY FULL;`,
		"whole old row",
		`CREATE PUBLICATION pub FOR TABLE public.users, "Auth"."Accounts";`,
		"CREATE SCHEMA pgtripwire_ddl;",
		"CREATE EVENT TRIGGER pgtripwire_ddl_end ON ddl_command_end",
		"ENABLE ALWAYS",
		"PERFORM pg_catalog.pg_create_logical_replication_slot(E'slot', 'pgoutput', failover => true);",
		"PERFORM pg_catalog.pg_create_logical_replication_slot(E'slot', 'pgoutput');",
		`\password pgtripwire`,
	} {
		if !strings.Contains(plan, want) {
			t.Errorf("plan lacks %q", want)
		}
	}
	if strings.Contains(plan, "PASSWORD '") {
		t.Error("the plan sets a password")
	}
	if strings.Contains(plan, "sources.wal.enabled is false") {
		t.Error("the plan with the WAL source on says it left the WAL objects out")
	}
	// Every step names the privilege it needs, before its statements.
	if got, want := strings.Count(plan, "\n-- needs: "), len(steps); got != want {
		t.Errorf("got %d needs: lines, want one per step (%d)", got, want)
	}

	opts = setup.Options{Tables: sensitive(t, "public.users"), SkipReplicaIdentityFull: true, WAL: true}
	steps, err = setup.Plan(opts)
	if err != nil {
		t.Fatal(err)
	}
	b.Reset()
	_ = setup.WritePlan(&b, steps, opts)
	if strings.Contains(b.String(), "REPLICA IDENTITY FULL;") {
		t.Error("--no-replica-identity-full: the plan still alters the replica identity")
	}
	if _, err := setup.Plan(setup.Options{}); err == nil {
		t.Error("a plan without sensitive tables was accepted")
	}
}

// TestPlanWithoutWAL: with sources.wal.enabled false (the default) the plan holds
// nothing that only the WAL source uses, above all no slot, which nobody would
// consume and which would retain WAL until the disk is full, and says so.
func TestPlanWithoutWAL(t *testing.T) {
	opts := setup.Options{Tables: sensitive(t, "public.users"), Publication: "pub", Slot: "slot"}
	steps, err := setup.Plan(opts)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := setup.WritePlan(&b, steps, opts); err != nil {
		t.Fatal(err)
	}
	plan := b.String()
	for _, want := range []string{
		"CREATE ROLE pgtripwire WITH LOGIN NOREPLICATION NOSUPERUSER",
		"GRANT pg_monitor TO pgtripwire;",
		"CREATE EXTENSION IF NOT EXISTS pg_stat_statements;",
		"-- sources.wal.enabled is false: left out REPLICATION for the role",
		"set it to true for committed changes, DDL events and canary reads",
	} {
		if !strings.Contains(strings.ToLower(plan), strings.ToLower(want)) {
			t.Errorf("plan lacks %q:\n%s", want, plan)
		}
	}
	for _, line := range strings.Split(plan, "\n") {
		if strings.HasPrefix(line, "--") {
			continue
		}
		for _, unwanted := range []string{" REPLICATION ", "pg_create_logical_replication_slot", "PUBLICATION", "REPLICA IDENTITY", "EVENT TRIGGER", "SCHEMA"} {
			if strings.Contains(line, unwanted) {
				t.Errorf("without the WAL source the plan still holds %q", line)
			}
		}
	}
	if got, want := len(steps), 3; got != want {
		t.Errorf("got %d steps, want %d (role, pg_monitor, pg_stat_statements)", got, want)
	}
}

// TestApplyWithoutWAL applies a plan without the WAL source to a database where a
// role has REPLICATION already: nothing of the WAL source appears, and the role's
// REPLICATION is reported, not silently kept.
func TestApplyWithoutWAL(t *testing.T) {
	db := pgtest.NewDatabase(t)
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, password_hash text)`)
	role := "setup_nowal_" + db.Name[len(db.Name)-4:]
	steps, err := setup.Plan(setup.Options{Role: role, Tables: sensitive(t, "public.users"), Publication: "tw_pub", Slot: db.Name})
	if err != nil {
		t.Fatal(err)
	}
	conn := db.Conn(t, "postgres")
	if _, err := setup.Apply(t.Context(), conn, steps); err != nil {
		t.Fatalf("apply: %v", err)
	}
	var repl, login bool
	var slots, pubs, triggers int
	var ident string
	var schema bool
	if err := conn.QueryRow(t.Context(), `SELECT r.rolreplication, r.rolcanlogin,
			(SELECT count(*) FROM pg_replication_slots WHERE slot_name = $2),
			(SELECT count(*) FROM pg_publication),
			(SELECT count(*) FROM pg_event_trigger),
			(SELECT relreplident::text FROM pg_class WHERE oid = 'public.users'::regclass),
			to_regnamespace('pgtripwire_ddl') IS NOT NULL
		FROM pg_roles r WHERE r.rolname = $1`, role, db.Name).Scan(&repl, &login, &slots, &pubs, &triggers, &ident, &schema); err != nil {
		t.Fatal(err)
	}
	if repl || !login || slots != 0 || pubs != 0 || triggers != 0 || ident != "d" || schema {
		t.Errorf("replication=%v login=%v slots=%d publications=%d event triggers=%d replica identity %q trigger schema %v; "+
			"want false true 0 0 0 d false", repl, login, slots, pubs, triggers, ident, schema)
	}

	db.Exec(t, `ALTER ROLE `+role+` REPLICATION`)
	results, err := setup.Apply(t.Context(), conn, steps)
	if err != nil {
		t.Fatalf("second apply: %v", err)
	}
	var b bytes.Buffer
	_ = setup.WriteResults(&b, results)
	if want := "ALTER ROLE " + role + " NOREPLICATION"; !strings.Contains(b.String(), want) {
		t.Errorf("results do not suggest %q:\n%s", want, b.String())
	}
}

// TestApplyIsIdempotent applies the plan twice and checks what the role can and
// cannot do.
func TestApplyIsIdempotent(t *testing.T) {
	db := pgtest.NewDatabase(t)
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, password_hash text);
		CREATE TABLE public.orders (id int PRIMARY KEY)`)
	role := "setup_idem_" + db.Name[len(db.Name)-4:]
	steps, err := setup.Plan(setup.Options{Role: role, Tables: sensitive(t, "public.users"), Publication: "tw_pub", Slot: db.Name, WAL: true})
	if err != nil {
		t.Fatal(err)
	}
	conn := db.Conn(t, "postgres")
	first, err := setup.Apply(t.Context(), conn, steps)
	if err != nil {
		t.Fatalf("first apply: %v", err)
	}
	for _, r := range first {
		if r.Step.Object == "extension pg_stat_statements" {
			continue // pgtest installs it in every database
		}
		if r.Outcome == setup.Present {
			t.Errorf("first apply: %s already present, want created or updated", r.Step.Object)
		}
	}
	second, err := setup.Apply(t.Context(), conn, steps)
	if err != nil {
		t.Fatalf("second apply: %v", err)
	}
	for _, r := range second {
		if r.Outcome != setup.Present {
			t.Errorf("second apply: %s %s, want already present", r.Step.Object, r.Outcome)
		}
	}
	var b bytes.Buffer
	_ = setup.WriteResults(&b, second)
	if !strings.Contains(b.String(), "already present  publication tw_pub") {
		t.Errorf("results:\n%s", b.String())
	}

	var super, repl, login, monitor, canRead bool
	var ident, pub string
	if err := conn.QueryRow(t.Context(), `SELECT r.rolsuper, r.rolreplication, r.rolcanlogin,
			pg_has_role(r.rolname, 'pg_monitor', 'MEMBER'),
			has_table_privilege(r.rolname, 'public.users', 'SELECT'),
			(SELECT relreplident::text FROM pg_class WHERE oid = 'public.users'::regclass),
			(SELECT string_agg(schemaname || '.' || tablename, ',') FROM pg_publication_tables WHERE pubname = 'tw_pub')
		FROM pg_roles r WHERE r.rolname = $1`, role).Scan(&super, &repl, &login, &monitor, &canRead, &ident, &pub); err != nil {
		t.Fatal(err)
	}
	if super || !repl || !login || !monitor || canRead {
		t.Errorf("role: superuser=%v replication=%v login=%v pg_monitor=%v select on users=%v, want false true true true false",
			super, repl, login, monitor, canRead)
	}
	if ident != "f" || pub != "public.users" {
		t.Errorf("replica identity %q, publication tables %q; want f and public.users only", ident, pub)
	}

	// A table added to the configuration is added to the publication.
	steps, err = setup.Plan(setup.Options{Role: role, Tables: sensitive(t, "public.users", "public.orders"),
		Publication: "tw_pub", Slot: db.Name, SkipReplicaIdentityFull: true, WAL: true})
	if err != nil {
		t.Fatal(err)
	}
	third, err := setup.Apply(t.Context(), conn, steps)
	if err != nil {
		t.Fatalf("apply with a new table: %v", err)
	}
	for _, r := range third {
		want := setup.Present
		if r.Step.Object == "publication tw_pub" || r.Step.Object == "DDL event triggers" {
			want = setup.Updated
		}
		if r.Outcome != want {
			t.Errorf("apply with a new table: %s %s, want %s", r.Step.Object, r.Outcome, want)
		}
	}
}

// TestEventTriggerMessages applies setup, runs DDL as an ordinary table owner, and
// reads the messages back through the logical slot setup created, with pgoutput,
// as the WAL source does.
func TestEventTriggerMessages(t *testing.T) {
	db := pgtest.NewDatabase(t)
	owner := "ddl_owner_" + db.Name[len(db.Name)-4:]
	db.CreateRole(t, owner)
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, password_hash text);
		ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
		CREATE TABLE public.notes (id int, body text);
		ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY;
		CREATE TABLE public.plain (id int);
		ALTER TABLE public.users OWNER TO `+owner+`;
		ALTER TABLE public.notes OWNER TO `+owner+`;
		ALTER TABLE public.plain OWNER TO `+owner+`;
		GRANT CREATE ON SCHEMA public TO `+owner)
	steps, err := setup.Plan(setup.Options{Role: "setup_trig_" + db.Name[len(db.Name)-4:], Tables: sensitive(t, "public.users"),
		Publication: "tw_pub", Slot: db.Name, WAL: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := setup.Apply(t.Context(), db.Conn(t, "postgres"), steps); err != nil {
		t.Fatal(err)
	}

	type want struct{ kind, tag, object, relation, role string }
	tests := []struct {
		name string
		as   string
		sql  []string
		want []want // nil: no message
	}{
		{"disable rls on a sensitive table", owner, []string{`ALTER TABLE users DISABLE ROW LEVEL SECURITY`},
			[]want{{"rls_disabled", "ALTER TABLE", "public.users", "public.users", owner}}},
		{"disable rls inside a transaction rolled back", owner,
			[]string{`BEGIN`, `ALTER TABLE notes DISABLE ROW LEVEL SECURITY`, `ROLLBACK`},
			[]want{{"rls_disabled", "ALTER TABLE", "public.notes", "public.notes", owner}}},
		{"force then no force", owner, []string{`ALTER TABLE notes FORCE ROW LEVEL SECURITY`, `ALTER TABLE notes NO FORCE ROW LEVEL SECURITY`},
			[]want{{"rls_no_force", "ALTER TABLE", "public.notes", "public.notes", owner}}},
		{"disable rls on another table", owner, []string{`ALTER TABLE notes DISABLE ROW LEVEL SECURITY`},
			[]want{{"rls_disabled", "ALTER TABLE", "public.notes", "public.notes", owner}}},
		{"ordinary ddl elsewhere", owner, []string{`ALTER TABLE plain ADD COLUMN x int`, `CREATE INDEX ON plain (x)`}, nil},
		{"policy with a literal", owner, []string{
			`CREATE POLICY p ON users USING (email = 'alice@example.com')`,
			`ALTER POLICY p ON users USING (email <> 'bob@example.com')`,
			`DROP POLICY p ON users`,
		}, []want{
			{"policy_created", "CREATE POLICY", "p on public.users", "public.users", owner},
			{"policy_altered", "ALTER POLICY", "p on public.users", "public.users", owner},
			{"policy_dropped", "DROP POLICY", "p on public.users", "public.users", owner},
		}},
		{"grant", owner, []string{`GRANT SELECT ON users TO PUBLIC`}, []want{{"grant", "GRANT", "", "", owner}}},
		{"replica identity", owner, []string{`ALTER TABLE users REPLICA IDENTITY DEFAULT`},
			[]want{{"replica_identity_changed", "ALTER TABLE", "public.users", "public.users", owner}}},
		{"index on a sensitive table", owner, []string{`CREATE INDEX users_email ON users (email)`},
			[]want{{"table_altered", "CREATE INDEX", "public.users_email", "public.users", owner}}},
		{"trigger on a sensitive table", owner, []string{
			`CREATE FUNCTION public.copy_row() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$`,
			`CREATE TRIGGER t AFTER INSERT ON users FOR EACH ROW EXECUTE FUNCTION public.copy_row()`,
		}, []want{{"trigger_created", "CREATE TRIGGER", "t on public.users", "public.users", owner}}},
		{"security definer function", owner, []string{
			`CREATE FUNCTION public.plain_fn() RETURNS int LANGUAGE sql AS 'SELECT 1'`,
			`CREATE FUNCTION public.dump() RETURNS SETOF text LANGUAGE sql SECURITY DEFINER AS 'SELECT email FROM public.users'`,
		}, []want{{"function_changed", "CREATE FUNCTION", "public.dump()", "", owner}}},
		{"publication", "postgres", []string{`CREATE PUBLICATION leak FOR TABLE public.users`, `DROP PUBLICATION leak`},
			[]want{
				{"publication_changed", "CREATE PUBLICATION", "leak", "", "postgres"},
				{"publication_dropped", "DROP PUBLICATION", "leak", "", "postgres"},
			}},
		{"drop the sensitive table", owner, []string{`DROP TABLE users`},
			[]want{{"table_dropped", "DROP TABLE", "public.users", "public.users", owner}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := db.Conn(t, tt.as)
			for _, q := range tt.sql {
				if _, err := conn.Exec(t.Context(), q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			raw, evs := readMessages(t, db, db.Name, "tw_pub")
			for _, c := range raw {
				for _, lit := range []string{"alice@example.com", "bob@example.com", "SELECT email"} {
					if strings.Contains(c, lit) {
						t.Errorf("message %s carries a literal of the statement (%q)", c, lit)
					}
				}
			}
			var got []want
			for _, e := range evs {
				if e.Source != "ddl" {
					t.Errorf("source %q, want ddl", e.Source)
				}
				got = append(got, want{e.Kind, e.Operation, e.Object, e.Relation, e.Role})
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d messages %+v (raw %q), want %+v", len(got), got, raw, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("message %d: got %+v, want %+v (raw %s)", i, got[i], tt.want[i], raw[i])
				}
			}
		})
	}
}

// readMessages consumes the slot's pending changes with pgoutput and returns the
// pgtripwire.ddl messages, raw and decoded.
func readMessages(t *testing.T, db *pgtest.Database, slot, pub string) (raw []string, evs []model.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, db.SuperuserDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// A message is decoded once the WAL holding it is flushed. The test cluster runs
	// with synchronous_commit = off, so the DDL's own commit did not flush it: a
	// synchronous commit of a transaction that wrote WAL does.
	if _, err := conn.Exec(ctx, `BEGIN; SET LOCAL synchronous_commit = on;
		SELECT pg_logical_emit_message(true, 'test.flush', ''); COMMIT`); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, `SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL,
		'proto_version', '1', 'publication_names', $2, 'messages', 'true')`, slot, pub)
	if err != nil {
		t.Fatal(err)
	}
	datas, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range datas {
		msg, err := pglogrepl.Parse(d)
		if err != nil {
			t.Fatalf("parse pgoutput message: %v", err)
		}
		m, ok := msg.(*pglogrepl.LogicalDecodingMessage)
		if !ok {
			continue
		}
		if m.Transactional && m.Prefix == ddlmsg.Prefix {
			t.Errorf("message %q is transactional: a rolled-back DDL would go unseen", m.Content)
		}
		ev, ours, err := ddlmsg.Decode(m.Prefix, m.Content)
		if err != nil {
			t.Fatalf("Decode(%q, %q): %v", m.Prefix, m.Content, err)
		}
		if !ours {
			continue
		}
		raw = append(raw, string(m.Content))
		evs = append(evs, ev)
	}
	return raw, evs
}

// TestTriggerSchemaInOtherHands: a role that may CREATE in the database makes the
// trigger schema or a trigger function before setup runs. CREATE OR REPLACE
// FUNCTION would keep that role as the owner of a SECURITY DEFINER function run for
// every DDL: setup must refuse, naming the owner and the fix, leave no event trigger
// and no definer function of that role, and succeed once the fix is applied.
func TestTriggerSchemaInOtherHands(t *testing.T) {
	const mallory = "setup_mallory"
	const fn = `CREATE FUNCTION pgtripwire_ddl.on_ddl_end() RETURNS event_trigger LANGUAGE plpgsql AS $$BEGIN END$$`
	for _, tc := range []struct {
		name    string
		prepare []string // as superuser ("postgres") or mallory, in order
		as      []string
		want    []string
	}{
		{
			name:    "schema and function made first",
			prepare: []string{`CREATE SCHEMA pgtripwire_ddl`, fn},
			as:      []string{mallory, mallory},
			want: []string{"schema pgtripwire_ddl is owned by " + mallory,
				"function pgtripwire_ddl.on_ddl_end() is owned by " + mallory, "ALTER SCHEMA pgtripwire_ddl OWNER TO postgres"},
		},
		{
			name:    "create granted on the schema",
			prepare: []string{`CREATE SCHEMA pgtripwire_ddl; GRANT CREATE, USAGE ON SCHEMA pgtripwire_ddl TO ` + mallory, fn},
			as:      []string{"postgres", mallory},
			want: []string{mallory + " has CREATE on schema pgtripwire_ddl", "REVOKE CREATE ON SCHEMA pgtripwire_ddl FROM " + mallory,
				"function pgtripwire_ddl.on_ddl_end() is owned by " + mallory},
		},
		{
			name:    "create granted to PUBLIC",
			prepare: []string{`CREATE SCHEMA pgtripwire_ddl; GRANT CREATE ON SCHEMA pgtripwire_ddl TO PUBLIC`},
			as:      []string{"postgres"},
			want:    []string{"PUBLIC has CREATE on schema pgtripwire_ddl", "REVOKE CREATE ON SCHEMA pgtripwire_ddl FROM PUBLIC"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := pgtest.NewDatabase(t)
			db.CreateRole(t, mallory)
			db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, password_hash text);
				GRANT CREATE ON DATABASE `+db.Name+` TO `+mallory)
			for i, q := range tc.prepare {
				if _, err := db.Conn(t, tc.as[i]).Exec(t.Context(), q); err != nil {
					t.Fatalf("as %s: %s: %v", tc.as[i], q, err)
				}
			}
			steps, err := setup.Plan(setup.Options{Role: "setup_own_" + db.Name[len(db.Name)-4:], Tables: sensitive(t, "public.users"),
				Publication: "tw_pub", Slot: db.Name, WAL: true})
			if err != nil {
				t.Fatal(err)
			}
			super := db.Conn(t, "postgres")
			_, err = setup.Apply(t.Context(), super, steps)
			var untrusted *ownership.UntrustedError
			if !errors.As(err, &untrusted) {
				t.Fatalf("apply: got %v, want an *ownership.UntrustedError", err)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q: %v", want, err)
				}
			}
			var triggers, definers int
			if err := super.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM pg_event_trigger),
				(SELECT count(*) FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
					WHERE p.pronamespace = 'pgtripwire_ddl'::regnamespace AND NOT r.rolsuper AND p.prosecdef)`).Scan(&triggers, &definers); err != nil {
				t.Fatal(err)
			}
			if triggers != 0 || definers != 0 {
				t.Fatalf("after the refusal: %d event triggers, %d SECURITY DEFINER functions not owned by a superuser; want none", triggers, definers)
			}

			// The fixes the error names are enough: setup then succeeds, and every
			// function of the schema is a superuser's.
			for _, fix := range untrusted.Fixes {
				db.Exec(t, fix)
			}
			if _, err := setup.Apply(t.Context(), super, steps); err != nil {
				t.Fatalf("apply after the fixes: %v", err)
			}
			var owners []string
			rows, err := super.Query(t.Context(), `SELECT DISTINCT r.rolname::text FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
				WHERE p.pronamespace = 'pgtripwire_ddl'::regnamespace`)
			if err != nil {
				t.Fatal(err)
			}
			if owners, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				t.Fatal(err)
			}
			if len(owners) != 1 || owners[0] != "postgres" {
				t.Errorf("trigger functions owned by %v, want postgres only", owners)
			}
		})
	}
}

// TestTriggerSchemaCheckedBeforeCommit: default privileges that give another role
// CREATE on every new schema of the applying role make setup's own new schema
// unsafe. The check after the statements, in their transaction, catches it and
// nothing is left behind.
func TestTriggerSchemaCheckedBeforeCommit(t *testing.T) {
	const mallory = "setup_mallory"
	db := pgtest.NewDatabase(t)
	db.CreateRole(t, mallory)
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, password_hash text);
		ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT CREATE ON SCHEMAS TO `+mallory)
	steps, err := setup.Plan(setup.Options{Role: "setup_dacl_" + db.Name[len(db.Name)-4:], Tables: sensitive(t, "public.users"),
		Publication: "tw_pub", Slot: db.Name, WAL: true})
	if err != nil {
		t.Fatal(err)
	}
	super := db.Conn(t, "postgres")
	_, err = setup.Apply(t.Context(), super, steps)
	if want := mallory + " has CREATE on schema pgtripwire_ddl"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("apply: got %v, want an error containing %q", err, want)
	}
	var schema bool
	var triggers int
	if err := super.QueryRow(t.Context(), `SELECT to_regnamespace('pgtripwire_ddl') IS NOT NULL,
		(SELECT count(*) FROM pg_event_trigger)`).Scan(&schema, &triggers); err != nil {
		t.Fatal(err)
	}
	if schema || triggers != 0 {
		t.Errorf("after the refusal: schema left %v, %d event triggers; want neither", schema, triggers)
	}
}

// With high availability, setup makes the state schema, and the detector's role may
// keep the target's state there and do nothing else with it; applying again changes
// nothing.
func TestApplyHighAvailabilitySchema(t *testing.T) {
	db := pgtest.NewDatabase(t)
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, password_hash text)`)
	role := "setup_ha_" + db.Name[len(db.Name)-4:]
	opts := setup.Options{Role: role, Tables: sensitive(t, "public.users"), HighAvailability: true}
	steps, err := setup.Plan(opts)
	if err != nil {
		t.Fatal(err)
	}
	conn := db.Conn(t, "postgres")
	for range 2 {
		if _, err := setup.Apply(t.Context(), conn, steps); err != nil {
			t.Fatalf("apply: %v", err)
		}
	}
	detector := db.Conn(t, role)
	if _, err := detector.Exec(t.Context(), `INSERT INTO pgtripwire.rule_state VALUES ('eu', now(), 'me', '\x00');
		UPDATE pgtripwire.rule_state SET saved_by = 'me again' WHERE target = 'eu'`); err != nil {
		t.Errorf("the detector cannot keep its state: %v", err)
	}
	for _, sql := range []string{`DELETE FROM pgtripwire.rule_state`, `CREATE TABLE pgtripwire.mine (a int)`, `ALTER TABLE pgtripwire.replay_guard ADD COLUMN x int`} {
		if _, err := detector.Exec(t.Context(), sql); err == nil {
			t.Errorf("the detector's role may %s", sql)
		}
	}
	var owner string
	if err := conn.QueryRow(t.Context(), `SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'pgtripwire'`).Scan(&owner); err != nil || owner == role {
		t.Errorf("schema owner %q (%v), want the administrator's", owner, err)
	}
}
