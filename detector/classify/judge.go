package classify

import (
	"slices"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
)

// judge interprets the facts every level recorded, once the whole text is
// analysed (views' and CTEs' reference counts are known then), and computes
// every row source's class to a fixed point.
func (a *analyzer) judge() {
	for _, lv := range a.levels {
		a.applyLevel(lv)
	}
	a.fixedPoint()
}

// receives translates a level's reference to one of its members' columns
// into the relation column it restricts, through subqueries, views and CTEs
// that let predicates through (pushable). ok is false for references to
// other levels' row sources, to members app excludes, and to columns a
// non-pushable subquery computes.
func (a *analyzer) receives(lv *level, ref colRef, app map[*rowNode]bool) (colRef, bool) {
	if ref.node == nil || !slices.Contains(lv.node.members, ref.node) || app != nil && !app[ref.node] {
		return colRef{}, false
	}
	for range maxDepth {
		if ref.node.kind == nodeRelation {
			return ref, true
		}
		n := ref.node
		if !n.pushable() || ref.pos < 0 || ref.pos >= len(n.out) || n.out[ref.pos].node == nil {
			return colRef{}, false
		}
		ref = n.out[ref.pos]
	}
	return colRef{}, false
}

func (n *rowNode) addAlt(col string, al alt) {
	if n.alts == nil {
		n.alts = make(map[string][]alt)
	}
	n.alts[col] = append(n.alts[col], al)
}

func (n *rowNode) pin(col string, strict bool) {
	if n.named == nil {
		n.named = make(map[string]bool)
	}
	n.named[col] = true
	if strict {
		if n.strict == nil {
			n.strict = make(map[string]bool)
		}
		n.strict[col] = true
		n.addAlt(col, alt{})
	}
}

// applyLevel turns one level's facts into facts about relations.
func (a *analyzer) applyLevel(lv *level) {
	// Equalities that hold for every row of the level are transitive: find
	// their classes.
	parent := make(map[colRef]colRef)
	find := func(r colRef) colRef {
		root := r
		for {
			p, ok := parent[root]
			if !ok || p == root {
				break
			}
			root = p
		}
		for r != root { // path compression
			next := parent[r]
			parent[r] = root
			r = next
		}
		return root
	}
	for _, e := range lv.edges {
		if e.app == nil {
			if _, ok := parent[e.l]; !ok {
				parent[e.l] = e.l
			}
			if _, ok := parent[e.r]; !ok {
				parent[e.r] = e.r
			}
			parent[find(e.l)] = find(e.r)
		}
	}
	type eqClass struct {
		members       []colRef
		strict, named bool
	}
	classes := make(map[colRef]*eqClass)
	classOf := func(r colRef) *eqClass {
		root := find(r)
		c := classes[root]
		if c == nil {
			c = &eqClass{}
			classes[root] = c
		}
		if !slices.Contains(c.members, r) {
			c.members = append(c.members, r)
		}
		return c
	}
	for r := range parent {
		classOf(r)
	}
	for _, c := range lv.consts {
		if c.app != nil {
			if t, ok := a.receives(lv, c.ref, c.app); ok {
				t.node.pin(t.col, c.strict)
			}
			continue
		}
		cl := classOf(c.ref)
		cl.strict = cl.strict || c.strict
		cl.named = cl.named || c.named
	}
	for _, cl := range classes {
		for _, m := range cl.members {
			t, ok := a.receives(lv, m, nil)
			if !ok {
				continue
			}
			if cl.strict || cl.named {
				t.node.pin(t.col, cl.strict)
			}
			for _, o := range cl.members {
				if o.node != m.node {
					t.node.addAlt(t.col, alt{ref: o})
				}
			}
		}
	}
	for _, e := range lv.edges {
		if e.app == nil {
			continue
		}
		if t, ok := a.receives(lv, e.l, e.app); ok {
			t.node.addAlt(t.col, alt{ref: e.r})
		}
		if t, ok := a.receives(lv, e.r, e.app); ok {
			t.node.addAlt(t.col, alt{ref: e.l})
		}
	}
	for _, p := range lv.pins {
		if t, ok := a.receives(lv, p.ref, p.app); ok {
			t.node.addAlt(t.col, alt{deps: p.deps})
		}
	}
	for _, p := range lv.exprPins {
		a.applyExprPin(lv, p)
	}
	for _, b := range lv.bounds {
		if t, ok := a.receives(lv, b.ref, b.app); ok {
			t.node.bounds = append(t.node.bounds, bound{base: classRange, deps: b.deps})
		}
	}
	if lv.limited || lv.offset {
		for _, m := range lv.node.members {
			pushLimit(m, lv.limited, lv.offset, 0)
		}
	}
}

// pushLimit marks the relations whose rows a LIMIT or OFFSET bounds.
func pushLimit(n *rowNode, limited, offset bool, depth int) {
	if depth > maxDepth {
		return
	}
	if n.kind == nodeRelation {
		n.limited = n.limited || limited
		n.offset = n.offset || offset
		return
	}
	if n.pushable() {
		for _, m := range n.members {
			pushLimit(m, limited, offset, depth+1)
		}
	}
}

// applyExprPin records an equality on an expression when it is over the
// columns of one relation and matches one of its key expressions.
func (a *analyzer) applyExprPin(lv *level, p exprPin) {
	var (
		target *rowNode
		cols   []string
	)
	for _, l := range p.leaves {
		t, ok := a.receives(lv, l, p.app)
		if !ok || t.col == "" || target != nil && t.node != target {
			return
		}
		target = t.node
		cols = append(cols, t.col)
	}
	if target == nil {
		return
	}
	i := 0
	canon, ok := a.canonExpr(p.expr, p.path, func(*pg_query.ColumnRef) (string, bool) {
		if i >= len(cols) {
			return "", false
		}
		i++
		return cols[i-1], true
	})
	if !ok {
		return
	}
	id := keyExprPrefix + canon
	for _, key := range a.keyIDs(target) {
		if slices.Contains(key, id) {
			target.addAlt(id, alt{deps: p.deps})
			return
		}
	}
}

// fixedPoint computes every node's class from the most pessimistic start,
// round by round until nothing changes. Classes only decrease, so it ends;
// stopping early (the step budget) leaves them pessimistic, never
// optimistic.
func (a *analyzer) fixedPoint() {
	for range 64 {
		changed := false
		for _, n := range a.nodes {
			if c := a.classOf(n); c < n.cls {
				n.cls, changed = c, true
			}
		}
		a.steps += len(a.nodes)
		if !changed || a.steps >= maxSteps {
			return
		}
	}
}

func maxClass(base class, deps []*rowNode) class {
	c := base
	for _, d := range deps {
		c = max(c, d.cls)
	}
	return c
}

// classOf computes a node's class from the current classes of the others.
func (a *analyzer) classOf(n *rowNode) class {
	if n.kind != nodeRelation {
		switch {
		case n.fixed:
			return maxClass(n.fixedClass, n.fixedDeps)
		case n.oneRow:
			return classPoint
		}
		return maxClass(classPoint, n.members)
	}
	c := classScan
	if n.limited {
		c = classPage
	}
	for _, b := range n.bounds {
		c = min(c, maxClass(b.base, b.deps))
	}
	for _, key := range a.keyIDs(n) {
		kc := classPoint
		for _, part := range key {
			best, found := classScan, false
			for _, al := range n.alts[part] {
				best, found = min(best, a.altClass(al)), true
			}
			if !found {
				kc = classScan
				break
			}
			kc = max(kc, best)
		}
		c = min(c, kc)
	}
	if n.offset && c != classPoint {
		c = classPage
	}
	return c
}

// altClass is how many rows a key part's equality leaves.
func (a *analyzer) altClass(al alt) class {
	if al.ref.node != nil {
		if a.singleValued(al.ref, 0) {
			return classPoint
		}
		return al.ref.node.cls
	}
	return maxClass(classPoint, al.deps)
}

// singleValued reports whether a column takes one value in the statement: a
// column equal to a constant, of a relation reached at one row, or passed
// through from such a column.
func (a *analyzer) singleValued(r colRef, depth int) bool {
	for ; depth < maxDepth && r.node != nil; depth++ {
		n := r.node
		if n.cls == classPoint || n.oneRow {
			return true
		}
		if n.kind == nodeRelation {
			return n.strict[r.col]
		}
		if r.pos < 0 || r.pos >= len(n.out) {
			return false
		}
		r = n.out[r.pos]
	}
	return false
}

// keyIDs returns the parts of each key of a relation node: column names, and
// keyExprPrefix with the canonical form of expressions.
func (a *analyzer) keyIDs(n *rowNode) [][]string {
	if n.sys != nil {
		return n.sys.keys
	}
	if n.rel == nil {
		return nil
	}
	k := keyCacheKey{n.rel, n.inh}
	if ids, ok := a.keyCache[k]; ok {
		return ids
	}
	var ids [][]string
	for _, key := range a.cat.UniqueKeys(n.rel.QualifiedName(), n.inh) {
		parts := make([]string, 0, len(key.Parts))
		for _, p := range key.Parts {
			if p.Column != "" {
				parts = append(parts, p.Column)
				continue
			}
			canon, ok := a.indexExpr(p.Expression)
			if !ok {
				// An expression this classifier does not model: no
				// predicate can match it.
				parts = nil
				break
			}
			parts = append(parts, keyExprPrefix+canon)
		}
		if parts != nil {
			ids = append(ids, parts)
		}
	}
	if a.keyCache == nil {
		a.keyCache = make(map[keyCacheKey][][]string)
	}
	a.keyCache[k] = ids
	return ids
}

type keyCacheKey struct {
	rel *catalog.Relation
	inh bool
}

// accessOf returns, for each table of tables, the worst class of the
// executed occurrences of relations carrying its sensitive columns that the
// statement uses them from (touched), or of all its occurrences when none
// is known to; a table with an unjudged occurrence or none is left out.
func accessOf(nodes []*rowNode, tables map[string]bool) map[string]string {
	touched := make(map[string]bool)
	for _, n := range nodes {
		if n.kind == nodeRelation && !n.ghost && n.touched {
			for _, o := range n.origins {
				touched[o] = true
			}
		}
	}
	var (
		worst    map[string]class
		unjudged map[string]bool
	)
	for _, n := range nodes {
		if n.kind != nodeRelation || n.ghost {
			continue
		}
		if !n.touched && slices.ContainsFunc(n.origins, func(o string) bool { return touched[o] }) {
			continue
		}
		for _, o := range n.origins {
			if !tables[o] {
				continue
			}
			if n.unjudged {
				if unjudged == nil {
					unjudged = make(map[string]bool)
				}
				unjudged[o] = true
				continue
			}
			if worst == nil {
				worst = make(map[string]class)
			}
			if c, ok := worst[o]; !ok || n.cls > c {
				worst[o] = n.cls
			}
		}
	}
	if len(worst) == 0 {
		return nil
	}
	out := make(map[string]string, len(worst))
	for o, c := range worst {
		if !unjudged[o] {
			out[o] = classNames[c]
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
