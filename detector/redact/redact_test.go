package redact_test

import (
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgtripwire/pgtripwire/detector/redact"
)

func TestStatement(t *testing.T) {
	tests := []struct {
		name, sql, want string
	}{
		{"select literal", `SELECT * FROM users WHERE email = 'alice@example.com'`,
			`SELECT * FROM users WHERE email = $1`},
		{"numbers", `SELECT 1, -2.5, 1e5, 0x1F, 1_000 FROM t LIMIT 10`,
			`SELECT $1, -$2, $3, $4, $5 FROM t LIMIT $6`},
		{"bit and hex strings", `SELECT B'101', X'ff'`, `SELECT $1, $2`},
		{"escape and unicode strings", `SELECT E'al\'ice', U&'d\0061t' UESCAPE '!'`,
			`SELECT $1, $2 UESCAPE $3`},
		{"national string", `SELECT N'alice'`, `SELECT N $1`},
		{"continued string", "SELECT 'ali'\n'ce'", `SELECT $1`},
		{"typed literal", `SELECT interval '1 day', '{a,b}'::text[]`, `SELECT interval $1, $2::text[]`},
		{"numbered after existing parameters", `SELECT $2, 'x', $1`, `SELECT $2, $3, $1`},
		{"pg_stat_statements text unchanged", `SELECT email FROM users WHERE id = $1`,
			`SELECT email FROM users WHERE id = $1`},
		{"do block", `DO $$ BEGIN PERFORM 'alice'; END $$`, `DO $1`},
		{"do block with tag and language", `DO LANGUAGE plpgsql $body$ BEGIN RAISE NOTICE 'alice'; END $body$`,
			`DO LANGUAGE plpgsql $1`},
		{"prepare", `PREPARE p(text) AS SELECT * FROM users WHERE email = 'alice' OR email = $1`,
			`PREPARE p(text) AS SELECT * FROM users WHERE email = $2 OR email = $1`},
		{"execute", `EXECUTE p('alice@example.com')`, `EXECUTE p($1)`},
		{"declare", `DECLARE c CURSOR FOR SELECT * FROM users WHERE email = 'alice'`,
			`DECLARE c CURSOR FOR SELECT * FROM users WHERE email = $1`},
		{"copy", `COPY (SELECT email FROM users WHERE email = 'alice') TO STDOUT WITH (FORMAT csv, DELIMITER ';')`,
			`COPY (SELECT email FROM users WHERE email = $1) TO STDOUT WITH (FORMAT csv, DELIMITER $2)`},
		{"call", `CALL reset_password('alice', 42)`, `CALL reset_password($1, $2)`},
		{"alter role password", `ALTER ROLE mallory PASSWORD 'hunter2'`, `ALTER ROLE mallory PASSWORD $1`},
		{"alter role encrypted password", `ALTER ROLE mallory WITH ENCRYPTED PASSWORD 'SCRAM-SHA-256$4096:abc'`,
			`ALTER ROLE mallory WITH ENCRYPTED PASSWORD $1`},
		{"create user", `CREATE USER bob PASSWORD 'hunter2' VALID UNTIL '2030-01-01'`,
			`CREATE USER bob PASSWORD $1 VALID UNTIL $2`},
		{"set", `SET app.secret = 'hunter2'`, `SET app.secret = $1`},
		{"set config function", `SELECT set_config('app.secret', 'hunter2', false)`,
			`SELECT set_config($1, $2, false)`},
		{"comments dropped", "SELECT /* alice */ 1 -- hunter2\nFROM t", `SELECT $1 FROM t`},
		{"comment between tokens without space", `SELECT a/**/FROM t`, `SELECT a FROM t`},
		{"white space folded", "SELECT\n\ta\n  FROM\tt ;", `SELECT a FROM t ;`},
		{"names kept", `SELECT "Email" FROM "public"."Users"`, `SELECT "Email" FROM "public"."Users"`},
		{"several statements", `SELECT 'a'; SELECT 'b'`, `SELECT $1; SELECT $2`},
		{"empty", ``, ``},
		{"unterminated string", `SELECT * FROM users WHERE email = 'alice@exa`, `<statement not shown: 44 bytes>`},
		{"unterminated comment", `SELECT 1 /* alice`, `<statement not shown: 17 bytes>`},
		{"unterminated dollar quote", `DO $$ BEGIN PERFORM 'alice'`, `<statement not shown: 27 bytes>`},
		{"trailing junk", `SELECT 12alice`, `<statement not shown: 14 bytes>`},
		{"nul byte", "SELECT 1\x00'alice'", `<statement not shown: 16 bytes>`},
		{"backslash quote depends on standard_conforming_strings", `SELECT 'a\' || 'alice'`,
			`<statement not shown: 22 bytes>`},
		{"backslash elsewhere is fine", `SELECT 'C:\dir'`, `SELECT $1`},
		{"multibyte", `SELECT 'é' AS naïve`, `SELECT $1 AS naïve`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := redact.Statement(tt.sql); got != tt.want {
				t.Errorf("Statement(%q)\n got %q\nwant %q", tt.sql, got, tt.want)
			}
		})
	}
}

// marker is a value no template or keyword contains: if it appears in an output, a
// literal leaked.
const marker = "zq9LEAKx"

// literalForms quote v as a PostgreSQL literal in every syntax that yields a constant.
func literalForms(v string) []string {
	forms := []string{
		"'" + strings.ReplaceAll(v, "'", "''") + "'",
		"E'" + strings.NewReplacer(`\`, `\\`, "'", `\'`).Replace(v) + "'",
	}
	for _, tag := range []string{"$$", "$t$"} {
		// The first tag after the opening one closes the string.
		for strings.Index(v+tag, tag) != len(v) {
			tag = tag[:len(tag)-1] + "x$"
		}
		forms = append(forms, tag+v+tag)
	}
	return forms
}

var templates = []string{
	`SELECT * FROM users WHERE email = %s`,
	`DO $do$ BEGIN PERFORM %s; END $do$`,
	`PREPARE p AS SELECT * FROM users WHERE email = %s`,
	`EXECUTE p(%s)`,
	`DECLARE c CURSOR FOR SELECT * FROM users WHERE email = %s`,
	`COPY (SELECT * FROM users WHERE email = %s) TO STDOUT`,
	`CALL p(%s)`,
	`ALTER ROLE x PASSWORD %s`,
	`CREATE USER x PASSWORD %s`,
	`SET app.x = %s`,
	`SELECT CAST(%s AS int)`,
	`SELECT %s::int, %s`,
}

func FuzzStatement(f *testing.F) {
	for _, seed := range []string{"alice@example.com", "", "'", "''", `\`, "$$", "$t$", "*/", "--", "\n", "é", "$1"} {
		f.Add(seed, "SELECT 1")
	}
	f.Add("x", "DO $$ BEGIN PERFORM 'x'; END $$")
	f.Add("x", "SELECT 'unterminated")
	f.Fuzz(func(t *testing.T, value, sql string) {
		// Any text: no panic, and the output has no constant and no comment left.
		checkShape(t, sql, redact.Statement(sql))

		// A value quoted as a literal, in any statement: the value never comes out.
		if strings.ContainsRune(value, 0) {
			return // PostgreSQL rejects it; Statement shows nothing of such a text
		}
		v := marker + value + marker
		for _, tmpl := range templates {
			for _, lit := range literalForms(v) {
				in := strings.ReplaceAll(tmpl, "%s", lit)
				got := redact.Statement(in)
				if strings.Contains(got, marker) {
					t.Fatalf("Statement(%q) = %q: the literal leaked", in, got)
				}
				checkShape(t, in, got)
			}
		}
	})
}

// checkShape checks that out, the redaction of in, is the placeholder or a text whose
// only constants are placeholders and which has no comment.
func checkShape(t *testing.T, in, out string) {
	t.Helper()
	if out == redact.Unavailable(len(in)) {
		return
	}
	if len(out) > len(in)+16*strings.Count(in, "")/2+16 {
		t.Fatalf("Statement(%q) = %q: longer than the input could make it", in, out)
	}
	scan, err := pg_query.Scan(out)
	if err != nil {
		t.Fatalf("Statement(%q) = %q, which does not lex: %v", in, out, err)
	}
	for _, tk := range scan.GetTokens() {
		switch tk.Token {
		case pg_query.Token_SCONST, pg_query.Token_USCONST, pg_query.Token_BCONST, pg_query.Token_XCONST,
			pg_query.Token_ICONST, pg_query.Token_FCONST, pg_query.Token_SQL_COMMENT, pg_query.Token_C_COMMENT:
			t.Fatalf("Statement(%q) = %q: it still has %v %q", in, out, tk.Token, out[tk.Start:tk.End])
		}
	}
}

func BenchmarkStatement(b *testing.B) {
	for _, bm := range []struct{ name, sql string }{
		{"normalized", `SELECT u.id, u.email, u.username FROM public.users u JOIN public.orders o ON o.user_id = u.id WHERE u.id = $1 AND o.created_at > $2 ORDER BY o.created_at DESC LIMIT $3`},
		{"literals", `SELECT u.id, u.email, u.username FROM public.users u JOIN public.orders o ON o.user_id = u.id WHERE u.email = 'alice@example.com' AND o.created_at > '2026-01-01' ORDER BY o.created_at DESC LIMIT 50`},
		{"do block", `DO $$ DECLARE r record; BEGIN FOR r IN SELECT * FROM users WHERE email = 'alice@example.com' LOOP RAISE NOTICE '%', r.email; END LOOP; END $$`},
		{"unterminated", `SELECT * FROM users WHERE email = 'alice@exa`},
		{"large", strings.Repeat(`INSERT INTO t VALUES (1, 'alice@example.com', 2.5); `, 100)},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.SetBytes(int64(len(bm.sql)))
			b.ReportAllocs()
			for b.Loop() {
				redact.Statement(bm.sql)
			}
		})
	}
}
