package classify

import (
	"maps"
	"slices"
	"testing"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
)

// keyedSnapshot is a catalog with unique keys: a users table with a plain
// inheritance child whose keys repeat only some of the parent's, and a
// function-based expression index.
func keyedSnapshot(t testing.TB) *catalog.Snapshot {
	t.Helper()
	pk := catalog.UniqueKey{Name: "users_pkey", Primary: true, Parts: []catalog.KeyPart{{Column: "id"}}}
	email := catalog.UniqueKey{Name: "users_email_key", Parts: []catalog.KeyPart{{Column: "email"}}}
	norm := catalog.UniqueKey{Name: "users_norm", Parts: []catalog.KeyPart{{Expression: "public.norm(username)"}}}
	snap, err := catalog.New([]catalog.Relation{
		{Schema: "public", Name: "users", Kind: catalog.Table, Columns: []string{"id", "email", "username", "password_hash"},
			UniqueKeys: []catalog.UniqueKey{pk, email, norm}},
		// Inherits users and repeats only its primary key: equality on
		// email can match a row in each.
		{Schema: "public", Name: "staff", Kind: catalog.Table, Columns: []string{"id", "email", "username", "password_hash"},
			Inherits: []string{"public.users"}, UniqueKeys: []catalog.UniqueKey{{Name: "staff_pkey", Parts: []catalog.KeyPart{{Column: "id"}}}}},
		{Schema: "public", Name: "orders", Kind: catalog.Table, Columns: []string{"id", "user_id"}},
	}, map[string][]string{"public.users": {"email", "username", "password_hash"}},
		catalog.WithFunctions([]catalog.Function{
			{Schema: "public", Name: "norm", Language: "sql", Args: []string{"t"}, ArgTypes: []string{"text"}, Body: "SELECT lower(t)", ReturnType: "text"},
			{Schema: "other", Name: "norm", Language: "sql", Args: []string{"t"}, ArgTypes: []string{"text"}, Body: "SELECT 'x'::text", ReturnType: "text"},
		}))
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func TestAccess(t *testing.T) {
	snap := keyedSnapshot(t)
	tests := []struct {
		name string
		sql  string
		want map[string]string
	}{
		{"primary key held by every child", "SELECT email FROM users WHERE id = $1", map[string]string{"public.users": AccessPoint}},
		// staff has no unique email: FROM users scans it too.
		{"key a child lacks", "SELECT password_hash FROM users WHERE email = $1", map[string]string{"public.users": AccessRange}},
		{"ONLY the parent", "SELECT password_hash FROM ONLY users WHERE email = $1", map[string]string{"public.users": AccessPoint}},
		{"the child's own key", "SELECT password_hash FROM staff WHERE id = $1", map[string]string{"public.users": AccessPoint}},
		{"expression key with the snapshot's function", "SELECT email FROM ONLY users WHERE norm(username) = $1", map[string]string{"public.users": AccessPoint}},
		{"same-named function of another schema", "SELECT email FROM ONLY users WHERE other.norm(username) = $1", map[string]string{"public.users": AccessRange}},
		{"nothing sensitive used", "SELECT id FROM users WHERE id > $1", nil},
		{"an occurrence that uses nothing sensitive does not count",
			"SELECT email FROM users WHERE id = $1 AND EXISTS (SELECT 1 FROM users u2 WHERE u2.id > $2)", map[string]string{"public.users": AccessPoint}},
		{"not executed", "EXPLAIN SELECT email FROM users", nil},
		{"CREATE VIEW does not run", "CREATE VIEW v AS SELECT email FROM users", nil},
		{"both sides pinned to each other only", "SELECT a.email FROM users a JOIN users b ON a.id = b.id", map[string]string{"public.users": AccessScan}},
		{"a FULL JOIN's ON restricts neither side", "SELECT u.email FROM orders o FULL JOIN users u ON u.id = o.user_id WHERE o.id = $1",
			map[string]string{"public.users": AccessScan}},
		{"the preserved side of a LEFT JOIN", "SELECT u.email FROM users u LEFT JOIN orders o ON u.id = $1", map[string]string{"public.users": AccessScan}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Classify(tt.sql, snap, defaultPath, "app")
			if !maps.Equal(got.Access, tt.want) {
				t.Errorf("Access: got %v, want %v (read %q, referenced %q, problems %q)", got.Access, tt.want, got.SensitiveRead, got.SensitiveReferenced, got.Problems)
			}
		})
	}
}

// TestAccessAmbiguousName checks that the analyses of another binding of an
// unqualified name are judged too.
func TestAccessAmbiguousName(t *testing.T) {
	pk := []catalog.UniqueKey{{Name: "pkey", Primary: true, Parts: []catalog.KeyPart{{Column: "id"}}}}
	snap, err := catalog.New([]catalog.Relation{
		{Schema: "public", Name: "users", Kind: catalog.Table, Columns: []string{"id", "email"}},
		{Schema: "auth", Name: "users", Kind: catalog.Table, Columns: []string{"id", "email"}, UniqueKeys: pk},
	}, map[string][]string{"auth.users": {"email"}})
	if err != nil {
		t.Fatal(err)
	}
	for sql, want := range map[string]string{
		"SELECT email FROM users WHERE id = $1": AccessPoint,
		"SELECT email FROM users":               AccessScan,
	} {
		got := Classify(sql, snap, defaultPath, "app")
		if got.Complete || got.Access["auth.users"] != want {
			t.Errorf("%s: got Access %v, complete %v; want auth.users %s, incomplete", sql, got.Access, got.Complete, want)
		}
	}
}

// TestShapesInFunctionBodies checks that shapes of the bodies a call runs
// are the statement's.
func TestShapesInFunctionBodies(t *testing.T) {
	snap, err := catalog.New([]catalog.Relation{
		{Schema: "public", Name: "users", Kind: catalog.Table, Columns: []string{"id", "email"}},
	}, map[string][]string{"public.users": {"email"}}, catalog.WithFunctions([]catalog.Function{
		{Schema: "public", Name: "all_emails", Language: "sql", Body: "SELECT string_agg(email, ',') FROM users", ReturnType: "text"},
		{Schema: "public", Name: "slurp", Language: "plpgsql", Args: []string{"p"}, ArgTypes: []string{"text"},
			Body: "DECLARE t text; BEGIN t := pg_read_file(p); RETURN t; END", ReturnType: "text"},
		{Schema: "public", Name: "run", Language: "plpgsql", Args: []string{"q"}, ArgTypes: []string{"text"},
			Body: "BEGIN EXECUTE q; END", ReturnType: "void"},
		{Schema: "public", Name: "indirect", Language: "plpgsql", Args: []string{"q"}, ArgTypes: []string{"text"},
			Body: "DECLARE n int; BEGIN n := 1; PERFORM run(q); END", ReturnType: "void"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	for sql, want := range map[string][]string{
		"SELECT all_emails()":         {ShapeFolded},
		"SELECT slurp($1)":            {ShapeServerFile},
		"SELECT run($1)":              {ShapeDynamicSQL},
		"SELECT indirect($1)":         {ShapeDynamicSQL},
		"SELECT length(all_emails())": nil,
	} {
		if got := Classify(sql, snap, defaultPath, "app"); !slices.Equal(got.Shapes, want) {
			t.Errorf("%s: got Shapes %q, want %q", sql, got.Shapes, want)
		}
	}
}
