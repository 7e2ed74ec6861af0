package classify

import (
	"fmt"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
)

// A function body the analyzer cannot follow (PL/pgSQL with assignments,
// SELECT INTO, loops, EXECUTE) makes a call's result incomplete only when the
// body could reach sensitive data. Whether it could is decided from the
// identifiers of its text, as pg_query's scanner splits it, not from the data
// flow: a body reaches sensitive data when
//
//   - an identifier names a relation whose columns are sensitive (a configured
//     table, a partition or inheritance child of one), a view or materialized
//     view whose definition reaches sensitive data, or a catalog function
//     whose body does (transitively);
//   - it runs SQL built at run time: the EXECUTE keyword (EXECUTE format(…),
//     RETURN QUERY EXECUTE, FOR … IN EXECUTE, OPEN … FOR EXECUTE) or a call
//     of a function that runs SQL or reads a table given as text
//     (dynamicSQLFunctions);
//   - it calls a catalog function written in a language other than SQL and
//     PL/pgSQL, whose body cannot be seen into;
//   - its text cannot be scanned.
//
// Identifiers match a relation or function of that name in any schema, which
// over-approximates (a variable named like a sensitive table counts) but
// needs no search path. String literals are not identifiers: a body can only
// turn one into a table it reads through EXECUTE or a dynamicSQLFunctions
// function, which are caught by name. What this does not see: triggers and
// rules fired by the body's writes, user-defined operators and casts, whose
// functions the text does not name.

// dynamicSQLFunctions run SQL given as text or read a relation named by a
// string, so a body calling them can read any table whatever its
// identifiers.
var dynamicSQLFunctions = map[string]bool{
	"dblink": true, "dblink_exec": true, "dblink_open": true, "dblink_fetch": true,
	"dblink_send_query": true, "dblink_get_result": true,
	"query_to_xml": true, "query_to_xml_and_xmlschema": true,
	"table_to_xml": true, "table_to_xml_and_xmlschema": true,
	"cursor_to_xml": true,
	"schema_to_xml": true, "schema_to_xml_and_xmlschema": true,
	"database_to_xml": true, "database_to_xml_and_xmlschema": true,
}

// textFacts is what a scan of a function body or view definition found.
type textFacts struct {
	// names are the identifiers, case-folded like PostgreSQL does,
	// deduplicated, in order of first appearance.
	names []string
	// dynamic names the first construct that runs SQL built at run time, ""
	// if there is none.
	dynamic string
	// unscannable is set when the lexer rejects the text.
	unscannable bool
	// serverFile is set when it names a function of serverFileFunctions.
	serverFile bool
}

// scanText scans text into its identifiers.
func scanText(text string) textFacts {
	res, err := pg_query.Scan(text)
	if err != nil {
		return textFacts{unscannable: true}
	}
	var facts textFacts
	seen := make(map[string]bool)
	for _, t := range res.GetTokens() {
		start, end := int(t.GetStart()), int(t.GetEnd())
		if start < 0 || end > len(text) || start > end {
			return textFacts{unscannable: true}
		}
		if t.GetToken() == pg_query.Token_EXECUTE {
			if facts.dynamic == "" {
				facts.dynamic = "EXECUTE"
			}
			continue
		}
		// Any keyword may be a name: reserved ones after a dot
		// (public.order), type and function name keywords as function
		// names. Counting them all errs towards reaching.
		if t.GetToken() != pg_query.Token_IDENT && t.GetKeywordKind() == pg_query.KeywordKind_NO_KEYWORD {
			continue
		}
		name := identText(text[start:end])
		if dynamicSQLFunctions[name] && facts.dynamic == "" {
			facts.dynamic = name
		}
		facts.serverFile = facts.serverFile || serverFileFunctions[name]
		if !seen[name] {
			seen[name] = true
			facts.names = append(facts.names, name)
		}
	}
	return facts
}

// reach is what an unanalysable function body could read.
type reach struct {
	// sensitive are the relations with sensitive columns (configured tables,
	// their partitions and children, with the configured tables these inherit
	// from) the body names, directly or through views and the functions it
	// calls.
	sensitive map[string]bool
	// cause says why the body could reach sensitive data, for a problem; ""
	// when it cannot.
	cause string
	// shapes are those of the texts followed: dynamic SQL, server files.
	shapes shapeSet
}

// bodyReach decides whether the body of f, or anything it names, could read
// sensitive data (see the comment at the top of this file). It shares the
// statement's step budget; running out of it counts as reaching.
func (a *analyzer) bodyReach(f *catalog.Function) reach {
	if r, ok := a.reaches[f]; ok {
		return r
	}
	r := reach{sensitive: make(map[string]bool)}
	because := func(format string, args ...any) {
		if r.cause == "" {
			r.cause = fmt.Sprintf(format, args...)
		}
	}
	seenFuncs := map[*catalog.Function]bool{f: true}
	seenRels := make(map[string]bool)
	funcs := []*catalog.Function{f}
	var rels []*catalog.Relation
	follow := func(facts textFacts, what string) {
		switch {
		case facts.unscannable:
			because("%s cannot be scanned", what)
		case facts.dynamic != "":
			because("%s runs dynamic SQL (%s)", what, facts.dynamic)
			r.shapes |= shapeDynamicSQL
		}
		if facts.serverFile {
			r.shapes |= shapeServerFile
		}
		for _, name := range facts.names {
			for _, rel := range a.cat.RelationsNamed(name) {
				if q := rel.QualifiedName(); !seenRels[q] {
					seenRels[q] = true
					rels = append(rels, rel)
				}
			}
			for _, g := range a.cat.FunctionsNamed(name) {
				if !seenFuncs[g] {
					seenFuncs[g] = true
					funcs = append(funcs, g)
				}
			}
		}
	}
	for len(funcs) > 0 || len(rels) > 0 {
		if a.steps >= maxSteps {
			a.problem(problemTooComplex)
			because("%s", problemTooComplex)
			break
		}
		a.steps++
		if len(rels) > 0 {
			rel := rels[0]
			rels = rels[1:]
			q := rel.QualifiedName()
			if a.cat.HasSensitiveColumns(q) {
				// Listed with the configured tables it inherits from, as
				// when a statement reads a partition.
				r.sensitive[q] = true
				for _, c := range rel.Columns {
					if origin, ok := a.cat.SensitiveOrigin(q, c); ok {
						r.sensitive[origin] = true
					}
				}
				because("reaches sensitive relation %s", q)
			}
			if rel.Kind.HasDefinition() {
				follow(a.scanView(rel), "the definition of "+q)
			}
			continue
		}
		g := funcs[0]
		funcs = funcs[1:]
		what := "the body of " + g.Signature()
		if g == f {
			what = "its body"
		}
		switch g.Language {
		case "sql", "plpgsql":
			follow(a.scanFunction(g), what)
		default:
			because("calls %s, in language %s", g.Signature(), g.Language)
		}
	}
	a.reaches[f] = r
	a.shapes |= r.shapes
	return r
}

func (a *analyzer) scanFunction(f *catalog.Function) textFacts {
	key := scanKey{fn: f}
	if facts, ok := a.scans[key]; ok {
		return facts
	}
	text := f.Body
	if f.SQLBody != "" {
		text = f.SQLBody
	}
	facts := scanText(text)
	a.scans[key] = facts
	return facts
}

func (a *analyzer) scanView(rel *catalog.Relation) textFacts {
	key := scanKey{rel: rel}
	if facts, ok := a.scans[key]; ok {
		return facts
	}
	facts := textFacts{unscannable: true} // a definition we do not have
	if rel.ViewDef != "" {
		facts = scanText(rel.ViewDef)
	}
	a.scans[key] = facts
	return facts
}

// scanKey identifies a scanned function body or view definition.
type scanKey struct {
	fn  *catalog.Function
	rel *catalog.Relation
}
