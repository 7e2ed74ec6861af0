package classify

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
)

// statement classifies one top-level statement and returns its operation and,
// for statements about a cursor or a prepared statement, that one's name.
func (a *analyzer) statement(n *pg_query.Node) (op, name string) {
	return a.statementOp(n), statementName(n)
}

// statementName returns the cursor (portal) or prepared statement name a
// statement declares, uses or releases, as PostgreSQL stores it; "" for other
// statements and for CLOSE ALL and DEALLOCATE ALL.
func statementName(n *pg_query.Node) string {
	switch s := n.GetNode().(type) {
	case *pg_query.Node_DeclareCursorStmt:
		return s.DeclareCursorStmt.GetPortalname()
	case *pg_query.Node_FetchStmt:
		return s.FetchStmt.GetPortalname()
	case *pg_query.Node_ClosePortalStmt:
		return s.ClosePortalStmt.GetPortalname()
	case *pg_query.Node_PrepareStmt:
		return s.PrepareStmt.GetName()
	case *pg_query.Node_ExecuteStmt:
		return s.ExecuteStmt.GetName()
	case *pg_query.Node_DeallocateStmt:
		return s.DeallocateStmt.GetName()
	}
	return ""
}

// statementOp classifies one top-level statement and returns its operation.
func (a *analyzer) statementOp(n *pg_query.Node) string {
	switch s := n.GetNode().(type) {
	case *pg_query.Node_SelectStmt:
		cols := a.selectStmt(s.SelectStmt, nil)
		if s.SelectStmt.GetIntoClause() != nil {
			a.copied(cols)
			return OperationSelectInto
		}
		a.leave(cols)
		return OperationSelect
	case *pg_query.Node_InsertStmt:
		a.leave(a.insert(s.InsertStmt, nil))
		return OperationInsert
	case *pg_query.Node_UpdateStmt:
		a.leave(a.update(s.UpdateStmt, nil))
		return OperationUpdate
	case *pg_query.Node_DeleteStmt:
		a.leave(a.delete(s.DeleteStmt, nil))
		return OperationDelete
	case *pg_query.Node_MergeStmt:
		a.leave(a.merge(s.MergeStmt, nil))
		return OperationMerge
	case *pg_query.Node_CopyStmt:
		if s.CopyStmt.GetFilename() != "" || s.CopyStmt.GetIsProgram() {
			// To or from a server file or program, whatever the table.
			a.shapes |= shapeServerFile
		}
		a.copyStmt(s.CopyStmt)
		switch c := s.CopyStmt; {
		case c.GetIsFrom() || c.GetFilename() == "":
			return OperationCopy
		case c.GetIsProgram():
			return OperationCopyToProgram
		}
		return OperationCopyToFile
	case *pg_query.Node_CreateTableAsStmt:
		ctas := s.CreateTableAsStmt
		cols := a.query(ctas.GetQuery(), nil)
		if !ctas.GetInto().GetSkipData() {
			a.copied(cols)
		}
		if ctas.GetObjtype() == pg_query.ObjectType_OBJECT_MATVIEW {
			return OperationCreateMatView
		}
		return OperationCreateTableAs
	case *pg_query.Node_RefreshMatViewStmt:
		if rv := s.RefreshMatViewStmt.GetRelation(); rv != nil {
			item := a.relation(rv, &scope{}, false)
			if !s.RefreshMatViewStmt.GetSkipData() {
				// Refreshing copies the definition's columns into the view.
				a.copied(item.cols)
			}
		}
		return OperationRefreshMatView
	case *pg_query.Node_ViewStmt:
		a.withoutExecution(true, func() { a.leave(a.query(s.ViewStmt.GetQuery(), nil)) })
		return OperationCreateView
	case *pg_query.Node_DeclareCursorStmt:
		a.leave(a.query(s.DeclareCursorStmt.GetQuery(), nil))
		return OperationDeclareCursor
	case *pg_query.Node_ExplainStmt:
		a.withoutExecution(!explainAnalyze(s.ExplainStmt), func() { a.statementOp(s.ExplainStmt.GetQuery()) })
		return OperationExplain
	case *pg_query.Node_PrepareStmt:
		// The prepared query runs on EXECUTE, whose text does not repeat it:
		// classify it here as if it ran.
		a.statementOp(s.PrepareStmt.GetQuery())
		return OperationPrepare
	case *pg_query.Node_ExecuteStmt:
		a.problem("EXECUTE of a prepared statement is not resolved")
		return OperationExecute
	case *pg_query.Node_DeallocateStmt:
		return OperationDeallocate
	case *pg_query.Node_FetchStmt:
		// MOVE returns a row count, not rows, but like FETCH it runs the
		// cursor's query, which only its DECLARE tells.
		if s.FetchStmt.GetIsmove() {
			a.problem("MOVE in a cursor is not resolved")
			return OperationMove
		}
		a.problem("FETCH from a cursor is not resolved")
		return OperationFetch
	case *pg_query.Node_ClosePortalStmt:
		return OperationClose
	case *pg_query.Node_TruncateStmt:
		for _, r := range s.TruncateStmt.GetRelations() {
			if rv := r.GetRangeVar(); rv != nil {
				a.relation(rv, &scope{}, false)
			}
		}
		return OperationTruncate
	case *pg_query.Node_CallStmt:
		a.problem("CALL is not resolved")
		return OperationCall
	case *pg_query.Node_DoStmt:
		a.problem("DO block is not resolved")
		a.doBlock(s.DoStmt)
		return OperationDo
	}
	return OperationOther
}

// withoutExecution runs f with result rows discarded and, when notExecuted,
// with copies demoted to references.
func (a *analyzer) withoutExecution(notExecuted bool, f func()) {
	savedDiscard, savedNoEffects := a.discardOutputs, a.noEffects
	a.discardOutputs = true
	a.noEffects = a.noEffects || notExecuted
	defer func() { a.discardOutputs, a.noEffects = savedDiscard, savedNoEffects }()
	f()
}

// explainAnalyze reports whether EXPLAIN executes its statement.
func explainAnalyze(s *pg_query.ExplainStmt) bool {
	for _, o := range s.GetOptions() {
		d := o.GetDefElem()
		if d == nil || d.GetDefname() != "analyze" {
			continue
		}
		arg := d.GetArg()
		if arg == nil {
			return true
		}
		switch v := arg.GetNode().(type) {
		case *pg_query.Node_Boolean:
			return v.Boolean.GetBoolval()
		case *pg_query.Node_String_:
			switch strings.ToLower(v.String_.GetSval()) {
			case "false", "off", "no", "0":
				return false
			}
			return true
		case *pg_query.Node_Integer:
			return v.Integer.GetIval() != 0
		case *pg_query.Node_AConst:
			if b, ok := v.AConst.GetVal().(*pg_query.A_Const_Boolval); ok {
				return b.Boolval.GetBoolval()
			}
			if i, ok := v.AConst.GetVal().(*pg_query.A_Const_Ival); ok {
				return i.Ival.GetIval() != 0
			}
			if s, ok := v.AConst.GetVal().(*pg_query.A_Const_Sval); ok {
				switch strings.ToLower(s.Sval.GetSval()) {
				case "false", "off", "no", "0":
					return false
				}
			}
			return true
		}
		return true
	}
	return false
}

// copyStmt classifies COPY table [(columns)] TO/FROM and COPY (query) TO.
func (a *analyzer) copyStmt(s *pg_query.CopyStmt) {
	if q := s.GetQuery(); q != nil {
		a.leave(a.query(q, nil))
		return
	}
	rv := s.GetRelation()
	if rv == nil {
		return
	}
	sc := &scope{}
	item := a.relation(rv, sc, false)
	sc.items = []*rte{item}
	if s.GetIsFrom() && item.node != nil {
		// The rows reached are those read from the file, not the table's.
		item.node.unjudged = true
	}
	touchAll(item)
	cols := item.star()
	if attl := s.GetAttlist(); len(attl) > 0 {
		cols = cols[:0:0]
		for _, n := range attl {
			name := n.GetString_().GetSval()
			src, ok := item.column(name)
			if !ok {
				a.problem("unknown column %s of %s", name, displayName(rv))
			}
			cols = append(cols, column{name: name, src: src})
		}
	}
	if s.GetIsFrom() {
		// Rows flow into the table; a WHERE filters them on their way in.
		a.refer(a.expr(s.GetWhereClause(), sc))
		return
	}
	a.leave(cols)
}

// doBlock lists what a DO block could read and its shapes. The block itself
// stays unresolved (incomplete): its body is not analysed. Its text is
// scanned like an unanalysable function body's (reach.go), so that the
// sensitive relations it names are listed, and it is dynamic SQL when it
// runs SQL built at run time or is in a language other than PL/pgSQL.
func (a *analyzer) doBlock(s *pg_query.DoStmt) {
	body, language, known := "", "plpgsql", false
	for _, arg := range s.GetArgs() {
		d := arg.GetDefElem()
		switch d.GetDefname() {
		case "as":
			body, known = d.GetArg().GetString_().GetSval(), d.GetArg().GetString_() != nil
		case "language":
			language = d.GetArg().GetString_().GetSval()
		}
	}
	if !known || language != "plpgsql" {
		a.shapes |= shapeDynamicSQL
		return
	}
	r := a.bodyReach(&catalog.Function{Name: "DO", Language: language, Body: body})
	for rel := range r.sensitive {
		a.relations[rel] = true
	}
}
