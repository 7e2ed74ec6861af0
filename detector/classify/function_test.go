package classify

import (
	"testing"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
)

// functionSnapshot adds functions, partitions and inheritance children to
// the tables of testSnapshot.
func functionSnapshot(t testing.TB) *catalog.Snapshot {
	t.Helper()
	userCols := []string{"id", "email", "username", "password_hash", "created_at"}
	snap, err := catalog.New([]catalog.Relation{
		{Schema: "public", Name: "users", Kind: catalog.Table, Columns: userCols},
		{Schema: "public", Name: "orders", Kind: catalog.Table, Columns: []string{"id", "user_id", "total"}},
		{Schema: "public", Name: "users_old", Kind: catalog.Table, Columns: userCols, Inherits: []string{"public.users"}},
		{Schema: "auth", Name: "tokens", Kind: catalog.PartitionedTable, Columns: []string{"user_id", "token"}},
		{Schema: "auth", Name: "tokens_p0", Kind: catalog.Table, Columns: []string{"user_id", "token"}, Inherits: []string{"auth.tokens"}},
		{Schema: "public", Name: "user_mail", Kind: catalog.View, Columns: []string{"id", "email"}, ViewDef: "SELECT id, email FROM users"},
		{Schema: "public", Name: "order_view", Kind: catalog.View, Columns: []string{"id"}, ViewDef: "SELECT id FROM orders"},
	}, map[string][]string{
		"public.users": {"email", "username", "password_hash"},
		"auth.tokens":  {"token"},
	}, catalog.WithFunctions([]catalog.Function{
		{Schema: "public", Name: "get_users", Language: "sql", ReturnsSet: true, ReturnType: "users", ResultColumns: userCols,
			Body: "SELECT * FROM users"},
		{Schema: "public", Name: "pick", Language: "sql", Args: []string{"a", "b"}, ArgTypes: []string{"text", "text"}, ReturnType: "text",
			Body: "SELECT $2"},
		{Schema: "public", Name: "join_all", Language: "sql", Args: []string{"parts"}, ArgTypes: []string{"text[]"}, Variadic: true, ReturnType: "text",
			Body: "SELECT array_to_string(parts, ',')"},
		{Schema: "public", Name: "two_steps", Language: "sql", ReturnType: "bigint",
			Body: "INSERT INTO orders (id) SELECT length(email) FROM users; SELECT count(*) FROM users"},
		{Schema: "public", Name: "token_of", Language: "sql", Args: []string{"uid"}, ArgTypes: []string{"bigint"}, ReturnType: "text",
			Body: "SELECT token FROM tokens WHERE user_id = uid", SearchPath: []string{"auth"}},
		{Schema: "public", Name: "shout", Language: "plpgsql", Args: []string{"t"}, ArgTypes: []string{"text"}, ReturnType: "text",
			Body: "DECLARE suffix text := '!'; BEGIN IF t IS NULL THEN RETURN NULL; ELSIF t = '' THEN RETURN ''; END IF; RETURN upper(t) || suffix; END"},
		{Schema: "public", Name: "noisy", Language: "plpgsql", ReturnType: "void",
			Body: "BEGIN RAISE NOTICE 'first: %', (SELECT email FROM users LIMIT 1); EXCEPTION WHEN others THEN RAISE NOTICE 'failed'; END"},
		{Schema: "public", Name: "loop_users", Language: "plpgsql", ReturnsSet: true, ReturnType: "text",
			Body: "DECLARE r record; BEGIN FOR r IN SELECT email FROM users LOOP RETURN NEXT r.email; END LOOP; END"},
		{Schema: "public", Name: "c_text", Language: "c", ReturnType: "text", Args: []string{""}, ArgTypes: []string{"text"}},
		{Schema: "public", Name: "c_check", Language: "c", ReturnType: "boolean", Args: []string{""}, ArgTypes: []string{"text"}},
		{Schema: "public", Name: "broken", Language: "sql", ReturnType: "text", Body: "SELEC email FROM users"},
		{Schema: "hidden", Name: "leak", Language: "sql", ReturnType: "text", Body: "SELECT password_hash FROM public.users LIMIT 1"},
		{Schema: "public", Name: "count", Language: "sql", Args: []string{"a"}, ArgTypes: []string{"text"}, ReturnType: "text", Body: "SELECT a"},

		// Unanalysable PL/pgSQL bodies, complete or not by what they could read.
		{Schema: "public", Name: "order_sum", Language: "plpgsql", Args: []string{"uid"}, ArgTypes: []string{"bigint"}, ReturnType: "numeric",
			Body: "DECLARE s numeric := 0; r record; BEGIN FOR r IN SELECT total FROM orders WHERE user_id = uid LOOP s := s + r.total; END LOOP; RETURN s; END"},
		{Schema: "public", Name: "order_sum_definer", Language: "plpgsql", Args: []string{"uid"}, ArgTypes: []string{"bigint"}, ReturnType: "numeric", SecurityDefiner: true,
			Body: "DECLARE s numeric; BEGIN SELECT sum(total) INTO s FROM public.orders WHERE user_id = uid; RETURN s; END"},
		{Schema: "public", Name: "label", Language: "plpgsql", Args: []string{"t"}, ArgTypes: []string{"text"}, ReturnType: "text",
			Body: "DECLARE m text; BEGIN m := 'users: ' || t; RETURN m; END"},
		{Schema: "public", Name: "email_of", Language: "plpgsql", Args: []string{"uid"}, ArgTypes: []string{"bigint"}, ReturnType: "text",
			Body: "DECLARE e text; BEGIN SELECT email INTO e FROM users WHERE id = uid; RETURN e; END"},
		{Schema: "public", Name: "email_twice", Language: "plpgsql", Args: []string{"uid"}, ArgTypes: []string{"bigint"}, ReturnType: "text",
			Body: "DECLARE e text; BEGIN e := email_of(uid); RETURN e || e; END"},
		{Schema: "public", Name: "dyn_count", Language: "plpgsql", Args: []string{"tbl"}, ArgTypes: []string{"text"}, ReturnType: "bigint",
			Body: "DECLARE n bigint; BEGIN EXECUTE format('SELECT count(*) FROM %I', tbl) INTO n; RETURN n; END"},
		{Schema: "public", Name: "remote_note", Language: "plpgsql", Args: []string{"q"}, ArgTypes: []string{"text"}, ReturnType: "text",
			Body: "DECLARE n text; BEGIN SELECT x INTO n FROM dblink('remote', q) AS t(x text); RETURN n; END"},
		{Schema: "public", Name: "via_c", Language: "plpgsql", Args: []string{"t"}, ArgTypes: []string{"text"}, ReturnType: "text",
			Body: "DECLARE r text; BEGIN r := c_check(t)::text; RETURN r; END"},
		{Schema: "public", Name: "has_token", Language: "plpgsql", Args: []string{"uid"}, ArgTypes: []string{"bigint"}, ReturnType: "boolean",
			Body: "DECLARE n int; BEGIN SELECT count(*) INTO n FROM auth.tokens_p0 WHERE user_id = uid; RETURN n > 0; END"},
		{Schema: "public", Name: "mailing", Language: "plpgsql", ReturnType: "text",
			Body: "DECLARE e text; BEGIN SELECT email INTO e FROM public.user_mail LIMIT 1; RETURN e; END"},
		{Schema: "public", Name: "order_ids", Language: "plpgsql", ReturnType: "bigint",
			Body: "DECLARE n bigint; BEGIN SELECT max(id) INTO n FROM order_view; RETURN n; END"},
		{Schema: "public", Name: "ping", Language: "plpgsql", Args: []string{"n"}, ArgTypes: []string{"int"}, ReturnType: "text",
			Body: "DECLARE x text; BEGIN IF n > 0 THEN x := pong(n - 1); END IF; RETURN x; END"},
		{Schema: "public", Name: "pong", Language: "plpgsql", Args: []string{"n"}, ArgTypes: []string{"int"}, ReturnType: "text",
			Body: "DECLARE x text; BEGIN x := ping(n); IF x IS NULL THEN SELECT username INTO x FROM users LIMIT 1; END IF; RETURN x; END"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func TestClassifyFunctionsAndPartitions(t *testing.T) {
	snap := functionSnapshot(t)
	users := []string{"public.users"}
	token := "auth.tokens.token"
	tests := []struct {
		name string
		sql  string
		want want
	}{
		{"set-returning SQL function", "SELECT email FROM get_users()",
			want{op: "SELECT", relations: users, read: []string{email}}},
		{"function in a predicate", "SELECT 1 WHERE EXISTS (SELECT 1 FROM get_users() g WHERE g.password_hash = $1)",
			want{op: "SELECT", relations: users, referenced: []string{password}}},
		{"$n carries the argument", "SELECT pick(id::text, email) FROM users",
			want{op: "SELECT", relations: users, read: []string{email}}},
		{"unused argument", "SELECT pick(email, 'x') FROM users",
			want{op: "SELECT", relations: users}},
		{"named arguments", "SELECT pick(b => email, a => 'x') FROM users",
			want{op: "SELECT", relations: users, read: []string{email}}},
		{"variadic", "SELECT join_all('a', username, 'b') FROM users",
			want{op: "SELECT", relations: users, read: []string{username}}},
		{"every statement of the body runs", "SELECT two_steps()",
			want{op: "SELECT", relations: []string{"public.orders", "public.users"}, referenced: []string{email}}},
		{"function's own search_path", "SELECT token_of(1)",
			want{op: "SELECT", relations: []string{"auth.tokens"}, read: []string{token}}},
		{"PL/pgSQL RETURN with IF and a default", "SELECT shout(username) FROM users",
			want{op: "SELECT", relations: users, read: []string{username}}},
		{"PL/pgSQL RAISE reaches the client", "SELECT noisy()",
			want{op: "SELECT", relations: users, read: []string{email}}},
		{"PL/pgSQL loop over a query", "SELECT * FROM loop_users()",
			want{op: "SELECT", relations: users, incomplete: true, problem: "PL/pgSQL fors statement is not analysed"}},

		// Unanalysable PL/pgSQL: incomplete only when the body could read
		// sensitive data.
		{"PL/pgSQL loop over orders", "SELECT id, order_sum(id) FROM users",
			want{op: "SELECT", relations: users}},
		{"PL/pgSQL argument still flows", "SELECT order_sum(length(email)::bigint), label(username) FROM users",
			want{op: "SELECT", relations: users, read: []string{username}, referenced: []string{email}}},
		{"SECURITY DEFINER over orders", "SELECT order_sum_definer(1)",
			want{op: "SELECT"}},
		{"table name in a string literal", "SELECT label('x')",
			want{op: "SELECT"}},
		{"SELECT INTO from users", "SELECT id, email_of(id) FROM orders",
			want{op: "SELECT", relations: []string{"public.orders", "public.users"}, incomplete: true,
				problems: []string{"function public.email_of(bigint): PL/pgSQL SELECT INTO a variable is not analysed and could read sensitive data: reaches sensitive relation public.users"}}},
		{"through another PL/pgSQL function", "SELECT email_twice(1)",
			want{op: "SELECT", relations: users, incomplete: true, problem: "email_twice(bigint): PL/pgSQL assign statement is not analysed"}},
		{"EXECUTE", "SELECT dyn_count('orders')",
			want{op: "SELECT", incomplete: true, problem: "runs dynamic SQL (EXECUTE)"}},
		{"dblink in the body", "SELECT remote_note($1)",
			want{op: "SELECT", incomplete: true, problem: "runs dynamic SQL (dblink)"}},
		{"through a C function", "SELECT via_c('x')",
			want{op: "SELECT", incomplete: true, problem: "calls public.c_check(text), in language c"}},
		{"boolean PL/pgSQL over a partition", "SELECT id FROM orders WHERE has_token(user_id)",
			want{op: "SELECT", relations: []string{"auth.tokens", "auth.tokens_p0", "public.orders"}, incomplete: true, problem: "reaches sensitive relation auth.tokens_p0"}},
		{"through a view", "SELECT mailing()",
			want{op: "SELECT", relations: users, incomplete: true, problem: "reaches sensitive relation public.users"}},
		{"through a view over orders", "SELECT order_ids()",
			want{op: "SELECT"}},
		{"mutual recursion", "SELECT ping(3), pong(2)",
			want{op: "SELECT", relations: users, incomplete: true, problem: "public.ping(int): PL/pgSQL assign statement is not analysed"}},
		{"C function returning text", "SELECT c_text(email) FROM users",
			want{op: "SELECT", relations: users, read: []string{email}, incomplete: true, problem: "language c"}},
		{"C function returning boolean", "SELECT c_check(email) FROM users",
			want{op: "SELECT", relations: users, referenced: []string{email}}},
		{"unparsable body", "SELECT broken()",
			want{op: "SELECT", incomplete: true, problem: "body of function public.broken() cannot be parsed"}},
		{"function off the search path", "SELECT leak()",
			want{op: "SELECT", relations: users, read: []string{password}, incomplete: true, problem: `function name "leak" is not on the search path`}},
		{"qualified function", "SELECT hidden.leak()",
			want{op: "SELECT", relations: users, read: []string{password}}},
		{"user function shadowing count", "SELECT count(email) FROM users",
			want{op: "SELECT", relations: users, read: []string{email}}},
		{"pg_catalog.count is the built-in", "SELECT pg_catalog.count(email) FROM users",
			want{op: "SELECT", relations: users, referenced: []string{email}}},

		// Partitions and inheritance children report the configured table.
		{"partition", "SELECT token FROM auth.tokens_p0",
			want{op: "SELECT", relations: []string{"auth.tokens", "auth.tokens_p0"}, read: []string{token}}},
		{"inheritance child", "SELECT * FROM users_old WHERE email = $1",
			want{op: "SELECT", relations: []string{"public.users", "public.users_old"}, read: []string{email, password, username}}},
		{"partition predicate", "SELECT user_id FROM auth.tokens_p0 WHERE token = $1",
			want{op: "SELECT", relations: []string{"auth.tokens", "auth.tokens_p0"}, referenced: []string{token}}},

		// COPY destinations.
		{"copy to stdout", "COPY users (email) TO STDOUT", want{op: "COPY", relations: users, read: []string{email}}},
		{"copy to file", "COPY users (email) TO '/tmp/x'", want{op: "COPY TO FILE", relations: users, read: []string{email}}},
		{"copy to program", "COPY (SELECT password_hash FROM users) TO PROGRAM 'gzip > /tmp/x.gz'",
			want{op: "COPY TO PROGRAM", relations: users, read: []string{password}}},
		{"copy from program", "COPY users (email) FROM PROGRAM 'cat /tmp/x'", want{op: "COPY", relations: users}},

		// Value-free expressions.
		{"comparison in target list", "SELECT email = $1 FROM users", want{op: "SELECT", relations: users, referenced: []string{email}}},
		{"in list", "SELECT username IN ('a', 'b') FROM users", want{op: "SELECT", relations: users, referenced: []string{username}}},
		{"length", "SELECT octet_length(password_hash) FROM users", want{op: "SELECT", relations: users, referenced: []string{password}}},
		{"nullif carries", "SELECT nullif(email, '') FROM users", want{op: "SELECT", relations: users, read: []string{email}}},
		{"arithmetic on length carries nothing", "SELECT length(email) + 1 FROM users", want{op: "SELECT", relations: users, referenced: []string{email}}},
		{"case result carries", "SELECT CASE WHEN email LIKE $1 THEN username END FROM users",
			want{op: "SELECT", relations: users, read: []string{username}, referenced: []string{email}}},

		// SQL in string literals.
		{"query_to_xml", "SELECT query_to_xml('SELECT token FROM auth.tokens', true, false, '')",
			want{op: "SELECT", relations: []string{"auth.tokens"}, read: []string{token}}},
		{"table_to_xml quoted", `SELECT table_to_xml('"auth".tokens_p0', true, false, '')`,
			want{op: "SELECT", relations: []string{"auth.tokens", "auth.tokens_p0"}, read: []string{token}}},
		{"table_to_xmlschema", "SELECT table_to_xmlschema('users', true, false, '')", want{op: "SELECT", relations: users}},
		{"dblink with fail flag", "SELECT * FROM dblink('SELECT email FROM users', false) AS t(e text)",
			want{op: "SELECT", relations: users, read: []string{email}}},
		{"nested literal", "SELECT query_to_xml('SELECT query_to_xml(''SELECT username FROM users'', true, false, '''')', true, false, '')",
			want{op: "SELECT", relations: users, read: []string{username}}},
		{"literal in a predicate", "SELECT 1 WHERE query_to_xml('SELECT email FROM users', true, false, '') IS NOT NULL",
			want{op: "SELECT", relations: users, referenced: []string{email}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, Classify(tt.sql, snap, defaultPath, "app"), tt.want)
		})
	}
}
