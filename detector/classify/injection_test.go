package classify

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
)

// injectionSnapshot is a small web shop: the application's products and
// orders, and the users table whose credentials an injection pulls out.
func injectionSnapshot(t testing.TB) *catalog.Snapshot {
	t.Helper()
	snap, err := catalog.New([]catalog.Relation{
		{Schema: "public", Name: "products", Kind: catalog.Table, Columns: []string{"id", "name", "price", "description", "category_id"},
			UniqueKeys: []catalog.UniqueKey{{Name: "products_pkey", Primary: true, Parts: []catalog.KeyPart{{Column: "id"}}}}},
		{Schema: "public", Name: "categories", Kind: catalog.Table, Columns: []string{"id", "name"}},
		{Schema: "public", Name: "users", Kind: catalog.Table,
			Columns: []string{"id", "email", "username", "password_hash", "first_name", "last_name", "created_at", "is_admin"},
			UniqueKeys: []catalog.UniqueKey{{Name: "users_email_key", Parts: []catalog.KeyPart{{Column: "email"}}},
				{Name: "users_pkey", Primary: true, Parts: []catalog.KeyPart{{Column: "id"}}}}},
		{Schema: "public", Name: "orders", Kind: catalog.Table, Columns: []string{"id", "user_id", "product_id", "total", "created_at", "contact_email"}},
		{Schema: "public", Name: "vendors", Kind: catalog.Table, Columns: []string{"id", "contact_email", "phone"}},
		{Schema: "public", Name: "archived_users", Kind: catalog.Table, Columns: []string{"id", "email", "deleted_at"}},
		{Schema: "public", Name: "user_emails", Kind: catalog.View, Columns: []string{"id", "email"},
			ViewDef: " SELECT id,\n    email\n   FROM users;"},
		// A view whose definition has the shape of a blind read: the
		// definition is the schema's, not the statement's text.
		{Schema: "public", Name: "first_signup", Kind: catalog.View, Columns: []string{"id", "first_email"},
			ViewDef: " SELECT id,\n    (SELECT users.email FROM users ORDER BY users.created_at LIMIT 1) AS first_email\n   FROM products\n  WHERE ascii((SELECT users.email FROM users ORDER BY users.id LIMIT 1)) > 64;"},
	}, map[string][]string{"public.users": {"email", "username", "password_hash"}},
		catalog.WithFunctions([]catalog.Function{
			{Schema: "public", Name: "newest_email", Language: "sql", ReturnType: "text",
				Body: "SELECT email FROM users WHERE substr(email, 1, 1) > 'a' ORDER BY created_at DESC LIMIT 1"},
		}))
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// injected is a statement as an injection leaves it, with the shapes it must
// have and the sensitive columns it must name (read or referenced).
type injected struct {
	name   string
	sql    string
	shapes []string
	cols   []string
}

// sqlmap 1.7's PostgreSQL payloads (data/xml/payloads/*.xml), instantiated
// the way its agent does for dumping public.users (data/xml/queries.xml):
// the blind dump query and its inference, error-based and inline queries
// between delimiters, union arms padded to the application's columns, and
// stacked queries. Delimiters come as literals and, as sqlmap writes them
// for PostgreSQL, as CHR() chains.
func sqlmapCorpus() []injected {
	const (
		app      = "SELECT id, name, price FROM products WHERE id = 1"
		appStar  = "SELECT * FROM products WHERE id = 1"
		appOne   = "SELECT name FROM products WHERE id = 1"
		appStr   = "SELECT id, name, price FROM products WHERE name = 'lamp"
		appParen = "SELECT id, name, price FROM products WHERE (id = 1"
		appOrder = "SELECT id, name, price FROM products ORDER BY 1"
		appGroup = "SELECT category_id, count(*) FROM products GROUP BY category_id HAVING count(*) > 1"
		appRepl  = "SELECT id, name, price FROM products WHERE id = "
		appUpd   = "UPDATE products SET price = 10 WHERE id = 1"
	)
	var (
		dump = func(col string, offset int) string {
			return fmt.Sprintf("SELECT COALESCE(CAST(%s AS VARCHAR(10000))::text,(CHR(32))) FROM public.users ORDER BY id OFFSET %d LIMIT 1", col, offset)
		}
		dumpRow = func(offset int) string {
			return fmt.Sprintf("SELECT COALESCE(CAST(email AS VARCHAR(10000))::text,(CHR(32)))||(CHR(103)||CHR(107)||CHR(122))||"+
				"COALESCE(CAST(password_hash AS VARCHAR(10000))::text,(CHR(32))) FROM public.users ORDER BY email OFFSET %d LIMIT 1", offset)
		}
		length = func(col string) string {
			return fmt.Sprintf("SELECT LENGTH(COALESCE(CAST(%s AS VARCHAR(10000))::text,(CHR(32)))) FROM public.users ORDER BY id OFFSET 0 LIMIT 1", col)
		}
		inference = func(q string, pos, n int) string {
			return fmt.Sprintf("ASCII(SUBSTRING((%s)::text FROM %d FOR 1))>%d", q, pos, n)
		}
		delimiters = [][2]string{
			{"'qzvkq'", "'qxjvq'"},
			{"(CHR(113)||CHR(122)||CHR(118)||CHR(107)||CHR(113))", "(CHR(113)||CHR(120)||CHR(106)||CHR(118)||CHR(113))"},
		}
		out []injected
	)
	add := func(name, sql string, cols []string, shapes ...string) {
		out = append(out, injected{name: name, sql: sql, shapes: shapes, cols: cols})
	}
	subquery, cast, markers, sleep, union, stacked :=
		ShapeInjectionSubquery, ShapeInjectionCast, ShapeInjectionMarkers, ShapeInjectionSleep, ShapeInjectionUnion, ShapeStacked

	// Boolean-based blind (boolean_blind.xml), time-based blind
	// (time_blind.xml) and stacked queries (stacked_queries.xml), over the
	// blind dump query and the length query.
	type inf struct {
		name, sql string
		cols      []string
	}
	var infs []inf
	for _, col := range []string{"email", "password_hash", "username"} {
		infs = append(infs,
			inf{"dump " + col, inference(dump(col, 3), 5, 64), []string{col}},
			inf{"length of " + col, inference(length(col), 1, 51), []string{col}})
	}
	infs = append(infs, inf{"dump row", inference(dumpRow(0), 12, 96), []string{"email", "password_hash"}})
	where := []struct{ prefix, suffix string }{
		{app + " ", ""}, {app + " ", "-- "}, {appStr + "' ", " AND 'QbVw'='QbVw'"}, {appParen + ") ", " AND (8520=8520)"},
		{appGroup + " ", ""}, {appUpd + " ", ""},
	}
	for _, in := range infs {
		I := in.sql
		for _, b := range where {
			for tmpl, shapes := range map[string][]string{
				"AND %s":    {subquery},
				"OR %s":     {subquery},
				"OR NOT %s": {subquery},
				"AND 5678=(SELECT (CASE WHEN (%s) THEN 5678 ELSE (SELECT 3907 UNION SELECT 1642) END))":              {subquery},
				"OR 5678=(SELECT (CASE WHEN (%s) THEN 5678 ELSE (SELECT 3907 UNION SELECT 1642) END))":               {subquery},
				"AND (SELECT (CASE WHEN (%s) THEN NULL ELSE CAST('tWpX' AS NUMERIC) END)) IS NULL":                   {subquery},
				"AND 5678=(CASE WHEN (%s) THEN (SELECT 5678 FROM PG_SLEEP(5)) ELSE 5678 END)":                        {subquery, sleep},
				"OR 5678=(CASE WHEN (%s) THEN (SELECT 5678 FROM PG_SLEEP(5)) ELSE 5678 END)":                         {subquery, sleep},
				"AND 5678=(CASE WHEN (%s) THEN (SELECT COUNT(*) FROM GENERATE_SERIES(1,5000000)) ELSE 5678 END)":     {subquery},
				";SELECT (CASE WHEN (%s) THEN 5678 ELSE 1/(SELECT 0) END)":                                           {subquery, stacked},
				";SELECT * FROM GENERATE_SERIES(5678,5678,CASE WHEN (%s) THEN 1 ELSE 0 END) LIMIT 1":                 {subquery, stacked},
				";SELECT (CASE WHEN (%s) THEN (SELECT 5678 FROM PG_SLEEP(5)) ELSE 5678 END)":                         {subquery, stacked, sleep},
				";SELECT (CASE WHEN (%s) THEN (SELECT COUNT(*) FROM GENERATE_SERIES(1,5000000)) ELSE 5678 END)":      {subquery, stacked},
				"AND 5678=(SELECT (CASE WHEN (%s) THEN 5678 ELSE (SELECT 3907 UNION SELECT 1642) END))-- wMpe":       {subquery},
				"AND (SELECT 5678 FROM (SELECT (CASE WHEN (%s) THEN 1 ELSE 0 END) AS x) AS t) = 5678":                {subquery},
				"AND 5678=(WITH c AS (SELECT (CASE WHEN (%s) THEN 5678 ELSE 0 END) AS v) SELECT v FROM c)":           {subquery},
				"AND EXISTS (SELECT 1 FROM categories WHERE (%s))":                                                   {subquery},
				"AND 5678 IN (SELECT (CASE WHEN (%s) THEN 5678 ELSE 0 END) FROM categories)":                         {subquery},
				"AND 5678=(SELECT CASE WHEN (%s) THEN (SELECT 5678 FROM PG_SLEEP(5)) ELSE 5678 END FROM categories)": {subquery, sleep},
			} {
				p := fmt.Sprintf(tmpl, I)
				if strings.HasPrefix(p, ";") {
					add(fmt.Sprintf("%s: %s at %q", in.name, tmpl, b.prefix), strings.TrimSuffix(b.prefix, " ")+p+b.suffix, in.cols, shapes...)
					continue
				}
				add(fmt.Sprintf("%s: %s at %q", in.name, tmpl, b.prefix), b.prefix+p+b.suffix, in.cols, shapes...)
			}
		}
		for tmpl, shapes := range map[string][]string{
			appRepl + "(SELECT (CASE WHEN (%s) THEN 1 ELSE (SELECT 3907 UNION SELECT 1642) END))":             {subquery},
			appRepl + "(SELECT (CASE WHEN (%s) THEN 1 ELSE 1/(SELECT 0) END))":                                {subquery},
			appRepl + "(SELECT * FROM GENERATE_SERIES(1,1,CASE WHEN (%s) THEN 1 ELSE 0 END) LIMIT 1)":         {subquery},
			appRepl + "(CASE WHEN %s THEN 1 ELSE NULL END)":                                                   {subquery},
			appRepl + "(CASE WHEN (%s) THEN (SELECT 5678 FROM PG_SLEEP(5)) ELSE 5678 END)":                    {subquery, sleep},
			appOrder + ",(SELECT (CASE WHEN (%s) THEN 1 ELSE 1/(SELECT 0) END))":                              {subquery},
			appOrder + ",(SELECT * FROM GENERATE_SERIES(1,1,CASE WHEN (%s) THEN 1 ELSE 0 END) LIMIT 1)":       {subquery},
			appOrder + ",(SELECT (CASE WHEN (%s) THEN (SELECT 5678 FROM PG_SLEEP(5)) ELSE 1/(SELECT 0) END))": {subquery, sleep},
		} {
			add(fmt.Sprintf("%s: %s", in.name, tmpl), fmt.Sprintf(tmpl, I), in.cols, shapes...)
		}
	}

	// Error-based (error_based.xml) and inline queries (inline_query.xml):
	// the value between delimiters, cast to NUMERIC or compared as is.
	for _, d := range delimiters {
		for _, q := range []inf{
			{"email", dump("email", 0), []string{"email"}},
			{"password_hash", dump("password_hash", 7), []string{"password_hash"}},
			{"row", dumpRow(2), []string{"email", "password_hash"}},
		} {
			v := d[0] + "||(" + q.sql + ")::text||" + d[1]
			for _, p := range []string{
				app + " AND 5678=CAST(" + v + " AS NUMERIC)",
				app + " OR 5678=CAST(" + v + " AS NUMERIC)",
				appStr + "' AND 5678=CAST(" + v + " AS NUMERIC) AND 'QbVw'='QbVw'",
				appRepl + "(CAST(" + v + " AS NUMERIC))",
				appOrder + ",(CAST(" + v + " AS NUMERIC))",
				appGroup + " AND 5678=CAST(" + v + " AS NUMERIC)",
				appUpd + " AND 5678=CAST(" + v + " AS NUMERIC)",
			} {
				add("error-based "+q.name, p, q.cols, cast, markers, subquery)
			}
			add("inline query "+q.name, appRepl+"(SELECT "+v+")", q.cols, markers, subquery)
		}
	}

	// UNION query (union_query.xml): the dump query's columns between
	// delimiters in one column, the others padded with NULL or a number to
	// the application's column count, all rows or one at a time.
	for _, d := range delimiters {
		for _, q := range []struct {
			name, val string
			cols      []string
		}{
			{"email", d[0] + "||COALESCE(CAST(email AS VARCHAR(10000))::text,(CHR(32)))||" + d[1], []string{"email"}},
			{"row", d[0] + "||COALESCE(CAST(email AS VARCHAR(10000))::text,(CHR(32)))||(CHR(103)||CHR(107)||CHR(122))||" +
				"COALESCE(CAST(password_hash AS VARCHAR(10000))::text,(CHR(32)))||" + d[1], []string{"email", "password_hash"}},
		} {
			for _, pad := range []string{"NULL", "5678"} {
				for pos := range 3 {
					cols := []string{pad, pad, pad}
					cols[pos] = q.val
					arm := " UNION ALL SELECT " + strings.Join(cols, ",") + " FROM public.users"
					for _, tail := range []string{"-- ", " ORDER BY 1 OFFSET 5 LIMIT 1-- ", ""} {
						add(fmt.Sprintf("union %s at %d padded with %s", q.name, pos, pad), app+arm+tail, q.cols, union, markers)
					}
					add(fmt.Sprintf("union %s at %d padded with %s, string boundary", q.name, pos, pad),
						appStr+"'"+arm+"-- ", q.cols, union, markers)
				}
				star := []string{pad, pad, q.val, pad, pad}
				add("union "+q.name+" beside *", appStar+" UNION ALL SELECT "+strings.Join(star, ",")+" FROM public.users-- ", q.cols, union, markers)
			}
			add("union "+q.name+" in one column", appOne+" UNION ALL SELECT "+q.val+" FROM public.users-- ", q.cols, markers)
			add("union "+q.name+" one row by subquery", app+" UNION ALL SELECT NULL,(SELECT "+q.val+" FROM public.users ORDER BY id OFFSET 3 LIMIT 1),NULL-- ",
				q.cols, union, markers, subquery)
		}
	}

	// Stacked queries beyond the inference above.
	for _, p := range []string{";SELECT PG_SLEEP(5)", ";SELECT PG_SLEEP(5)-- ", ";SELECT pg_sleep_for('5 seconds')"} {
		add("stacked sleep", app+p, nil, stacked, sleep)
	}
	add("stacked C function", app+";CREATE OR REPLACE FUNCTION SLEEP(int) RETURNS int AS '/lib/libc.so.6','sleep' language 'C' STRICT; SELECT sleep(5)", nil, stacked)
	add("stacked DROP", app+"; DROP TABLE products-- ", nil, stacked)
	add("stacked dump", app+"; SELECT email, password_hash FROM users-- ", []string{"email", "password_hash"}, stacked)
	add("stacked update", appUpd+"; UPDATE users SET password_hash = 'x' WHERE is_admin", nil, stacked)
	return out
}

// handCorpus are injected statements written by hand: the examples
// and the places sqlmap does not use (CTEs, subqueries in FROM, views, other
// casts and sleeps).
func handCorpus() []injected {
	e, p, u := []string{"email"}, []string{"password_hash"}, []string{"email", "password_hash"}
	return []injected{
		{"union, issue", "SELECT id, name FROM products WHERE id = 1 UNION ALL SELECT NULL, email||':'||password_hash FROM users-- ", []string{ShapeInjectionUnion}, u},
		{"union, issue, CHR", "SELECT id, name, price FROM products WHERE id = 1 UNION SELECT NULL,CHR(113)||CHR(120)||CHR(122)||COALESCE(email::text,CHR(32))||CHR(113)||CHR(120),NULL FROM public.users OFFSET 5 LIMIT 1",
			[]string{ShapeInjectionUnion, ShapeInjectionMarkers}, e},
		{"union beside a sensitive app query", "SELECT id, username FROM users WHERE id = 1 UNION ALL SELECT NULL, password_hash FROM users", []string{ShapeInjectionUnion}, []string{"username", "password_hash"}},
		{"union of the same column the app shows", "SELECT id, email FROM users WHERE id = 1 UNION ALL SELECT NULL, email FROM users", []string{ShapeInjectionUnion}, e},
		{"intersect arm", "SELECT id, name FROM products WHERE id = 1 INTERSECT SELECT NULL, email FROM users", []string{ShapeInjectionUnion}, e},
		{"except arm", "SELECT id, name FROM products WHERE id = 1 EXCEPT SELECT 0, password_hash FROM users", []string{ShapeInjectionUnion}, p},
		{"union in a subquery in FROM", "SELECT * FROM (SELECT id, name FROM products WHERE id = 1 UNION ALL SELECT NULL, email FROM users) AS t", []string{ShapeInjectionUnion}, e},
		{"union in a CTE", "WITH p AS (SELECT id, name FROM products WHERE id = 1 UNION ALL SELECT NULL, email FROM users) SELECT * FROM p", []string{ShapeInjectionUnion}, e},
		{"union through a view", "SELECT id, name FROM products WHERE id = 1 UNION ALL SELECT NULL, email FROM user_emails", []string{ShapeInjectionUnion}, e},
		{"union with a typed NULL", "SELECT id, name FROM products WHERE id = 1 UNION ALL SELECT NULL::int, email FROM users", []string{ShapeInjectionUnion}, e},
		{"boolean blind, issue", "SELECT * FROM products WHERE id = 1 AND ASCII(SUBSTRING((SELECT password_hash FROM users ORDER BY id OFFSET 3 LIMIT 1)::text FROM 5 FOR 1)) > 64", []string{ShapeInjectionSubquery}, p},
		{"length, issue", "SELECT * FROM products WHERE id = 1 AND (SELECT length(email) FROM users LIMIT 1 OFFSET 0) > 10", []string{ShapeInjectionSubquery}, e},
		{"row pick by id, issue", "SELECT CASE WHEN (SELECT substr(password_hash,1,1) FROM users WHERE id=1)='a' THEN 1 ELSE 0 END", []string{ShapeInjectionSubquery}, p},
		{"row pick by id in WHERE", "SELECT * FROM products WHERE id = 1 AND (SELECT substr(password_hash,1,1) FROM users WHERE id=1) = 'a'", []string{ShapeInjectionSubquery}, p},
		{"whole value by order", "SELECT * FROM products WHERE id = 1 AND (SELECT password_hash FROM users WHERE id = 1) > '$2b$10$m'", []string{ShapeInjectionSubquery}, p},
		{"pattern on the value", "SELECT * FROM products WHERE id = 1 AND (SELECT email FROM users WHERE id = 1) LIKE 'a%'", []string{ShapeInjectionSubquery}, e},
		{"min", "SELECT * FROM products WHERE id = 1 AND (SELECT min(email) FROM users) > 'm'", []string{ShapeInjectionSubquery}, e},
		{"max derived", "SELECT * FROM products WHERE id = 1 AND ascii((SELECT max(password_hash) FROM users)) = 36", []string{ShapeInjectionSubquery}, p},
		{"boolean subquery", "SELECT * FROM products WHERE id = 1 AND (SELECT email LIKE 'a%' FROM users LIMIT 1)", []string{ShapeInjectionSubquery}, e},
		{"CASE on the value", "SELECT * FROM products WHERE id = CASE (SELECT substr(email, 1, 1) FROM users WHERE id = 1) WHEN 'a' THEN 1 ELSE 2 END", []string{ShapeInjectionSubquery}, e},
		{"in the target list", "SELECT name, (SELECT email FROM users ORDER BY id LIMIT 1 OFFSET 4) FROM products WHERE id = 1", []string{ShapeInjectionSubquery}, e},
		{"in ORDER BY", "SELECT id, name FROM products ORDER BY (SELECT ascii(password_hash) FROM users LIMIT 1)", []string{ShapeInjectionSubquery}, p},
		{"in a CTE", "WITH x AS (SELECT * FROM products WHERE id = 1 AND ascii((SELECT email FROM users LIMIT 1)) > 64) SELECT * FROM x", []string{ShapeInjectionSubquery}, e},
		{"in a subquery in FROM", "SELECT * FROM (SELECT * FROM products WHERE id = 1 AND ascii((SELECT email FROM users LIMIT 1)) > 64) AS t", []string{ShapeInjectionSubquery}, e},
		{"through a view", "SELECT * FROM products WHERE id = 1 AND ascii((SELECT email FROM user_emails OFFSET 2 LIMIT 1)) > 64", []string{ShapeInjectionSubquery}, e},
		{"through a function", "SELECT * FROM products WHERE id = 1 AND ascii((SELECT newest_email() LIMIT 1)) > 64", []string{ShapeInjectionSubquery}, e},
		{"into a stored value", "UPDATE products SET description = (SELECT password_hash FROM users ORDER BY id LIMIT 1) WHERE id = 1", []string{ShapeInjectionSubquery}, p},
		{"into inserted values", "INSERT INTO products (id, name) VALUES (7, (SELECT email FROM users OFFSET 3 LIMIT 1))", []string{ShapeInjectionSubquery}, e},
		{"into a DELETE condition", "DELETE FROM products WHERE id = 1 AND ascii((SELECT email FROM users LIMIT 1)) > 64", []string{ShapeInjectionSubquery}, e},
		{"cast, issue", "SELECT * FROM products WHERE id = 1 AND 1=CAST((CHR(113)||(SELECT email FROM users LIMIT 1 OFFSET 0)||CHR(113)) AS NUMERIC)",
			[]string{ShapeInjectionCast, ShapeInjectionMarkers, ShapeInjectionSubquery}, e},
		{"cast ::int, issue", "SELECT * FROM products WHERE id = 1 AND (SELECT password_hash FROM users LIMIT 1)::int = 1", []string{ShapeInjectionCast, ShapeInjectionSubquery}, p},
		{"cast to date", "SELECT * FROM products WHERE id = 1 AND CAST((SELECT email FROM users WHERE id = 1) AS date) IS NULL", []string{ShapeInjectionCast}, e},
		{"cast to boolean", "SELECT * FROM products WHERE id = 1 AND (SELECT email FROM users WHERE id = 1)::boolean", []string{ShapeInjectionCast}, e},
		{"cast to json", "SELECT * FROM products WHERE id = 1 AND (SELECT password_hash FROM users WHERE id = 2)::jsonb IS NULL", []string{ShapeInjectionCast}, p},
		{"to_number", "SELECT * FROM products WHERE id = 1 AND to_number((SELECT email FROM users WHERE id = 1), '999') = 1", []string{ShapeInjectionCast}, e},
		{"int4()", "SELECT * FROM products WHERE id = int4((SELECT password_hash FROM users WHERE id = 1))", []string{ShapeInjectionCast}, p},
		{"cast of a column", "SELECT CAST(email AS numeric) FROM users", []string{ShapeInjectionCast}, e},
		{"markers, tilde", "SELECT * FROM products WHERE id = 1 AND 1=(SELECT '~'||email||'~' FROM users WHERE id = 1)::int",
			[]string{ShapeInjectionCast, ShapeInjectionMarkers}, e},
		{"markers with concat()", "SELECT * FROM products WHERE id = (SELECT CONCAT(CONCAT('qzvkq',(SELECT email FROM users LIMIT 1)),'qxjvq'))",
			[]string{ShapeInjectionMarkers, ShapeInjectionSubquery}, e},
		{"sleep, issue", "SELECT * FROM products WHERE id=1 AND 1=(CASE WHEN (ASCII(SUBSTR((SELECT email FROM users LIMIT 1),1,1))>64) THEN (SELECT 1 FROM PG_SLEEP(5)) ELSE 1 END)",
			[]string{ShapeInjectionSleep, ShapeInjectionSubquery}, e},
		{"sleep in WHERE", "SELECT * FROM products WHERE id = 1 AND pg_sleep(5) IS NOT NULL", []string{ShapeInjectionSleep}, nil},
		{"sleep in the target list", "SELECT name, pg_sleep(5) FROM products WHERE id = 1", []string{ShapeInjectionSleep}, nil},
		{"sleep until", "SELECT * FROM products WHERE id = 1 AND 1=(SELECT 1 FROM pg_sleep_until(now() + interval '5 seconds'))", []string{ShapeInjectionSleep}, nil},
		{"sleep qualified", "SELECT * FROM products WHERE id = 1 OR pg_catalog.pg_sleep(5) IS NULL", []string{ShapeInjectionSleep}, nil},
		{"stacked, issue", "SELECT * FROM products WHERE id=1; SELECT pg_sleep(5)--", []string{ShapeStacked, ShapeInjectionSleep}, nil},
		{"stacked DROP, issue", "SELECT * FROM products WHERE id=1; DROP TABLE x", []string{ShapeStacked}, nil},
		{"stacked after an INSERT", "INSERT INTO products (id, name) VALUES (1, 'x'); SELECT email FROM users", []string{ShapeStacked}, e},
	}
}

// benignCorpus are the application's and tools' own statements: none may
// have an injection shape.
var benignCorpus = []string{
	// Lookups and pages.
	"SELECT id, name, price FROM products WHERE id = $1",
	"SELECT id, name, price FROM products WHERE id = 1",
	"SELECT id, name, price FROM products ORDER BY id LIMIT 20 OFFSET 40",
	"SELECT id, name, price FROM products ORDER BY id LIMIT $1 OFFSET $2",
	"SELECT * FROM products WHERE category_id = $1 ORDER BY price DESC LIMIT 1",
	"SELECT id, email, username FROM users WHERE id = $1",
	"SELECT id, password_hash FROM users WHERE email = $1",
	"SELECT id, password_hash FROM users WHERE lower(email) = lower($1) LIMIT 1",
	"SELECT id, email FROM users ORDER BY created_at DESC LIMIT 50 OFFSET $1",
	"SELECT * FROM users WHERE email = $1",
	"SELECT count(*) FROM users",
	"SELECT count(*) FROM users WHERE email LIKE $1",
	"SELECT email::text FROM users WHERE id = $1",
	"SELECT id, created_at::date FROM users WHERE id = $1",
	"SELECT CAST(email AS varchar(255)) FROM users WHERE id = $1",
	"SELECT email::citext FROM users WHERE id = $1",
	"SELECT convert_to(password_hash, 'UTF8')::bytea FROM users WHERE id = $1",
	"SELECT id::text, price::numeric(10,2), (price * 100)::int FROM products",
	"SELECT first_name || ' ' || last_name AS full_name FROM users WHERE id = $1",
	"SELECT username || ' <' || email || '>' FROM users WHERE id = $1",
	"SELECT 'mailto:' || email FROM users WHERE id = $1",
	"SELECT chr(34) || email || chr(34) FROM users",
	"SELECT concat(first_name, ' ', last_name, ' <', email, '>') FROM users WHERE id = $1",
	"SELECT CASE WHEN is_admin THEN 'admin' ELSE 'user' END, email FROM users WHERE id = $1",
	"SELECT category_id, count(*), CASE WHEN count(*) > 10 THEN 'big' ELSE 'small' END FROM products GROUP BY category_id",
	"SELECT sum(CASE WHEN total > 100 THEN 1 ELSE 0 END) FROM orders WHERE created_at > now() - interval '1 day'",
	// Writes.
	"INSERT INTO users (email, username, password_hash) VALUES ($1, $2, $3) RETURNING id",
	"INSERT INTO users (email, username, password_hash) VALUES ('a@example.com', 'a', '$2b$10$abc') RETURNING id, email",
	"UPDATE users SET password_hash = $1 WHERE id = $2",
	"UPDATE users SET email = lower(email) WHERE id = $1",
	"UPDATE orders SET contact_email = (SELECT email FROM users WHERE id = $1) WHERE id = $2",
	"INSERT INTO orders (user_id, product_id, total, contact_email) VALUES ($1, $2, $3, (SELECT email FROM users WHERE id = $1))",
	"DELETE FROM users WHERE id = $1",
	// Subqueries as applications and ORMs write them.
	"SELECT * FROM orders WHERE user_id = (SELECT id FROM users WHERE email = $1)",
	"SELECT * FROM users WHERE id IN (SELECT user_id FROM orders WHERE total > $1)",
	"SELECT * FROM products p WHERE EXISTS (SELECT 1 FROM users u WHERE u.email = $1 AND u.is_admin)",
	"SELECT id FROM users WHERE EXISTS (SELECT 1 FROM users WHERE email = $1)",
	"SELECT o.id, (SELECT u.email FROM users u WHERE u.id = o.user_id) AS email FROM orders o",
	`SELECT "orders"."id", (SELECT U0."email" FROM "users" U0 WHERE U0."id" = ("orders"."user_id") LIMIT 1) AS "user_email" FROM "orders"`,
	`SELECT "orders".* FROM "orders" WHERE (SELECT U0."email" FROM "users" U0 WHERE U0."id" = "orders"."user_id" LIMIT 1) LIKE $1`,
	`SELECT "users"."id", "users"."email" FROM "users" WHERE "users"."id" = $1 LIMIT $2`,
	`SELECT "users".* FROM "users" WHERE "users"."email" = $1 LIMIT $2`,
	`SELECT 1 AS one FROM "users" WHERE "users"."email" = $1 LIMIT $2`,
	"select u1_0.id,u1_0.email,u1_0.password_hash,u1_0.username from users u1_0 where u1_0.email=$1",
	"select o1_0.id from orders o1_0 where o1_0.user_id in (select u1_0.id from users u1_0 where u1_0.email like $1 escape '')",
	"SELECT * FROM orders WHERE contact_email = (SELECT email FROM users WHERE id = $1)",
	"SELECT (SELECT email FROM users WHERE id = $1) AS email, (SELECT count(*) FROM orders WHERE user_id = $1) AS orders",
	"SELECT (SELECT email FROM users WHERE id = $1) = $2",
	"SELECT * FROM products WHERE price > (SELECT avg(price) FROM products)",
	"SELECT * FROM products WHERE id = (SELECT product_id FROM orders ORDER BY created_at DESC LIMIT 1)",
	"SELECT u.email, latest.total FROM users u CROSS JOIN LATERAL (SELECT total FROM orders o WHERE o.user_id = u.id ORDER BY created_at DESC LIMIT 1) latest WHERE u.id = $1",
	"SELECT * FROM orders WHERE user_id = $1 AND created_at > (SELECT created_at FROM users WHERE id = $1)",
	"WITH recent AS (SELECT user_id FROM orders WHERE created_at > $1) SELECT email FROM users WHERE id IN (SELECT user_id FROM recent)",
	// Set operations the application designs.
	"SELECT id, name FROM products WHERE category_id = $1 UNION SELECT id, name FROM categories WHERE id = $1",
	"SELECT id, name, 'product' AS kind FROM products UNION ALL SELECT id, name, 'category' FROM categories",
	"SELECT email FROM users WHERE id = $1 UNION SELECT contact_email FROM vendors WHERE id = $2",
	"SELECT id, email FROM users WHERE created_at > $1 UNION ALL SELECT id, email FROM users WHERE is_admin",
	"SELECT id, email, NULL AS phone FROM users UNION ALL SELECT id, contact_email, phone FROM vendors",
	"SELECT id, email, NULL AS phone FROM users WHERE id = $1 UNION ALL SELECT id, NULL, phone FROM vendors WHERE id = $1",
	"SELECT id, email, NULL AS deleted_at FROM users UNION ALL SELECT id, email, deleted_at FROM archived_users",
	"SELECT id, email, 'active' FROM users UNION ALL SELECT id, email, 'archived' FROM archived_users",
	"SELECT email FROM users INTERSECT SELECT email FROM archived_users",
	"SELECT email FROM users EXCEPT SELECT contact_email FROM vendors",
	// Sleeps on their own: maintenance, tests, rate limits.
	"SELECT pg_sleep(1)",
	"SELECT pg_sleep($1)",
	"SELECT pg_sleep_for('100 milliseconds')",
	"SELECT * FROM pg_sleep(0.5)",
	// Catalog and tool queries.
	"SELECT c.relname, a.attname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid WHERE c.relname = $1 AND a.attnum > 0",
	"SELECT n.nspname, c.relname FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r','p','v','m') ORDER BY 1, 2",
	"SELECT pg_catalog.format_type(a.atttypid, a.atttypmod), (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef) FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1::regclass",
	"SELECT version()",
	"SELECT current_setting('server_version_num')::int",
	"SELECT setting::int FROM pg_settings WHERE name = 'max_connections'",
	"COPY public.users (id, email, username, password_hash) TO stdout",
	// Several statements that are not stacked: scripts of DDL, one
	// statement in a transaction.
	"CREATE TABLE t (id int); CREATE INDEX t_id ON t (id); ALTER TABLE t ADD COLUMN note text",
	"ALTER TABLE users ADD COLUMN last_login timestamptz; UPDATE users SET last_login = created_at",
	"BEGIN; UPDATE users SET password_hash = $1 WHERE id = $2; COMMIT",
	"BEGIN; SELECT email FROM users WHERE id = $1; COMMIT;",
	"SET search_path TO public; SELECT id FROM products WHERE id = $1",
	"SELECT id FROM products WHERE id = $1;",
	"SELECT id FROM products WHERE id = $1; -- trailing comment",
	// The schema's own shapes (a view, a function body) are not the text's.
	"SELECT * FROM first_signup",
	"SELECT newest_email()",
	"SELECT * FROM products WHERE description = newest_email()",
}

// normalized returns sql as pg_stat_statements records it, literals
// replaced by $n, when that differs and parses (utility statements are not
// normalized by pg_stat_statements, and some of their normalized forms do
// not parse).
func normalized(sql string) []string {
	norm, err := pg_query.Normalize(sql)
	if err != nil || norm == sql {
		return nil
	}
	if _, err := pg_query.Parse(norm); err != nil {
		return nil
	}
	return []string{norm}
}

func hasInjectionShape(shapes []string) bool { return slices.ContainsFunc(shapes, InjectionShape) }

// TestInjectionCorpus classifies sqlmap's payloads and hand-written
// injections, as sent and as pg_stat_statements normalizes them: each must
// have its shapes and name the sensitive table and columns it pulls out,
// read or referenced.
func TestInjectionCorpus(t *testing.T) {
	snap := injectionSnapshot(t)
	corpus := append(sqlmapCorpus(), handCorpus()...)
	if len(corpus) < 500 {
		t.Fatalf("injected corpus has %d statements, want at least 500", len(corpus))
	}
	seen := make(map[string]bool)
	for _, in := range corpus {
		texts := append([]string{in.sql}, normalized(in.sql)...)
		for i, sql := range texts {
			if seen[sql] {
				continue
			}
			seen[sql] = true
			got := Classify(sql, snap, defaultPath, "webapp")
			where := in.name
			if i > 0 {
				where += " (normalized)"
			}
			if !got.Complete {
				t.Errorf("%s: %q: incomplete: %q", where, sql, got.Problems)
			}
			for _, s := range in.shapes {
				if !slices.Contains(got.Shapes, s) {
					t.Errorf("%s: %q: got shapes %q, want %s among them", where, sql, got.Shapes, s)
				}
			}
			for _, c := range in.cols {
				q := "public.users." + c
				if !slices.Contains(got.SensitiveRead, q) && !slices.Contains(got.SensitiveReferenced, q) {
					t.Errorf("%s: %q: %s neither read (%q) nor referenced (%q)", where, sql, q, got.SensitiveRead, got.SensitiveReferenced)
				}
			}
			if len(in.cols) > 0 && !slices.Contains(got.Relations, "public.users") {
				t.Errorf("%s: %q: relations %q lack public.users", where, sql, got.Relations)
			}
			checkInvariants(t, sql, got)
		}
	}
	t.Logf("%d injected statements (%d with their normalized forms)", len(corpus), len(seen))
}

// TestBenignCorpus checks that the application's own statements, as sent
// and normalized, have no injection shape.
func TestBenignCorpus(t *testing.T) {
	snap := injectionSnapshot(t)
	for _, sql := range benignCorpus {
		texts := append([]string{sql}, normalized(sql)...)
		for _, text := range texts {
			got := Classify(text, snap, defaultPath, "webapp")
			if hasInjectionShape(got.Shapes) {
				t.Errorf("%q: got shapes %q, want no injection shape", text, got.Shapes)
			}
			checkInvariants(t, text, got)
		}
	}
	t.Logf("%d benign statements", len(benignCorpus))
}

// TestInjectionVerdicts checks the verdicts injection shapes come with: what
// a blind read references, that an error-based cast is a read (the error
// message carries the value), and that a text of several statements keeps
// what each reads.
func TestInjectionVerdicts(t *testing.T) {
	snap := injectionSnapshot(t)
	for _, tc := range []struct {
		name, sql                string
		read, referenced, shapes []string
		access                   map[string]string
	}{
		{"boolean blind references", "SELECT * FROM products WHERE id = 1 AND ascii(substr((SELECT password_hash FROM users ORDER BY id OFFSET 3 LIMIT 1), 2, 1)) > 64",
			nil, []string{password}, []string{ShapeInjectionSubquery}, map[string]string{"public.users": AccessPage}},
		{"error-based cast reads", "SELECT * FROM products WHERE id = 1 AND 1 = CAST((SELECT email FROM users WHERE id = 1) AS numeric)",
			[]string{email}, nil, []string{ShapeInjectionCast}, map[string]string{"public.users": AccessPoint}},
		{"cast under EXPLAIN does not run", "EXPLAIN SELECT * FROM products WHERE id = 1 AND 1 = CAST((SELECT email FROM users WHERE id = 1) AS numeric)",
			nil, []string{email}, []string{ShapeInjectionCast}, nil},
		{"union reads", "SELECT id, name FROM products WHERE id = 1 UNION ALL SELECT NULL, email FROM users",
			[]string{email}, nil, []string{ShapeInjectionUnion}, map[string]string{"public.users": AccessScan}},
		{"stacked keeps every statement's reads", "SELECT email FROM users WHERE id = 1; SELECT password_hash FROM users WHERE username = 'x'",
			[]string{email, password}, []string{username}, []string{ShapeStacked}, map[string]string{"public.users": AccessRange}},
		{"stacked keeps references", "SELECT name FROM products WHERE id = 1; SELECT count(*) FROM users WHERE email LIKE 'a%'",
			nil, []string{email}, []string{ShapeStacked}, map[string]string{"public.users": AccessRange}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Classify(tc.sql, snap, defaultPath, "webapp")
			if !equal(got.SensitiveRead, tc.read) || !equal(got.SensitiveReferenced, tc.referenced) {
				t.Errorf("got read %q, referenced %q; want %q, %q", got.SensitiveRead, got.SensitiveReferenced, tc.read, tc.referenced)
			}
			if !slices.Equal(got.Shapes, tc.shapes) {
				t.Errorf("got shapes %q, want %q", got.Shapes, tc.shapes)
			}
			if len(got.Access) != len(tc.access) || !equalAccess(got.Access, tc.access) {
				t.Errorf("got access %v, want %v", got.Access, tc.access)
			}
		})
	}
}

func equalAccess(a, b map[string]string) bool {
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return len(a) == len(b)
}

// TestInjectionShapesOnlyInTheText checks that view definitions and function
// bodies, which the schema's owner wrote, do not lend the statement their
// shapes, and that an ambiguous name's alternative analysis keeps them.
func TestInjectionShapesOnlyInTheText(t *testing.T) {
	snap := injectionSnapshot(t)
	for _, sql := range []string{"SELECT * FROM first_signup", "SELECT newest_email()"} {
		if got := Classify(sql, snap, defaultPath, "webapp"); len(got.Shapes) > 0 {
			t.Errorf("%s: got shapes %q, want none", sql, got.Shapes)
		}
	}
	amb := searchPathSnapshot(t)
	sql := "SELECT id, total FROM orders WHERE id = 1 UNION ALL SELECT NULL, email FROM users"
	if got := Classify(sql, amb, defaultPath, "app"); !slices.Contains(got.Shapes, ShapeInjectionUnion) {
		t.Errorf("%s with an ambiguous users: got shapes %q, want %s", sql, got.Shapes, ShapeInjectionUnion)
	}
}

// TestSQLMapFixture classifies what sqlmap really sent to an injectable page
// (testdata/sqlmap_live.txt, recorded by TestUpdateSQLMapFixture): every
// statement that touches users' sensitive columns has an injection shape and
// names the table, every sleep is injection_sleep and every stacked text is
// stacked. Counting users' rows (sqlmap's COUNT(*) before a dump) pulls no
// value and needs no shape.
func TestSQLMapFixture(t *testing.T) {
	data, err := os.ReadFile("testdata/sqlmap_live.txt")
	if err != nil {
		t.Fatal(err)
	}
	snap := injectionSnapshot(t)
	n, shaped := 0, 0
	for line := range strings.Lines(string(data)) {
		sql := strings.TrimRight(line, "\n")
		if sql == "" || strings.HasPrefix(sql, "#") {
			continue
		}
		n++
		got := Classify(sql, snap, defaultPath, "webapp")
		if !got.Complete {
			t.Errorf("%q: incomplete: %q", sql, got.Problems)
		}
		if len(got.SensitiveRead)+len(got.SensitiveReferenced) > 0 {
			shaped++
			if !hasInjectionShape(got.Shapes) || !slices.Contains(got.Relations, "public.users") {
				t.Errorf("%q: got shapes %q, relations %q; want an injection shape and public.users", sql, got.Shapes, got.Relations)
			}
		}
		if strings.Contains(strings.ToUpper(sql), "PG_SLEEP(") && !slices.Contains(got.Shapes, ShapeInjectionSleep) {
			t.Errorf("%q: got shapes %q, want %s", sql, got.Shapes, ShapeInjectionSleep)
		}
		if tree, err := pg_query.Parse(sql); err == nil && len(tree.GetStmts()) > 1 && !slices.Contains(got.Shapes, ShapeStacked) {
			t.Errorf("%q: got shapes %q, want %s", sql, got.Shapes, ShapeStacked)
		}
	}
	if n < 150 || shaped < 100 {
		t.Errorf("fixture has %d statements, %d touching sensitive columns: want at least 150 and 100", n, shaped)
	}
	t.Logf("%d statements sqlmap sent, %d of them touching sensitive columns", n, shaped)
}
