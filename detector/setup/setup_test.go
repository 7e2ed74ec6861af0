package setup_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/ddlmsg"
	"github.com/pgtripwire/pgtripwire/detector/event"
	"github.com/pgtripwire/pgtripwire/detector/pgtest"
	"github.com/pgtripwire/pgtripwire/detector/setup"
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
	steps, err := setup.Plan(setup.Options{Tables: sensitive(t, "public.users", `"Auth"."Accounts"`), Publication: "pub", Slot: "slot"})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := setup.WritePlan(&b, steps, ""); err != nil {
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
		"CREATE EVENT TRIGGER pgtripwire_ddl_end ON ddl_command_end",
		"ENABLE ALWAYS",
		"SELECT pg_create_logical_replication_slot(E'slot', 'pgoutput');",
		`\password pgtripwire`,
	} {
		if !strings.Contains(plan, want) {
			t.Errorf("plan lacks %q", want)
		}
	}
	if strings.Contains(plan, "PASSWORD '") {
		t.Error("the plan sets a password")
	}
	// Every step names the privilege it needs, before its statements.
	if got, want := strings.Count(plan, "\n-- needs: "), len(steps); got != want {
		t.Errorf("got %d needs: lines, want one per step (%d)", got, want)
	}

	steps, err = setup.Plan(setup.Options{Tables: sensitive(t, "public.users"), SkipReplicaIdentityFull: true})
	if err != nil {
		t.Fatal(err)
	}
	b.Reset()
	_ = setup.WritePlan(&b, steps, "")
	if strings.Contains(b.String(), "REPLICA IDENTITY FULL;") {
		t.Error("--no-replica-identity-full: the plan still alters the replica identity")
	}
	if _, err := setup.Plan(setup.Options{}); err == nil {
		t.Error("a plan without sensitive tables was accepted")
	}
}

// TestApplyIsIdempotent applies the plan twice and checks what the role can and
// cannot do.
func TestApplyIsIdempotent(t *testing.T) {
	db := pgtest.NewDatabase(t)
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, password_hash text);
		CREATE TABLE public.orders (id int PRIMARY KEY)`)
	role := "setup_idem_" + db.Name[len(db.Name)-4:]
	steps, err := setup.Plan(setup.Options{Role: role, Tables: sensitive(t, "public.users"), Publication: "tw_pub", Slot: db.Name})
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
		Publication: "tw_pub", Slot: db.Name, SkipReplicaIdentityFull: true})
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
		Publication: "tw_pub", Slot: db.Name})
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
				if e.Source != event.SourceDDL {
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
func readMessages(t *testing.T, db *pgtest.Database, slot, pub string) (raw []string, evs []event.Event) {
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
