package catalog

import (
	"slices"
	"testing"
)

func TestSensitiveOrigin(t *testing.T) {
	snap, err := New([]Relation{
		{Schema: "public", Name: "users", Kind: PartitionedTable, Columns: []string{"id", "email", "pw"}},
		{Schema: "public", Name: "users_2024", Kind: Table, Columns: []string{"id", "email", "pw"}, Inherits: []string{"public.users"}},
		{Schema: "public", Name: "users_2024_q1", Kind: Table, Columns: []string{"id", "email", "pw"}, Inherits: []string{"public.users_2024"}},
		{Schema: "public", Name: "admins", Kind: Table, Columns: []string{"id", "email", "pw", "level"}, Inherits: []string{"public.users"}},
		{Schema: "Audit", Name: "Own", Kind: Table, Columns: []string{"email"}, Inherits: []string{`"Audit"."Base"`}},
		{Schema: "Audit", Name: "Base", Kind: Table, Columns: []string{"email"}},
		{Schema: "public", Name: "loop", Kind: Table, Columns: []string{"x"}, Inherits: []string{"public.loop"}},
	}, map[string][]string{"public.users": {"email", "pw"}, `"Audit"."Own"`: {"email"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		rel, col   string
		wantOrigin string
		wantOK     bool
	}{
		{"public.users", "email", "public.users", true},
		{"public.users", "id", "", false},
		{"public.users_2024", "email", "public.users", true},
		{"public.users_2024_q1", "pw", "public.users", true},
		{"public.admins", "email", "public.users", true},
		{"public.admins", "level", "", false},
		{`"Audit"."Own"`, "email", `"Audit"."Own"`, true},
		{`"Audit"."Base"`, "email", "", false},
		{"public.loop", "x", "", false},
	}
	for _, tt := range tests {
		origin, ok := snap.SensitiveOrigin(tt.rel, tt.col)
		if origin != tt.wantOrigin || ok != tt.wantOK {
			t.Errorf("SensitiveOrigin(%s, %s): got %q, %v, want %q, %v", tt.rel, tt.col, origin, ok, tt.wantOrigin, tt.wantOK)
		}
	}
	// The configuration itself is unchanged: children are not listed.
	if snap.IsSensitive("public.users_2024", "email") || len(snap.Sensitive()) != 2 {
		t.Errorf("inherited sensitivity leaked into the configuration: %v", snap.Sensitive())
	}
	if _, err := New([]Relation{{Schema: "s", Name: "t", Kind: Table, Inherits: []string{"no_schema"}}}, nil); err == nil {
		t.Error("New with an unqualified parent: got no error")
	}
}

func TestFunctionAccepts(t *testing.T) {
	tests := []struct {
		f     Function
		nargs int
		want  bool
	}{
		{Function{Args: []string{"a", "b"}}, 2, true},
		{Function{Args: []string{"a", "b"}}, 1, false},
		{Function{Args: []string{"a", "b"}}, 3, false},
		{Function{Args: []string{"a", "b"}, NumDefaults: 1}, 1, true},
		{Function{Args: []string{"a", "b"}, NumDefaults: 1}, 0, false},
		{Function{Args: []string{"a", "rest"}, Variadic: true}, 5, true},
		{Function{Args: []string{"a", "rest"}, Variadic: true}, 1, true},
		{Function{}, 0, true},
	}
	for _, tt := range tests {
		if got := tt.f.Accepts(tt.nargs); got != tt.want {
			t.Errorf("%+v.Accepts(%d): got %v, want %v", tt.f, tt.nargs, got, tt.want)
		}
	}
}

func TestWithFunctions(t *testing.T) {
	fns := []Function{
		{Schema: "public", Name: "f", Language: "sql", Args: []string{"a"}, ArgTypes: []string{"integer"}, Body: "SELECT 1"},
		{Schema: "public", Name: "f", Language: "sql", Args: []string{"a", "b"}, ArgTypes: []string{"integer", "text"}, Body: "SELECT 2"},
		{Schema: "app", Name: "f", Language: "plpgsql", Body: "BEGIN END"},
	}
	snap, err := New(nil, nil, WithFunctions(fns))
	if err != nil {
		t.Fatal(err)
	}
	fns[0].Args[0] = "changed"
	var got []string
	for _, f := range snap.Functions() {
		got = append(got, f.Signature())
	}
	if want := []string{"app.f()", "public.f(integer)", "public.f(integer, text)"}; !slices.Equal(got, want) {
		t.Errorf("Functions: got %q, want %q", got, want)
	}
	if got := snap.LookupFunctions("public", "f"); len(got) != 2 || got[0].Args[0] != "a" {
		t.Errorf("LookupFunctions(public, f): got %v (input must be copied)", got)
	}
	if got := snap.FunctionsNamed("f"); len(got) != 3 {
		t.Errorf("FunctionsNamed(f): got %d functions, want 3", len(got))
	}
	changed, err := New(nil, nil, WithFunctions([]Function{{Schema: "app", Name: "f", Language: "plpgsql", Body: "BEGIN NULL; END"}}))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := New(nil, nil)
	if snap.Version() == changed.Version() || changed.Version() == plain.Version() {
		t.Error("Version: a function body change must change the version")
	}
	if _, err := New(nil, nil, WithFunctions([]Function{{Name: "f"}})); err == nil {
		t.Error("New with a function without schema: got no error")
	}
}
