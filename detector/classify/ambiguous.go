package classify

import (
	"sort"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
)

// binding makes one unqualified relation name resolve to rel, as a session
// whose own search_path finds rel first would see it.
type binding struct {
	name string
	rel  *catalog.Relation
}

// maxAlternatives bounds how many alternative bindings of unqualified names
// one text is analyzed under. Real catalogs have a few same-named sensitive
// tables at most; beyond that the candidates are listed but not analyzed.
const maxAlternatives = 8

// ambiguousNames handles the unqualified relation names of the main analysis
// that the catalog also has as sensitive tables in other schemas than the one
// the configured search path gave. A session can SET search_path and read
// those instead, and pg_stat_statements' text does not tell. Each such table
// is listed and makes the result incomplete, and the statements are analyzed
// again with the name bound to it, to report the sensitive columns they would
// read or reference then.
//
// One name is rebound per analysis: every relation's contribution shows under
// some binding without trying every combination. The analyses share the main
// one's step budget, so the work per text stays bounded by maxSteps.
func (a *analyzer) ambiguousNames(stmts []*pg_query.RawStmt) {
	names := make([]string, 0, len(a.unqualified))
	for name := range a.unqualified {
		names = append(names, name)
	}
	sort.Strings(names)

	var alternatives []binding
	for _, name := range names {
		resolved := a.unqualified[name]
		for _, rel := range a.cat.SensitiveRelationsNamed(name) {
			q := rel.QualifiedName()
			if q == resolved {
				continue
			}
			a.relations[q] = true
			a.problem("relation name %q is ambiguous: a session search_path could resolve it to sensitive table %s", name, q)
			alternatives = append(alternatives, binding{name: name, rel: rel})
		}
	}
	for i, b := range alternatives {
		if i == maxAlternatives {
			a.problem("too many ambiguous relation names: the columns of some candidate tables were not analyzed")
			return
		}
		a.analyzeAs(b, stmts)
	}
}

// analyzeAs classifies stmts again under b and adds the relations and
// sensitive columns found to a's. Of that analysis' problems only those that
// cut it short are kept: the others (a column the candidate table lacks) are
// about a binding the session may not have had, and the result is already
// incomplete for the ambiguity.
func (a *analyzer) analyzeAs(b binding, stmts []*pg_query.RawStmt) {
	alt := newAnalyzer(a.cat, a.searchPath, a.role)
	alt.binding = &b
	alt.steps = a.steps
	alt.statements(stmts)
	alt.injectionShapes(stmts)
	alt.judge()
	alt.catalogShapes()
	a.steps = alt.steps
	a.altNodes = append(a.altNodes, alt.nodes...)
	a.shapes |= alt.shapes
	a.folded = union(a.folded, alt.folded)

	for r := range alt.relations {
		a.relations[r] = true
	}
	addAll(a.read, alt.read)
	addAll(a.referenced, alt.referenced)
	for p := range alt.problems {
		switch p {
		case problemTooDeep, problemTooComplex, problemInternal:
			a.problems[p] = true
		}
	}
}
