package catalog

import (
	"fmt"
	"slices"
	"strings"

	"github.com/pgtripwire/pgtripwire/model"
)

// Function is one function of a non-system schema (pg_proc, prokind 'f'),
// not counting those that belong to extensions: like PostgreSQL's built-in
// functions, extension functions are code the operator installed, not
// queries over the application's tables. Identifiers are stored as
// PostgreSQL stores them.
type Function struct {
	Schema, Name string
	// Language is pg_language.lanname: "sql", "plpgsql", "c", "plpython3u", …
	Language string
	// Args are the names of the input parameters in order, "" where a
	// parameter is unnamed; len(Args) is the function's arity.
	Args []string
	// ArgTypes are the input parameters' types as format_type prints them.
	ArgTypes []string
	// NumDefaults is how many trailing input parameters have defaults.
	NumDefaults int
	// Variadic is set when the last input parameter is VARIADIC.
	Variadic bool
	// Body is pg_proc.prosrc: the SQL or PL/pgSQL source for those
	// languages (empty for SQL-standard bodies, see SQLBody).
	Body string
	// SQLBody is pg_get_function_sqlbody's text for functions with a
	// SQL-standard body (BEGIN ATOMIC … END, or RETURN expr), "" otherwise.
	SQLBody string
	// ReturnType is the result type as format_type prints it ("text",
	// "users", "record", "void").
	ReturnType string
	// ReturnsSet is set for SETOF and RETURNS TABLE functions.
	ReturnsSet bool
	// ResultColumns name the columns of a composite result: the OUT and
	// TABLE parameters, else the attributes of a composite return type (a
	// table's row type). nil for a scalar result.
	ResultColumns []string
	// SecurityDefiner is set for SECURITY DEFINER functions, which run with
	// their owner's privileges.
	SecurityDefiner bool
	// SearchPath is the search_path the function sets for itself (SET
	// search_path in its definition), nil when it runs with the caller's.
	SearchPath []string
}

// QualifiedName returns schema.name, quoted like Relation.QualifiedName.
func (f *Function) QualifiedName() string { return model.QualifiedName(f.Schema, f.Name) }

// Signature returns schema.name(argtypes), for problems and logs.
func (f *Function) Signature() string {
	return f.QualifiedName() + "(" + strings.Join(f.ArgTypes, ", ") + ")"
}

// Accepts reports whether a call with nargs arguments can resolve to f.
func (f *Function) Accepts(nargs int) bool {
	n := len(f.Args)
	switch {
	case nargs > n:
		return f.Variadic
	case nargs < n-f.NumDefaults:
		return f.Variadic && nargs >= n-1-f.NumDefaults
	}
	return true
}

func (s *Snapshot) indexFunctions() error {
	slices.SortStableFunc(s.functionsList, func(a, b *Function) int {
		return strings.Compare(a.Signature(), b.Signature())
	})
	s.functions = make(map[relKey][]*Function, len(s.functionsList))
	s.funcsNamed = make(map[string][]*Function)
	for i, f := range s.functionsList {
		if f.Schema == "" || f.Name == "" {
			return fmt.Errorf("function %d: empty schema or name", i)
		}
		k := relKey{f.Schema, f.Name}
		s.functions[k] = append(s.functions[k], f)
		s.funcsNamed[f.Name] = append(s.funcsNamed[f.Name], f)
	}
	return nil
}

// Functions returns every function, sorted by signature.
func (s *Snapshot) Functions() []*Function { return slices.Clone(s.functionsList) }

// LookupFunctions returns the overloads of schema.name, nil if there are
// none. The slice is shared and must not be modified.
func (s *Snapshot) LookupFunctions(schema, name string) []*Function {
	return s.functions[relKey{schema, name}]
}

// FunctionsNamed returns the functions called name in any schema. The slice
// is shared and must not be modified.
func (s *Snapshot) FunctionsNamed(name string) []*Function {
	return s.funcsNamed[name]
}
