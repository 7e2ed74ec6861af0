package classify

import "github.com/pgtripwire/pgtripwire/model"

// source is one sensitive column of a catalog relation, identified by the
// relation's qualified name.
type source struct{ rel, col string }

func (s source) String() string { return s.rel + "." + model.QuoteIdent(s.col) }

// lineage is the set of sensitive columns whose values an expression or an
// output column may carry. Only sensitive columns are tracked: nothing else is
// ever reported, and most lineages are then nil, which keeps classification
// cheap. A lineage may be shared between columns once built and is never
// modified; union returns a new set when it has to combine two.
type lineage map[source]struct{}

func union(a, b lineage) lineage {
	switch {
	case len(b) == 0:
		return a
	case len(a) == 0:
		return b
	}
	out := make(lineage, len(a)+len(b))
	for s := range a {
		out[s] = struct{}{}
	}
	for s := range b {
		out[s] = struct{}{}
	}
	return out
}

// addAll adds src to dst, which must be owned by the caller.
func addAll(dst, src lineage) {
	for s := range src {
		dst[s] = struct{}{}
	}
}

// column is one output column of a relation, subquery or CTE.
type column struct {
	name string
	src  lineage
}

func columnsLineage(cols []column) lineage {
	var out lineage
	for _, c := range cols {
		out = union(out, c.src)
	}
	return out
}
