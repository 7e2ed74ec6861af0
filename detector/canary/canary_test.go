package canary_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/pgtripwire/pgtripwire/detector/canary"
	"github.com/pgtripwire/pgtripwire/detector/setup/ownership"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

// TestReadsTripTheCanary is acceptance 1: every way of reading the whole table, by a
// role that is not a superuser, makes the canary function emit a message naming that
// role within 3 s; the application's ordinary queries emit none.
func TestReadsTripTheCanary(t *testing.T) {
	db := newUsers(t, 2000)
	msgs := newMessages(t, db)
	planted := plant(t, db, 3)
	ids := make([]string, len(planted.Canaries))
	for i, c := range planted.Canaries {
		ids[i] = c.ID
	}
	db.Exec(t, `CREATE VIEW public.user_emails AS SELECT id, email FROM public.users;
		ALTER VIEW public.user_emails OWNER TO `+owner+`;
		GRANT SELECT ON public.user_emails TO `+reader+`;
		CREATE INDEX ON public.users (lower(email));
		ALTER TABLE public.users ADD COLUMN email_lower text GENERATED ALWAYS AS (lower(email)) STORED;
		CREATE UNIQUE INDEX ON public.users (email_lower)`)
	// The tamper check runs beside the WAL source in the detector, and flushes the
	// WAL the canary messages wait in: run it as the detector would.
	startSource(t, db)
	msgs.until() // nothing before this point counts

	ctx := t.Context()
	readAll := func(sql string) func(*pgx.Conn) error {
		return func(c *pgx.Conn) error {
			rows, err := c.Query(ctx, sql)
			if err != nil {
				return err
			}
			rows.Close()
			return rows.Err()
		}
	}
	inTx := func(begin, end string, sqls ...string) func(*pgx.Conn) error {
		return func(c *pgx.Conn) error {
			if _, err := c.Exec(ctx, begin); err != nil {
				return err
			}
			for _, s := range sqls {
				if err := readAll(s)(c); err != nil {
					return err
				}
			}
			_, err := c.Exec(ctx, end)
			return err
		}
	}
	// visitor is the statement each case ends with: the one that visits the canaries,
	// whose text the message must carry.
	trips := []struct {
		name    string
		as      string
		read    func(*pgx.Conn) error
		visitor string
	}{
		{"select star", reader, readAll(`SELECT * FROM public.users`), `SELECT * FROM public.users`},
		{"count email", reader, readAll(`SELECT count(email) FROM public.users`), `SELECT count(email) FROM public.users`},
		{"count star", reader, readAll(`SELECT count(*) FROM public.users`), `SELECT count(*) FROM public.users`},
		{"copy to stdout", reader, func(c *pgx.Conn) error {
			_, err := c.PgConn().CopyTo(ctx, io.Discard, `COPY public.users TO STDOUT`)
			return err
		}, `COPY public.users TO STDOUT`},
		{"through a view", reader, readAll(`SELECT email FROM public.user_emails`), `SELECT email FROM public.user_emails`},
		{"cursor fetch", reader, inTx("BEGIN", "COMMIT",
			`DECLARE c CURSOR FOR SELECT email, password_hash FROM public.users`, `FETCH ALL FROM c`), `FETCH ALL FROM c`},
		{"read-only transaction", reader, inTx("BEGIN READ ONLY", "COMMIT", `SELECT email FROM public.users`),
			`SELECT email FROM public.users`},
		{"rolled back", reader, inTx("BEGIN", "ROLLBACK", `SELECT email FROM public.users`), `SELECT email FROM public.users`},
		{"table owner", owner, readAll(`SELECT email, password_hash FROM public.users`), `SELECT email, password_hash FROM public.users`},
		// A parallel worker reports its leader's pid, client and statement.
		{"parallel scan", reader, inTx("BEGIN", "COMMIT",
			`SET LOCAL parallel_setup_cost = 0`, `SET LOCAL parallel_tuple_cost = 0`,
			`SET LOCAL min_parallel_table_scan_size = 0`, `SET LOCAL max_parallel_workers_per_gather = 2`,
			`SELECT count(email) FROM public.users`), `SELECT count(email) FROM public.users`},
		// A documented limit, not a wish: lower() is not leakproof, so row security
		// evaluates the policy first, on every row, and the expression index cannot
		// be used (docs/canary.md).
		{"lookup by lower(email) despite an expression index", owner,
			readAll(`SELECT id FROM public.users WHERE lower(email) = lower('User79@example.com')`),
			`SELECT id FROM public.users WHERE lower(email) = lower('User79@example.com')`},
		{"mass update", owner, inTx("BEGIN", "ROLLBACK", `UPDATE public.users SET password_hash = 'x'`),
			`UPDATE public.users SET password_hash = 'x'`},
	}
	for _, tc := range trips {
		t.Run(tc.name, func(t *testing.T) {
			msgs.t = t
			cfg, err := pgx.ParseConfig(db.DSN(tc.as))
			if err != nil {
				t.Fatal(err)
			}
			cfg.RuntimeParams["application_name"] = "canary-test"
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.WithoutCancel(ctx))
			pid := int32(conn.PgConn().PID())
			msgs.visits = nil
			if err := tc.read(conn); err != nil {
				t.Fatalf("read: %v", err)
			}
			got, ok := msgs.waitFor(func(ev model.Event) bool { return ev.Role == tc.as && ev.PID == pid })
			if !ok {
				t.Fatalf("no canary message for role %s, pid %d within 3s; got%s", tc.as, pid, describe(got))
			}
			for _, ev := range got {
				if ev.Source != canary.Source || ev.Kind != canary.KindRead || !slices.Contains(ids, ev.Object) ||
					ev.Relation != "public.users" || ev.Database != db.Name || ev.Application != "canary-test" ||
					ev.ClientAddr != "127.0.0.1" {
					t.Errorf("got event %+v, want a canary_read of one of %v in %s from canary-test at 127.0.0.1", ev, ids, db.Name)
				}
			}
			for _, v := range msgs.visits {
				if v.Event.PID == pid && (!v.HasStatement || v.Statement != tc.visitor || v.Truncated || v.TriggerDepth != 0) {
					t.Errorf("visit of %s reports statement %q (known %v, cut %v, trigger depth %d), want %q",
						v.Event.Object, v.Statement, v.HasStatement, v.Truncated, v.TriggerDepth, tc.visitor)
				}
			}
			msgs.until()
		})
	}

	none := []struct {
		name string
		as   string
		sql  string
		args []any
	}{
		{"point lookup by id", reader, `SELECT * FROM public.users WHERE id = $1`, []any{int64(42)}},
		{"lookup by email", owner, `SELECT id, password_hash FROM public.users WHERE email = $1`, []any{"user77@example.com"}},
		{"lookup by username without index", owner, `SELECT id FROM public.users WHERE username = $1`, []any{"user78"}},
		// The leakproof form of a case-insensitive login (docs/canary.md): lower() on
		// the parameter, not on the column.
		{"lookup by a lower-cased column", owner, `SELECT id, password_hash FROM public.users WHERE email_lower = lower($1)`,
			[]any{"User79@example.com"}},
		{"first page", owner, `SELECT id, email FROM public.users ORDER BY id LIMIT 20`, nil},
		{"insert", owner, `INSERT INTO public.users (email, username, password_hash, active) VALUES (gen_random_uuid()::text || '@example.com', 'new', 'h', true)`, nil},
		{"update by id", owner, `UPDATE public.users SET password_hash = 'h2' WHERE id = $1`, []any{int64(43)}},
		{"delete by id", owner, `DELETE FROM public.users WHERE id = $1`, []any{int64(44)}},
	}
	for _, tc := range none {
		t.Run(tc.name, func(t *testing.T) {
			msgs.t = t
			conn := db.Conn(t, tc.as)
			for range 3 { // past pgx's statement cache and the plan cache's custom plans
				if _, err := conn.Exec(ctx, tc.sql, tc.args...); err != nil {
					t.Fatal(err)
				}
			}
			if got := msgs.until(); len(got) > 0 {
				t.Errorf("got canary messages:%s", describe(got))
			}
		})
	}

	t.Run("rows visible", func(t *testing.T) {
		// The policy hides nothing: the reader sees the ordinary rows and the canaries.
		conn := db.Conn(t, reader)
		got := scalar[int64](t, conn, `SELECT count(*) FROM public.users`)
		want := scalar[int64](t, db.Conn(t, "postgres"), `SELECT count(*) FROM public.users`)
		if got != want {
			t.Errorf("reader sees %d rows, superuser %d", got, want)
		}
	})
}

// TestCanaryRowsLookReal checks what an intruder with the dump sees. The table's keys
// have no gap: the canaries take the next ones.
func TestCanaryRowsLookReal(t *testing.T) {
	db := newUsers(t, 10)
	planted := plant(t, db, 5)
	conn := db.Conn(t, "postgres")
	for _, c := range planted.Canaries {
		if k, err := strconv.Atoi(c.Key); err != nil || k <= 10 {
			t.Errorf("canary %s: want a key after the real rows' (1 to 10)", c.ID)
		}
		var email, username, hash string
		if err := conn.QueryRow(t.Context(), `SELECT email, username, password_hash FROM public.users WHERE id::text = $1`, c.Key).
			Scan(&email, &username, &hash); err != nil {
			t.Fatal(err)
		}
		if email != username+"@"+domain {
			t.Errorf("canary %s: email %q, want %s@%s", c.ID, email, username, domain)
		}
		cost, err := bcrypt.Cost([]byte(hash))
		if err != nil || cost != 11 {
			t.Errorf("canary %s: hash %q: cost %d, %v; want a bcrypt hash of cost 11 like its neighbours", c.ID, hash, cost, err)
		}
	}
	list, err := canary.List(t.Context(), conn)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 5 {
		t.Errorf("List: got %d canaries, want 5", len(list))
	}
}

// rlsSnapshot is what the owner and the readers of a table can observe of it.
type rlsSnapshot struct {
	Enabled, Forced bool
	Policies        string
	Rows            string
	Schema          bool
}

func snapshot(t *testing.T, conn *pgx.Conn) rlsSnapshot {
	t.Helper()
	var s rlsSnapshot
	err := conn.QueryRow(t.Context(), `
		SELECT c.relrowsecurity, c.relforcerowsecurity,
			coalesce((SELECT string_agg(polname || ':' || polpermissive || ':' || pg_get_expr(polqual, polrelid), ';' ORDER BY polname)
				FROM pg_policy WHERE polrelid = c.oid), ''),
			(SELECT md5(string_agg(u::text, ',' ORDER BY id)) FROM public.users u),
			to_regnamespace('pgtripwire_canary') IS NOT NULL
		FROM pg_class c WHERE c.oid = 'public.users'::regclass`).Scan(&s.Enabled, &s.Forced, &s.Policies, &s.Rows, &s.Schema)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPolicyCombination plants in tables with each starting row security state and
// checks that every role sees the same ordinary rows as before, and that Remove
// restores the table exactly.
func TestPolicyCombination(t *testing.T) {
	for _, tc := range []struct {
		name      string
		setup     string
		wantAllow bool
		refused   string
	}{
		{name: "no row security", wantAllow: true},
		{name: "enabled with a permissive policy", setup: `
			CREATE POLICY only_active ON public.users FOR SELECT TO ` + reader + ` USING (active);
			ALTER TABLE public.users ENABLE ROW LEVEL SECURITY`, wantAllow: true},
		{name: "forced with a permissive policy", setup: `
			CREATE POLICY only_active ON public.users FOR ALL USING (active);
			ALTER TABLE public.users ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY`},
		{name: "dormant policies", setup: `CREATE POLICY only_active ON public.users USING (active)`,
			refused: "bring them into force"},
		{name: "unforced restrictive policy", setup: `
			CREATE POLICY everyone ON public.users USING (true);
			CREATE POLICY only_active ON public.users AS RESTRICTIVE USING (active);
			ALTER TABLE public.users ENABLE ROW LEVEL SECURITY`, refused: "only_active"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := newUsers(t, 100)
			if tc.setup != "" {
				db.Exec(t, tc.setup)
			}
			super := db.Conn(t, "postgres")
			visible := func() map[string][]int64 {
				out := map[string][]int64{}
				for _, r := range []string{owner, reader} {
					rows, err := db.Conn(t, r).Query(t.Context(), `SELECT id FROM public.users WHERE id <= 100 ORDER BY id`)
					if err != nil {
						t.Fatal(err)
					}
					out[r], err = pgx.CollectRows(rows, pgx.RowTo[int64])
					if err != nil {
						t.Fatal(err)
					}
				}
				return out
			}
			before, seenBefore := snapshot(t, super), visible()

			p, err := canary.Plant(t.Context(), super, canary.Options{Table: "public.users", Domain: domain})
			if tc.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("Plant: got %v, want a refusal mentioning %q", err, tc.refused)
				}
				if got := snapshot(t, super); got != before {
					t.Errorf("a refused Plant changed the table:\n got %+v\nwant %+v", got, before)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.AllowPolicy != tc.wantAllow {
				t.Errorf("AllowPolicy: got %v, want %v", p.AllowPolicy, tc.wantAllow)
			}
			if got := snapshot(t, super); !got.Enabled || !got.Forced {
				t.Errorf("after Plant: row security enabled %v, forced %v; want both", got.Enabled, got.Forced)
			}
			if got := visible(); !equalVisible(got, seenBefore) {
				t.Errorf("ordinary rows visible after Plant differ:\n got %v\nwant %v", got, seenBefore)
			}

			// A second Plant adds rows and keeps the state recorded by the first.
			if _, err := canary.Plant(t.Context(), super, canary.Options{Table: "public.users", Count: 1, Domain: domain}); err != nil {
				t.Fatal(err)
			}
			rm, err := canary.Remove(t.Context(), super, "public.users")
			if err != nil {
				t.Fatal(err)
			}
			if rm.Rows != 4 || !rm.RegistryDropped {
				t.Errorf("Remove: got %+v, want 4 rows deleted and the registry dropped", rm)
			}
			if got := snapshot(t, super); got != before {
				t.Errorf("Remove did not restore the table:\n got %+v\nwant %+v", got, before)
			}
			if _, err := canary.Remove(t.Context(), super, "public.users"); !errors.Is(err, canary.ErrNotPlanted) {
				t.Errorf("second Remove: got %v, want ErrNotPlanted", err)
			}
		})
	}
}

func equalVisible(a, b map[string][]int64) bool {
	for k := range b {
		if !slices.Equal(a[k], b[k]) {
			return false
		}
	}
	return len(a) == len(b)
}

func TestPlantErrors(t *testing.T) {
	db := pgtest.NewDatabase(t)
	db.CreateRole(t, owner)
	db.Exec(t, `
		CREATE TABLE public.nokey (email text);
		CREATE TABLE public.located (id serial PRIMARY KEY, email text, home point NOT NULL);
		CREATE TABLE public.owned (id serial PRIMARY KEY, email text);
		ALTER TABLE public.owned OWNER TO `+owner)
	for _, tc := range []struct {
		name, as, table, domain, want string
	}{
		{"no primary key", "postgres", "public.nokey", domain, "single-column primary key"},
		{"column without a plausible value", "postgres", "public.located", domain, "column home (point) is NOT NULL"},
		{"not a superuser", owner, "public.owned", domain, "permission denied"},
		{"no domain", "postgres", "public.owned", "", "domain is required"},
		{"unqualified", "postgres", "owned", domain, "want schema.table"},
		{"missing table", "postgres", "public.nope", domain, "does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := db.Conn(t, tc.as)
			_, err := canary.Plant(t.Context(), conn, canary.Options{Table: tc.table, Domain: tc.domain})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if got := scalar[bool](t, db.Conn(t, "postgres"), `SELECT to_regnamespace('pgtripwire_canary') IS NULL`); !got {
		t.Error("a failed Plant left the registry schema behind")
	}
}

// TestPlantRefusesASchemaInOtherHands: a role that may CREATE in the database makes
// the canary schema and function before the first plant. CREATE OR REPLACE would
// keep it as the owner of the SECURITY DEFINER function the policy calls: Plant must
// refuse, naming the owner and the fix, and change nothing; once the fix is applied
// it plants, and the function is the planting superuser's.
func TestPlantRefusesASchemaInOtherHands(t *testing.T) {
	const mallory = "canary_mallory"
	db := newUsers(t, 10)
	db.CreateRole(t, mallory)
	db.Exec(t, `GRANT CREATE ON DATABASE `+db.Name+` TO `+mallory)
	if _, err := db.Conn(t, mallory).Exec(t.Context(), `CREATE SCHEMA pgtripwire_canary;
		CREATE FUNCTION pgtripwire_canary.tripped(rel regclass, key text) RETURNS boolean LANGUAGE sql AS 'SELECT true'`); err != nil {
		t.Fatal(err)
	}
	super := db.Conn(t, "postgres")
	before := snapshot(t, super)

	_, err := canary.Plant(t.Context(), super, canary.Options{Table: "public.users", Domain: domain})
	var untrusted *ownership.UntrustedError
	if !errors.As(err, &untrusted) {
		t.Fatalf("Plant: got %v, want an *ownership.UntrustedError", err)
	}
	for _, want := range []string{"schema pgtripwire_canary is owned by " + mallory,
		"function pgtripwire_canary.tripped(regclass,text) is owned by " + mallory,
		"ALTER SCHEMA pgtripwire_canary OWNER TO postgres", "DROP SCHEMA pgtripwire_canary CASCADE"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if got := snapshot(t, super); got != before {
		t.Errorf("a refused Plant changed the table:\n got %+v\nwant %+v", got, before)
	}
	definer := `SELECT p.prosecdef FROM pg_proc p WHERE p.oid = 'pgtripwire_canary.tripped(regclass,text)'::regprocedure`
	if scalar[bool](t, super, definer) {
		t.Errorf("the function owned by %s was made SECURITY DEFINER", mallory)
	}

	for _, fix := range untrusted.Fixes {
		db.Exec(t, fix)
	}
	if _, err := canary.Plant(t.Context(), super, canary.Options{Table: "public.users", Domain: domain}); err != nil {
		t.Fatalf("Plant after the fixes: %v", err)
	}
	if got := scalar[string](t, super, `SELECT r.rolname::text FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
		WHERE p.oid = 'pgtripwire_canary.tripped(regclass,text)'::regprocedure AND p.prosecdef`); got != "postgres" {
		t.Errorf("canary function owned by %s, want postgres", got)
	}
}

// TestPlantForAnOwnerNeedingQuotes: the permissive policy that keeps the owner's view
// whole names the owner; a name such as app-owner must be quoted once, not twice.
func TestPlantForAnOwnerNeedingQuotes(t *testing.T) {
	const appOwner = "canary app-owner"
	db := newUsers(t, 10)
	db.CreateRole(t, appOwner)
	db.Exec(t, `ALTER TABLE public.users OWNER TO "`+appOwner+`";
		CREATE POLICY only_active ON public.users FOR SELECT TO `+reader+` USING (active);
		ALTER TABLE public.users ENABLE ROW LEVEL SECURITY`)
	super := db.Conn(t, "postgres")
	p, err := canary.Plant(t.Context(), super, canary.Options{Table: "public.users", Domain: domain})
	if err != nil {
		t.Fatalf("Plant: %v", err)
	}
	if !p.AllowPolicy {
		t.Fatal("no permissive policy added for the owner")
	}
	if got := scalar[string](t, super, `SELECT array_to_string(roles, ',') FROM pg_policies
		WHERE tablename = 'users' AND policyname = $1`, canary.AllowPolicyName); got != appOwner {
		t.Errorf("permissive policy for %q, want %q", got, appOwner)
	}
	// The owner, now subject to the policies, still sees every row.
	if got, want := scalar[int64](t, db.Conn(t, appOwner), `SELECT count(*) FROM public.users`), int64(10+canary.DefaultCount); got != want {
		t.Errorf("owner sees %d rows, want %d", got, want)
	}
	if _, err := canary.Remove(t.Context(), super, "public.users"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
}

// TestVisitsTheStatementDoesNotExplain: a canary row visited from a trigger is reported
// with the trigger depth (the statement's text is the one that set the trigger off),
// and a statement longer than the message carries is reported cut, at its limit.
func TestVisitsTheStatementDoesNotExplain(t *testing.T) {
	db := newUsers(t, 100)
	msgs := newMessages(t, db)
	plant(t, db, 2)
	db.Exec(t, `CREATE TABLE public.audit (x int);
		GRANT INSERT ON public.audit TO `+reader+`;
		CREATE FUNCTION public.audit_count() RETURNS trigger LANGUAGE plpgsql AS
			$$BEGIN PERFORM count(*) FROM public.users; RETURN NULL; END$$;
		CREATE TRIGGER audit_count AFTER INSERT ON public.audit FOR EACH STATEMENT EXECUTE FUNCTION public.audit_count()`)
	startSource(t, db)
	msgs.until()
	conn := db.Conn(t, reader)
	ctx := t.Context()

	for _, tc := range []struct {
		name, sql string
		check     func(v canary.Visit) bool
		want      string
	}{
		{"trigger", `INSERT INTO public.audit VALUES (1)`, func(v canary.Visit) bool {
			return v.TriggerDepth == 1 && v.Statement == `INSERT INTO public.audit VALUES (1)` && !v.Truncated
		}, "the INSERT at trigger depth 1"},
		{"long statement", `SELECT count(*) FROM public.users /* ` + strings.Repeat("x", 20000) + ` */`, func(v canary.Visit) bool {
			return v.Truncated && v.HasStatement && len(v.Statement) == 16384 && v.TriggerDepth == 0
		}, "the statement cut at 16384 characters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msgs.t, msgs.visits = t, nil
			if _, err := conn.Exec(ctx, tc.sql); err != nil {
				t.Fatal(err)
			}
			msgs.until()
			if len(msgs.visits) == 0 {
				t.Fatal("no canary message")
			}
			for _, v := range msgs.visits {
				if !tc.check(v) {
					t.Errorf("got statement of %d bytes (known %v, cut %v, trigger depth %d), want %s",
						len(v.Statement), v.HasStatement, v.Truncated, v.TriggerDepth, tc.want)
				}
			}
		})
	}
}
