package classify

import (
	"fmt"
	"slices"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
	"github.com/pgtripwire/pgtripwire/model"
)

// enter guards recursion depth and total work; callers return early when it
// reports false and must call leaveDepth otherwise.
func (a *analyzer) enter() bool {
	if a.depth >= maxDepth {
		a.problem(problemTooDeep)
		return false
	}
	if a.steps >= maxSteps {
		a.problem(problemTooComplex)
		return false
	}
	a.depth++
	a.steps++
	return true
}

func (a *analyzer) leaveDepth() { a.depth-- }

// query analyzes a statement that produces rows in a subquery position (FROM,
// WITH, sublinks, COPY, CREATE TABLE AS) and returns its output columns.
func (a *analyzer) query(n *pg_query.Node, parent *scope) []column {
	switch s := n.GetNode().(type) {
	case *pg_query.Node_SelectStmt:
		return a.selectStmt(s.SelectStmt, parent)
	case *pg_query.Node_InsertStmt:
		return a.insert(s.InsertStmt, parent)
	case *pg_query.Node_UpdateStmt:
		return a.update(s.UpdateStmt, parent)
	case *pg_query.Node_DeleteStmt:
		return a.delete(s.DeleteStmt, parent)
	case *pg_query.Node_MergeStmt:
		return a.merge(s.MergeStmt, parent)
	case nil:
		return nil
	}
	a.problem("unsupported statement in a query position")
	return nil
}

// selectStmt analyzes a SELECT, VALUES or set operation.
func (a *analyzer) selectStmt(s *pg_query.SelectStmt, parent *scope) []column {
	a.lastLevel = nil
	// The target list of the query of a scalar subquery is captured
	// (injection.go); nothing else is, nested levels included.
	capture, savedCapture, savedCapturing := a.captureNext, a.capture, a.capturing
	a.captureNext, a.capture, a.capturing = false, nil, false
	defer a.restoreCapture(savedCapture, savedCapturing)
	if s == nil || !a.enter() {
		return nil
	}
	defer a.leaveDepth()

	sc := &scope{parent: a.rootScope(parent)}
	if w := s.GetWithClause(); w != nil {
		a.with(w, sc)
	}
	lv := a.beginLevel(sc)

	var (
		out  []column
		uses lineage
	)
	switch {
	case s.GetOp() == pg_query.SetOperation_SETOP_UNION ||
		s.GetOp() == pg_query.SetOperation_SETOP_INTERSECT ||
		s.GetOp() == pg_query.SetOperation_SETOP_EXCEPT:
		a.captureNext, a.lastUses = capture, nil
		left := a.selectStmt(s.GetLarg(), sc)
		uses = a.lastUses
		lv.node.members = append(lv.node.members, a.takeLevel())
		a.captureNext, a.lastUses = capture, nil
		right := a.selectStmt(s.GetRarg(), sc)
		uses = union(uses, a.lastUses)
		lv.node.members = append(lv.node.members, a.takeLevel())
		a.setOperationArms(s, left, right)
		if s.GetOp() == pg_query.SetOperation_SETOP_EXCEPT {
			// Only the left side's rows are returned; the right one filters.
			a.refer(columnsLineage(right))
			out = slices.Clone(left)
		} else {
			out = mergeColumns(left, right)
		}
		if s.GetOp() != pg_query.SetOperation_SETOP_UNION || !s.GetAll() {
			// Duplicate elimination compares the values.
			a.refer(columnsLineage(out))
		}
	case len(s.GetValuesLists()) > 0:
		// VALUES yields its rows: one, or a list as short as an IN list.
		lv.node.fixed, lv.node.fixedClass = true, classPoint
		if len(s.GetValuesLists()) > 1 {
			lv.node.fixedClass = classRange
		}
		for _, row := range s.GetValuesLists() {
			for i, e := range row.GetList().GetItems() {
				src := a.expr(e, sc)
				if i < len(out) {
					out[i].src = union(out[i].src, src)
				} else {
					out = append(out, column{name: fmt.Sprintf("column%d", i+1), src: src})
				}
			}
		}
	default:
		for _, f := range s.GetFromClause() {
			if it := a.fromItem(f, sc); it != nil {
				sc.items = append(sc.items, it)
				lv.addMember(it)
			}
		}
		a.refer(a.expr(s.GetWhereClause(), sc))
		a.capturing = capture
		out = a.targetList(s.GetTargetList(), sc)
		uses, a.capture, a.capturing = a.capture, nil, false
		for _, g := range s.GetGroupClause() {
			a.refer(a.sortExpr(g, sc, out, false))
		}
		a.refer(a.expr(s.GetHavingClause(), sc))
		for _, w := range s.GetWindowClause() {
			a.refer(a.expr(w, sc))
		}
		if d := s.GetDistinctClause(); len(d) > 0 {
			if len(d) == 1 && d[0].GetNode() == nil {
				a.refer(columnsLineage(out)) // plain DISTINCT
			} else {
				for _, e := range d {
					a.refer(a.sortExpr(e, sc, out, true))
				}
			}
		}
	}
	for _, o := range s.GetSortClause() {
		a.refer(a.sortExpr(o, sc, out, true))
	}
	a.refer(a.expr(s.GetLimitCount(), sc))
	a.refer(a.expr(s.GetLimitOffset(), sc))
	a.endSelect(lv, s, sc)
	if capture {
		a.lastUses = uses
	}
	return out
}

// takeLevel returns the node of the level just analysed (a pessimistic
// stand-in when its analysis was cut short) and forgets it.
func (a *analyzer) takeLevel() *rowNode {
	n := a.lastLevel
	a.lastLevel = nil
	if n == nil {
		n = a.fixedNode(classScan, nil)
	}
	return n
}

// mergeColumns combines the two sides of a set operation position by
// position; names come from the left side, as in PostgreSQL.
func mergeColumns(left, right []column) []column {
	out := slices.Clone(left)
	for i, c := range right {
		if i < len(out) {
			out[i].src = union(out[i].src, c.src)
		} else {
			out = append(out, c)
		}
	}
	return out
}

// with analyzes a WITH clause and registers its CTEs in sc. Every CTE is
// analyzed even when unused: data-modifying CTEs run regardless.
func (a *analyzer) with(w *pg_query.WithClause, sc *scope) {
	sc.ctes = make(map[string]*rte, len(w.GetCtes()))
	for _, n := range w.GetCtes() {
		cte := n.GetCommonTableExpr()
		if cte == nil {
			continue
		}
		aliases := stringList(cte.GetAliascolnames())
		if !w.GetRecursive() {
			a.lastLevel = nil
			cols := renameColumns(a.query(cte.GetCtequery(), sc), aliases)
			// PostgreSQL inlines a SELECT CTE referenced once and not
			// MATERIALIZED: predicates on it reach its relations.
			node := a.aliasNode([]*rowNode{a.takeLevel()}, len(cols), true)
			node.simple = cte.GetCtematerialized() != pg_query.CTEMaterialize_CTEMaterializeAlways &&
				cte.GetCtequery().GetSelectStmt() != nil
			sc.ctes[cte.GetCtename()] = &rte{name: cte.GetCtename(), cols: cols, node: node}
			continue
		}
		// A recursive CTE refers to itself: start from an opaque placeholder
		// and re-analyze until the lineage of its columns stops growing.
		node := a.aliasNode(nil, 0, false)
		entry := &rte{name: cte.GetCtename(), opaque: true, node: node}
		for _, name := range aliases {
			entry.cols = append(entry.cols, column{name: name})
		}
		sc.ctes[cte.GetCtename()] = entry
		prev := -1
		for range 5 {
			a.lastLevel = nil
			cols := renameColumns(a.query(cte.GetCtequery(), sc), aliases)
			node.members = []*rowNode{a.takeLevel()}
			entry.cols, entry.opaque = cols, false
			size := 0
			for _, c := range cols {
				size += len(c.src)
			}
			if size == prev {
				break
			}
			prev = size
		}
		a.recursiveFold(cte, entry.cols)
	}
}

// renameColumns applies an alias column list (AS t(a, b)) to the leading
// columns.
func renameColumns(cols []column, names []string) []column {
	if len(names) == 0 {
		return cols
	}
	out := slices.Clone(cols)
	for i, n := range names {
		if i < len(out) {
			out[i].name = n
		}
	}
	return out
}

func stringList(nodes []*pg_query.Node) []string {
	var out []string
	for _, n := range nodes {
		if s := n.GetString_(); s != nil {
			out = append(out, s.GetSval())
		}
	}
	return out
}

// fromItem analyzes one FROM item. sc is the level being built: its items so
// far are visible to LATERAL subqueries and functions.
func (a *analyzer) fromItem(n *pg_query.Node, sc *scope) *rte {
	if !a.enter() {
		return &rte{opaque: true, node: a.fixedNode(classScan, nil)}
	}
	defer a.leaveDepth()

	switch f := n.GetNode().(type) {
	case *pg_query.Node_RangeVar:
		return a.relation(f.RangeVar, sc, true)
	case *pg_query.Node_RangeSubselect:
		parent := sc.withoutItems()
		if f.RangeSubselect.GetLateral() {
			parent = sc
		}
		a.lastLevel = nil
		cols := a.query(f.RangeSubselect.GetSubquery(), parent)
		alias := f.RangeSubselect.GetAlias()
		return &rte{name: alias.GetAliasname(), cols: renameColumns(cols, stringList(alias.GetColnames())), node: a.takeLevel()}
	case *pg_query.Node_RangeFunction:
		return a.rangeFunction(f.RangeFunction, sc)
	case *pg_query.Node_JoinExpr:
		return a.join(f.JoinExpr, sc)
	case *pg_query.Node_RangeTableSample:
		it := a.fromItem(f.RangeTableSample.GetRelation(), sc)
		for _, arg := range f.RangeTableSample.GetArgs() {
			a.refer(a.expr(arg, sc))
		}
		a.refer(a.expr(f.RangeTableSample.GetRepeatable(), sc))
		return it
	case *pg_query.Node_RangeTableFunc:
		// XMLTABLE: columns carry whatever the document expression carries.
		all := a.generic(f.RangeTableFunc.ProtoReflect(), sc)
		return &rte{name: f.RangeTableFunc.GetAlias().GetAliasname(), opaque: true, all: all, node: a.functionRows(n, sc)}
	case *pg_query.Node_JsonTable:
		all := a.generic(f.JsonTable.ProtoReflect(), sc)
		return &rte{name: f.JsonTable.GetAlias().GetAliasname(), opaque: true, all: all, node: a.functionRows(n, sc)}
	}
	a.problem("unsupported FROM item")
	return &rte{opaque: true, node: a.fixedNode(classScan, nil)}
}

// rangeFunction analyzes a function in FROM (generate_series, unnest,
// json_to_recordset, ROWS FROM). Its columns carry its arguments' lineage.
// Functions that read tables themselves are not followed yet.
func (a *analyzer) rangeFunction(f *pg_query.RangeFunction, sc *scope) *rte {
	var (
		all   lineage
		names []string
		fname string
	)
	var (
		known    []column
		allKnown = true
		nodes    []*rowNode
	)
	for _, fn := range f.GetFunctions() {
		items := fn.GetList().GetItems()
		if len(items) == 0 {
			continue
		}
		if fc := items[0].GetFuncCall(); fc != nil {
			if fname == "" {
				fname = lastName(fc.GetFuncname())
			}
			a.lastFunc = nil
			if cols, ok := a.call(fc, sc); ok {
				// ROWS FROM places each function's columns side by side.
				known = append(known, cols...)
				all = union(all, columnsLineage(cols))
				node := a.lastFunc
				if node == nil {
					node = a.fixedNode(classScan, nil)
				}
				nodes = append(nodes, node)
				continue
			}
		}
		allKnown = false
		all = union(all, a.expr(items[0], sc))
		nodes = append(nodes, a.functionRows(items[0], sc))
		if len(items) > 1 {
			for _, cd := range items[1].GetList().GetItems() {
				names = append(names, cd.GetColumnDef().GetColname())
			}
		}
	}
	for _, cd := range f.GetColdeflist() {
		names = append(names, cd.GetColumnDef().GetColname())
	}
	alias := f.GetAlias()
	if aliases := stringList(alias.GetColnames()); len(aliases) > 0 {
		names = aliases
	}
	name := alias.GetAliasname()
	if name == "" {
		name = fname
	}
	node := a.aliasNode(nodes, 0, false)
	if len(nodes) == 1 {
		node = nodes[0]
	}
	if allKnown && len(known) > 0 && !f.GetOrdinality() {
		// Functions whose result columns are known: a catalog function
		// returning a table's rows, dblink with a column definition list.
		// Names come from the alias or column definition list, else from
		// the function; positions carry the lineage.
		cols := slices.Clone(known)
		for i, n := range names {
			if i < len(cols) {
				cols[i].name = n
			}
		}
		if len(cols) == 1 && len(names) == 0 {
			cols[0].name = name
		}
		return &rte{name: name, cols: cols, node: node}
	}
	it := &rte{name: name, opaque: true, all: all, node: node}
	for _, n := range names {
		it.cols = append(it.cols, column{name: n, src: all})
	}
	return it
}

// functionRows is the row source of a built-in set-returning function or
// table function in FROM (generate_series, unnest, json_to_recordset,
// XMLTABLE): a list as long as its arguments say, relative to the row
// sources they depend on.
func (a *analyzer) functionRows(n *pg_query.Node, sc *scope) *rowNode {
	refs, deps, constant := a.exprRefs(n, sc)
	for _, r := range refs {
		if !slices.Contains(deps, r.node) {
			deps = append(deps, r.node)
		}
	}
	node := a.fixedNode(classRange, deps)
	// unnest of a constant array lists values the client named, like
	// = ANY($1).
	node.namedRows = constant && len(deps) == 0 && n.GetFuncCall() != nil && lastName(n.GetFuncCall().GetFuncname()) == "unnest"
	return node
}

// join analyzes a JOIN. Without an alias its members stay visible by name; its
// columns are the USING/NATURAL columns once (carrying both sides) followed by
// the remaining columns of each side, as in PostgreSQL.
func (a *analyzer) join(j *pg_query.JoinExpr, sc *scope) *rte {
	left := a.fromItem(j.GetLarg(), sc)
	// The right side of a join can be LATERAL over the left one.
	sc.items = append(sc.items, left)
	right := a.fromItem(j.GetRarg(), sc)
	sc.items = sc.items[:len(sc.items)-1]

	using := stringList(j.GetUsingClause())
	if j.GetIsNatural() {
		for _, c := range left.cols {
			if _, ok := right.concreteColumn(c.name); ok && !slices.Contains(using, c.name) {
				using = append(using, c.name)
			}
		}
	}
	it := &rte{opaque: left.opaque || right.opaque, all: union(left.all, right.all), sides: []*rte{left, right},
		colSides: make([]sideCol, 0, len(left.cols)+len(right.cols))}
	lv := levelOf(sc)
	app := joinApplies(j.GetJointype(), left, right)
	for _, name := range using {
		l, lok := left.column(name)
		r, rok := right.column(name)
		if !lok || !rok {
			a.problem("unknown join column %s", name)
		}
		it.cols = append(it.cols, column{name: name, src: union(l, r)})
		li, ri := left.columnIndex(name), right.columnIndex(name)
		it.colSides = append(it.colSides, sideCol{side: left, j: li})
		if len(l) > 0 {
			touch(a.refOf(left, li).node)
		}
		if len(r) > 0 {
			touch(a.refOf(right, ri).node)
		}
		if lv != nil && li >= 0 && ri >= 0 {
			lv.edges = append(lv.edges, edge{l: a.refOf(left, li), r: a.refOf(right, ri), app: app})
		}
	}
	for _, side := range []*rte{left, right} {
		for j, c := range side.cols {
			if !slices.Contains(using, c.name) {
				it.cols = append(it.cols, c)
				it.colSides = append(it.colSides, sideCol{side: side, j: j})
			}
		}
	}
	if alias := j.GetAlias(); alias != nil {
		it.name = alias.GetAliasname()
		it.cols = renameColumns(it.cols, stringList(alias.GetColnames()))
	} else {
		it.members = []*rte{left, right}
	}
	if ua := j.GetJoinUsingAlias(); ua != nil && len(using) > 0 {
		// JOIN ... USING (id) AS x: x.id names the merged columns.
		ui := &rte{name: ua.GetAliasname(), cols: it.cols[:len(using)]}
		it.members = append(it.members, ui)
	}

	// ON sees both sides (and, through sc, earlier items and outer levels).
	onScope := &scope{parent: sc, items: []*rte{left, right}, lv: lv}
	a.refer(a.expr(j.GetQuals(), onScope))
	if lv != nil {
		lv.addConj(j.GetQuals(), onScope, app)
	}
	return it
}

// joinApplies returns the row sources a join's ON condition restricts: both
// sides of an inner join (nil), the nullable side of an outer one, neither
// side of a FULL join.
func joinApplies(t pg_query.JoinType, left, right *rte) map[*rowNode]bool {
	set := func(it *rte) map[*rowNode]bool {
		m := make(map[*rowNode]bool)
		for _, n := range it.leaves(nil) {
			m[n] = true
		}
		return m
	}
	switch t {
	case pg_query.JoinType_JOIN_LEFT:
		return set(right)
	case pg_query.JoinType_JOIN_RIGHT:
		return set(left)
	case pg_query.JoinType_JOIN_FULL:
		return map[*rowNode]bool{}
	}
	return nil
}

// displayName prints a RangeVar's name as written (quoted where needed), for
// problems.
func displayName(rv *pg_query.RangeVar) string {
	if rv.GetSchemaname() != "" {
		return model.QualifiedName(rv.GetSchemaname(), rv.GetRelname())
	}
	return model.QuoteIdent(rv.GetRelname())
}

// systemSchemas hold PostgreSQL's own relations, which a snapshot does not
// list and which hold no application data.
var systemSchemas = map[string]bool{"pg_catalog": true, "information_schema": true}

// relation resolves a relation name to a FROM item: a CTE of an enclosing
// WITH (when allowCTE), else a catalog relation through the search path.
// Views and materialized views are expanded so their columns carry the
// lineage of the columns they are defined over.
func (a *analyzer) relation(rv *pg_query.RangeVar, sc *scope, allowCTE bool) *rte {
	alias := rv.GetAlias()
	name := alias.GetAliasname()
	if rv.GetSchemaname() == "" && rv.GetCatalogname() == "" && allowCTE {
		if cte, ok := sc.lookupCTE(rv.GetRelname()); ok {
			if name == "" {
				name = rv.GetRelname()
			}
			if cte.node != nil {
				cte.node.refs++
			}
			return &rte{name: name, cols: renameColumns(cte.cols, stringList(alias.GetColnames())), opaque: cte.opaque, all: cte.all, node: cte.node}
		}
	}

	var (
		rel *catalog.Relation
		ok  bool
	)
	// Names in view definitions resolve as the catalog's loading session saw
	// them: they are neither recorded nor rebound.
	inView := len(a.expanding) > 0
	switch {
	case rv.GetSchemaname() != "":
		rel, ok = a.cat.Lookup(rv.GetSchemaname(), rv.GetRelname())
	case a.binding != nil && a.binding.name == rv.GetRelname() && !inView:
		rel, ok = a.binding.rel, true
	default:
		rel, ok = a.cat.Resolve(a.searchPath, a.role, rv.GetRelname())
		if !inView {
			resolved := ""
			if ok {
				resolved = rel.QualifiedName()
			}
			a.unqualified[rv.GetRelname()] = resolved
		}
	}
	if name == "" {
		name = rv.GetRelname()
	}
	if !ok {
		schema := rv.GetSchemaname()
		// Unqualified pg_* names that the snapshot does not know are
		// PostgreSQL's catalogs and statistics views (pg_class,
		// pg_stat_activity): user relations with such names would be in
		// the snapshot.
		if schema == "" && strings.HasPrefix(rv.GetRelname(), "pg_") {
			schema = "pg_catalog"
		}
		node := a.newNode(nodeRelation)
		it := &rte{name: name, opaque: true, node: node}
		if systemSchemas[schema] {
			q := model.QualifiedName(schema, rv.GetRelname())
			a.relations[q] = true
			node.sys = sysRelations[q]
			if alias == nil {
				// pg_catalog.pg_class.oid names the item.
				it.schema = schema
			}
		} else {
			a.problem("unknown relation %s", displayName(rv))
		}
		return it
	}

	q := rel.QualifiedName()
	a.relations[q] = true
	it := &rte{name: name, rel: q, cols: renameColumns(a.relationColumns(rel), stringList(alias.GetColnames()))}
	if alias == nil {
		it.schema = rel.Schema
	}
	if rel.Kind == catalog.View {
		it.node = a.viewNodes[q]
		if it.node == nil {
			it.node = a.fixedNode(classScan, nil)
		}
		it.node.refs++
	} else {
		it.node = a.relationNode(rel, rv.GetInh(), it.cols)
	}
	return it
}

// relationColumns returns a catalog relation's columns with their lineage:
// the column itself when configured sensitive, and for views and
// materialized views the lineage of the defining query's output.
func (a *analyzer) relationColumns(rel *catalog.Relation) []column {
	q := rel.QualifiedName()
	if cols, ok := a.baseCols[q]; ok {
		return cols
	}
	cols := make([]column, len(rel.Columns))
	for i, c := range rel.Columns {
		cols[i].name = c
		if origin, ok := a.cat.SensitiveOrigin(q, c); ok {
			// A partition or inheritance child carries its configured
			// ancestor's column, reported under the ancestor's name.
			cols[i].src = lineage{{rel: origin, col: c}: {}}
			a.relations[origin] = true
		}
	}
	if rel.Kind.HasDefinition() {
		cols = a.expandView(rel, cols)
	}
	a.baseCols[q] = cols
	return cols
}

// expandView adds the lineage of a view's defining query to its columns.
func (a *analyzer) expandView(rel *catalog.Relation, cols []column) []column {
	q := rel.QualifiedName()
	if a.expanding[q] {
		a.problem("view %s is defined in terms of itself", q)
		return cols
	}
	if rel.ViewDef == "" {
		a.problem("definition of view %s is not available", q)
		return cols
	}
	tree, err := pg_query.Parse(rel.ViewDef)
	if err != nil || len(tree.GetStmts()) != 1 || tree.GetStmts()[0].GetStmt().GetSelectStmt() == nil {
		a.problem("definition of view %s cannot be parsed", q)
		return cols
	}

	a.expanding[q] = true
	savedPath, savedRole, savedFrame := a.searchPath, a.role, a.frame
	a.searchPath, a.role, a.frame = a.cat.ViewSearchPath(), "", nil
	if rel.Kind == catalog.MaterializedView {
		// Reading a materialized view reads its stored rows, not its
		// definition's.
		a.inMatview++
	}
	defs := a.selectStmt(tree.GetStmts()[0].GetStmt().GetSelectStmt(), nil)
	if rel.Kind == catalog.MaterializedView {
		a.inMatview--
		a.lastLevel = nil
	} else {
		// A view is a subquery: simple ones let predicates through.
		view := a.aliasNode([]*rowNode{a.takeLevel()}, len(defs), true)
		view.simple = true
		a.viewNodes[q] = view
	}
	a.searchPath, a.role, a.frame = savedPath, savedRole, savedFrame
	delete(a.expanding, q)

	out := slices.Clone(cols)
	if len(defs) != len(out) {
		a.problem("definition of view %s does not match its columns", q)
		all := columnsLineage(defs)
		for i := range out {
			out[i].src = union(out[i].src, all)
		}
		return out
	}
	for i := range out {
		out[i].src = union(out[i].src, defs[i].src)
	}
	return out
}

// targetList analyzes a SELECT or RETURNING list into output columns,
// expanding * and t.* from the scope.
func (a *analyzer) targetList(list []*pg_query.Node, sc *scope) []column {
	var out []column
	for _, n := range list {
		rt := n.GetResTarget()
		if rt == nil {
			continue
		}
		if cr := rt.GetVal().GetColumnRef(); cr != nil {
			if parts, star := columnRefParts(cr); star {
				out = append(out, a.expandStar(parts, sc)...)
				continue
			}
		}
		name := rt.GetName()
		if name == "" {
			name = figureName(rt.GetVal())
		}
		out = append(out, column{name: name, src: a.expr(rt.GetVal(), sc)})
	}
	return out
}

func (a *analyzer) expandStar(qualifier []string, sc *scope) []column {
	if len(qualifier) == 0 {
		var out []column
		for _, it := range sc.items {
			touchAll(it)
			out = append(out, it.star()...)
		}
		return out
	}
	if it, ok := sc.findQualifier(qualifier); ok {
		touchAll(it)
		return it.star()
	}
	a.problem("unknown relation %s", strings.Join(quoteAll(qualifier), "."))
	return nil
}

func quoteAll(parts []string) []string {
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = model.QuoteIdent(p)
	}
	return out
}

// sortExpr analyzes an ORDER BY, GROUP BY or DISTINCT ON item, which may name
// an output column by name or position. outputFirst gives output names
// precedence over input columns (ORDER BY, DISTINCT ON), as PostgreSQL does;
// GROUP BY prefers input columns.
func (a *analyzer) sortExpr(n *pg_query.Node, sc *scope, out []column, outputFirst bool) lineage {
	if sb := n.GetSortBy(); sb != nil {
		n = sb.GetNode()
	}
	if gs := n.GetGroupingSet(); gs != nil {
		var src lineage
		for _, c := range gs.GetContent() {
			src = union(src, a.sortExpr(c, sc, out, outputFirst))
		}
		return src
	}
	if ac := n.GetAConst(); ac != nil {
		if iv, ok := ac.GetVal().(*pg_query.A_Const_Ival); ok {
			if i := int(iv.Ival.GetIval()); i >= 1 && i <= len(out) {
				return out[i-1].src
			}
		}
		return nil
	}
	if cr := n.GetColumnRef(); cr != nil {
		if parts, star := columnRefParts(cr); !star && len(parts) == 1 {
			byOutput := func() (lineage, bool) {
				var (
					src   lineage
					found bool
				)
				for _, c := range out {
					if c.name == parts[0] {
						src, found = union(src, c.src), true
					}
				}
				return src, found
			}
			if outputFirst {
				if src, ok := byOutput(); ok {
					return src
				}
			}
			if src, ok := sc.resolveColumn(parts, false); ok {
				a.noteRef(parts, false, sc, src)
				return src
			}
			if src, ok := byOutput(); ok {
				return src
			}
		}
	}
	return a.expr(n, sc)
}
