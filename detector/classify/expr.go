package classify

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// expr returns the lineage of an expression's value: the sensitive columns
// it is computed from. Operators, functions, casts, CASE, COALESCE, row and
// array constructors and aggregates that return (part of) their input pass
// lineage through; predicates inside the expression that only filter or
// order (aggregate FILTER and ORDER BY, window clauses, EXISTS, IN
// subqueries, count's argument) are recorded as references instead.
func (a *analyzer) expr(n *pg_query.Node, sc *scope) lineage {
	if n == nil || n.GetNode() == nil {
		return nil
	}
	if !a.enter() {
		return nil
	}
	defer a.leaveDepth()

	switch e := n.GetNode().(type) {
	case *pg_query.Node_ColumnRef:
		return a.columnRef(e.ColumnRef, sc)
	case *pg_query.Node_ParamRef:
		return a.param(e.ParamRef.GetNumber())
	case *pg_query.Node_AConst, *pg_query.Node_SqlvalueFunction,
		*pg_query.Node_SetToDefault, *pg_query.Node_CurrentOfExpr, *pg_query.Node_TypeName,
		*pg_query.Node_String_, *pg_query.Node_Integer, *pg_query.Node_Float,
		*pg_query.Node_Boolean, *pg_query.Node_BitString, *pg_query.Node_AStar:
		return nil
	case *pg_query.Node_TypeCast:
		src := a.expr(e.TypeCast.GetArg(), sc)
		if len(src) > 0 && failingCast(e.TypeCast.GetTypeName()) {
			a.injFacts().casts[e.TypeCast] = src
		}
		return src
	case *pg_query.Node_AExpr:
		if isConcat(e.AExpr) {
			return a.concat(n, sc)
		}
		src := union(a.expr(e.AExpr.GetLexpr(), sc), a.expr(e.AExpr.GetRexpr(), sc))
		if isPredicate(e.AExpr) {
			a.refer(src)
			return nil
		}
		return src
	case *pg_query.Node_BoolExpr:
		// AND, OR and NOT return a truth value, not their operands.
		a.refer(a.exprs(e.BoolExpr.GetArgs(), sc))
		return nil
	case *pg_query.Node_List:
		return a.exprs(e.List.GetItems(), sc)
	case *pg_query.Node_FuncCall:
		return a.funcCall(e.FuncCall, sc)
	case *pg_query.Node_SubLink:
		return a.subLink(e.SubLink, sc)
	case *pg_query.Node_CaseExpr:
		src := union(a.expr(e.CaseExpr.GetArg(), sc), a.exprs(e.CaseExpr.GetArgs(), sc))
		return union(src, a.expr(e.CaseExpr.GetDefresult(), sc))
	case *pg_query.Node_CaseWhen:
		// The condition chooses the result; it is not returned.
		a.refer(a.expr(e.CaseWhen.GetExpr(), sc))
		return a.expr(e.CaseWhen.GetResult(), sc)
	case *pg_query.Node_CoalesceExpr:
		return a.exprs(e.CoalesceExpr.GetArgs(), sc)
	case *pg_query.Node_MinMaxExpr:
		return a.exprs(e.MinMaxExpr.GetArgs(), sc)
	case *pg_query.Node_NullTest:
		a.refer(a.expr(e.NullTest.GetArg(), sc))
		return nil
	case *pg_query.Node_BooleanTest:
		a.refer(a.expr(e.BooleanTest.GetArg(), sc))
		return nil
	case *pg_query.Node_JsonIsPredicate:
		a.refer(a.expr(e.JsonIsPredicate.GetExpr(), sc))
		return nil
	case *pg_query.Node_RowExpr:
		return a.exprs(e.RowExpr.GetArgs(), sc)
	case *pg_query.Node_AArrayExpr:
		return a.exprs(e.AArrayExpr.GetElements(), sc)
	case *pg_query.Node_AIndirection:
		return a.indirection(e.AIndirection, sc)
	case *pg_query.Node_AIndices:
		// A subscript selects elements; its own value is not returned.
		a.refer(union(a.expr(e.AIndices.GetLidx(), sc), a.expr(e.AIndices.GetUidx(), sc)))
		return nil
	case *pg_query.Node_CollateClause:
		return a.expr(e.CollateClause.GetArg(), sc)
	case *pg_query.Node_NamedArgExpr:
		return a.expr(e.NamedArgExpr.GetArg(), sc)
	case *pg_query.Node_SortBy:
		return a.expr(e.SortBy.GetNode(), sc)
	case *pg_query.Node_GroupingFunc:
		a.refer(a.exprs(e.GroupingFunc.GetArgs(), sc))
		return nil
	case *pg_query.Node_WindowDef:
		a.refer(a.windowDef(e.WindowDef, sc))
		return nil
	case *pg_query.Node_ResTarget:
		return a.expr(e.ResTarget.GetVal(), sc)
	case *pg_query.Node_SelectStmt:
		return columnsLineage(a.selectStmt(e.SelectStmt, sc))
	case *pg_query.Node_InsertStmt, *pg_query.Node_UpdateStmt, *pg_query.Node_DeleteStmt, *pg_query.Node_MergeStmt:
		return columnsLineage(a.query(n, sc))
	case *pg_query.Node_JsonArrayAgg, *pg_query.Node_JsonObjectAgg, *pg_query.Node_JsonArrayQueryConstructor:
		// JSON_ARRAYAGG, JSON_OBJECTAGG and JSON_ARRAY(SELECT …) fold rows
		// into one value.
		src := a.generic(n.ProtoReflect(), sc)
		a.folded = union(a.folded, src)
		if lv := levelOf(sc); lv != nil && n.GetJsonArrayQueryConstructor() == nil {
			lv.hasAgg = true
		}
		return src
	}
	// Everything else (JSON and XML constructors, ...) is walked generically:
	// whatever columns occur in it are taken to flow into its value.
	return a.generic(n.ProtoReflect(), sc)
}

func (a *analyzer) exprs(list []*pg_query.Node, sc *scope) lineage {
	var out lineage
	for _, n := range list {
		out = union(out, a.expr(n, sc))
	}
	return out
}

// generic unions the lineage of every expression node found in m's fields.
func (a *analyzer) generic(m protoreflect.Message, sc *scope) lineage {
	if !a.enter() {
		return nil
	}
	defer a.leaveDepth()
	var out lineage
	eachChild(m,
		func(n *pg_query.Node) { out = union(out, a.expr(n, sc)) },
		func(v protoreflect.Message) { out = union(out, a.generic(v, sc)) })
	return out
}

// eachChild calls node with every Node in m's fields and other with every
// other message in them.
func eachChild(m protoreflect.Message, node func(*pg_query.Node), other func(protoreflect.Message)) {
	visit := func(v protoreflect.Message) {
		if n, ok := v.Interface().(*pg_query.Node); ok {
			node(n)
			return
		}
		other(v)
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				visit(l.Get(i).Message())
			}
			return true
		}
		visit(v.Message())
		return true
	})
}

func (a *analyzer) windowDef(w *pg_query.WindowDef, sc *scope) lineage {
	src := union(a.exprs(w.GetPartitionClause(), sc), a.exprs(w.GetOrderClause(), sc))
	return union(src, union(a.expr(w.GetStartOffset(), sc), a.expr(w.GetEndOffset(), sc)))
}

// columnRefParts returns a column reference's name parts and whether it ends
// in *.
func columnRefParts(cr *pg_query.ColumnRef) (parts []string, star bool) {
	fields := cr.GetFields()
	for i, f := range fields {
		switch {
		case f.GetString_() != nil:
			parts = append(parts, f.GetString_().GetSval())
		case f.GetAStar() != nil && i == len(fields)-1:
			star = true
		default:
			return parts, star
		}
	}
	return parts, star
}

func (a *analyzer) columnRef(cr *pg_query.ColumnRef, sc *scope) lineage {
	parts, star := columnRefParts(cr)
	if src, ok := sc.resolveColumn(parts, star); ok {
		a.noteRef(parts, star, sc, src)
		return src
	}
	name := strings.Join(quoteAll(parts), ".")
	if star {
		name += ".*"
	}
	a.problem("unresolved column reference %s", name)
	return nil
}

// indirection handles (expr).field, (expr).* and expr[subscript]. A field of
// a whole-row reference, (u).email, carries only that column.
func (a *analyzer) indirection(ind *pg_query.A_Indirection, sc *scope) lineage {
	var fields []string
	star := false
	for _, n := range ind.GetIndirection() {
		switch {
		case n.GetString_() != nil && !star:
			fields = append(fields, n.GetString_().GetSval())
		case n.GetAStar() != nil:
			star = true
		default:
			a.refer(a.expr(n, sc))
		}
	}
	if cr := ind.GetArg().GetColumnRef(); cr != nil && len(fields) > 0 {
		if parts, argStar := columnRefParts(cr); !argStar && len(parts) == 1 {
			if it, ok := findItemOutward(sc, parts[0]); ok {
				if _, isColumn := findColumnOutward(sc, parts[0]); !isColumn {
					if src, ok := it.column(fields[0]); ok {
						if j := it.columnIndex(fields[0]); j >= 0 && len(src) > 0 {
							touch(a.refOf(it, j).node)
						}
						return src
					}
				}
			}
		}
	}
	return a.expr(ind.GetArg(), sc)
}

func findItemOutward(sc *scope, name string) (*rte, bool) {
	for l := sc; l != nil; l = l.parent {
		if it, ok := l.findItem("", name); ok {
			return it, true
		}
	}
	return nil, false
}

func findColumnOutward(sc *scope, name string) (lineage, bool) {
	for l := sc; l != nil; l = l.parent {
		if src, ok := l.findColumn(name); ok {
			return src, true
		}
	}
	return nil, false
}

// valueFreeFunctions are the built-in functions that return no value of their
// arguments, only a count, a size or a truth value: count(email) tells how
// many, not which; length(password_hash) is 60 for every bcrypt hash. Any
// other function carries its arguments' values — left(password_hash, 7)
// returns the bcrypt cost and the start of the salt. docs/classification.md
// gives the reasons for each entry.
var valueFreeFunctions = map[string]bool{
	"count":  true,
	"length": true, "char_length": true, "character_length": true, "octet_length": true,
	"bit_length": true, "pg_column_size": true,
	"num_nulls": true, "num_nonnulls": true,
	"starts_with": true, "regexp_like": true,
	"bool_and": true, "bool_or": true, "every": true,
}

// predicateOperators return a truth value: email = $1 in a target list
// tells whether, not what (an oracle, which SensitiveReferenced reports).
var predicateOperators = map[string]bool{
	"=": true, "<>": true, "!=": true, "<": true, ">": true, "<=": true, ">=": true,
	"~": true, "~*": true, "!~": true, "!~*": true, "~~": true, "~~*": true, "!~~": true, "!~~*": true,
	"@@": true, "@>": true, "<@": true, "&&": true, "?": true, "?|": true, "?&": true, "^@": true,
}

// isPredicate reports whether an operator expression returns a truth value
// rather than a value computed from its operands.
func isPredicate(e *pg_query.A_Expr) bool {
	switch e.GetKind() {
	case pg_query.A_Expr_Kind_AEXPR_OP, pg_query.A_Expr_Kind_AEXPR_OP_ANY, pg_query.A_Expr_Kind_AEXPR_OP_ALL:
		name := e.GetName()
		return len(name) > 0 && predicateOperators[lastName(name)] &&
			(len(name) == 1 || schemaName(name) == "pg_catalog")
	case pg_query.A_Expr_Kind_AEXPR_DISTINCT, pg_query.A_Expr_Kind_AEXPR_NOT_DISTINCT,
		pg_query.A_Expr_Kind_AEXPR_IN, pg_query.A_Expr_Kind_AEXPR_LIKE, pg_query.A_Expr_Kind_AEXPR_ILIKE,
		pg_query.A_Expr_Kind_AEXPR_SIMILAR, pg_query.A_Expr_Kind_AEXPR_BETWEEN,
		pg_query.A_Expr_Kind_AEXPR_NOT_BETWEEN, pg_query.A_Expr_Kind_AEXPR_BETWEEN_SYM,
		pg_query.A_Expr_Kind_AEXPR_NOT_BETWEEN_SYM:
		return true
	}
	return false
}

func (a *analyzer) funcCall(fc *pg_query.FuncCall, sc *scope) lineage {
	// Aggregate ordering and filtering, and window clauses, decide which
	// values are combined, not what is returned.
	a.refer(a.exprs(fc.GetAggOrder(), sc))
	a.refer(a.expr(fc.GetAggFilter(), sc))
	if w := fc.GetOver(); w != nil {
		a.refer(a.windowDef(w, sc))
	}
	if cols, ok := a.call(fc, sc); ok {
		return columnsLineage(cols)
	}
	name, schema := lastName(fc.GetFuncname()), schemaName(fc.GetFuncname())
	if name == "concat" && (schema == "" || schema == "pg_catalog") {
		return a.concat(&pg_query.Node{Node: &pg_query.Node_FuncCall{FuncCall: fc}}, sc)
	}
	args := a.exprs(fc.GetArgs(), sc)
	a.shapeOfCall(fc, sc, args)
	a.castCall(fc, name, args)
	if sleepFunctions[name] {
		a.injFacts().sleep = true
	}
	if valueFreeFunctions[name] && (schema == "" || schema == "pg_catalog") {
		if name == "count" {
			// How many rows have a value tells nothing of the value: not a
			// use by a scalar subquery's target list (injection.go).
			addAll(a.referenced, args)
			return nil
		}
		a.refer(args)
		return nil
	}
	return args
}

// call analyzes calls whose output is not simply their arguments' values:
// functions that run SQL given as text (sqltext.go) and the catalog's own
// functions (function.go). ok is false for other functions.
func (a *analyzer) call(fc *pg_query.FuncCall, sc *scope) ([]column, bool) {
	if cols, ok := a.sqlTextCall(fc, sc); ok {
		return cols, true
	}
	return a.userCall(fc, sc)
}

func lastName(names []*pg_query.Node) string {
	if len(names) == 0 {
		return ""
	}
	return names[len(names)-1].GetString_().GetSval()
}

func schemaName(names []*pg_query.Node) string {
	if len(names) < 2 {
		return ""
	}
	return names[len(names)-2].GetString_().GetSval()
}

// subLink analyzes a subquery in an expression. EXISTS and IN/ANY/ALL only
// test the subquery's rows; scalar and ARRAY subqueries return its values.
func (a *analyzer) subLink(sl *pg_query.SubLink, sc *scope) lineage {
	a.lastLevel = nil
	scalar := sl.GetSubLinkType() == pg_query.SubLinkType_EXPR_SUBLINK
	a.captureNext, a.lastUses = scalar, nil
	sub := columnsLineage(a.query(sl.GetSubselect(), sc))
	a.captureNext = false
	a.sublinks[sl] = a.takeLevel()
	if scalar && (len(sub) > 0 || len(a.lastUses) > 0) {
		a.scalarSubquery(sl, sub)
	}
	switch sl.GetSubLinkType() {
	case pg_query.SubLinkType_ARRAY_SUBLINK:
		// ARRAY(SELECT email FROM users): every row in one value.
		a.folded = union(a.folded, sub)
	case pg_query.SubLinkType_EXISTS_SUBLINK:
		a.refer(sub)
		return nil
	case pg_query.SubLinkType_ANY_SUBLINK, pg_query.SubLinkType_ALL_SUBLINK, pg_query.SubLinkType_ROWCOMPARE_SUBLINK:
		// x IN (SELECT ...) is a truth value.
		a.refer(sub)
		a.refer(a.expr(sl.GetTestexpr(), sc))
		return nil
	}
	return union(sub, a.expr(sl.GetTestexpr(), sc))
}

// figureName names an output column the way PostgreSQL's FigureColname does,
// for the common cases.
func figureName(n *pg_query.Node) string {
	switch e := n.GetNode().(type) {
	case *pg_query.Node_ColumnRef:
		if parts, star := columnRefParts(e.ColumnRef); !star && len(parts) > 0 {
			return parts[len(parts)-1]
		}
	case *pg_query.Node_AIndirection:
		ind := e.AIndirection.GetIndirection()
		for i := len(ind) - 1; i >= 0; i-- {
			if s := ind[i].GetString_(); s != nil {
				return s.GetSval()
			}
		}
		return figureName(e.AIndirection.GetArg())
	case *pg_query.Node_FuncCall:
		return lastName(e.FuncCall.GetFuncname())
	case *pg_query.Node_TypeCast:
		if name := figureName(e.TypeCast.GetArg()); name != "?column?" {
			return name
		}
		if names := e.TypeCast.GetTypeName().GetNames(); len(names) > 0 {
			return lastName(names)
		}
	case *pg_query.Node_CaseExpr:
		return "case"
	case *pg_query.Node_CoalesceExpr:
		return "coalesce"
	case *pg_query.Node_MinMaxExpr:
		if e.MinMaxExpr.GetOp() == pg_query.MinMaxOp_IS_GREATEST {
			return "greatest"
		}
		return "least"
	case *pg_query.Node_RowExpr:
		return "row"
	case *pg_query.Node_AArrayExpr:
		return "array"
	case *pg_query.Node_CollateClause:
		return figureName(e.CollateClause.GetArg())
	case *pg_query.Node_SubLink:
		switch e.SubLink.GetSubLinkType() {
		case pg_query.SubLinkType_EXISTS_SUBLINK:
			return "exists"
		case pg_query.SubLinkType_ARRAY_SUBLINK:
			return "array"
		case pg_query.SubLinkType_EXPR_SUBLINK:
			if tl := e.SubLink.GetSubselect().GetSelectStmt().GetTargetList(); len(tl) > 0 {
				rt := tl[0].GetResTarget()
				if rt.GetName() != "" {
					return rt.GetName()
				}
				return figureName(rt.GetVal())
			}
		}
	}
	return "?column?"
}
