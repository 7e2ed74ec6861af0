package catalog_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
	"github.com/pgtripwire/pgtripwire/detector/classify"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const schemaSQL = `
CREATE TABLE public.users (
	id bigint PRIMARY KEY,
	legacy text,
	email text,
	username text,
	password_hash text,
	created_at timestamptz,
	tenant int,
	UNIQUE (tenant, username) INCLUDE (created_at)
);
ALTER TABLE public.users DROP COLUMN legacy;
CREATE UNIQUE INDEX users_email_lower ON public.users (lower(email));
-- Neither enforces uniqueness on every row: not keys.
CREATE UNIQUE INDEX users_active_email ON public.users (email) WHERE created_at IS NOT NULL;
CREATE INDEX users_created ON public.users (created_at);
CREATE TABLE public.orders (id bigint, user_id bigint, total numeric);
CREATE SCHEMA reporting;
CREATE VIEW reporting.user_contacts AS
	SELECT u.id, lower(u.email) AS contact FROM public.users u WHERE u.created_at > now() - interval '1 year';
CREATE VIEW public.user_logins AS SELECT id, username, password_hash FROM users;
CREATE MATERIALIZED VIEW reporting.logins AS SELECT * FROM public.user_logins;
CREATE SCHEMA "Billing";
CREATE TABLE "Billing"."Cards" (id int, "Number" text) PARTITION BY RANGE (id);
CREATE TABLE "Billing"."Cards_1" PARTITION OF "Billing"."Cards" FOR VALUES FROM (0) TO (1000);
CREATE TABLE public.admins (level int) INHERITS (public.users);
CREATE FUNCTION public.get_users() RETURNS SETOF public.users LANGUAGE sql AS 'SELECT * FROM public.users';
CREATE FUNCTION reporting.contact(uid bigint, fmt text DEFAULT 'x', OUT id bigint, OUT contact text)
	LANGUAGE sql STABLE SECURITY DEFINER SET search_path = reporting, public
	AS 'SELECT id, contact FROM reporting.user_contacts WHERE id = uid';
CREATE FUNCTION public.hash_of(uid bigint) RETURNS text LANGUAGE sql
BEGIN ATOMIC SELECT password_hash FROM public.users WHERE id = uid; END;
CREATE FUNCTION public.tag(VARIADIC parts text[]) RETURNS text LANGUAGE plpgsql AS 'BEGIN RETURN array_to_string(parts, $$,$$); END';
CREATE EXTENSION hstore;
CREATE FOREIGN DATA WRAPPER pgtest_dummy;
CREATE SERVER pgtest_nowhere FOREIGN DATA WRAPPER pgtest_dummy;
CREATE FOREIGN TABLE public.remote_users (email text) SERVER pgtest_nowhere;
`

var sensitive = map[string][]string{
	"public.users":      {"email", "username", "password_hash"},
	`"Billing"."Cards"`: {`"Number"`},
	"public.accounts":   {"email"},
	"public.orders":     {"card_number"},
}

func TestLoad(t *testing.T) {
	db := pgtest.NewDatabase(t)
	db.Exec(t, schemaSQL)
	conn := db.Conn(t, "postgres")
	ctx := t.Context()
	// A temporary table of this session is not part of the snapshot.
	if _, err := conn.Exec(ctx, "CREATE TEMP TABLE scratch (email text)"); err != nil {
		t.Fatal(err)
	}

	snap, err := catalog.Load(ctx, conn, sensitive)
	if err != nil {
		t.Fatal(err)
	}

	var got []string
	for _, r := range snap.Relations() {
		got = append(got, r.QualifiedName()+" "+r.Kind.String())
	}
	want := []string{
		`"Billing"."Cards" partitioned table`,
		`"Billing"."Cards_1" table`,
		"public.admins table",
		"public.orders table",
		// pgtest installs pg_stat_statements in every database.
		"public.pg_stat_statements view",
		"public.pg_stat_statements_info view",
		"public.remote_users foreign table",
		"public.user_logins view",
		"public.users table",
		"reporting.logins materialized view",
		"reporting.user_contacts view",
	}
	if !slices.Equal(got, want) {
		t.Errorf("relations:\ngot  %q\nwant %q", got, want)
	}

	users, ok := snap.Lookup("public", "users")
	if !ok {
		t.Fatal("public.users not loaded")
	}
	if want := []string{"id", "email", "username", "password_hash", "created_at", "tenant"}; !slices.Equal(users.Columns, want) {
		t.Errorf("public.users columns: got %q, want %q (attnum order, dropped column left out)", users.Columns, want)
	}
	var keys []string
	for _, k := range users.UniqueKeys {
		keys = append(keys, fmt.Sprintf("%s primary=%v", k, k.Primary))
	}
	if want := []string{
		"users_email_lower((lower(email))) primary=false",
		"users_pkey(id) primary=true",
		"users_tenant_username_created_at_key(tenant, username) primary=false",
	}; !slices.Equal(keys, want) {
		t.Errorf("public.users unique keys:\ngot  %q\nwant %q (partial and non-unique indexes left out, INCLUDE columns too)", keys, want)
	}
	if users.ViewDef != "" {
		t.Errorf("public.users: got a view definition for a table")
	}
	if v, _ := snap.Lookup("reporting", "logins"); v == nil || v.ViewDef == "" {
		t.Errorf("reporting.logins: no definition loaded for a materialized view")
	}
	if got, want := snap.Missing(), []string{"public.accounts", "public.orders.card_number"}; !slices.Equal(got, want) {
		t.Errorf("Missing: got %q, want %q", got, want)
	}
	if admins, _ := snap.Lookup("public", "admins"); admins == nil || !slices.Equal(admins.Inherits, []string{"public.users"}) {
		t.Errorf("public.admins: got %+v, want Inherits [public.users]", admins)
	}
	if part, _ := snap.Lookup("Billing", "Cards_1"); part == nil || !slices.Equal(part.Inherits, []string{`"Billing"."Cards"`}) {
		t.Errorf(`"Billing"."Cards_1": got %+v, want Inherits ["Billing"."Cards"]`, part)
	}
	if origin, ok := snap.SensitiveOrigin(`"Billing"."Cards_1"`, "Number"); !ok || origin != `"Billing"."Cards"` {
		t.Errorf("SensitiveOrigin of the partition's column: got %q, %v", origin, ok)
	}

	// Extension functions (hstore's) are left out, like built-ins.
	var sigs []string
	for _, f := range snap.Functions() {
		sigs = append(sigs, f.Signature())
	}
	if want := []string{"public.get_users()", "public.hash_of(bigint)", "public.tag(text[])", "reporting.contact(bigint, text)"}; !slices.Equal(sigs, want) {
		t.Errorf("functions: got %q, want %q", sigs, want)
	}
	getUsers := snap.LookupFunctions("public", "get_users")[0]
	if !getUsers.ReturnsSet || getUsers.Language != "sql" || getUsers.Body != "SELECT * FROM public.users" ||
		!slices.Equal(getUsers.ResultColumns, []string{"id", "email", "username", "password_hash", "created_at", "tenant"}) {
		t.Errorf("public.get_users: got %+v", getUsers)
	}
	contact := snap.LookupFunctions("reporting", "contact")[0]
	if !slices.Equal(contact.Args, []string{"uid", "fmt"}) || contact.NumDefaults != 1 || !contact.SecurityDefiner ||
		!slices.Equal(contact.ResultColumns, []string{"id", "contact"}) || !slices.Equal(contact.SearchPath, []string{"reporting", "public"}) ||
		contact.ReturnType != "record" {
		t.Errorf("reporting.contact: got %+v", contact)
	}
	if h := snap.LookupFunctions("public", "hash_of")[0]; h.SQLBody == "" || h.ResultColumns != nil || h.ReturnType != "text" {
		t.Errorf("public.hash_of: got %+v, want a SQL-standard body and a scalar result", h)
	}
	if tag := snap.LookupFunctions("public", "tag")[0]; !tag.Variadic || tag.Language != "plpgsql" {
		t.Errorf("public.tag: got %+v", tag)
	}
	if !slices.Equal(snap.ViewSearchPath(), []string{"pg_catalog", "public"}) {
		t.Errorf("ViewSearchPath: got %q, want [pg_catalog public]", snap.ViewSearchPath())
	}
}

// TestLoadVersion checks that a refresh that changed nothing keeps the
// version, and that a schema change alters it.
func TestLoadVersion(t *testing.T) {
	db := pgtest.NewDatabase(t)
	db.Exec(t, schemaSQL)
	conn := db.Conn(t, "postgres")
	ctx := t.Context()

	load := func() string {
		t.Helper()
		snap, err := catalog.Load(ctx, conn, sensitive)
		if err != nil {
			t.Fatal(err)
		}
		return snap.Version()
	}
	first := load()
	if again := load(); again != first {
		t.Errorf("reload without changes: version %s, want %s", again, first)
	}
	db.Exec(t, "ALTER TABLE public.orders ADD COLUMN card_number text")
	changed := load()
	if changed == first {
		t.Errorf("reload after ADD COLUMN: version unchanged")
	}
	// Statistics are not part of the snapshot: ANALYZE and new rows keep
	// the version, so cached classifications survive.
	db.Exec(t, "INSERT INTO public.orders (id) SELECT generate_series(1, 1000); ANALYZE public.orders")
	if again := load(); again != changed {
		t.Errorf("reload after ANALYZE: version changed")
	}
	db.Exec(t, "CREATE UNIQUE INDEX orders_id ON public.orders (id)")
	withIndex := load()
	if withIndex == changed {
		t.Errorf("reload after CREATE UNIQUE INDEX: version unchanged")
	}
	// A unique index that failed to build concurrently is invalid and does
	// not enforce uniqueness on existing rows: not a key, and no change.
	db.Exec(t, "UPDATE public.orders SET user_id = 7")
	if _, err := conn.Exec(ctx, "CREATE UNIQUE INDEX CONCURRENTLY orders_user ON public.orders (user_id)"); err == nil {
		t.Fatal("CREATE UNIQUE INDEX CONCURRENTLY over duplicates: got no error")
	}
	snap, err := catalog.Load(ctx, conn, sensitive)
	if err != nil {
		t.Fatal(err)
	}
	orders, _ := snap.Lookup("public", "orders")
	var names []string
	for _, k := range orders.UniqueKeys {
		names = append(names, k.Name)
	}
	if !slices.Equal(names, []string{"orders_id"}) || snap.Version() != withIndex {
		t.Errorf("public.orders keys after a failed concurrent build: got %q (version changed: %v), want only orders_id",
			names, snap.Version() != withIndex)
	}
}

// TestLoadClassify resolves statements through the definitions PostgreSQL
// prints for views, loaded under different search paths: pg_get_viewdef
// qualifies names relative to the loading session's path, and the snapshot
// must resolve them the same way.
func TestLoadClassify(t *testing.T) {
	db := pgtest.NewDatabase(t)
	db.Exec(t, schemaSQL)
	conn := db.Conn(t, "postgres")
	ctx := t.Context()

	tests := []struct {
		sql        string
		read       []string
		referenced []string
	}{
		{"SELECT contact FROM reporting.user_contacts", []string{"public.users.email"}, nil},
		{"SELECT id FROM reporting.user_contacts", nil, nil},
		{"SELECT * FROM reporting.logins", []string{"public.users.password_hash", "public.users.username"}, nil},
		{"SELECT count(*) FROM public.user_logins WHERE username = $1", nil, []string{"public.users.username"}},
		{`COPY (SELECT "Number" FROM "Billing"."Cards") TO STDOUT`, []string{`"Billing"."Cards"."Number"`}, nil},
		{"SELECT * FROM get_users()", []string{"public.users.email", "public.users.password_hash", "public.users.username"}, nil},
		{"SELECT contact FROM reporting.contact(1)", []string{"public.users.email"}, nil},
		{"SELECT public.hash_of(id) FROM public.orders", []string{"public.users.password_hash"}, nil},
		{"SELECT email FROM public.admins", []string{"public.users.email"}, nil},
		{`SELECT * FROM "Billing"."Cards_1"`, []string{`"Billing"."Cards"."Number"`}, nil},
		// A view over a set-returning function with a column alias list.
		{"SELECT queryid, query FROM pg_stat_statements ORDER BY calls DESC", nil, nil},
	}
	for _, searchPath := range []string{`"$user", public`, "reporting", "pg_catalog"} {
		if _, err := conn.Exec(ctx, "SELECT set_config('search_path', $1, false)", searchPath); err != nil {
			t.Fatal(err)
		}
		snap, err := catalog.Load(ctx, conn, sensitive)
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range tests {
			got := classify.Classify(tt.sql, snap, []string{"public"}, "postgres")
			if !got.Complete {
				t.Errorf("search_path %s: %s: incomplete: %q", searchPath, tt.sql, got.Problems)
			}
			if !equal(got.SensitiveRead, tt.read) || !equal(got.SensitiveReferenced, tt.referenced) {
				t.Errorf("search_path %s: %s:\ngot read %q referenced %q\nwant read %q referenced %q",
					searchPath, tt.sql, got.SensitiveRead, got.SensitiveReferenced, tt.read, tt.referenced)
			}
		}
	}
}

func equal(got, want []string) bool {
	return len(got) == 0 && len(want) == 0 || slices.Equal(got, want)
}

// TestLoadCancelled checks that Load reports a cancelled context as an error
// rather than an empty catalog.
func TestLoadCancelled(t *testing.T) {
	db := pgtest.NewDatabase(t)
	conn := db.Conn(t, "postgres")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if snap, err := catalog.Load(ctx, conn, nil); err == nil {
		t.Errorf("Load with a cancelled context: got %v, want an error", snap)
	}
}
