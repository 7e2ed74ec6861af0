package classify

import (
	"slices"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// The shapes SQL injection leaves (ShapeInjection*, ShapeStacked) are
// recognised in two steps. While the statement is analysed, the facts that
// need lineage are recorded against the nodes of the parse tree: scalar
// subqueries that return or use sensitive values, the arms of set operations
// that return them, concatenations that wrap them in markers, casts of them
// to types they cannot be. Then injectionShapes walks the text's own tree —
// not view definitions, function bodies or SQL in string literals, which the
// application did not send — and judges those facts by where they stand: in
// a condition, a CASE, an expression's subquery, a later arm of a set
// operation, or a plain target list. docs/classification.md states the rules
// and their limits.
//
// The walk runs only when a fact was recorded or the text has several
// statements: the common statement pays for a nil check.

// injectionFacts are the facts of one analysis, keyed by parse-tree nodes.
type injectionFacts struct {
	subs map[*pg_query.SubLink]*subFact
	// arms are the output columns of the plain arms of set operations
	// with an arm that returns sensitive values; sensitiveArm is set once
	// one does.
	arms         map[*pg_query.SelectStmt][]column
	sensitiveArm bool
	// markers are the concatenations (an A_Expr ||, a concat() FuncCall)
	// that wrap a sensitive value in markers.
	markers map[any]bool
	// casts are the casts (a TypeCast, a FuncCall) of sensitive values to
	// types that reject most text, with what they cast.
	casts map[any]lineage
	// sleep is set when a sleep function was called.
	sleep bool
}

// relevant reports whether the facts can make a shape.
func (f *injectionFacts) relevant() bool {
	return f != nil && (len(f.subs) > 0 || f.sensitiveArm || len(f.markers) > 0 || len(f.casts) > 0 || f.sleep)
}

// subFact describes a scalar subquery whose target list returns or uses
// sensitive values.
type subFact struct {
	// correlated subqueries refer to the enclosing query's rows: how
	// applications look up a related row, and not how an injected payload,
	// written without knowing the query's aliases, does.
	correlated bool
	// pick is set when the subquery picks its row by position or
	// arbitrarily: LIMIT, OFFSET, or an aggregate without GROUP BY.
	pick bool
	// derived is set when its value is computed from the column (substr,
	// ascii, length …) rather than the column itself, cast or coalesced.
	derived bool
}

func (a *analyzer) injFacts() *injectionFacts {
	if a.inj == nil {
		a.inj = &injectionFacts{
			subs:    make(map[*pg_query.SubLink]*subFact),
			arms:    make(map[*pg_query.SelectStmt][]column),
			markers: make(map[any]bool),
			casts:   make(map[any]lineage),
		}
	}
	return a.inj
}

// scalarSubquery records a scalar subquery whose target list returns the
// sensitive columns sub or uses some (a.lastUses: length(email) returns no
// value of email but tells something of it).
func (a *analyzer) scalarSubquery(sl *pg_query.SubLink, sub lineage) {
	node := a.sublinks[sl]
	sel := sl.GetSubselect().GetSelectStmt()
	a.injFacts().subs[sl] = &subFact{
		correlated: node != nil && len(node.outer) > 0,
		pick: limitCount(sel.GetLimitCount()) || sel.GetLimitOffset() != nil ||
			(node != nil && node.oneRow),
		derived: derivedTarget(sel, 0),
	}
}

// derivedTarget reports whether the first output column of a query computes
// from its columns rather than passing one through.
func derivedTarget(sel *pg_query.SelectStmt, depth int) bool {
	if sel == nil || depth > maxCanonDepth {
		return true
	}
	if sel.GetOp() != pg_query.SetOperation_SETOP_NONE {
		return derivedTarget(sel.GetLarg(), depth+1)
	}
	tl := sel.GetTargetList()
	if len(tl) == 0 {
		return true
	}
	return derivedExpr(tl[0].GetResTarget().GetVal(), depth+1)
}

// derivedExpr reports whether an expression computes from the values it
// uses: casts, COALESCE and COLLATE pass a value through.
func derivedExpr(n *pg_query.Node, depth int) bool {
	if depth > maxCanonDepth {
		return true
	}
	switch e := n.GetNode().(type) {
	case *pg_query.Node_ColumnRef:
		return false
	case *pg_query.Node_TypeCast:
		return derivedExpr(e.TypeCast.GetArg(), depth+1)
	case *pg_query.Node_CollateClause:
		return derivedExpr(e.CollateClause.GetArg(), depth+1)
	case *pg_query.Node_CoalesceExpr:
		if args := e.CoalesceExpr.GetArgs(); len(args) > 0 {
			return derivedExpr(args[0], depth+1)
		}
	case *pg_query.Node_SubLink:
		if e.SubLink.GetSubLinkType() == pg_query.SubLinkType_EXPR_SUBLINK {
			return derivedTarget(e.SubLink.GetSubselect().GetSelectStmt(), depth+1)
		}
	}
	return true
}

// setOperationArms records the output columns of the arms of a set
// operation that are plain queries, once one returns sensitive values: the
// arms of the other set operations of the text are recorded too, as an
// application query's columns may come from `*`.
func (a *analyzer) setOperationArms(s *pg_query.SelectStmt, left, right []column) {
	sensitive := func(c column) bool { return len(c.src) > 0 }
	if a.inj == nil && !slices.ContainsFunc(left, sensitive) && !slices.ContainsFunc(right, sensitive) {
		return
	}
	f := a.injFacts()
	for i, arm := range []*pg_query.SelectStmt{s.GetLarg(), s.GetRarg()} {
		cols := left
		if i == 1 {
			cols = right
		}
		if arm == nil || arm.GetOp() != pg_query.SetOperation_SETOP_NONE {
			continue
		}
		f.arms[arm] = cols
		f.sensitiveArm = f.sensitiveArm || slices.ContainsFunc(cols, sensitive)
	}
}

// failingTypes are the types whose input functions reject most text and
// quote the rejected value in their error (invalid input syntax for type
// numeric: "…"): a sensitive value cast to one of them leaves through the
// error message. Text types, bytea and name accept any text.
var failingTypes = map[string]bool{
	"int2": true, "int4": true, "int8": true, "smallint": true, "integer": true, "bigint": true, "int": true,
	"numeric": true, "decimal": true, "float4": true, "float8": true, "real": true, "money": true, "oid": true,
	"bool": true, "boolean": true,
	"date": true, "time": true, "timetz": true, "timestamp": true, "timestamptz": true, "interval": true,
	"uuid": true, "inet": true, "cidr": true, "macaddr": true, "macaddr8": true,
	"json": true, "jsonb": true, "xml": true, "bit": true, "varbit": true,
	"regclass": true, "regtype": true, "regproc": true, "regprocedure": true, "regoper": true,
	"regoperator": true, "regrole": true, "regnamespace": true, "regconfig": true, "regdictionary": true,
}

// castFunctions convert text to such types by a function call.
var castFunctions = map[string]bool{"to_number": true, "to_date": true, "to_timestamp": true}

func failingCast(tn *pg_query.TypeName) bool {
	names := tn.GetNames()
	if len(names) == 0 || len(tn.GetArrayBounds()) > 0 {
		return false
	}
	schema := schemaName(names)
	return failingTypes[lastName(names)] && (schema == "" || schema == "pg_catalog")
}

// castCall records a function-style cast of sensitive values (to_number,
// int4(…)): like a TypeCast.
func (a *analyzer) castCall(fc *pg_query.FuncCall, name string, args lineage) {
	if len(args) > 0 && (castFunctions[name] || failingTypes[name]) && a.builtinCall(fc.GetFuncname()) {
		a.injFacts().casts[fc] = args
	}
}

// sleepFunctions delay the statement: time-blind extraction's clock.
var sleepFunctions = map[string]bool{"pg_sleep": true, "pg_sleep_for": true, "pg_sleep_until": true}

func isConcat(e *pg_query.A_Expr) bool {
	if e.GetKind() != pg_query.A_Expr_Kind_AEXPR_OP {
		return false
	}
	name := e.GetName()
	return len(name) > 0 && lastName(name) == "||" && (len(name) == 1 || schemaName(name) == "pg_catalog")
}

func isConcatCall(n *pg_query.Node) bool {
	fc := n.GetFuncCall()
	if fc == nil || fc.GetOver() != nil || fc.GetAggStar() || len(fc.GetAggOrder()) > 0 {
		return false
	}
	schema := schemaName(fc.GetFuncname())
	return lastName(fc.GetFuncname()) == "concat" && (schema == "" || schema == "pg_catalog")
}

// concatOperands flattens a chain of || and concat() into its operands, in
// order.
func concatOperands(n *pg_query.Node, out []*pg_query.Node, depth int) []*pg_query.Node {
	if depth < maxCanonDepth*4 {
		if e := n.GetAExpr(); e != nil && isConcat(e) {
			out = concatOperands(e.GetLexpr(), out, depth+1)
			return concatOperands(e.GetRexpr(), out, depth+1)
		}
		if isConcatCall(n) {
			for _, arg := range n.GetFuncCall().GetArgs() {
				out = concatOperands(arg, out, depth+1)
			}
			return out
		}
	}
	return append(out, n)
}

// concat analyzes a concatenation (a || chain or concat()), whose value
// carries every operand's, and records it when it wraps a sensitive value
// in markers: a constant operand before and another after it.
func (a *analyzer) concat(n *pg_query.Node, sc *scope) lineage {
	var (
		out             lineage
		marker, wrapped bool
	)
	for _, op := range concatOperands(n, nil, 0) {
		src := a.expr(op, sc)
		out = union(out, src)
		switch {
		case len(src) > 0:
			wrapped = wrapped || marker
		case isMarker(op, 0):
			if wrapped {
				key := any(n.GetAExpr())
				if fc := n.GetFuncCall(); fc != nil {
					key = fc
				}
				a.injFacts().markers[key] = true
			}
			marker = true
		}
	}
	return out
}

// isMarker reports whether a concatenation operand is a constant string: a
// literal, a parameter (a literal after normalization), or chr() of
// constants, as extraction tools build their delimiters without quotes.
func isMarker(n *pg_query.Node, depth int) bool {
	if depth > maxCanonDepth {
		return false
	}
	switch e := n.GetNode().(type) {
	case *pg_query.Node_AConst:
		_, ok := e.AConst.GetVal().(*pg_query.A_Const_Sval)
		return ok
	case *pg_query.Node_ParamRef:
		return true
	case *pg_query.Node_TypeCast:
		return isMarker(e.TypeCast.GetArg(), depth+1)
	case *pg_query.Node_FuncCall:
		schema := schemaName(e.FuncCall.GetFuncname())
		return lastName(e.FuncCall.GetFuncname()) == "chr" && (schema == "" || schema == "pg_catalog") &&
			!slices.ContainsFunc(e.FuncCall.GetArgs(), func(arg *pg_query.Node) bool { return mentionsAnyColumn(arg, depth+1) })
	}
	return false
}

// mentionsAnyColumn reports whether an expression refers to a column
// outside subqueries: whether it is a constant for the rows of its level.
func mentionsAnyColumn(n *pg_query.Node, depth int) bool {
	if n == nil || depth > maxCanonDepth*4 {
		return n != nil
	}
	switch n.GetNode().(type) {
	case *pg_query.Node_ColumnRef:
		return true
	case *pg_query.Node_SubLink:
		return false
	}
	found := false
	childNodes(n.ProtoReflect(), func(c *pg_query.Node) {
		found = found || mentionsAnyColumn(c, depth+1)
	})
	return found
}

// injectionShapes recognises the injection shapes in the text's statements.
func (a *analyzer) injectionShapes(stmts []*pg_query.RawStmt) {
	isStacked := stacked(stmts)
	if !isStacked && !a.inj.relevant() {
		return
	}
	w := &injWalker{a: a, facts: a.inj, stacked: isStacked}
	if isStacked {
		a.shapes |= shapeStacked
	}
	if w.facts == nil {
		w.facts = &injectionFacts{}
	}
	for _, raw := range stmts {
		w.statement(raw.GetStmt(), wctx{})
	}
}

// stacked reports whether a text runs statements after one an application
// sends alone: a query or a data change (SELECT, INSERT, UPDATE, DELETE,
// MERGE) first, then anything but transaction control. A script of DDL, or
// BEGIN; …; COMMIT around one statement, is not stacked.
func stacked(stmts []*pg_query.RawStmt) bool {
	if len(stmts) < 2 {
		return false
	}
	first := -1
	for i, raw := range stmts {
		if raw.GetStmt().GetTransactionStmt() != nil {
			continue
		}
		if first < 0 {
			switch raw.GetStmt().GetNode().(type) {
			case *pg_query.Node_SelectStmt, *pg_query.Node_InsertStmt, *pg_query.Node_UpdateStmt,
				*pg_query.Node_DeleteStmt, *pg_query.Node_MergeStmt:
				first = i
				continue
			}
			return false
		}
		return true
	}
	return false
}

// injWalker walks a statement's own tree, judging the facts the analysis
// recorded by where their nodes stand.
type injWalker struct {
	a       *analyzer
	facts   *injectionFacts
	stacked bool
	// noEffects is set under EXPLAIN without ANALYZE: nothing runs, no
	// error leaks a value.
	noEffects bool
	depth     int
}

// wctx is where an expression stands.
type wctx struct {
	// guarded: in a condition (WHERE, HAVING, ON, CASE WHEN), a sort,
	// grouping or LIMIT clause, a subquery in an expression, a failing cast,
	// or a set-operation arm after the first: not a value the statement
	// plainly returns.
	guarded bool
	// inSub: within a subquery in an expression.
	inSub bool
	// inCase: within a CASE.
	inCase bool
	// write: in the values an INSERT, UPDATE or MERGE stores, or its
	// RETURNING.
	write bool
	// mixed: in a target list that is not the statement's plain result.
	mixed bool
}

// flow is what an expression's value carries from the uncorrelated scalar
// subqueries recorded as returning or using sensitive values.
type flow struct {
	// sensitive: such a subquery's value flows here; pick: one that picks
	// its row by position.
	sensitive, pick bool
	// derived: computed from the value, not passed through.
	derived bool
}

func (f flow) merge(g flow) flow {
	return flow{sensitive: f.sensitive || g.sensitive, pick: f.pick || g.pick, derived: f.derived || g.derived}
}

func (w *injWalker) enter() bool {
	if w.depth >= maxDepth {
		return false
	}
	w.depth++
	return true
}

func (w *injWalker) statement(n *pg_query.Node, c wctx) {
	if n == nil || !w.enter() {
		return
	}
	defer func() { w.depth-- }()
	switch s := n.GetNode().(type) {
	case *pg_query.Node_SelectStmt:
		w.selectStmt(s.SelectStmt, c, false)
	case *pg_query.Node_InsertStmt:
		w.with(s.InsertStmt.GetWithClause(), c)
		wc := c
		wc.write = true
		w.statement(s.InsertStmt.GetSelectStmt(), wc)
		w.targets(s.InsertStmt.GetReturningList(), wc, false)
		if oc := s.InsertStmt.GetOnConflictClause(); oc != nil {
			w.targets(oc.GetTargetList(), wc, false)
			w.exprs(oc.GetWhereClause(), c, true)
		}
	case *pg_query.Node_UpdateStmt:
		u := s.UpdateStmt
		w.with(u.GetWithClause(), c)
		w.fromItems(u.GetFromClause(), c)
		wc := c
		wc.write = true
		w.targets(u.GetTargetList(), wc, false)
		w.exprs(u.GetWhereClause(), c, true)
		w.targets(u.GetReturningList(), wc, false)
	case *pg_query.Node_DeleteStmt:
		d := s.DeleteStmt
		w.with(d.GetWithClause(), c)
		w.fromItems(d.GetUsingClause(), c)
		w.exprs(d.GetWhereClause(), c, true)
		wc := c
		wc.write = true
		w.targets(d.GetReturningList(), wc, false)
	case *pg_query.Node_MergeStmt:
		m := s.MergeStmt
		w.with(m.GetWithClause(), c)
		w.fromItems([]*pg_query.Node{m.GetSourceRelation()}, c)
		w.exprs(m.GetJoinCondition(), c, true)
		wc := c
		wc.write = true
		for _, wh := range m.GetMergeWhenClauses() {
			mw := wh.GetMergeWhenClause()
			w.exprs(mw.GetCondition(), c, true)
			w.targets(mw.GetTargetList(), wc, false)
			for _, v := range mw.GetValues() {
				w.consume(w.expr(v, wc), false)
			}
		}
		w.targets(m.GetReturningList(), wc, false)
	case *pg_query.Node_DeclareCursorStmt:
		w.statement(s.DeclareCursorStmt.GetQuery(), c)
	case *pg_query.Node_CreateTableAsStmt:
		w.statement(s.CreateTableAsStmt.GetQuery(), c)
	case *pg_query.Node_CopyStmt:
		w.statement(s.CopyStmt.GetQuery(), c)
	case *pg_query.Node_PrepareStmt:
		w.statement(s.PrepareStmt.GetQuery(), c)
	case *pg_query.Node_ExplainStmt:
		saved := w.noEffects
		w.noEffects = w.noEffects || !explainAnalyze(s.ExplainStmt)
		w.statement(s.ExplainStmt.GetQuery(), c)
		w.noEffects = saved
	}
}

func (w *injWalker) with(wc *pg_query.WithClause, c wctx) {
	for _, n := range wc.GetCtes() {
		w.statement(n.GetCommonTableExpr().GetCtequery(), c)
	}
}

// selectStmt walks a query level. arm is set for the arms of a set
// operation, whose target lists are not the statement's plain result.
func (w *injWalker) selectStmt(s *pg_query.SelectStmt, c wctx, arm bool) {
	if s == nil || !w.enter() {
		return
	}
	defer func() { w.depth-- }()
	w.with(s.GetWithClause(), c)
	if s.GetOp() != pg_query.SetOperation_SETOP_NONE {
		var leaves []*pg_query.SelectStmt
		w.setOperation(s, c, &leaves, 0)
		w.unionShape(leaves)
		for i, leaf := range leaves {
			lc := c
			lc.guarded = lc.guarded || i > 0
			w.selectStmt(leaf, lc, true)
		}
	} else {
		w.fromItems(s.GetFromClause(), c)
		w.exprs(s.GetWhereClause(), c, true)
		// A target list is the statement's plain result when nothing else
		// is there: no FROM, no other arm, not inside an expression or a
		// write. Anywhere else a value picked out of a sensitive table has
		// been put into another query.
		plain := !arm && !c.inSub && !c.write && len(s.GetFromClause()) == 0
		w.targets(s.GetTargetList(), c, plain)
		for _, row := range s.GetValuesLists() {
			for _, v := range row.GetList().GetItems() {
				w.consume(w.expr(v, c), !arm && !c.inSub && !c.write)
			}
		}
		w.exprs(s.GetHavingClause(), c, true)
		for _, g := range s.GetGroupClause() {
			w.exprs(g, c, true)
		}
		for _, d := range s.GetDistinctClause() {
			w.exprs(d, c, true)
		}
		for _, wd := range s.GetWindowClause() {
			w.exprs(wd, c, true)
		}
	}
	for _, o := range s.GetSortClause() {
		w.exprs(o, c, true)
	}
	w.exprs(s.GetLimitCount(), c, true)
	w.exprs(s.GetLimitOffset(), c, true)
}

// setOperation collects the plain arms of a set-operation tree, in order,
// and walks the clauses of its nested set operations.
func (w *injWalker) setOperation(s *pg_query.SelectStmt, c wctx, leaves *[]*pg_query.SelectStmt, depth int) {
	if s == nil || depth > maxDepth {
		return
	}
	if s.GetOp() == pg_query.SetOperation_SETOP_NONE {
		*leaves = append(*leaves, s)
		return
	}
	if depth > 0 {
		w.with(s.GetWithClause(), c)
		for _, o := range s.GetSortClause() {
			w.exprs(o, c, true)
		}
		w.exprs(s.GetLimitCount(), c, true)
		w.exprs(s.GetLimitOffset(), c, true)
	}
	w.setOperation(s.GetLarg(), c, leaves, depth+1)
	w.setOperation(s.GetRarg(), c, leaves, depth+1)
}

// unionShape recognises union-based extraction: an arm after the first one
// (the application's query; injected arms are appended to it) that returns
// sensitive values and is padded with constants where the first arm has
// values, while the first arm has no constants where this one has values.
// Arms both designed to fit each other (NULLs on both sides, a constant
// discriminator in each) are not.
func (w *injWalker) unionShape(leaves []*pg_query.SelectStmt) {
	if len(w.facts.arms) == 0 || len(leaves) < 2 {
		return
	}
	first := padding(leaves[0], w.facts.arms[leaves[0]])
	for _, leaf := range leaves[1:] {
		cols, ok := w.facts.arms[leaf]
		if !ok {
			continue
		}
		pads := padding(leaf, cols)
		padded, firstPadded := false, false
		for i := range min(len(pads), len(first)) {
			padded = padded || pads[i] && !first[i]
			firstPadded = firstPadded || first[i] && !pads[i]
		}
		if padded && !firstPadded {
			w.a.shapes |= shapeInjectionUnion
			return
		}
	}
}

// padding tells, per output column of a plain query, whether it is a
// constant that carries no sensitive value (NULL, a literal, a parameter,
// an expression of those). cols are the arm's columns when recorded. nil
// when the positions cannot be told (several *, or * in an arm whose
// columns were not recorded).
func padding(s *pg_query.SelectStmt, cols []column) []bool {
	if rows := s.GetValuesLists(); len(rows) > 0 {
		var out []bool
		for i, v := range rows[0].GetList().GetItems() {
			out = append(out, !mentionsAnyColumn(v, 0) && (i >= len(cols) || len(cols[i].src) == 0))
		}
		return out
	}
	tl := s.GetTargetList()
	stars := 0
	for _, n := range tl {
		if cr := n.GetResTarget().GetVal().GetColumnRef(); cr != nil {
			if _, star := columnRefParts(cr); star {
				stars++
			}
		}
	}
	if stars > 1 || stars == 1 && cols == nil {
		return nil
	}
	var out []bool
	for _, n := range tl {
		v := n.GetResTarget().GetVal()
		if cr := v.GetColumnRef(); cr != nil {
			if _, star := columnRefParts(cr); star {
				for range len(cols) - (len(tl) - 1) {
					out = append(out, false)
				}
				continue
			}
		}
		pos := len(out)
		out = append(out, !mentionsAnyColumn(v, 0) && (pos >= len(cols) || len(cols[pos].src) == 0))
	}
	return out
}

func (w *injWalker) fromItems(items []*pg_query.Node, c wctx) {
	for _, f := range items {
		w.fromItem(f, c)
	}
}

func (w *injWalker) fromItem(n *pg_query.Node, c wctx) {
	if n == nil || !w.enter() {
		return
	}
	defer func() { w.depth-- }()
	switch f := n.GetNode().(type) {
	case *pg_query.Node_RangeVar:
	case *pg_query.Node_RangeSubselect:
		w.statement(f.RangeSubselect.GetSubquery(), c)
	case *pg_query.Node_JoinExpr:
		w.fromItem(f.JoinExpr.GetLarg(), c)
		w.fromItem(f.JoinExpr.GetRarg(), c)
		w.exprs(f.JoinExpr.GetQuals(), c, true)
	case *pg_query.Node_RangeFunction:
		childNodes(f.RangeFunction.ProtoReflect(), func(e *pg_query.Node) {
			w.consume(w.expr(e, c), false)
		})
	default:
		childNodes(n.ProtoReflect(), func(e *pg_query.Node) {
			w.consume(w.expr(e, c), false)
		})
	}
}

// targets walks a target list (or SET list); plain as for consume.
func (w *injWalker) targets(list []*pg_query.Node, c wctx, plain bool) {
	c.mixed = c.mixed || !plain
	for _, n := range list {
		w.consume(w.expr(n.GetResTarget().GetVal(), c), plain)
	}
}

// exprs walks an expression of a clause; cond is set for conditions, sort
// and grouping keys and LIMIT/OFFSET, which use the value rather than return
// it.
func (w *injWalker) exprs(n *pg_query.Node, c wctx, cond bool) {
	if n == nil {
		return
	}
	if cond {
		c.guarded = true
		w.condition(w.expr(n, c))
		return
	}
	w.consume(w.expr(n, c), false)
}

// consume judges values of sensitive scalar subqueries that end in a target
// list, a stored value or a function's argument: one picked by position is
// extraction unless it is the statement's plain result.
func (w *injWalker) consume(f flow, plain bool) {
	if f.pick && !plain {
		w.a.shapes |= shapeInjectionSubquery
	}
}

// condition judges values that decide a condition by themselves (a boolean
// subquery in WHERE, a CASE WHEN): an oracle when picked by position or
// computed from the value.
func (w *injWalker) condition(f flow) {
	if f.pick || f.sensitive && f.derived {
		w.a.shapes |= shapeInjectionSubquery
	}
}

// compare judges one side of a comparison against the other: an oracle when
// picked by position, or compared with a constant after being computed from
// (substr(…) = 'a') or by order or pattern (> 'm', LIKE 'a%'). An equality of
// the value itself with a constant or another column is how applications
// look rows up.
func (w *injWalker) compare(side flow, other *pg_query.Node, equality bool) {
	if side.pick || side.sensitive && (side.derived || !equality) && !mentionsAnyColumn(other, 0) {
		w.a.shapes |= shapeInjectionSubquery
	}
}

// markers records a concatenation that wraps sensitive values in markers
// when it stands where an application does not format values for display.
func (w *injWalker) markers(key any, c wctx) {
	if c.guarded && w.facts.markers[key] {
		w.a.shapes |= shapeInjectionMarkers
	}
}

// cast records a recorded cast: the value leaves in the error message, a
// read unless nothing runs.
func (w *injWalker) cast(key any) bool {
	src, ok := w.facts.casts[key]
	if !ok {
		return false
	}
	w.a.shapes |= shapeInjectionCast
	if !w.noEffects {
		addAll(w.a.read, src)
	}
	return true
}

// expr walks an expression and returns what it carries from sensitive
// scalar subqueries.
func (w *injWalker) expr(n *pg_query.Node, c wctx) flow {
	if n == nil || n.GetNode() == nil || !w.enter() {
		return flow{}
	}
	defer func() { w.depth-- }()
	switch e := n.GetNode().(type) {
	case *pg_query.Node_ColumnRef, *pg_query.Node_ParamRef, *pg_query.Node_AConst:
		return flow{}
	case *pg_query.Node_SubLink:
		return w.subLink(e.SubLink, c)
	case *pg_query.Node_TypeCast:
		if w.cast(e.TypeCast) {
			c.guarded = true
		}
		return w.expr(e.TypeCast.GetArg(), c)
	case *pg_query.Node_CollateClause:
		return w.expr(e.CollateClause.GetArg(), c)
	case *pg_query.Node_CoalesceExpr:
		return w.list(e.CoalesceExpr.GetArgs(), c)
	case *pg_query.Node_MinMaxExpr:
		return w.list(e.MinMaxExpr.GetArgs(), c)
	case *pg_query.Node_RowExpr:
		return w.list(e.RowExpr.GetArgs(), c)
	case *pg_query.Node_AArrayExpr:
		return w.list(e.AArrayExpr.GetElements(), c)
	case *pg_query.Node_List:
		return w.list(e.List.GetItems(), c)
	case *pg_query.Node_NamedArgExpr:
		return w.expr(e.NamedArgExpr.GetArg(), c)
	case *pg_query.Node_ResTarget:
		return w.expr(e.ResTarget.GetVal(), c)
	case *pg_query.Node_AExpr:
		if isPredicate(e.AExpr) {
			w.predicate(e.AExpr, c)
			return flow{}
		}
		w.markers(e.AExpr, c)
		f := w.expr(e.AExpr.GetLexpr(), c).merge(w.expr(e.AExpr.GetRexpr(), c))
		f.derived = f.sensitive
		return f
	case *pg_query.Node_BoolExpr:
		c.guarded = true
		for _, arg := range e.BoolExpr.GetArgs() {
			w.condition(w.expr(arg, c))
		}
		return flow{}
	case *pg_query.Node_NullTest:
		c.guarded = true
		w.expr(e.NullTest.GetArg(), c)
		return flow{}
	case *pg_query.Node_BooleanTest:
		c.guarded = true
		w.condition(w.expr(e.BooleanTest.GetArg(), c))
		return flow{}
	case *pg_query.Node_CaseExpr:
		return w.caseExpr(e.CaseExpr, c)
	case *pg_query.Node_FuncCall:
		return w.funcCall(e.FuncCall, c)
	}
	// Anything else carries what its parts carry, computed.
	f := w.generic(n, c)
	f.derived = f.sensitive
	return f
}

func (w *injWalker) generic(n *pg_query.Node, c wctx) flow {
	var f flow
	childNodes(n.ProtoReflect(), func(e *pg_query.Node) { f = f.merge(w.expr(e, c)) })
	return f
}

func (w *injWalker) list(items []*pg_query.Node, c wctx) flow {
	var f flow
	for _, n := range items {
		f = f.merge(w.expr(n, c))
	}
	return f
}

func (w *injWalker) subLink(sl *pg_query.SubLink, c wctx) flow {
	sc := c
	sc.guarded, sc.inSub = true, true
	w.statement(sl.GetSubselect(), sc)
	switch sl.GetSubLinkType() {
	case pg_query.SubLinkType_EXPR_SUBLINK, pg_query.SubLinkType_ARRAY_SUBLINK:
		if s := w.facts.subs[sl]; s != nil && !s.correlated {
			return flow{sensitive: true, pick: s.pick, derived: s.derived}
		}
		return flow{}
	}
	// EXISTS, IN, ANY, ALL: a truth value.
	w.condition(w.expr(sl.GetTestexpr(), sc))
	return flow{}
}

func (w *injWalker) predicate(e *pg_query.A_Expr, c wctx) {
	c.guarded = true
	l := w.expr(e.GetLexpr(), c)
	r := w.expr(e.GetRexpr(), c)
	equality := false
	switch e.GetKind() {
	case pg_query.A_Expr_Kind_AEXPR_IN, pg_query.A_Expr_Kind_AEXPR_DISTINCT, pg_query.A_Expr_Kind_AEXPR_NOT_DISTINCT:
		equality = true
	case pg_query.A_Expr_Kind_AEXPR_OP, pg_query.A_Expr_Kind_AEXPR_OP_ANY, pg_query.A_Expr_Kind_AEXPR_OP_ALL:
		switch lastName(e.GetName()) {
		case "=", "<>", "!=":
			equality = true
		}
	}
	w.compare(l, e.GetRexpr(), equality)
	w.compare(r, e.GetLexpr(), equality)
}

func (w *injWalker) caseExpr(e *pg_query.CaseExpr, c wctx) flow {
	rc := c
	rc.inCase = true
	cc := rc
	cc.guarded = true
	// CASE x WHEN v …: x is compared with each v.
	if arg := e.GetArg(); arg != nil {
		w.compare(w.expr(arg, cc), nil, true)
	}
	var f flow
	for _, n := range e.GetArgs() {
		cw := n.GetCaseWhen()
		if cw == nil {
			continue
		}
		if e.GetArg() != nil {
			w.consume(w.expr(cw.GetExpr(), cc), false)
		} else {
			w.condition(w.expr(cw.GetExpr(), cc))
		}
		f = f.merge(w.expr(cw.GetResult(), rc))
	}
	return f.merge(w.expr(e.GetDefresult(), rc))
}

func (w *injWalker) funcCall(fc *pg_query.FuncCall, c wctx) flow {
	name := lastName(fc.GetFuncname())
	if sleepFunctions[name] && w.a.builtinCall(fc.GetFuncname()) && (c.guarded || c.inCase || c.write || c.mixed || w.stacked) {
		w.a.shapes |= shapeInjectionSleep
	}
	if w.cast(fc) {
		c.guarded = true
	}
	w.markers(fc, c)
	cc := c
	cc.guarded = true
	for _, o := range fc.GetAggOrder() {
		w.condition(w.expr(o, cc))
	}
	w.condition(w.expr(fc.GetAggFilter(), cc))
	if over := fc.GetOver(); over != nil {
		w.condition(w.generic(&pg_query.Node{Node: &pg_query.Node_WindowDef{WindowDef: over}}, cc))
	}
	f := w.list(fc.GetArgs(), c)
	f.derived = f.sensitive
	return f
}
