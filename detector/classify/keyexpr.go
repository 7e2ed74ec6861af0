package classify

import (
	"strconv"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Expression indexes (CREATE UNIQUE INDEX … (lower(email))) make an equality
// on the same expression a point lookup. The catalog keeps the index
// expression as pg_get_indexdef prints it; both it and the predicate's side
// are reduced to a canonical form and compared:
//
//   - column references become the relation's column names;
//   - casts to text and varchar (pg_get_indexdef prints lower(email::text)
//     for a varchar column) are dropped, other casts kept;
//   - built-in function names lose their schema; a function of the
//     snapshot keeps it, resolved through the search path, so that a
//     same-named function elsewhere does not match;
//   - operators, constants, COALESCE, NULLIF, GREATEST/LEAST are kept; any
//     other construct does not match.

// maxCanonDepth bounds the expressions compared: index expressions are
// short.
const maxCanonDepth = 32

// indexExpr returns the canonical form of an index expression's text.
func (a *analyzer) indexExpr(text string) (string, bool) {
	tree, err := pg_query.Parse("SELECT " + text)
	if err != nil || len(tree.GetStmts()) != 1 {
		return "", false
	}
	tl := tree.GetStmts()[0].GetStmt().GetSelectStmt().GetTargetList()
	if len(tl) != 1 {
		return "", false
	}
	return a.canonExpr(tl[0].GetResTarget().GetVal(), a.cat.ViewSearchPath(), func(cr *pg_query.ColumnRef) (string, bool) {
		parts, star := columnRefParts(cr)
		if star || len(parts) != 1 {
			return "", false
		}
		return parts[0], true
	})
}

// canonExpr returns the canonical form of an expression, naming column
// references through leaf (called in a fixed order: left to right).
func (a *analyzer) canonExpr(n *pg_query.Node, path []string, leaf func(*pg_query.ColumnRef) (string, bool)) (string, bool) {
	var b strings.Builder
	ok := a.canon(&b, n, path, leaf, 0)
	return b.String(), ok
}

func (a *analyzer) canon(b *strings.Builder, n *pg_query.Node, path []string, leaf func(*pg_query.ColumnRef) (string, bool), depth int) bool {
	if n == nil || depth > maxCanonDepth {
		return false
	}
	list := func(open string, args []*pg_query.Node) bool {
		b.WriteString(open)
		b.WriteByte('(')
		for i, arg := range args {
			if i > 0 {
				b.WriteByte(',')
			}
			if !a.canon(b, arg, path, leaf, depth+1) {
				return false
			}
		}
		b.WriteByte(')')
		return true
	}
	switch e := n.GetNode().(type) {
	case *pg_query.Node_ColumnRef:
		name, ok := leaf(e.ColumnRef)
		b.WriteString("col:" + strconv.Quote(name))
		return ok
	case *pg_query.Node_TypeCast:
		t := e.TypeCast.GetTypeName()
		switch typ := lastName(t.GetNames()); {
		case (typ == "text" || typ == "varchar") && len(t.GetTypmods()) == 0 && len(t.GetArrayBounds()) == 0:
			return a.canon(b, e.TypeCast.GetArg(), path, leaf, depth+1)
		default:
			b.WriteString("cast:" + strconv.Quote(typ) + strconv.Itoa(len(t.GetTypmods())) + strconv.Itoa(len(t.GetArrayBounds())))
			return list("", []*pg_query.Node{e.TypeCast.GetArg()})
		}
	case *pg_query.Node_FuncCall:
		fc := e.FuncCall
		if fc.GetAggStar() || fc.GetAggDistinct() || fc.GetOver() != nil || len(fc.GetAggOrder()) > 0 || fc.GetAggFilter() != nil || fc.GetFuncVariadic() {
			return false
		}
		return list("fn:"+strconv.Quote(a.canonFunction(fc.GetFuncname(), path)), fc.GetArgs())
	case *pg_query.Node_AExpr:
		x := e.AExpr
		switch x.GetKind() {
		case pg_query.A_Expr_Kind_AEXPR_OP, pg_query.A_Expr_Kind_AEXPR_NULLIF:
		default:
			return false
		}
		if s := schemaName(x.GetName()); s != "" && s != "pg_catalog" {
			return false
		}
		op := strconv.Quote(lastName(x.GetName()))
		if x.GetKind() == pg_query.A_Expr_Kind_AEXPR_NULLIF {
			op = "nullif"
		}
		args := []*pg_query.Node{x.GetRexpr()}
		if x.GetLexpr() != nil {
			args = []*pg_query.Node{x.GetLexpr(), x.GetRexpr()}
		}
		return list("op:"+op, args)
	case *pg_query.Node_AConst:
		c := e.AConst
		switch v := c.GetVal().(type) {
		case *pg_query.A_Const_Sval:
			b.WriteString("s:" + strconv.Quote(v.Sval.GetSval()))
		case *pg_query.A_Const_Ival:
			b.WriteString("i:" + strconv.Itoa(int(v.Ival.GetIval())))
		case *pg_query.A_Const_Fval:
			b.WriteString("f:" + v.Fval.GetFval())
		case *pg_query.A_Const_Boolval:
			b.WriteString("b:" + strconv.FormatBool(v.Boolval.GetBoolval()))
		case *pg_query.A_Const_Bsval:
			b.WriteString("x:" + v.Bsval.GetBsval())
		default:
			if !c.GetIsnull() {
				return false
			}
			b.WriteString("null")
		}
		return true
	case *pg_query.Node_CoalesceExpr:
		return list("coalesce", e.CoalesceExpr.GetArgs())
	case *pg_query.Node_MinMaxExpr:
		return list("minmax"+strconv.Itoa(int(e.MinMaxExpr.GetOp())), e.MinMaxExpr.GetArgs())
	}
	return false
}

// canonFunction names a function for comparison: a built-in or extension
// function by its name alone, a function of the snapshot as schema.name as
// the search path resolves it.
func (a *analyzer) canonFunction(names []*pg_query.Node, path []string) string {
	name := lastName(names)
	if len(a.cat.FunctionsNamed(name)) == 0 {
		return name
	}
	if schema := schemaName(names); schema != "" {
		if len(a.cat.LookupFunctions(schema, name)) > 0 {
			return schema + "." + name
		}
		return name
	}
	for _, schema := range path {
		if schema == "$user" {
			continue
		}
		if len(a.cat.LookupFunctions(schema, name)) > 0 {
			return schema + "." + name
		}
	}
	return name
}
