package classify

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
)

var defaultPath = []string{"$user", "public"}

// testSnapshot is the catalog the table tests resolve against.
func testSnapshot(t testing.TB) *catalog.Snapshot {
	t.Helper()
	snap, err := catalog.New([]catalog.Relation{
		{Schema: "public", Name: "users", Kind: catalog.Table, Columns: []string{"id", "email", "username", "password_hash", "created_at"}},
		{Schema: "public", Name: "orders", Kind: catalog.Table, Columns: []string{"id", "user_id", "total"}},
		{Schema: "public", Name: "user_emails", Kind: catalog.View, Columns: []string{"id", "email"},
			ViewDef: " SELECT id,\n    email\n   FROM users\n  WHERE created_at > '2020-01-01'::date;"},
		{Schema: "public", Name: "user_names", Kind: catalog.View, Columns: []string{"uid", "name"},
			ViewDef: " SELECT user_emails.id AS uid,\n    u.username AS name\n   FROM user_emails\n     JOIN users u USING (id);"},
		{Schema: "public", Name: "login_mv", Kind: catalog.MaterializedView, Columns: []string{"id", "hash"},
			ViewDef: " SELECT id,\n    password_hash AS hash\n   FROM users;"},
		{Schema: "public", Name: "loop_a", Kind: catalog.View, Columns: []string{"x"}, ViewDef: "SELECT x FROM loop_b"},
		{Schema: "public", Name: "loop_b", Kind: catalog.View, Columns: []string{"x"}, ViewDef: "SELECT x FROM loop_a"},
		{Schema: "public", Name: "no_def", Kind: catalog.View, Columns: []string{"email"}},
		{Schema: "public", Name: "backup", Kind: catalog.Table, Columns: []string{"email", "note"}},
		{Schema: "Billing", Name: "Cards", Kind: catalog.Table, Columns: []string{"id", "Number"}},
		// Off the search path: reached only by a session's own search_path.
		{Schema: "auth", Name: "sessions", Kind: catalog.Table, Columns: []string{"id", "user_id", "token"}},
	}, map[string][]string{
		"public.users":       {"email", "username", "password_hash"},
		"auth.sessions":      {"token"},
		`"Billing"."Cards"`:  {`"Number"`},
		"public.not_created": {"x"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

const (
	email    = "public.users.email"
	username = "public.users.username"
	password = "public.users.password_hash"
)

type want struct {
	op string
	// name is the cursor or prepared statement name.
	name       string
	relations  []string
	read       []string
	referenced []string
	incomplete bool
	// problem, when set, must occur in one of the problems.
	problem string
	// problems, when set, are all the problems.
	problems []string
}

func check(t *testing.T, got Result, w want) {
	t.Helper()
	if got.Operation != w.op {
		t.Errorf("Operation: got %q, want %q", got.Operation, w.op)
	}
	if got.Name != w.name {
		t.Errorf("Name: got %q, want %q", got.Name, w.name)
	}
	if !equal(got.Relations, w.relations) {
		t.Errorf("Relations: got %q, want %q", got.Relations, w.relations)
	}
	if !equal(got.SensitiveRead, w.read) {
		t.Errorf("SensitiveRead: got %q, want %q", got.SensitiveRead, w.read)
	}
	if !equal(got.SensitiveReferenced, w.referenced) {
		t.Errorf("SensitiveReferenced: got %q, want %q", got.SensitiveReferenced, w.referenced)
	}
	if got.Complete == w.incomplete {
		t.Errorf("Complete: got %v, want %v (problems %q)", got.Complete, !w.incomplete, got.Problems)
	}
	if w.problem != "" && !slices.ContainsFunc(got.Problems, func(p string) bool { return strings.Contains(p, w.problem) }) {
		t.Errorf("Problems: got %q, want one containing %q", got.Problems, w.problem)
	}
	if w.problems != nil && !slices.Equal(got.Problems, w.problems) {
		t.Errorf("Problems: got %q, want %q", got.Problems, w.problems)
	}
}

func TestClassify(t *testing.T) {
	snap := testSnapshot(t)
	users := []string{"public.users"}
	tests := []struct {
		name string
		sql  string
		want want
	}{
		// Plain reads.
		{"credential columns", "SELECT email, username, password_hash FROM users",
			want{op: "SELECT", relations: users, read: []string{email, password, username}}},
		{"read and predicate", "SELECT id, password_hash FROM users WHERE username = $1",
			want{op: "SELECT", relations: users, read: []string{password}, referenced: []string{username}}},
		{"star", "SELECT * FROM users",
			want{op: "SELECT", relations: users, read: []string{email, password, username}}},
		{"qualified star", "SELECT o.*, u.id FROM orders o JOIN users u ON u.id = o.user_id",
			want{op: "SELECT", relations: []string{"public.orders", "public.users"}}},
		{"alias star", "SELECT u.* FROM users u",
			want{op: "SELECT", relations: users, read: []string{email, password, username}}},
		{"whole row", "SELECT u FROM users u",
			want{op: "SELECT", relations: users, read: []string{email, password, username}}},
		{"whole row by table name", "SELECT users FROM users",
			want{op: "SELECT", relations: users, read: []string{email, password, username}}},
		{"row_to_json", "SELECT row_to_json(u) FROM users u WHERE u.id = $1",
			want{op: "SELECT", relations: users, read: []string{email, password, username}}},
		{"field of whole row", "SELECT (u).email FROM users u",
			want{op: "SELECT", relations: users, read: []string{email}}},
		{"count with predicate", "SELECT count(*) FROM users WHERE email = $1",
			want{op: "SELECT", relations: users, referenced: []string{email}}},
		{"count distinct", "SELECT count(DISTINCT email) FROM users",
			want{op: "SELECT", relations: users, referenced: []string{email}}},
		{"function of column", "SELECT lower(email) FROM public.users",
			want{op: "SELECT", relations: users, read: []string{email}}},
		{"string_agg", "SELECT string_agg(email, ',' ORDER BY username) FROM users",
			want{op: "SELECT", relations: users, read: []string{email}, referenced: []string{username}}},
		{"json_agg and coalesce", "SELECT json_agg(coalesce(username, $1)::text) FROM users",
			want{op: "SELECT", relations: users, read: []string{username}}},
		{"case", "SELECT CASE WHEN id > $1 THEN email ELSE $2 END FROM users",
			want{op: "SELECT", relations: users, read: []string{email}}},
		{"exists", "SELECT exists(SELECT 1 FROM users WHERE email = $1)",
			want{op: "SELECT", relations: users, referenced: []string{email}}},
		{"in subquery", "SELECT id FROM orders WHERE user_id IN (SELECT id FROM users WHERE username LIKE $1)",
			want{op: "SELECT", relations: []string{"public.orders", "public.users"}, referenced: []string{username}}},
		{"scalar subquery in target list", "SELECT o.id, (SELECT email FROM users u WHERE u.id = o.user_id) FROM orders o",
			want{op: "SELECT", relations: []string{"public.orders", "public.users"}, read: []string{email}}},
		{"limit offset", "SELECT email FROM users LIMIT 500 OFFSET $1",
			want{op: "SELECT", relations: users, read: []string{email}}},
		{"order group having", "SELECT id FROM users GROUP BY id, username HAVING max(email) > $1 ORDER BY password_hash",
			want{op: "SELECT", relations: users, referenced: []string{email, password, username}}},
		{"order by output name", "SELECT lower(email) AS e FROM users ORDER BY e",
			want{op: "SELECT", relations: users, read: []string{email}}},
		{"distinct", "SELECT count(*) FROM (SELECT DISTINCT username FROM users) s",
			want{op: "SELECT", relations: users, referenced: []string{username}}},
		{"window", "SELECT id, rank() OVER (PARTITION BY username ORDER BY email) FROM users",
			want{op: "SELECT", relations: users, referenced: []string{email, username}}},
		{"no sensitive column", "SELECT id FROM orders",
			want{op: "SELECT", relations: []string{"public.orders"}}},
		{"id only from users", "SELECT id, created_at FROM users WHERE id = $1",
			want{op: "SELECT", relations: users}},

		// Names.
		{"quoted", `SELECT "email" FROM "users"`,
			want{op: "SELECT", relations: users, read: []string{email}}},
		{"schema qualified", `SELECT public.users.email FROM public.users`,
			want{op: "SELECT", relations: users, read: []string{email}}},
		{"quoted schema qualified", `SELECT u."password_hash" FROM "public"."users" AS u`,
			want{op: "SELECT", relations: users, read: []string{password}}},
		{"upper case folds", `SELECT EMAIL FROM Public.USERS`,
			want{op: "SELECT", relations: users, read: []string{email}}},
		{"quoted upper case does not fold", `SELECT 1 FROM "Users"`,
			want{op: "SELECT", incomplete: true, problem: `unknown relation "Users"`}},
		{"mixed-case names", `SELECT "Number" FROM "Billing"."Cards"`,
			want{op: "SELECT", relations: []string{`"Billing"."Cards"`}, read: []string{`"Billing"."Cards"."Number"`}}},
		{"unknown relation", "SELECT * FROM accounts",
			want{op: "SELECT", incomplete: true, problem: "unknown relation accounts"}},
		{"unknown column", "SELECT emial FROM users",
			want{op: "SELECT", relations: users, incomplete: true, problem: "unresolved column reference emial"}},
		{"system catalog", "SELECT relname FROM pg_class WHERE relkind = $1",
			want{op: "SELECT", relations: []string{"pg_catalog.pg_class"}}},
		{"information_schema", "SELECT column_name FROM information_schema.columns",
			want{op: "SELECT", relations: []string{"information_schema.columns"}}},
		{"sensitive table off the search path", "SELECT user_id, token FROM sessions",
			want{op: "SELECT", relations: []string{"auth.sessions"}, read: []string{"auth.sessions.token"}, incomplete: true,
				problems: []string{
					`relation name "sessions" is ambiguous: a session search_path could resolve it to sensitive table auth.sessions`,
					"unknown relation sessions",
				}}},
		{"sensitive table off the search path, qualified", "SELECT user_id, token FROM auth.sessions",
			want{op: "SELECT", relations: []string{"auth.sessions"}, read: []string{"auth.sessions.token"}}},

		// Joins.
		{"join", "SELECT o.total, u.email FROM orders o JOIN users u ON u.id = o.user_id WHERE u.username = $1",
			want{op: "SELECT", relations: []string{"public.orders", "public.users"}, read: []string{email}, referenced: []string{username}}},
		{"join using", "SELECT id, username FROM users JOIN orders USING (id)",
			want{op: "SELECT", relations: []string{"public.orders", "public.users"}, read: []string{username}}},
		{"natural join star", "SELECT * FROM users NATURAL JOIN backup",
			want{op: "SELECT", relations: []string{"public.backup", "public.users"}, read: []string{email, password, username}}},
		{"aliased join", "SELECT j.email FROM (users u JOIN orders o ON o.user_id = u.id) AS j",
			want{op: "SELECT", relations: []string{"public.orders", "public.users"}, read: []string{email}}},
		{"left join lateral", "SELECT o.id, x.e FROM orders o LEFT JOIN LATERAL (SELECT email AS e FROM users u WHERE u.id = o.user_id) x ON true",
			want{op: "SELECT", relations: []string{"public.orders", "public.users"}, read: []string{email}}},
		{"comma join", "SELECT username FROM users, orders WHERE users.id = orders.user_id",
			want{op: "SELECT", relations: []string{"public.orders", "public.users"}, read: []string{username}}},

		// Derived tables, CTEs, set operations.
		{"derived table", "SELECT e FROM (SELECT email AS e, username AS n FROM users) s",
			want{op: "SELECT", relations: users, read: []string{email}}},
		{"derived table column aliases", "SELECT b FROM (SELECT email, username FROM users) AS s(a, b)",
			want{op: "SELECT", relations: users, read: []string{username}}},
		{"cte", "WITH x AS (SELECT id, password_hash FROM users) SELECT password_hash FROM x",
			want{op: "SELECT", relations: users, read: []string{password}}},
		{"cte star", "WITH x(a, b) AS (SELECT email, id FROM users) SELECT * FROM x",
			want{op: "SELECT", relations: users, read: []string{email}}},
		{"cte unused column", "WITH x AS (SELECT id, email FROM users) SELECT id FROM x",
			want{op: "SELECT", relations: users}},
		{"cte shadows table", "WITH users AS (SELECT id, total AS email FROM orders) SELECT email FROM users",
			want{op: "SELECT", relations: []string{"public.orders"}}},
		{"recursive cte", "WITH RECURSIVE r(n, e) AS (SELECT 1, email FROM users UNION ALL SELECT n + 1, e FROM r WHERE n < 3) SELECT e FROM r",
			want{op: "SELECT", relations: users, read: []string{email}}},
		{"union", "SELECT username FROM users UNION SELECT $1",
			want{op: "SELECT", relations: users, read: []string{username}}},
		{"union all second branch", "SELECT id::text FROM orders UNION ALL SELECT email FROM users",
			want{op: "SELECT", relations: []string{"public.orders", "public.users"}, read: []string{email}}},
		{"except right side filters", "SELECT id FROM orders EXCEPT SELECT length(email) FROM users",
			want{op: "SELECT", relations: []string{"public.orders", "public.users"}, referenced: []string{email}}},
		{"values", "SELECT * FROM (VALUES ((SELECT email FROM users LIMIT 1))) v(x)",
			want{op: "SELECT", relations: users, read: []string{email}}},

		// Views.
		{"view", "SELECT email FROM user_emails",
			want{op: "SELECT", relations: []string{"public.user_emails", "public.users"}, read: []string{email}}},
		{"view unused column", "SELECT id FROM user_emails",
			want{op: "SELECT", relations: []string{"public.user_emails", "public.users"}}},
		{"view over view", "SELECT * FROM user_names",
			want{op: "SELECT", relations: []string{"public.user_emails", "public.user_names", "public.users"}, read: []string{username}}},
		{"materialized view", "SELECT hash FROM login_mv",
			want{op: "SELECT", relations: []string{"public.login_mv", "public.users"}, read: []string{password}}},
		{"view cycle", "SELECT x FROM loop_a",
			want{op: "SELECT", relations: []string{"public.loop_a", "public.loop_b"}, incomplete: true, problem: "defined in terms of itself"}},
		{"view without definition", "SELECT email FROM no_def",
			want{op: "SELECT", relations: []string{"public.no_def"}, incomplete: true, problem: "definition of view public.no_def is not available"}},

		// Writes and RETURNING.
		{"insert values", "INSERT INTO users (email, username) VALUES ($1, $2)",
			want{op: "INSERT", relations: users}},
		{"insert returning", "INSERT INTO users (email) VALUES ($1) RETURNING id, email",
			want{op: "INSERT", relations: users, read: []string{email}}},
		{"insert select copies", "INSERT INTO backup (email, note) SELECT email, $1 FROM users",
			want{op: "INSERT", relations: []string{"public.backup", "public.users"}, read: []string{email}}},
		{"update returning star", "UPDATE users SET username = $1 WHERE id = $2 RETURNING *",
			want{op: "UPDATE", relations: users, read: []string{email, password, username}}},
		{"update within table", "UPDATE users SET username = email WHERE password_hash IS NULL",
			want{op: "UPDATE", relations: users, referenced: []string{email, password}}},
		{"update from copies out", "UPDATE backup b SET note = u.email FROM users u WHERE u.email = b.email",
			want{op: "UPDATE", relations: []string{"public.backup", "public.users"}, read: []string{email}}},
		{"delete returning", "DELETE FROM users WHERE email = $1 RETURNING password_hash",
			want{op: "DELETE", relations: users, read: []string{password}, referenced: []string{email}}},
		{"delete using", "DELETE FROM orders o USING users u WHERE u.id = o.user_id AND u.username = $1",
			want{op: "DELETE", relations: []string{"public.orders", "public.users"}, referenced: []string{username}}},
		{"upsert", "INSERT INTO users (id, email) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET email = excluded.email WHERE users.username <> $3",
			want{op: "INSERT", relations: users, referenced: []string{username}}},
		{"data-modifying cte", "WITH d AS (DELETE FROM users WHERE id = $1 RETURNING email) SELECT * FROM d",
			want{op: "SELECT", relations: users, read: []string{email}}},
		{"merge", "MERGE INTO backup b USING users u ON b.email = u.email WHEN NOT MATCHED THEN INSERT (email) VALUES (u.email)",
			want{op: "MERGE", relations: []string{"public.backup", "public.users"}, read: []string{email}}},

		// COPY, CREATE TABLE AS, cursors.
		{"copy table to", "COPY users TO STDOUT",
			want{op: "COPY", relations: users, read: []string{email, password, username}}},
		{"copy columns to", "COPY public.users (id, email) TO STDOUT WITH (FORMAT csv)",
			want{op: "COPY", relations: users, read: []string{email}}},
		{"copy query to", "COPY (SELECT email FROM users) TO STDOUT",
			want{op: "COPY", relations: users, read: []string{email}}},
		{"copy from", "COPY users FROM STDIN",
			want{op: "COPY", relations: users}},
		{"create table as", "CREATE TABLE dump AS SELECT email, password_hash FROM users",
			want{op: "CREATE TABLE AS", relations: users, read: []string{email, password}}},
		{"create table as with no data", "CREATE TABLE dump AS SELECT email FROM users WITH NO DATA",
			want{op: "CREATE TABLE AS", relations: users}},
		{"select into", "SELECT username INTO TEMP dump FROM users",
			want{op: "SELECT INTO", relations: users, read: []string{username}}},
		{"create materialized view", "CREATE MATERIALIZED VIEW m AS SELECT email FROM users",
			want{op: "CREATE MATERIALIZED VIEW", relations: users, read: []string{email}}},
		{"create view", "CREATE VIEW v AS SELECT email FROM users",
			want{op: "CREATE VIEW", relations: users, referenced: []string{email}}},
		{"refresh materialized view", "REFRESH MATERIALIZED VIEW login_mv",
			want{op: "REFRESH MATERIALIZED VIEW", relations: []string{"public.login_mv", "public.users"}, read: []string{password}}},
		{"explain", "EXPLAIN SELECT email FROM users",
			want{op: "EXPLAIN", relations: users, referenced: []string{email}}},
		{"explain analyze copies", "EXPLAIN ANALYZE INSERT INTO backup (email) SELECT email FROM users",
			want{op: "EXPLAIN", relations: []string{"public.backup", "public.users"}, read: []string{email}}},
		{"explain without analyze does not copy", "EXPLAIN (ANALYZE false) INSERT INTO backup (email) SELECT email FROM users",
			want{op: "EXPLAIN", relations: []string{"public.backup", "public.users"}, referenced: []string{email}}},
		{"truncate", "TRUNCATE users",
			want{op: "TRUNCATE", relations: users}},
		{"do block", "DO $$ BEGIN PERFORM 1; END $$",
			want{op: "DO", incomplete: true, problem: "DO"}},

		// Cursors and prepared statements: the caller attributes FETCH, MOVE
		// and EXECUTE to the DECLARE or PREPARE of the same name.
		{"declare cursor", "DECLARE c CURSOR FOR SELECT username FROM users",
			want{op: "DECLARE CURSOR", name: "c", relations: users, read: []string{username}}},
		{"fetch", "FETCH 100 FROM c",
			want{op: "FETCH", name: "c", incomplete: true, problem: "FETCH"}},
		{"psql FETCH_COUNT cursor", "DECLARE _psql_cursor NO SCROLL CURSOR FOR SELECT email, username FROM users WHERE id > $1",
			want{op: "DECLARE CURSOR", name: "_psql_cursor", relations: users, read: []string{email, username}}},
		{"psql fetch", "FETCH FORWARD 500 FROM _psql_cursor",
			want{op: "FETCH", name: "_psql_cursor", incomplete: true, problem: "FETCH"}},
		{"psycopg2 named cursor", `DECLARE "c_7f3a_1" CURSOR WITHOUT HOLD FOR SELECT password_hash FROM users`,
			want{op: "DECLARE CURSOR", name: "c_7f3a_1", relations: users, read: []string{password}}},
		{"psycopg2 fetch", `FETCH FORWARD 2000 FROM "c_7f3a_1"`,
			want{op: "FETCH", name: "c_7f3a_1", incomplete: true, problem: "FETCH"}},
		{"quoted cursor name keeps case", `DECLARE "Cur" SCROLL CURSOR WITH HOLD FOR SELECT id FROM users`,
			want{op: "DECLARE CURSOR", name: "Cur", relations: users}},
		{"unquoted cursor name folds", "FETCH ALL IN Cur",
			want{op: "FETCH", name: "cur", incomplete: true, problem: "FETCH"}},
		{"move", "MOVE FORWARD ALL IN c",
			want{op: "MOVE", name: "c", incomplete: true, problem: "MOVE"}},
		{"close", `CLOSE "c_7f3a_1"`,
			want{op: "CLOSE", name: "c_7f3a_1"}},
		{"close all", "CLOSE ALL",
			want{op: "CLOSE"}},
		{"prepare", "PREPARE get_user(int) AS SELECT email FROM users WHERE id = $1",
			want{op: "PREPARE", name: "get_user", relations: users, read: []string{email}}},
		{"execute", "EXECUTE get_user(42)",
			want{op: "EXECUTE", name: "get_user", incomplete: true, problem: "EXECUTE"}},
		{"deallocate", "DEALLOCATE get_user",
			want{op: "DEALLOCATE", name: "get_user"}},
		{"deallocate prepare quoted", `DEALLOCATE PREPARE "Q1"`,
			want{op: "DEALLOCATE", name: "Q1"}},
		{"deallocate all", "DEALLOCATE ALL",
			want{op: "DEALLOCATE"}},
		{"declare and fetch", "BEGIN; DECLARE c CURSOR FOR SELECT email FROM users; FETCH 100 FROM c",
			want{op: "DECLARE CURSOR", name: "c", relations: users, read: []string{email}, incomplete: true, problem: "FETCH"}},
		{"close before declare", "CLOSE c; DECLARE d CURSOR FOR SELECT email FROM users",
			want{op: "DECLARE CURSOR", name: "d", relations: users, read: []string{email}}},
		{"close then commit", "CLOSE c; COMMIT",
			want{op: "CLOSE", name: "c"}},
		{"truncated declare", `DECLARE "c_7f3a_1" CURSOR WITHOUT HOLD FOR SELECT email FROM users WHERE id IN (SELE`,
			want{op: "DECLARE CURSOR", name: "c_7f3a_1", relations: users, incomplete: true, problem: "parse error"}},
		{"truncated prepare", "PREPARE q AS SELECT password_hash FROM users WHERE id = 'x",
			want{op: "PREPARE", name: "q", relations: users, incomplete: true, problem: "parse error"}},

		// Several statements, odd input.
		{"several statements", "BEGIN; SELECT id FROM orders; SELECT email FROM users; COMMIT",
			want{op: "SELECT", relations: []string{"public.orders", "public.users"}, read: []string{email}}},
		{"utility", "SET statement_timeout = 0",
			want{op: "OTHER"}},
		{"empty", "",
			want{op: "OTHER"}},
		{"truncated", "SELECT email, password_hash FROM users WHERE id IN (SELECT user_id FROM orders WHE",
			want{op: "SELECT", relations: []string{"public.orders", "public.users"}, incomplete: true, problem: "parse error"}},
		{"truncated in literal", "SELECT email FROM public.users WHERE username = 'adm",
			want{op: "SELECT", relations: users, incomplete: true, problem: "parse error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, Classify(tt.sql, snap, defaultPath, "app"), tt.want)
		})
	}
}

func equal(got, want []string) bool {
	return len(got) == 0 && len(want) == 0 || slices.Equal(got, want)
}

// searchPathSnapshot has sensitive tables that share their names with other
// relations in other schemas.
func searchPathSnapshot(t testing.TB) *catalog.Snapshot {
	t.Helper()
	snap, err := catalog.New([]catalog.Relation{
		{Schema: "public", Name: "users", Kind: catalog.Table, Columns: []string{"id", "email", "username", "password_hash", "note"}},
		{Schema: "auth", Name: "users", Kind: catalog.Table, Columns: []string{"id", "email", "username", "password_hash"}},
		{Schema: "public", Name: "user_emails", Kind: catalog.View, Columns: []string{"id", "email"},
			ViewDef: " SELECT id,\n    email\n   FROM users;"},
		{Schema: "public", Name: "orders", Kind: catalog.Table, Columns: []string{"id", "user_id", "total"}},
		{Schema: "alice", Name: "orders", Kind: catalog.Table, Columns: []string{"id", "secret"}},
		{Schema: "auth", Name: "tokens", Kind: catalog.Table, Columns: []string{"user_id", "token"}},
		{Schema: "archive", Name: "tokens", Kind: catalog.Table, Columns: []string{"user_id", "token"}},
	}, map[string][]string{
		"auth.users":     {"email", "username", "password_hash"},
		"alice.orders":   {"secret"},
		"auth.tokens":    {"token"},
		"archive.tokens": {"token"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// TestClassifySearchPath checks unqualified names against the configured
// search path and against the sensitive tables a session's own search_path
// could reach instead.
func TestClassifySearchPath(t *testing.T) {
	snap := searchPathSnapshot(t)
	const (
		authEmail    = "auth.users.email"
		authUsername = "auth.users.username"
		authPassword = "auth.users.password_hash"
		ambiguous    = `relation name "users" is ambiguous: a session search_path could resolve it to sensitive table auth.users`
	)
	both := []string{"auth.users", "public.users"}
	tests := []struct {
		name       string
		sql        string
		searchPath []string
		role       string
		want       want
	}{
		{"session search_path", "SELECT email, username, password_hash FROM users", defaultPath, "app",
			want{op: "SELECT", relations: both, read: []string{authEmail, authPassword, authUsername}, incomplete: true,
				problems: []string{ambiguous}}},
		{"no table of that name on the path", "SELECT email, username, password_hash FROM users", []string{"app"}, "app",
			want{op: "SELECT", relations: []string{"auth.users"}, read: []string{authEmail, authPassword, authUsername}, incomplete: true,
				problems: []string{ambiguous, "unknown relation users"}}},
		{"star", "SELECT * FROM users", defaultPath, "app",
			want{op: "SELECT", relations: both, read: []string{authEmail, authPassword, authUsername}, incomplete: true, problem: ambiguous}},
		{"predicate only", "SELECT id FROM users WHERE email = $1", defaultPath, "app",
			want{op: "SELECT", relations: both, referenced: []string{authEmail}, incomplete: true, problem: ambiguous}},
		{"column the candidate lacks", "SELECT note FROM users", defaultPath, "app",
			want{op: "SELECT", relations: both, incomplete: true, problems: []string{ambiguous}}},
		{"alias in a join", "SELECT u.password_hash, o.total FROM users u JOIN public.orders o ON o.user_id = u.id", defaultPath, "app",
			want{op: "SELECT", relations: []string{"auth.users", "public.orders", "public.users"}, read: []string{authPassword}, incomplete: true, problem: ambiguous}},
		{"in a subquery", "SELECT o.id FROM public.orders o WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = o.user_id AND u.password_hash = $1)", defaultPath, "app",
			want{op: "SELECT", relations: []string{"auth.users", "public.orders", "public.users"}, referenced: []string{authPassword}, incomplete: true, problem: ambiguous}},
		{"several candidates", "SELECT token FROM tokens", defaultPath, "app",
			want{op: "SELECT", relations: []string{"archive.tokens", "auth.tokens"}, read: []string{"archive.tokens.token", "auth.tokens.token"}, incomplete: true,
				problems: []string{
					`relation name "tokens" is ambiguous: a session search_path could resolve it to sensitive table archive.tokens`,
					`relation name "tokens" is ambiguous: a session search_path could resolve it to sensitive table auth.tokens`,
					"unknown relation tokens",
				}}},
		{"two ambiguous names", "SELECT u.email, t.token FROM users u JOIN tokens t ON t.user_id = u.id", []string{"auth", "public"}, "",
			want{op: "SELECT", relations: []string{"archive.tokens", "auth.tokens", "auth.users"}, read: []string{"archive.tokens.token", "auth.tokens.token", authEmail}, incomplete: true,
				problem: `relation name "tokens" is ambiguous: a session search_path could resolve it to sensitive table archive.tokens`}},
		{"copy", "COPY users TO STDOUT", defaultPath, "app",
			want{op: "COPY", relations: both, read: []string{authEmail, authPassword, authUsername}, incomplete: true, problem: ambiguous}},
		{"update returning", "UPDATE users SET note = $1 WHERE id = $2 RETURNING email", defaultPath, "app",
			want{op: "UPDATE", relations: both, read: []string{authEmail}, incomplete: true, problem: ambiguous}},
		{"insert select copies", "INSERT INTO public.users (email) SELECT email FROM users", defaultPath, "app",
			want{op: "INSERT", relations: both, read: []string{authEmail}, incomplete: true, problems: []string{ambiguous}}},
		{"prepare", "PREPARE p(int) AS SELECT password_hash FROM users WHERE id = $1", defaultPath, "app",
			want{op: "PREPARE", name: "p", relations: both, read: []string{authPassword}, incomplete: true, problem: ambiguous}},
		{"explain", "EXPLAIN SELECT password_hash FROM users", defaultPath, "app",
			want{op: "EXPLAIN", relations: both, referenced: []string{authPassword}, incomplete: true, problem: ambiguous}},
		{"truncated", "SELECT password_hash FROM users WHERE id IN (SELE", defaultPath, "app",
			want{op: "SELECT", relations: both, incomplete: true, problem: "parse error"}},

		// Not ambiguous.
		{"qualified", "SELECT email, password_hash FROM public.users", defaultPath, "app",
			want{op: "SELECT", relations: []string{"public.users"}}},
		{"qualified sensitive", "SELECT password_hash FROM auth.users", defaultPath, "app",
			want{op: "SELECT", relations: []string{"auth.users"}, read: []string{authPassword}}},
		{"path reaches the sensitive table", "SELECT email FROM users", []string{"auth", "public"}, "",
			want{op: "SELECT", relations: []string{"auth.users"}, read: []string{authEmail}}},
		{"cte shadows the name", "WITH users AS (SELECT $1::text AS email) SELECT email FROM users", defaultPath, "app",
			want{op: "SELECT"}},
		{"view definition", "SELECT email FROM user_emails", defaultPath, "app",
			want{op: "SELECT", relations: []string{"public.user_emails", "public.users"}}},
		{"view definition next to an ambiguous name", "SELECT e.email FROM user_emails e JOIN users u USING (id)", defaultPath, "app",
			want{op: "SELECT", relations: []string{"auth.users", "public.user_emails", "public.users"}, incomplete: true, problems: []string{ambiguous}}},

		// $user.
		{"$user schema first", "SELECT * FROM orders", defaultPath, "alice",
			want{op: "SELECT", relations: []string{"alice.orders"}, read: []string{"alice.orders.secret"}}},
		{"no schema for role", "SELECT * FROM orders", defaultPath, "bob",
			want{op: "SELECT", relations: []string{"alice.orders", "public.orders"}, read: []string{"alice.orders.secret"}, incomplete: true,
				problems: []string{`relation name "orders" is ambiguous: a session search_path could resolve it to sensitive table alice.orders`}}},
		{"explicit order", "SELECT * FROM orders", []string{"public", "alice"}, "",
			want{op: "SELECT", relations: []string{"alice.orders", "public.orders"}, read: []string{"alice.orders.secret"}, incomplete: true,
				problem: "ambiguous"}},
		{"schema only in path", "SELECT * FROM orders", []string{"alice"}, "",
			want{op: "SELECT", relations: []string{"alice.orders"}, read: []string{"alice.orders.secret"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, Classify(tt.sql, snap, tt.searchPath, tt.role), tt.want)
		})
	}
}

// TestClassifyManyAmbiguousNames checks that a name with more same-named
// sensitive tables than are analyzed still lists them all.
func TestClassifyManyAmbiguousNames(t *testing.T) {
	var rels []catalog.Relation
	sensitive := map[string][]string{}
	for i := range maxAlternatives + 2 {
		schema := fmt.Sprintf("s%02d", i)
		rels = append(rels, catalog.Relation{Schema: schema, Name: "t", Kind: catalog.Table, Columns: []string{"secret"}})
		sensitive[schema+".t"] = []string{"secret"}
	}
	snap, err := catalog.New(rels, sensitive)
	if err != nil {
		t.Fatal(err)
	}
	got := Classify("SELECT secret FROM t", snap, defaultPath, "app")
	if len(got.Relations) != len(rels) {
		t.Errorf("Relations: got %q, want all %d tables named t", got.Relations, len(rels))
	}
	if len(got.SensitiveRead) != maxAlternatives {
		t.Errorf("SensitiveRead: got %q, want the columns of %d candidates", got.SensitiveRead, maxAlternatives)
	}
	if got.Complete || !slices.ContainsFunc(got.Problems, func(p string) bool { return strings.HasPrefix(p, "too many ambiguous") }) {
		t.Errorf("Problems: got %q, want one saying candidates were not analyzed", got.Problems)
	}
}
