package classify

import (
	"slices"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
)

// Access patterns are judged on a graph of row sources built while the
// statement is analysed, the way a planner reasons about row counts without
// statistics:
//
//   - Every occurrence of a relation in FROM (or as a write target, a COPY
//     source …) is a rowNode of kind nodeRelation; every query level
//     (SELECT, VALUES, set operation, DML) a nodeLevel whose members are the
//     row sources of its FROM clause; what a view, a CTE or a function call
//     yields a nodeAlias over the levels that produce it.
//   - Each level's WHERE clause and inner-join ON conditions are split at
//     their top-level ANDs. An equality pins a column of a member: to a
//     constant ($n, a literal, a function parameter, current_user, an
//     uncorrelated scalar subquery), or to another row source's column. Any
//     other conjunct that mentions a member restricts it (a range), relative
//     to the other row sources it mentions. LEFT and RIGHT joins' ON
//     conditions restrict only their nullable side; FULL joins' nothing.
//   - Predicates on the output columns of a simple subquery, view or CTE
//     (no aggregates, grouping, DISTINCT, window functions, LIMIT or set
//     operations; a view or CTE referenced once; a CTE not MATERIALIZED or
//     recursive) reach the relations those columns come from, as PostgreSQL
//     pushes them down; others stop at the subquery.
//   - After the statement is analysed, classes are computed to a fixed point
//     from the most pessimistic start (scan): a relation is a point when
//     every part of one of its unique keys is pinned to constants or to row
//     sources that are points themselves; a range when a conjunct restricts
//     it relative to row sources that are at most ranges; a page under an
//     OFFSET, or under a LIMIT that nothing restricts; otherwise a scan. A
//     level yields as many rows as its members (one row for an aggregate
//     without GROUP BY or LIMIT 1; VALUES lists one or a few).
//
// Result.Access reports, per sensitive table read or referenced, the worst
// class of the occurrences that carry its columns. Occurrences the statement
// does not execute (EXPLAIN, CREATE VIEW, a materialized view's definition)
// are not counted; a table with an occurrence that is not judged (a MERGE
// target, a COPY FROM target) is left out.

// class orders access patterns from fewest rows reached to most.
type class uint8

const (
	classPoint class = iota
	classRange
	classPage
	classScan
)

var classNames = [...]string{classPoint: AccessPoint, classRange: AccessRange, classPage: AccessPage, classScan: AccessScan}

type nodeKind uint8

const (
	// nodeRelation is one occurrence of a relation: in the snapshot, a
	// system relation, or an unknown one.
	nodeRelation nodeKind = iota
	// nodeLevel is a query level.
	nodeLevel
	// nodeAlias is what a view, CTE or function call yields: the rows of its
	// members.
	nodeAlias
)

// rowNode is a source of rows in the statement (see the top of this file).
type rowNode struct {
	kind nodeKind

	// rel is the snapshot relation of a nodeRelation, nil for system and
	// unknown relations; inh is set when the scan includes inheritance
	// children (FROM t, not FROM ONLY t).
	rel *catalog.Relation
	inh bool
	// sys describes a system relation the catalog shapes look at.
	sys *sysRelation
	// origins are the configured tables whose sensitive columns this
	// relation's columns carry.
	origins []string
	// ghost nodes are not executed (EXPLAIN, CREATE VIEW, the definition
	// of a materialized view); unjudged ones are executed but their access
	// is not judged.
	ghost, unjudged bool
	// touched is set when the statement uses one of the relation's
	// sensitive columns: only such occurrences decide a table's access
	// (count(*) FROM users beside a login does not make the login a scan).
	touched bool

	// Facts about a nodeRelation, gathered from the levels that restrict it.
	limited, offset bool
	bounds          []bound
	// strict columns are equal to a constant; named ones also to one of a
	// list of constants (catalog shapes only).
	strict, named map[string]bool
	// alts are, per key part (a column name, or keyExprPrefix and the
	// canonical form of an expression), the other row sources' values it
	// equals.
	alts map[string][]alt

	// members are the row sources of a level or alias.
	members []*rowNode
	// out maps a level's or alias's output positions to the column each
	// passes through unchanged (node nil for computed columns).
	out []colRef
	// simple levels and aliases let predicates on their output columns
	// restrict their members (see pushable).
	simple bool
	// refs counts the FROM items naming a view's or CTE's alias.
	refs int
	// fixed, when set, is the class of a level or alias whose rows do not
	// come from its members (VALUES, functions): at least fixedClass, and
	// no fewer rows than fixedDeps yield.
	fixed      bool
	fixedClass class
	fixedDeps  []*rowNode
	// oneRow levels yield at most one row (aggregates without GROUP BY,
	// LIMIT 1).
	oneRow bool
	// namedRows are the values of a constant list (unnest($1)).
	namedRows bool
	// outer are the row sources of enclosing levels that a level refers to
	// (correlation).
	outer map[*rowNode]bool

	cls class
}

// colRef names a column of a row source: by name for relations, by output
// position for levels and aliases. A zero colRef is no column; col "" with a
// relation is the whole row.
type colRef struct {
	node *rowNode
	col  string
	pos  int
}

// bound restricts a relation to at most base, relative to deps: as many rows
// as the worst of them yields.
type bound struct {
	base class
	deps []*rowNode
}

// alt is what a key part equals: another row source's column (ref), or an
// expression over the rows of deps (a constant when both are empty).
type alt struct {
	ref  colRef
	deps []*rowNode
}

const keyExprPrefix = "\x00"

func (a *analyzer) newNode(kind nodeKind) *rowNode {
	n := &rowNode{kind: kind, ghost: a.noEffects || a.inMatview > 0, cls: classScan}
	a.nodes = append(a.nodes, n)
	return n
}

// relationNode creates the node of one occurrence of a snapshot relation.
func (a *analyzer) relationNode(rel *catalog.Relation, inh bool, cols []column) *rowNode {
	n := a.newNode(nodeRelation)
	n.rel, n.inh = rel, inh
	for o := range columnsLineage(cols) {
		if !slices.Contains(n.origins, o.rel) {
			n.origins = append(n.origins, o.rel)
		}
	}
	return n
}

// fixedNode creates an alias whose rows are at least c, relative to deps.
func (a *analyzer) fixedNode(c class, deps []*rowNode) *rowNode {
	n := a.newNode(nodeAlias)
	n.fixed, n.fixedClass, n.fixedDeps = true, c, deps
	return n
}

// aliasNode creates an alias yielding the rows of members, passing the
// columns of the first one through when passThrough is set.
func (a *analyzer) aliasNode(members []*rowNode, width int, passThrough bool) *rowNode {
	n := a.newNode(nodeAlias)
	n.members = members
	if passThrough && len(members) == 1 {
		n.out = make([]colRef, width)
		for i := range n.out {
			n.out[i] = colRef{node: members[0], pos: i}
		}
	}
	return n
}

// pushable reports whether predicates on n's output columns restrict its
// members' rows.
func (n *rowNode) pushable() bool { return n.simple && n.refs <= 1 }

// level is the access-relevant content of one query level, recorded while it
// is analysed and interpreted once the whole statement is (judge).
type level struct {
	node  *rowNode
	frame *frame
	// searchPath resolves function names in key expressions as the level
	// did.
	searchPath []string
	conjs      []conjunct
	edges      []edge
	hasAgg     bool
	hasWindow  bool
	limited    bool
	offset     bool

	// Facts, resolved to colRefs when the level ends.
	consts   []constFact
	pins     []pinFact
	exprPins []exprPin
	bounds   []boundFact
}

// conjunct is a top-level condition of a WHERE or ON clause, with the
// member row sources it may restrict (nil: all of the level's).
type conjunct struct {
	n   *pg_query.Node
	sc  *scope
	app map[*rowNode]bool
}

// edge is an equality between two columns; app as for conjunct.
type edge struct {
	l, r colRef
	app  map[*rowNode]bool
}

type constFact struct {
	ref           colRef
	strict, named bool
	app           map[*rowNode]bool
}

type pinFact struct {
	ref  colRef
	deps []*rowNode
	app  map[*rowNode]bool
}

// exprPin is an equality between an expression over the columns leaves (in
// the order canonExpr visits them) and values depending on deps.
type exprPin struct {
	expr   *pg_query.Node
	leaves []colRef
	deps   []*rowNode
	path   []string
	app    map[*rowNode]bool
}

type boundFact struct {
	ref  colRef
	deps []*rowNode
	app  map[*rowNode]bool
}

// beginLevel starts the level whose scope is sc.
func (a *analyzer) beginLevel(sc *scope) *level {
	lv := &level{node: a.newNode(nodeLevel), frame: a.frame, searchPath: a.searchPath}
	sc.lv = lv
	a.levels = append(a.levels, lv)
	return lv
}

// addMember makes it's row sources members of lv.
func (lv *level) addMember(it *rte) {
	if it == nil {
		return
	}
	lv.node.members = it.leaves(lv.node.members)
}

// leaves appends the row sources of a FROM item: the sides of joins.
func (r *rte) leaves(dst []*rowNode) []*rowNode {
	if r.node != nil {
		return append(dst, r.node)
	}
	for _, s := range r.sides {
		dst = s.leaves(dst)
	}
	return dst
}

// levelOf returns the level sc belongs to, nil outside any.
func levelOf(sc *scope) *level {
	for s := sc; s != nil; s = s.parent {
		if s.lv != nil {
			return s.lv
		}
	}
	return nil
}

// endSelect records what a SELECT level's clauses say about its rows.
func (a *analyzer) endSelect(lv *level, s *pg_query.SelectStmt, sc *scope) {
	lv.addConj(s.GetWhereClause(), sc, nil)
	if limitCount(s.GetLimitCount()) {
		lv.limited = true
		if isIntConst(s.GetLimitCount(), 1) {
			lv.node.oneRow = true
		}
	}
	lv.offset = s.GetLimitOffset() != nil
	grouped := len(s.GetGroupClause()) > 0 || s.GetHavingClause() != nil
	if lv.hasAgg && !grouped && !lv.hasWindow {
		lv.node.oneRow = true
	}
	lv.node.simple = !grouped && !lv.hasAgg && !lv.hasWindow && !lv.limited && !lv.offset &&
		len(s.GetDistinctClause()) == 0 && len(s.GetWindowClause()) == 0 && len(s.GetLockingClause()) == 0
	lv.node.out = a.outputRefs(s.GetTargetList(), sc)
	a.endLevel(lv)
}

// limitCount reports whether a LIMIT clause bounds the rows (LIMIT ALL and
// LIMIT NULL do not).
func limitCount(n *pg_query.Node) bool {
	if n == nil {
		return false
	}
	if c := n.GetAConst(); c != nil && c.GetIsnull() {
		return false
	}
	return true
}

func isIntConst(n *pg_query.Node, v int32) bool {
	for n.GetTypeCast() != nil {
		n = n.GetTypeCast().GetArg()
	}
	i, ok := n.GetAConst().GetVal().(*pg_query.A_Const_Ival)
	return ok && i.Ival.GetIval() == v
}

func (lv *level) addConj(n *pg_query.Node, sc *scope, app map[*rowNode]bool) {
	if n != nil {
		lv.conjs = append(lv.conjs, conjunct{n: n, sc: sc, app: app})
	}
}

// endLevel resolves the level's conditions into facts about its members.
func (a *analyzer) endLevel(lv *level) {
	for _, c := range lv.conjs {
		a.conjunct(lv, c.n, c.sc, c.app, 0)
	}
	lv.conjs = nil
	a.lastLevel = lv.node
}

// outputRefs maps a target list's output positions to the columns they pass
// through, expanding * as targetList does.
func (a *analyzer) outputRefs(list []*pg_query.Node, sc *scope) []colRef {
	var out []colRef
	for _, n := range list {
		rt := n.GetResTarget()
		if rt == nil {
			continue
		}
		cr := rt.GetVal().GetColumnRef()
		if cr == nil {
			out = append(out, colRef{})
			continue
		}
		parts, star := columnRefParts(cr)
		if !star {
			ref, _ := a.resolveRef(parts, sc)
			if ref.node != nil && ref.node.kind == nodeRelation && ref.col == "" {
				ref = colRef{} // a whole row is a composite value
			}
			out = append(out, ref)
			continue
		}
		var items []*rte
		if len(parts) == 0 {
			items = sc.items
		} else if it, ok := sc.findQualifier(parts); ok {
			items = []*rte{it}
		}
		for _, it := range items {
			for j := range it.star() {
				out = append(out, a.refOf(it, j))
			}
		}
	}
	return out
}

// refOf returns the column at position j of a FROM item.
func (a *analyzer) refOf(it *rte, j int) colRef {
	for range maxDepth {
		switch {
		case it.node == nil && j >= 0 && j < len(it.colSides):
			s := it.colSides[j]
			it, j = s.side, s.j
			continue
		case it.node == nil || j < 0:
			return colRef{}
		case it.node.kind == nodeRelation:
			if it.node.rel != nil && j < len(it.node.rel.Columns) {
				return colRef{node: it.node, col: it.node.rel.Columns[j]}
			}
			if j < len(it.cols) {
				return colRef{node: it.node, col: it.cols[j].name}
			}
			return colRef{}
		default:
			return colRef{node: it.node, pos: j}
		}
	}
	return colRef{}
}

// resolveRef resolves a column reference like scope.resolveColumn, to the
// row source column it names. A function parameter resolves to no column,
// with the row sources its argument depended on.
func (a *analyzer) resolveRef(parts []string, sc *scope) (colRef, []*rowNode) {
	it, j, name, _ := findRef(parts, sc)
	if it == nil {
		return colRef{}, nil
	}
	if it.frame != nil {
		return colRef{}, it.frame.depsOf(name)
	}
	if j >= 0 {
		return a.refOf(it, j), nil
	}
	if it.node != nil && it.node.kind == nodeRelation && name != "" && it.opaque {
		return colRef{node: it.node, col: name}, nil
	}
	if it.node != nil && it.node.kind == nodeRelation {
		return colRef{node: it.node}, nil // whole row
	}
	return colRef{}, it.leaves(nil)
}

// findRef finds the FROM item a column reference resolves to, the column's
// position in it (-1 for a whole-row reference or an opaque item's column)
// and name, and the scope where it was found.
func findRef(parts []string, sc *scope) (it *rte, j int, name string, at *scope) {
	switch len(parts) {
	case 0:
		return nil, -1, "", nil
	case 1:
		name = parts[0]
		for l := sc; l != nil; l = l.parent {
			for _, it := range l.items {
				if j := it.columnIndex(name); j >= 0 {
					return it, j, name, l
				}
			}
		}
		for l := sc; l != nil; l = l.parent {
			if it, ok := l.findItem("", name); ok {
				return it, -1, "", l
			}
		}
		// Columns of system relations, whose columns the snapshot does not
		// list: the one whose known keys have the name, else the first.
		for l := sc; l != nil; l = l.parent {
			var first *rte
			for _, it := range l.items {
				if !it.opaque {
					continue
				}
				if it.node != nil && it.node.sys.hasColumn(name) {
					return it, -1, name, l
				}
				if first == nil {
					first = it
				}
			}
			if first != nil {
				return first, -1, name, l
			}
		}
		return nil, -1, "", nil
	}
	for _, q := range [][]string{parts[:len(parts)-1], parts[:1]} {
		if len(q) == len(parts)-1 || len(parts) >= 3 {
			for l := sc; l != nil; l = l.parent {
				if it, ok := findQualifierAt(l, q); ok {
					col := parts[len(q)]
					if j := it.columnIndex(col); j >= 0 {
						return it, j, col, l
					}
					if it.opaque {
						return it, -1, col, l
					}
				}
			}
		}
	}
	return findRef(parts[:1], sc)
}

// findQualifierAt is scope.findQualifier at one level.
func findQualifierAt(l *scope, q []string) (*rte, bool) {
	switch len(q) {
	case 1:
		return l.findItem("", q[0])
	case 2:
		return l.findItem(q[0], q[1])
	case 3:
		return l.findItem(q[1], q[2])
	}
	return nil, false
}

// columnIndex returns the position of a concrete column, or -1.
func (r *rte) columnIndex(name string) int {
	for j, c := range r.cols {
		if c.name == name {
			return j
		}
	}
	return -1
}

// noteRef records what a resolved column reference (of lineage src) says:
// on the levels between sc and the level where it resolved, that they refer
// to that row source (correlation); on the relation, that a sensitive column
// of it is used.
func (a *analyzer) noteRef(parts []string, star bool, sc *scope, src lineage) {
	if star && len(parts) == 0 {
		return
	}
	it, j, _, at := findRef(parts, sc)
	if it == nil || at == nil || it.frame != nil {
		return
	}
	var node *rowNode
	if j >= 0 {
		node = a.refOf(it, j).node
	} else if it.node != nil {
		node = it.node
	}
	if len(src) > 0 {
		if j >= 0 || it.node != nil {
			touch(node)
		} else {
			touchAll(it)
		}
	}
	if node == nil {
		return
	}
	for s := sc; s != nil && s != at; s = s.parent {
		if s.lv != nil && s.lv != at.lv {
			if s.lv.node.outer == nil {
				s.lv.node.outer = make(map[*rowNode]bool)
			}
			s.lv.node.outer[node] = true
		}
	}
}

// touch marks a relation occurrence whose sensitive columns are used.
func touch(n *rowNode) {
	if n != nil && n.kind == nodeRelation {
		n.touched = true
	}
}

// touchAll marks the relations of a FROM item that carry sensitive columns,
// all of whose columns are used (*, a whole row).
func touchAll(it *rte) {
	for _, n := range it.leaves(nil) {
		if len(n.origins) > 0 {
			touch(n)
		}
	}
}

// conjunct records what one condition says about the level's members.
func (a *analyzer) conjunct(lv *level, n *pg_query.Node, sc *scope, app map[*rowNode]bool, depth int) {
	if depth > maxDepth || !a.enter() {
		return
	}
	defer a.leaveDepth()
	if b := n.GetBoolExpr(); b != nil && b.GetBoolop() == pg_query.BoolExprType_AND_EXPR {
		for _, arg := range b.GetArgs() {
			a.conjunct(lv, arg, sc, app, depth+1)
		}
		return
	}
	refs, deps, _ := a.exprRefs(n, sc)
	// Every row source the condition mentions is restricted, relative to
	// the others it mentions: a relation once; a subquery, view or CTE once
	// per column, so that pushing the bound through it reaches every
	// relation those columns come from.
	var nodes []*rowNode
	for _, r := range refs {
		if !slices.Contains(nodes, r.node) {
			nodes = append(nodes, r.node)
		}
	}
	for _, node := range nodes {
		others := slices.DeleteFunc(slices.Clone(nodes), func(o *rowNode) bool { return o == node })
		others = append(others, deps...)
		for _, r := range refs {
			if r.node == node {
				lv.bounds = append(lv.bounds, boundFact{ref: r, deps: others, app: app})
				if node.kind == nodeRelation {
					break
				}
			}
		}
	}
	e := n.GetAExpr()
	if e == nil {
		if b := n.GetBoolExpr(); b != nil && b.GetBoolop() == pg_query.BoolExprType_OR_EXPR {
			a.namedDisjuncts(lv, b, sc, app)
		}
		return
	}
	switch {
	case isEquality(e):
		a.equality(lv, e.GetLexpr(), e.GetRexpr(), sc, app, 0)
	case e.GetKind() == pg_query.A_Expr_Kind_AEXPR_IN && lastName(e.GetName()) == "=",
		e.GetKind() == pg_query.A_Expr_Kind_AEXPR_OP_ANY && lastName(e.GetName()) == "=":
		// x IN (…) and x = ANY(…) over constants: a named list.
		if ref, ok := a.columnSide(e.GetLexpr(), sc); ok {
			if _, rdeps, constant := a.exprRefs(e.GetRexpr(), sc); constant && len(rdeps) == 0 {
				lv.consts = append(lv.consts, constFact{ref: ref, named: true, app: app})
			}
		}
	case e.GetKind() == pg_query.A_Expr_Kind_AEXPR_LIKE && lastName(e.GetName()) == "~~":
		// LIKE with a literal pattern without wildcards names one value.
		if ref, ok := a.columnSide(e.GetLexpr(), sc); ok {
			if s, lit := stringLiteral(e.GetRexpr()); lit && !containsAny(s, `%_\`) {
				lv.consts = append(lv.consts, constFact{ref: ref, named: true, app: app})
			}
		}
	}
}

func containsAny(s, chars string) bool {
	for i := 0; i < len(s); i++ {
		for j := 0; j < len(chars); j++ {
			if s[i] == chars[j] {
				return true
			}
		}
	}
	return false
}

// isEquality reports whether e is the built-in = operator.
func isEquality(e *pg_query.A_Expr) bool {
	name := e.GetName()
	return e.GetKind() == pg_query.A_Expr_Kind_AEXPR_OP && len(name) > 0 && lastName(name) == "=" &&
		(len(name) == 1 || schemaName(name) == "pg_catalog")
}

// equality records l = r.
func (a *analyzer) equality(lv *level, l, r *pg_query.Node, sc *scope, app map[*rowNode]bool, depth int) {
	if lr, rr := l.GetRowExpr(), r.GetRowExpr(); lr != nil && rr != nil && len(lr.GetArgs()) == len(rr.GetArgs()) {
		if depth < maxCanonDepth {
			for i := range lr.GetArgs() {
				a.equality(lv, lr.GetArgs()[i], rr.GetArgs()[i], sc, app, depth+1)
			}
		}
		return
	}
	lref, lcol := a.columnSide(l, sc)
	rref, rcol := a.columnSide(r, sc)
	switch {
	case lcol && rcol:
		if lref != rref {
			lv.edges = append(lv.edges, edge{l: lref, r: rref, app: app})
		}
		return
	case lcol:
		a.pinTo(lv, lref, r, sc, app)
	case rcol:
		a.pinTo(lv, rref, l, sc, app)
	}
	if !lcol {
		a.keyExprPin(lv, l, r, sc, app)
	}
	if !rcol {
		a.keyExprPin(lv, r, l, sc, app)
	}
}

// pinTo records ref = other.
func (a *analyzer) pinTo(lv *level, ref colRef, other *pg_query.Node, sc *scope, app map[*rowNode]bool) {
	refs, deps, constant := a.exprRefs(other, sc)
	if slices.ContainsFunc(refs, func(o colRef) bool { return o.node == ref.node }) {
		return
	}
	if constant && len(refs) == 0 && len(deps) == 0 {
		lv.consts = append(lv.consts, constFact{ref: ref, strict: true, named: true, app: app})
		return
	}
	if !constant {
		return
	}
	for _, o := range refs {
		if !slices.Contains(deps, o.node) {
			deps = append(deps, o.node)
		}
	}
	lv.pins = append(lv.pins, pinFact{ref: ref, deps: deps, app: app})
}

// keyExprPin records keySide = other when keySide is an expression over the
// columns of one row source, which an expression index may match.
func (a *analyzer) keyExprPin(lv *level, keySide, other *pg_query.Node, sc *scope, app map[*rowNode]bool) {
	var leaves []colRef
	ok := true
	if _, canonical := a.canonExpr(keySide, lv.searchPath, func(cr *pg_query.ColumnRef) (string, bool) {
		parts, star := columnRefParts(cr)
		if star {
			ok = false
			return "", false
		}
		ref, _ := a.resolveRef(parts, sc)
		if ref.node == nil || ref.node.kind == nodeRelation && ref.col == "" {
			ok = false
			return "", false
		}
		leaves = append(leaves, ref)
		return "", true
	}); !canonical || !ok || len(leaves) == 0 {
		return
	}
	refs, deps, constant := a.exprRefs(other, sc)
	if !constant || slices.ContainsFunc(refs, func(o colRef) bool {
		return slices.ContainsFunc(leaves, func(l colRef) bool { return l.node == o.node })
	}) {
		return
	}
	for _, o := range refs {
		if !slices.Contains(deps, o.node) {
			deps = append(deps, o.node)
		}
	}
	lv.exprPins = append(lv.exprPins, exprPin{expr: keySide, leaves: leaves, deps: deps, path: lv.searchPath, app: app})
}

// namedDisjuncts records the columns that every branch of an OR pins to a
// constant: (table_name = $1 AND …) OR (table_name = $2 AND …) names tables.
func (a *analyzer) namedDisjuncts(lv *level, b *pg_query.BoolExpr, sc *scope, app map[*rowNode]bool) {
	var common []colRef
	for i, arg := range b.GetArgs() {
		var pinned []colRef
		var collect func(n *pg_query.Node, depth int)
		collect = func(n *pg_query.Node, depth int) {
			if depth > 64 {
				return
			}
			if and := n.GetBoolExpr(); and != nil && and.GetBoolop() == pg_query.BoolExprType_AND_EXPR {
				for _, x := range and.GetArgs() {
					collect(x, depth+1)
				}
				return
			}
			e := n.GetAExpr()
			if e == nil || !isEquality(e) {
				return
			}
			for _, side := range [2][2]*pg_query.Node{{e.GetLexpr(), e.GetRexpr()}, {e.GetRexpr(), e.GetLexpr()}} {
				if ref, ok := a.columnSide(side[0], sc); ok {
					if refs, deps, constant := a.exprRefs(side[1], sc); constant && len(refs) == 0 && len(deps) == 0 {
						pinned = append(pinned, ref)
					}
				}
			}
		}
		collect(arg, 0)
		if i == 0 {
			common = pinned
		} else {
			common = slices.DeleteFunc(common, func(r colRef) bool { return !slices.Contains(pinned, r) })
		}
	}
	for _, r := range common {
		lv.consts = append(lv.consts, constFact{ref: r, named: true, app: app})
	}
}

// columnSide returns the column an operand is, looking through casts that
// keep equality exact (to text, integers, oid, regclass, uuid; not name,
// which truncates).
func (a *analyzer) columnSide(n *pg_query.Node, sc *scope) (colRef, bool) {
	for range maxDepth {
		tc := n.GetTypeCast()
		if tc == nil || !exactCast(tc.GetTypeName()) {
			break
		}
		n = tc.GetArg()
	}
	cr := n.GetColumnRef()
	if cr == nil {
		return colRef{}, false
	}
	parts, star := columnRefParts(cr)
	if star {
		return colRef{}, false
	}
	ref, _ := a.resolveRef(parts, sc)
	if ref.node == nil || ref.node.kind == nodeRelation && ref.col == "" {
		return colRef{}, false
	}
	return ref, true
}

// exactCasts are the types a column can be cast to without equality on the
// result matching more rows than equality on the column.
var exactCasts = map[string]bool{
	"text": true, "varchar": true, "int2": true, "int4": true, "int8": true, "oid": true,
	"regclass": true, "regrole": true, "uuid": true, "numeric": true,
}

func exactCast(t *pg_query.TypeName) bool {
	return t != nil && len(t.GetTypmods()) == 0 && len(t.GetArrayBounds()) == 0 && exactCasts[lastName(t.GetNames())]
}

// volatileFunctions return another value at each call: an equality with
// them does not pin a column to one value.
var volatileFunctions = map[string]bool{
	"random": true, "random_normal": true, "nextval": true, "setval": true, "clock_timestamp": true,
	"timeofday": true, "gen_random_uuid": true, "uuid_generate_v4": true, "txid_current": true,
}

// exprRefs walks an expression for what its value depends on: the columns of
// row sources it names (refs), and the row sources behind function
// parameters and subqueries (deps). constant is false when it holds a
// volatile function, or is too deep to walk.
func (a *analyzer) exprRefs(n *pg_query.Node, sc *scope) (refs []colRef, deps []*rowNode, constant bool) {
	w := refWalker{a: a, sc: sc, constant: true, budget: 10_000}
	w.walk(n, 0)
	return w.refs, w.deps, w.constant
}

// refWalker is exprRefs' state: a value, not closures, so that a walk
// allocates only what it returns.
type refWalker struct {
	a        *analyzer
	sc       *scope
	refs     []colRef
	deps     []*rowNode
	constant bool
	budget   int
	// seen indexes refs once they are many.
	seen map[colRef]bool
}

func (w *refWalker) addDep(d *rowNode) {
	if d != nil && !slices.Contains(w.deps, d) {
		w.deps = append(w.deps, d)
	}
}

func (w *refWalker) addRef(r colRef) {
	if w.seen == nil && len(w.refs) >= 16 {
		w.seen = make(map[colRef]bool, 2*len(w.refs))
		for _, o := range w.refs {
			w.seen[o] = true
		}
	}
	if w.seen != nil {
		if w.seen[r] {
			return
		}
		w.seen[r] = true
	} else if slices.Contains(w.refs, r) {
		return
	}
	w.refs = append(w.refs, r)
}

func (w *refWalker) walk(m *pg_query.Node, depth int) {
	if m == nil || m.GetNode() == nil {
		return
	}
	w.budget--
	if depth > maxDepth || w.budget < 0 {
		w.constant = false
		return
	}
	switch e := m.GetNode().(type) {
	case *pg_query.Node_ColumnRef:
		parts, star := columnRefParts(e.ColumnRef)
		if star && len(parts) == 0 {
			w.constant = false
			return
		}
		ref, pdeps := w.a.resolveRef(parts, w.sc)
		if ref.node != nil {
			w.addRef(ref)
		}
		for _, d := range pdeps {
			w.addDep(d)
		}
		return
	case *pg_query.Node_ParamRef:
		if fr := w.a.frame; fr != nil {
			if i := int(e.ParamRef.GetNumber()) - 1; i >= 0 && i < len(fr.deps) {
				for _, d := range fr.deps[i] {
					w.addDep(d)
				}
			}
		}
		return
	case *pg_query.Node_SubLink:
		s := w.a.sublinks[e.SubLink]
		if s == nil {
			w.constant = false
			return
		}
		for o := range s.outer {
			w.addRef(colRef{node: o})
		}
		if e.SubLink.GetSubLinkType() != pg_query.SubLinkType_EXPR_SUBLINK {
			// A scalar subquery is one value; the others test or return
			// the rows of theirs.
			w.addDep(s)
		}
		w.walk(e.SubLink.GetTestexpr(), depth+1)
		return
	case *pg_query.Node_FuncCall:
		if volatileFunctions[lastName(e.FuncCall.GetFuncname())] {
			w.constant = false
		}
		for _, arg := range e.FuncCall.GetArgs() {
			w.walk(arg, depth+1)
		}
		return
	case *pg_query.Node_SelectStmt:
		w.constant = false
		return
	// The common nodes, without the reflection of the generic walk.
	case *pg_query.Node_AConst, *pg_query.Node_SqlvalueFunction, *pg_query.Node_String_, *pg_query.Node_Integer:
		return
	case *pg_query.Node_TypeCast:
		w.walk(e.TypeCast.GetArg(), depth+1)
		return
	case *pg_query.Node_AExpr:
		w.walk(e.AExpr.GetLexpr(), depth+1)
		w.walk(e.AExpr.GetRexpr(), depth+1)
		return
	case *pg_query.Node_BoolExpr:
		for _, arg := range e.BoolExpr.GetArgs() {
			w.walk(arg, depth+1)
		}
		return
	case *pg_query.Node_List:
		for _, item := range e.List.GetItems() {
			w.walk(item, depth+1)
		}
		return
	case *pg_query.Node_NullTest:
		w.walk(e.NullTest.GetArg(), depth+1)
		return
	}
	childNodes(m.ProtoReflect(), func(c *pg_query.Node) { w.walk(c, depth+1) })
}

// childNodes calls f with every Node found in m's fields, looking through
// messages that are not Nodes themselves.
func childNodes(m protoreflect.Message, f func(*pg_query.Node)) {
	eachChild(m, f, func(v protoreflect.Message) { childNodes(v, f) })
}
