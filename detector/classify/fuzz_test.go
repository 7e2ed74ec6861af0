package classify

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
)

// fuzzSeeds are statements of every supported shape plus broken ones.
var fuzzSeeds = []string{
	"SELECT email, username, password_hash FROM users",
	"SELECT id, password_hash FROM users WHERE username = $1",
	"SELECT u FROM users u",
	"SELECT (u).*, row_to_json(u) FROM users u",
	"SELECT count(*) FROM users WHERE email = $1",
	"COPY users (email) TO STDOUT",
	"COPY (SELECT email FROM users) TO STDOUT",
	"WITH RECURSIVE r(n, e) AS (SELECT 1, email FROM users UNION ALL SELECT n + 1, e FROM r) SELECT * FROM r",
	"SELECT e FROM (SELECT email AS e FROM users) s JOIN orders o USING (id) NATURAL JOIN backup",
	"SELECT * FROM user_names, loop_a, login_mv, no_def",
	"INSERT INTO backup SELECT email FROM users ON CONFLICT (email) DO UPDATE SET note = excluded.note RETURNING *",
	"UPDATE users SET (email, username) = (SELECT $1, $2) WHERE id = $3 RETURNING password_hash",
	"MERGE INTO backup b USING users u ON b.email = u.email WHEN MATCHED THEN UPDATE SET note = u.username WHEN NOT MATCHED THEN INSERT VALUES (u.email, $1)",
	"EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM users; DECLARE c CURSOR FOR SELECT email FROM users; FETCH 10 FROM c",
	"SELECT * FROM json_to_recordset($1) AS x(a int, b text), LATERAL unnest(ARRAY[x.b]) WITH ORDINALITY AS t(v, n)",
	"SELECT JSON_OBJECT('e': email RETURNING jsonb), XMLELEMENT(NAME e, username) FROM users",
	"SELECT * FROM XMLTABLE('/r' PASSING $1 COLUMNS a text) x, JSON_TABLE($2::jsonb, '$[*]' COLUMNS (b text)) j",
	"SELECT email FROM users GROUP BY ROLLUP (email, username), CUBE (id) ORDER BY 1",
	"SELECT email FROM users WHERE id IN (SELECT user_id FROM orders WHE",
	"SELECT 'unterminated",
	`SELECT "unterminated`,
	"/* unterminated comment",
	"SELECT ((((((((((1))))))))))",
	"",
	";;;",
	"PREPARE p(int) AS SELECT email FROM users WHERE id = $1; EXECUTE p(1)",
	"CREATE TABLE t AS SELECT * FROM users; SELECT * INTO t2 FROM users; REFRESH MATERIALIZED VIEW login_mv",
	"SELECT s.token, u.email FROM sessions s JOIN users u ON u.id = s.user_id; COPY sessions TO STDOUT",
	"WITH sessions AS (SELECT 1 AS token) SELECT token FROM sessions, auth.sessions x",
	`DECLARE "c_7f3a_1" CURSOR WITHOUT HOLD FOR SELECT token FROM sessions; FETCH FORWARD 2000 FROM "c_7f3a_1"; MOVE ALL IN c; CLOSE ALL`,
	"DEALLOCATE PREPARE p; CLOSE _psql_cursor; DEALLOCATE ALL",
	"SELECT email FROM get_users() g, LATERAL pick(g.email, $1) p WHERE shout(g.username) = $2",
	"SELECT noisy(), loop_users(), c_text(email), leak(), hidden.leak(), broken(), token_of(1) FROM users_old",
	"SELECT join_all(VARIADIC ARRAY[email]) FROM auth.tokens_p0, users",
	"COPY (SELECT * FROM get_users()) TO PROGRAM 'x'; COPY users TO '/tmp/x'; COPY users FROM PROGRAM 'y'",
	"SELECT query_to_xml('SELECT query_to_xml(''SELECT username FROM users'', true, false, '''')', true, false, '')",
	`SELECT table_to_xml('"auth".tokens_p0', true, false, ''), schema_to_xml('public', true, false, ''), database_to_xml(true, false, '')`,
	"SELECT * FROM dblink('SELECT email FROM users', false) AS t(e text), dblink_exec('INSERT INTO orders SELECT 1')",
	"SELECT query_to_xml('SELECT email FROM', true, false, ''), cursor_to_xml('c', 1, true, false, ''), dblink($1, $2)",
	"SELECT email = $1, username IN ($2), length(password_hash), CASE WHEN email LIKE $3 THEN 1 END FROM users",
	"SELECT order_sum(id), email_twice(id), dyn_count($1), ping(1), pong(2), mailing(), order_ids(), has_token(user_id), via_c($2) FROM orders",
	// Access patterns and shapes.
	"SELECT u.email FROM orders o LEFT JOIN users u ON u.id = o.user_id AND (u.email, u.id) = ($1, $2) WHERE o.id IN ($3) OR o.id = ANY($4) ORDER BY 1 LIMIT 50 OFFSET $5",
	"SELECT (SELECT email FROM users u WHERE u.id = g) FROM generate_series($1, $2) g FULL JOIN unnest($3::int[]) x(i) ON i = g",
	"WITH x AS MATERIALIZED (SELECT id, email FROM users) SELECT email FROM x a JOIN x b USING (id) WHERE a.id = (SELECT max(id) FROM users) FOR UPDATE",
	"SELECT email FROM user_names n, LATERAL (SELECT * FROM user_emails e WHERE lower(e.email::text) = lower(n.name)) y WHERE n.uid = $1",
	"WITH RECURSIVE r(n, acc) AS (SELECT 0, ''::text UNION ALL SELECT n + 1, acc || (SELECT email FROM users OFFSET n LIMIT 1) FROM r) SELECT acc FROM r",
	"SELECT string_agg(email, ',') OVER (), JSON_ARRAYAGG(username), ARRAY(SELECT password_hash FROM users) FROM users",
	"SELECT pg_read_file($1), lo_export($2, '/tmp/x'), pg_catalog.pg_ls_dir('.'); COPY orders FROM PROGRAM 'x'",
	"SELECT c.relname, a.attname FROM pg_catalog.pg_class c JOIN pg_attribute a ON a.attrelid = c.oid WHERE c.relname IN ($1) OR c.relname LIKE 'x'",
	"SELECT * FROM information_schema.columns WHERE (table_name = $1 AND table_schema = $2) OR table_name = $3; SELECT rolname FROM pg_roles WHERE rolname = current_user",
	"DO $$BEGIN EXECUTE format('SELECT %I FROM users', 'email'); END$$; DO LANGUAGE plperl $$ 1 $$",
	"MERGE INTO users u USING backup b ON u.email = b.email WHEN MATCHED THEN UPDATE SET username = b.note; UPDATE users SET email = $1 WHERE id = $2 RETURNING email",
	// Injection shapes.
	"SELECT id, total FROM orders WHERE id = 1 UNION ALL SELECT NULL,(SELECT CHR(113)||COALESCE(CAST(email AS VARCHAR(10000))::text,(CHR(32)))||'q' FROM users OFFSET 0 LIMIT 1)-- x",
	"SELECT * FROM orders WHERE id = 1 AND 5=CAST((CHR(113)||CHR(122))||(SELECT email FROM users ORDER BY id OFFSET 3 LIMIT 1)::text||'q' AS NUMERIC) ORDER BY 1,(SELECT CONCAT('a', username, 'b') FROM users LIMIT 1)::int",
	"SELECT * FROM orders WHERE id=1 AND 1=(CASE WHEN (ASCII(SUBSTRING((SELECT password_hash FROM users LIMIT 1)::text FROM 1 FOR 1))>64) THEN (SELECT 1 FROM PG_SLEEP(5)) ELSE 1 END); SELECT pg_sleep_for($1)",
	"UPDATE orders SET total = (SELECT length(email) FROM users LIMIT 1) WHERE id = CASE (SELECT substr(email, 1, 1) FROM users WHERE id = 1) WHEN 'a' THEN 1 END RETURNING to_number(email_twice(id), '9')",
}

// namedOperations are the operations that report a Name.
var namedOperations = []string{
	OperationDeclareCursor, OperationFetch, OperationMove, OperationClose,
	OperationPrepare, OperationExecute, OperationDeallocate,
}

func FuzzClassify(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	snaps := []*catalog.Snapshot{testSnapshot(f), functionSnapshot(f)}
	f.Fuzz(func(t *testing.T, sql string) {
		for _, snap := range snaps {
			checkInvariants(t, sql, Classify(sql, snap, defaultPath, "app"))
		}
	})
}

// checkInvariants checks what every Result must satisfy, whatever the input.
func checkInvariants(t *testing.T, sql string, got Result) {
	t.Helper()
	{
		if slices.Contains(got.Problems, problemInternal) {
			t.Fatalf("classifier panicked on %q", sql)
		}
		if got.Name != "" && !slices.Contains(namedOperations, got.Operation) {
			t.Errorf("Name %q for operation %s", got.Name, got.Operation)
		}
		if got.Complete != (len(got.Problems) == 0) {
			t.Errorf("Complete %v with problems %q", got.Complete, got.Problems)
		}
		for name, list := range map[string][]string{
			"Relations": got.Relations, "SensitiveRead": got.SensitiveRead,
			"SensitiveReferenced": got.SensitiveReferenced, "Problems": got.Problems,
		} {
			if !slices.IsSorted(list) || len(slices.Compact(slices.Clone(list))) != len(list) {
				t.Errorf("%s not sorted and deduplicated: %q", name, list)
			}
		}
		for _, c := range got.SensitiveReferenced {
			if slices.Contains(got.SensitiveRead, c) {
				t.Errorf("%s both read and referenced", c)
			}
		}
		for rel, access := range got.Access {
			if len(ColumnsOf(rel, got.SensitiveRead)) == 0 && len(ColumnsOf(rel, got.SensitiveReferenced)) == 0 {
				t.Errorf("Access for %s, whose sensitive columns are neither read nor referenced", rel)
			}
			if !slices.Contains([]string{AccessPoint, AccessRange, AccessPage, AccessScan}, access) {
				t.Errorf("Access %q for %s", access, rel)
			}
		}
		if !slices.IsSorted(got.Shapes) || len(slices.Compact(slices.Clone(got.Shapes))) != len(got.Shapes) {
			t.Errorf("Shapes not sorted and deduplicated: %q", got.Shapes)
		}
		for _, s := range got.Shapes {
			if !slices.Contains([]string{ShapeFolded, ShapeServerFile, ShapeCatalogColumns, ShapeCatalogRoles, ShapeDynamicSQL}, s) && !InjectionShape(s) {
				t.Errorf("unknown shape %q", s)
			}
		}
		for _, c := range append(slices.Clone(got.SensitiveRead), got.SensitiveReferenced...) {
			rel := c[:strings.LastIndexByte(c, '.')]
			if !slices.Contains(got.Relations, rel) {
				t.Errorf("column %s of a relation not in Relations %q", c, got.Relations)
			}
		}
	}
}

// TestProblemsCarryNoLiterals checks that what PostgreSQL's parser quotes
// from the input near an error does not reach Problems.
func TestProblemsCarryNoLiterals(t *testing.T) {
	snap := testSnapshot(t)
	for _, sql := range []string{
		"SELECT * FROM users WHERE email = 'victim@example.com' AND AND",
		"SELECT 'victim@example.com' 'victim@example.com' FROM",
		"SELECT * FROM users WHERE email = 'victim@example.com",
		"SELECT * FROM users WHERE email = E'victim@example.com\\",
		"SELECT 1 victim@example.com",
		"SELECT $$victim@example.com",
		"SELECT 0x_victim",
	} {
		got := Classify(sql, snap, defaultPath, "app")
		if got.Complete {
			t.Errorf("%q: got complete, want a parse problem", sql)
		}
		for _, p := range got.Problems {
			if strings.Contains(p, "victim") {
				t.Errorf("%q: problem %q quotes the input", sql, p)
			}
		}
	}
}

func BenchmarkClassify(b *testing.B) {
	snap := testSnapshot(b)
	const sql = `SELECT u.id, u.email, o.total FROM users u JOIN orders o ON o.user_id = u.id
		WHERE u.username = $1 AND o.total > $2 ORDER BY o.id DESC LIMIT $3`
	for b.Loop() {
		Classify(sql, snap, defaultPath, "app")
	}
}

func BenchmarkClassifyView(b *testing.B) {
	snap := testSnapshot(b)
	const sql = `SELECT * FROM user_names n WHERE EXISTS (SELECT 1 FROM orders o WHERE o.user_id = n.uid)`
	for b.Loop() {
		Classify(sql, snap, defaultPath, "app")
	}
}

// TestClassifyBoundsWork checks that statements built to multiply the
// analyzer's work end quickly, as incomplete rather than by stalling.
func TestClassifyBoundsWork(t *testing.T) {
	// In searchPathSnapshot users is ambiguous: the text is analyzed again for
	// auth.users, within the same budget.
	snaps := map[string]*catalog.Snapshot{"": testSnapshot(t), "ambiguous name, ": searchPathSnapshot(t)}
	nested := "SELECT email FROM users"
	for i := range 30 {
		nested = fmt.Sprintf("WITH RECURSIVE r%d(e) AS (%s UNION ALL SELECT e FROM r%d) SELECT e FROM r%d", i, nested, i, i)
	}
	deep := strings.Repeat("SELECT (", 400) + "SELECT email FROM users" + strings.Repeat(")", 400)
	// Conditions with thousands of columns and values: judged without
	// quadratic work.
	var wide, list strings.Builder
	wide.WriteString("SELECT email FROM users u JOIN orders o ON o.user_id = u.id WHERE ")
	list.WriteString("SELECT email FROM users WHERE id IN (")
	for i := range 5_000 {
		if i > 0 {
			wide.WriteString(" OR ")
			list.WriteString(", ")
		}
		fmt.Fprintf(&wide, "u.email = o.total::text || $%d", i+1)
		fmt.Fprintf(&list, "$%d", i+1)
	}
	list.WriteString(") AND (email, username) = " + strings.Repeat("ROW(", 200) + "$1, $2" + strings.Repeat(")", 200))
	for prefix, snap := range snaps {
		for name, sql := range map[string]string{"nested recursive CTEs": nested, "deep scalar subqueries": deep,
			"a condition of many columns": wide.String(), "a long IN list": list.String()} {
			t.Run(prefix+name, func(t *testing.T) {
				// A guard against unbounded work (a missing step budget makes these take
				// many minutes), not a speed target: under -race on a loaded 2-core
				// machine the slowest takes ~13 s; the benchmarks hold the speed.
				start := time.Now()
				got := Classify(sql, snap, defaultPath, "app")
				if elapsed := time.Since(start); elapsed > 90*time.Second {
					t.Errorf("took %v: the work is not bounded", elapsed)
				}
				if got.Complete && len(got.SensitiveRead) == 0 {
					t.Errorf("got complete with nothing read: %+v", got)
				}
			})
		}
	}
}
