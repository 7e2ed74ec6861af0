package classify

// A scope is one query level's namespace, as in PostgreSQL's parse state: the
// FROM items whose columns the level can reference, and the CTEs its WITH
// clause defines. Column references that do not resolve at a level are looked
// up in the enclosing levels (correlated subqueries, LATERAL).
type scope struct {
	parent *scope
	items  []*rte
	ctes   map[string]*rte
	// lv is the query level the scope belongs to (access.go); nil for
	// scopes that only carry names (function parameters, the outer names a
	// non-LATERAL subquery sees).
	lv *level
}

// withoutItems returns a scope that sees s's CTEs and outer levels but not
// its FROM items: the namespace of a non-LATERAL subquery in FROM.
func (s *scope) withoutItems() *scope {
	return &scope{parent: s.parent, ctes: s.ctes}
}

func (s *scope) lookupCTE(name string) (*rte, bool) {
	for l := s; l != nil; l = l.parent {
		if c, ok := l.ctes[name]; ok {
			return c, true
		}
	}
	return nil, false
}

// rte is a range-table entry: a FROM item (relation, view, subquery, CTE,
// function, join) as seen by column references.
type rte struct {
	// name is the name qualified references use: the alias, or the relation
	// or CTE name; "" when the item cannot be referenced by name.
	name string
	// schema is set for an unaliased catalog relation, so that
	// schema.table.column references match it.
	schema string
	// rel is the qualified name of the catalog relation behind the item, ""
	// for other items.
	rel  string
	cols []column
	// opaque items have columns this classifier cannot enumerate (functions
	// in FROM, unknown relations): any column name resolves to them, carrying
	// all.
	opaque bool
	all    lineage
	// members are the items of an unaliased join, still visible by name.
	members []*rte

	// node is the row source behind the item (access.go), nil for joins,
	// whose sides hold theirs, and for function parameters.
	node *rowNode
	// sides are a join's two items; colSides says which side and position
	// each of its columns comes from.
	sides    []*rte
	colSides []sideCol
	// frame is set on the item holding a function's parameters.
	frame *frame
}

// sideCol is the origin of a join's column.
type sideCol struct {
	side *rte
	j    int
}

// wholeRow is the lineage of a whole-row reference (SELECT u FROM users u).
func (r *rte) wholeRow() lineage {
	return union(columnsLineage(r.cols), r.all)
}

// star returns the columns * expands to.
func (r *rte) star() []column {
	if r.opaque && len(r.cols) == 0 {
		return []column{{name: "?column?", src: r.all}}
	}
	if r.opaque && len(r.all) > 0 {
		out := make([]column, len(r.cols))
		for i, c := range r.cols {
			out[i] = column{name: c.name, src: union(c.src, r.all)}
		}
		return out
	}
	return r.cols
}

// column looks a column up by name.
func (r *rte) column(name string) (lineage, bool) {
	var (
		out   lineage
		found bool
	)
	for _, c := range r.cols {
		if c.name == name {
			out = union(out, c.src)
			found = true
		}
	}
	if found {
		return out, true
	}
	if r.opaque {
		return r.all, true
	}
	return nil, false
}

// concreteColumn is column without the opaque fallback.
func (r *rte) concreteColumn(name string) (lineage, bool) {
	var (
		out   lineage
		found bool
	)
	for _, c := range r.cols {
		if c.name == name {
			out = union(out, c.src)
			found = true
		}
	}
	return out, found
}

// findItem returns the item a qualified reference names at this level.
func (s *scope) findItem(schema, name string) (*rte, bool) {
	var find func(items []*rte) (*rte, bool)
	find = func(items []*rte) (*rte, bool) {
		for _, it := range items {
			if it.name != "" && it.name == name && (schema == "" || schema == it.schema) {
				return it, true
			}
			if it.name == "" {
				if m, ok := find(it.members); ok {
					return m, true
				}
			}
		}
		return nil, false
	}
	return find(s.items)
}

// findColumn resolves an unqualified column name at this level only. Several
// matches (ambiguous to PostgreSQL, or the two sides of a USING column) are
// combined.
func (s *scope) findColumn(name string) (lineage, bool) {
	var (
		out   lineage
		found bool
	)
	for _, it := range s.items {
		if l, ok := it.concreteColumn(name); ok {
			out = union(out, l)
			found = true
		}
	}
	return out, found
}

// opaqueItem returns the first item at this level whose columns are unknown.
func (s *scope) opaqueItem() (*rte, bool) {
	for _, it := range s.items {
		if it.opaque {
			return it, true
		}
	}
	return nil, false
}

// resolveColumn resolves a column reference given as its name parts (the last
// one may be "*" when star is set), the way PostgreSQL's transformColumnRef
// does: an unqualified name is a column of the innermost level that has one,
// else a whole-row reference to an item of that name; a qualified name is a
// column of the named item, else a field of a composite column.
func (s *scope) resolveColumn(parts []string, star bool) (lineage, bool) {
	if len(parts) == 0 {
		return nil, false
	}
	if star {
		// t.*, or a bare * outside a target list (row constructors).
		if len(parts) == 1 {
			var out lineage
			for _, it := range s.items {
				out = union(out, it.wholeRow())
			}
			return out, true
		}
		if it, ok := s.findQualifier(parts[:len(parts)-1]); ok {
			return it.wholeRow(), true
		}
		return nil, false
	}
	if len(parts) == 1 {
		name := parts[0]
		for l := s; l != nil; l = l.parent {
			if src, ok := l.findColumn(name); ok {
				return src, true
			}
		}
		for l := s; l != nil; l = l.parent {
			if it, ok := l.findItem("", name); ok {
				return it.wholeRow(), true
			}
		}
		for l := s; l != nil; l = l.parent {
			if it, ok := l.opaqueItem(); ok {
				return it.all, true
			}
		}
		return nil, false
	}
	// qualifier.column
	if it, ok := s.findQualifier(parts[:len(parts)-1]); ok {
		if src, ok := it.column(parts[len(parts)-1]); ok {
			return src, true
		}
	}
	// item.column.field...
	if len(parts) >= 3 {
		if it, ok := s.findQualifier(parts[:1]); ok {
			if src, ok := it.column(parts[1]); ok {
				return src, true
			}
		}
	}
	// column.field...
	return s.resolveColumn(parts[:1], false)
}

// findQualifier finds the item named by [catalog.][schema.]name, innermost
// level first.
func (s *scope) findQualifier(q []string) (*rte, bool) {
	var schema, name string
	switch len(q) {
	case 1:
		name = q[0]
	case 2:
		schema, name = q[0], q[1]
	case 3:
		schema, name = q[1], q[2]
	default:
		return nil, false
	}
	for l := s; l != nil; l = l.parent {
		if it, ok := l.findItem(schema, name); ok {
			return it, true
		}
	}
	return nil, false
}
