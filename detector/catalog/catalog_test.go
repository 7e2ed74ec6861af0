package catalog

import (
	"slices"
	"strings"
	"testing"

	"github.com/pgtripwire/pgtripwire/model"
)

func TestQuoteIdent(t *testing.T) {
	tests := []struct{ in, want string }{
		{"users", "users"},
		{"user_2", "user_2"},
		{"_x", "_x"},
		{"Users", `"Users"`},
		{"2fa", `"2fa"`},
		{"user", `"user"`},   // reserved
		{"order", `"order"`}, // reserved
		{"name", "name"},     // unreserved keyword
		{"a b", `"a b"`},
		{`a"b`, `"a""b"`},
		{"a$", `"a$"`},
		{"", `""`},
		{"é", `"é"`},
	}
	for _, tt := range tests {
		if got := model.QuoteIdent(tt.in); got != tt.want {
			t.Errorf("model.QuoteIdent(%q): got %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestParseQualifiedName(t *testing.T) {
	tests := []struct {
		in           string
		schema, name string
		wantErr      bool
	}{
		{in: "public.users", schema: "public", name: "users"},
		{in: "Public.USERS", schema: "public", name: "users"},
		{in: ` "Billing" . "Cards" `, schema: "Billing", name: "Cards"},
		{in: `"a.b"."c""d"`, schema: "a.b", name: `c"d`},
		{in: "users", wantErr: true},
		{in: "a.b.c", wantErr: true},
		{in: "public.", wantErr: true},
		{in: `"public.users`, wantErr: true},
		{in: `public.""`, wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		schema, name, err := ParseQualifiedName(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseQualifiedName(%q): got error %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if schema != tt.schema || name != tt.name {
			t.Errorf("ParseQualifiedName(%q): got %q, %q, want %q, %q", tt.in, schema, name, tt.schema, tt.name)
		}
	}
}

func TestParseSearchPath(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{`"$user", public`, []string{"$user", "public"}},
		{`Public,"My Schema" , pg_catalog`, []string{"public", "My Schema", "pg_catalog"}},
		{`"a,b", c`, []string{"a,b", "c"}},
		{``, nil},
		{`public, , x.y`, []string{"public"}},
	}
	for _, tt := range tests {
		if got := ParseSearchPath(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("ParseSearchPath(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func testRelations() []Relation {
	return []Relation{
		{Schema: "public", Name: "users", Kind: Table, Columns: []string{"id", "email", "username", "password_hash"}},
		{Schema: "public", Name: "orders", Kind: Table, Columns: []string{"id", "user_id"}},
		{Schema: "app", Name: "orders", Kind: Table, Columns: []string{"id"}},
		{Schema: "public", Name: "v", Kind: View, Columns: []string{"email"}, ViewDef: " SELECT email FROM users;"},
		{Schema: "Billing", Name: "Cards", Kind: PartitionedTable, Columns: []string{"Number"}},
	}
}

func TestNew(t *testing.T) {
	snap, err := New(testRelations(), map[string][]string{
		"public.users":      {"email", "USERNAME", "password_hash", "recovery_code"},
		`"Billing"."Cards"`: {`"Number"`},
		"public.ghosts":     {"email"},
	})
	if err != nil {
		t.Fatal(err)
	}

	if got, want := snap.SensitiveColumns("public.users"), []string{"email", "password_hash", "recovery_code", "username"}; !slices.Equal(got, want) {
		t.Errorf("SensitiveColumns(public.users): got %q, want %q", got, want)
	}
	if !snap.IsSensitive(`"Billing"."Cards"`, "Number") {
		t.Errorf(`IsSensitive("Billing"."Cards", Number): got false, want true`)
	}
	if snap.IsSensitive("public.users", "id") || snap.IsSensitive("public.orders", "id") {
		t.Errorf("IsSensitive: got true for a column not configured")
	}
	if got, want := snap.Missing(), []string{"public.ghosts", "public.users.recovery_code"}; !slices.Equal(got, want) {
		t.Errorf("Missing: got %q, want %q", got, want)
	}

	// Sensitive returns a copy.
	s := snap.Sensitive()
	s["public.users"][0] = "changed"
	delete(s, `"Billing"."Cards"`)
	if got := snap.SensitiveColumns("public.users")[0]; got != "email" {
		t.Errorf("modifying Sensitive's result changed the snapshot: got %q", got)
	}
	if !snap.HasSensitive(`"Billing"."Cards"`) {
		t.Errorf("deleting from Sensitive's result changed the snapshot")
	}

	if r, ok := snap.Lookup("Billing", "Cards"); !ok || r.QualifiedName() != `"Billing"."Cards"` || r.Kind != PartitionedTable {
		t.Errorf("Lookup(Billing, Cards): got %+v, %v", r, ok)
	}
	if _, ok := snap.Lookup("billing", "cards"); ok {
		t.Errorf("Lookup(billing, cards): found, want case-sensitive miss")
	}
}

func TestNewCopiesInput(t *testing.T) {
	rels := testRelations()
	snap, err := New(rels, nil)
	if err != nil {
		t.Fatal(err)
	}
	v := snap.Version()
	rels[0].Columns[1] = "changed"
	rels[0].Name = "changed"
	if r, _ := snap.Lookup("public", "users"); r.Columns[1] != "email" {
		t.Errorf("modifying New's input changed the snapshot: got column %q", r.Columns[1])
	}
	if snap.Version() != v {
		t.Errorf("Version changed after modifying New's input")
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name      string
		relations []Relation
		sensitive map[string][]string
		want      string
	}{
		{"unqualified sensitive table", nil, map[string][]string{"users": {"email"}}, "schema-qualified"},
		{"bad column name", nil, map[string][]string{"public.users": {`"email`}}, "unterminated"},
		{"duplicate relation", []Relation{{Schema: "a", Name: "b", Kind: Table}, {Schema: "a", Name: "b", Kind: View}}, nil, "twice"},
		{"bad kind", []Relation{{Schema: "a", Name: "b", Kind: 'S'}}, nil, "kind"},
		{"empty name", []Relation{{Schema: "a", Kind: Table}}, nil, "empty"},
		{"key without parts", []Relation{{Schema: "a", Name: "b", Kind: Table, UniqueKeys: []UniqueKey{{Name: "k"}}}}, nil, "no parts"},
		{"key part both column and expression", []Relation{{Schema: "a", Name: "b", Kind: Table,
			UniqueKeys: []UniqueKey{{Name: "k", Parts: []KeyPart{{Column: "x", Expression: "lower(x)"}}}}}}, nil, "column or an expression"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.relations, tt.sensitive)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	rels := append(testRelations(),
		Relation{Schema: "alice", Name: "orders", Kind: Table},
		Relation{Schema: "pg_catalog", Name: "users", Kind: Table},
	)
	snap, err := New(rels, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path []string
		role string
		rel  string
		want string // qualified name, "" for not found
	}{
		{"public", []string{"$user", "public"}, "bob", "orders", "public.orders"},
		{"$user first", []string{"$user", "public"}, "alice", "orders", "alice.orders"},
		{"$user without role", []string{"$user", "public"}, "", "orders", "public.orders"},
		{"path order", []string{"app", "public"}, "", "orders", "app.orders"},
		{"not on path", []string{"app"}, "", "v", ""},
		{"pg_catalog implicitly first", []string{"public"}, "", "users", "pg_catalog.users"},
		{"pg_catalog placed explicitly", []string{"public", "pg_catalog"}, "", "users", "public.users"},
		{"empty path", nil, "", "orders", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, ok := snap.Resolve(tt.path, tt.role, tt.rel)
			got := ""
			if ok {
				got = r.QualifiedName()
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSensitiveRelationsNamed(t *testing.T) {
	rels := append(testRelations(),
		Relation{Schema: "auth", Name: "users", Kind: Table, Columns: []string{"id", "password_hash"}},
		Relation{Schema: "archive", Name: "users", Kind: Table, Columns: []string{"id", "email"}},
		Relation{Schema: "auth", Name: "Users", Kind: Table, Columns: []string{"secret"}},
		Relation{Schema: "auth", Name: "sessions", Kind: Table, Columns: []string{"token"}},
	)
	snap, err := New(rels, map[string][]string{
		"public.users":   {"email"},
		"auth.users":     {"password_hash"},
		`auth."Users"`:   {"secret"},
		"auth.sessions":  {},        // configured without columns: not sensitive
		"public.ghosts":  {"email"}, // not in the snapshot
		"archive.orders": {"id"},    // not in the snapshot either
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		want []string
	}{
		{"users", []string{"auth.users", "public.users"}}, // archive.users has nothing configured
		{"Users", []string{`auth."Users"`}},
		{"sessions", nil},
		{"ghosts", nil},
		{"orders", nil},
		{"nothing", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, r := range snap.SensitiveRelationsNamed(tt.name) {
				got = append(got, r.QualifiedName())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRelationsNamed(t *testing.T) {
	snap, err := New([]Relation{
		{Schema: "public", Name: "users", Kind: Table, Columns: []string{"id", "email"}},
		{Schema: "archive", Name: "users", Kind: Table, Columns: []string{"id", "email"}},
		{Schema: "public", Name: "users_2024", Kind: Table, Columns: []string{"id", "email"}, Inherits: []string{"public.users"}},
		{Schema: "public", Name: "orders", Kind: Table, Columns: []string{"id"}},
		{Schema: "public", Name: "user_ids", Kind: View, Columns: []string{"id"}, ViewDef: "SELECT id FROM users"},
	}, map[string][]string{"public.users": {"email"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		want          []string
		wantSensitive []bool
	}{
		{"users", []string{"archive.users", "public.users"}, []bool{false, true}},
		{"users_2024", []string{"public.users_2024"}, []bool{true}}, // inherits email
		{"orders", []string{"public.orders"}, []bool{false}},
		// A view's sensitivity depends on its definition, which the
		// snapshot does not parse.
		{"user_ids", []string{"public.user_ids"}, []bool{false}},
		{"nothing", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				got          []string
				gotSensitive []bool
			)
			for _, r := range snap.RelationsNamed(tt.name) {
				got = append(got, r.QualifiedName())
				gotSensitive = append(gotSensitive, snap.HasSensitiveColumns(r.QualifiedName()))
			}
			if !slices.Equal(got, tt.want) || !slices.Equal(gotSensitive, tt.wantSensitive) {
				t.Errorf("got %q with sensitive columns %v, want %q and %v", got, gotSensitive, tt.want, tt.wantSensitive)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	sensitive := map[string][]string{"public.users": {"email"}}
	base, err := New(testRelations(), sensitive)
	if err != nil {
		t.Fatal(err)
	}
	reordered := testRelations()
	slices.Reverse(reordered)
	same, err := New(reordered, map[string][]string{"PUBLIC.users": {"EMAIL"}})
	if err != nil {
		t.Fatal(err)
	}
	if base.Version() != same.Version() {
		t.Errorf("same content in another order: versions differ")
	}

	changes := map[string]func() (*Snapshot, error){
		"column added": func() (*Snapshot, error) {
			r := testRelations()
			r[1].Columns = append(r[1].Columns, "total")
			return New(r, sensitive)
		},
		"view redefined": func() (*Snapshot, error) {
			r := testRelations()
			r[3].ViewDef = " SELECT username AS email FROM users;"
			return New(r, sensitive)
		},
		"sensitive column added": func() (*Snapshot, error) {
			return New(testRelations(), map[string][]string{"public.users": {"email", "username"}})
		},
		"view search path": func() (*Snapshot, error) {
			return New(testRelations(), sensitive, WithViewSearchPath([]string{"pg_catalog", "app"}))
		},
		// A new unique index changes which lookups are point lookups.
		"unique index added": func() (*Snapshot, error) {
			r := testRelations()
			r[0].UniqueKeys = []UniqueKey{{Name: "users_email_key", Parts: []KeyPart{{Column: "email"}}}}
			return New(r, sensitive)
		},
		"index expression changed": func() (*Snapshot, error) {
			r := testRelations()
			r[0].UniqueKeys = []UniqueKey{{Name: "users_email_key", Parts: []KeyPart{{Expression: "upper(email)"}}}}
			return New(r, sensitive)
		},
		// Length-prefixed hashing: moving a character between fields changes it.
		"name boundary": func() (*Snapshot, error) {
			r := testRelations()
			r[2].Schema, r[2].Name = "ap", "porders"
			return New(r, sensitive)
		},
	}
	for name, build := range changes {
		s, err := build()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if s.Version() == base.Version() {
			t.Errorf("%s: version unchanged", name)
		}
	}
}

func TestUniqueKeys(t *testing.T) {
	id := UniqueKey{Name: "pkey", Primary: true, Parts: []KeyPart{{Column: "id"}}}
	email := UniqueKey{Name: "email_key", Parts: []KeyPart{{Expression: "lower(email)"}}}
	idAgain := UniqueKey{Name: "child_pkey", Parts: []KeyPart{{Column: "id"}}}
	snap, err := New([]Relation{
		{Schema: "public", Name: "users", Kind: Table, Columns: []string{"id", "email"}, UniqueKeys: []UniqueKey{id, email}},
		// Plain inheritance: the parent's keys hold across children only
		// where every descendant has them too.
		{Schema: "public", Name: "admins", Kind: Table, Columns: []string{"id", "email"}, Inherits: []string{"public.users"}, UniqueKeys: []UniqueKey{idAgain}},
		{Schema: "public", Name: "root_admins", Kind: Table, Columns: []string{"id", "email"}, Inherits: []string{"public.admins"}, UniqueKeys: []UniqueKey{idAgain}},
		{Schema: "public", Name: "lone", Kind: Table, Columns: []string{"id"}, UniqueKeys: []UniqueKey{id}},
		{Schema: "public", Name: "legacy", Kind: Table, Columns: []string{"id"}, UniqueKeys: []UniqueKey{id}},
		{Schema: "public", Name: "legacy_2020", Kind: Table, Columns: []string{"id"}, Inherits: []string{"public.legacy"}},
		// A partitioned table's unique indexes span its partitions.
		{Schema: "public", Name: "events", Kind: PartitionedTable, Columns: []string{"id"}, UniqueKeys: []UniqueKey{id}},
		{Schema: "public", Name: "events_1", Kind: Table, Columns: []string{"id"}, Inherits: []string{"public.events"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	names := func(keys []UniqueKey) []string {
		var out []string
		for _, k := range keys {
			out = append(out, k.String())
		}
		return out
	}
	tests := []struct {
		rel             string
		withDescendants bool
		want            []string
	}{
		{"public.users", false, []string{"email_key((lower(email)))", "pkey(id)"}},
		{"public.users", true, []string{"pkey(id)"}},
		{"public.admins", true, []string{"child_pkey(id)"}},
		{"public.lone", true, []string{"pkey(id)"}},
		{"public.legacy", false, []string{"pkey(id)"}},
		{"public.legacy", true, nil},
		{"public.events", true, []string{"pkey(id)"}},
		{"public.events_1", true, nil},
		{"public.nothing", true, nil},
	}
	for _, tt := range tests {
		if got := names(snap.UniqueKeys(tt.rel, tt.withDescendants)); !slices.Equal(got, tt.want) {
			t.Errorf("UniqueKeys(%s, %v): got %q, want %q", tt.rel, tt.withDescendants, got, tt.want)
		}
	}
}
