package classify

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// insert analyzes INSERT and returns its RETURNING columns. Values inserted
// from other relations (INSERT ... SELECT) are copies, hence reads.
func (a *analyzer) insert(s *pg_query.InsertStmt, parent *scope) []column {
	if s == nil || !a.enter() {
		return nil
	}
	defer a.leaveDepth()
	sc := &scope{parent: a.rootScope(parent)}
	if w := s.GetWithClause(); w != nil {
		a.with(w, sc)
	}
	lv := a.beginLevel(sc)
	target := a.relation(s.GetRelation(), sc, false)
	lv.addMember(target)

	var values []column
	var source []*rowNode
	if sel := s.GetSelectStmt().GetSelectStmt(); sel != nil {
		values = a.selectStmt(sel, sc)
		source = []*rowNode{a.takeLevel()}
	}
	if target.node != nil && target.node.kind == nodeRelation {
		// The rows an INSERT reaches (RETURNING, ON CONFLICT) are the rows
		// it inserts: one per row of its source, one for DEFAULT VALUES.
		target.node.bounds = append(target.node.bounds, bound{base: classPoint, deps: source})
	}
	for _, v := range values {
		a.write(target.rel, v.src)
	}

	if oc := s.GetOnConflictClause(); oc != nil {
		// EXCLUDED holds the row proposed for insertion: map the inserted
		// values onto the target's columns.
		names := make([]string, 0, len(s.GetCols()))
		for _, c := range s.GetCols() {
			names = append(names, c.GetResTarget().GetName())
		}
		if len(names) == 0 {
			for _, c := range target.cols {
				names = append(names, c.name)
			}
		}
		excluded := &rte{name: "excluded", opaque: target.opaque}
		for i, n := range names {
			var src lineage
			if i < len(values) {
				src = values[i].src
			}
			excluded.cols = append(excluded.cols, column{name: n, src: src})
		}
		csc := &scope{parent: sc, items: []*rte{target, excluded}}
		if inf := oc.GetInfer(); inf != nil {
			a.refer(a.generic(inf.ProtoReflect(), csc))
		}
		a.refer(a.expr(oc.GetWhereClause(), csc))
		a.setList(target.rel, oc.GetTargetList(), csc)
	}
	out := a.targetList(s.GetReturningList(), &scope{parent: sc, items: []*rte{target}, lv: lv})
	a.endLevel(lv)
	return out
}

// setList analyzes UPDATE-style SET assignments into target.
func (a *analyzer) setList(target string, list []*pg_query.Node, sc *scope) {
	for _, n := range list {
		rt := n.GetResTarget()
		if rt == nil {
			continue
		}
		for _, ind := range rt.GetIndirection() {
			// SET arr[i] = ...: the subscript selects, it is not stored.
			a.refer(a.expr(ind, sc))
		}
		val := rt.GetVal()
		if m := val.GetMultiAssignRef(); m != nil {
			val = m.GetSource()
		}
		a.write(target, a.expr(val, sc))
	}
}

// update analyzes UPDATE and returns its RETURNING columns.
func (a *analyzer) update(s *pg_query.UpdateStmt, parent *scope) []column {
	if s == nil || !a.enter() {
		return nil
	}
	defer a.leaveDepth()
	sc := &scope{parent: a.rootScope(parent)}
	if w := s.GetWithClause(); w != nil {
		a.with(w, sc)
	}
	lv := a.beginLevel(sc)
	target := a.relation(s.GetRelation(), sc, false)
	sc.items = append(sc.items, target)
	lv.addMember(target)
	for _, f := range s.GetFromClause() {
		if it := a.fromItem(f, sc); it != nil {
			sc.items = append(sc.items, it)
			lv.addMember(it)
		}
	}
	a.setList(target.rel, s.GetTargetList(), sc)
	a.refer(a.expr(s.GetWhereClause(), sc))
	out := a.targetList(s.GetReturningList(), sc)
	lv.addConj(s.GetWhereClause(), sc, nil)
	a.endLevel(lv)
	return out
}

// delete analyzes DELETE and returns its RETURNING columns.
func (a *analyzer) delete(s *pg_query.DeleteStmt, parent *scope) []column {
	if s == nil || !a.enter() {
		return nil
	}
	defer a.leaveDepth()
	sc := &scope{parent: a.rootScope(parent)}
	if w := s.GetWithClause(); w != nil {
		a.with(w, sc)
	}
	lv := a.beginLevel(sc)
	target := a.relation(s.GetRelation(), sc, false)
	sc.items = append(sc.items, target)
	lv.addMember(target)
	for _, f := range s.GetUsingClause() {
		if it := a.fromItem(f, sc); it != nil {
			sc.items = append(sc.items, it)
			lv.addMember(it)
		}
	}
	a.refer(a.expr(s.GetWhereClause(), sc))
	out := a.targetList(s.GetReturningList(), sc)
	lv.addConj(s.GetWhereClause(), sc, nil)
	a.endLevel(lv)
	return out
}

// merge analyzes MERGE and returns its RETURNING columns.
func (a *analyzer) merge(s *pg_query.MergeStmt, parent *scope) []column {
	if s == nil || !a.enter() {
		return nil
	}
	defer a.leaveDepth()
	sc := &scope{parent: a.rootScope(parent)}
	if w := s.GetWithClause(); w != nil {
		a.with(w, sc)
	}
	lv := a.beginLevel(sc)
	target := a.relation(s.GetRelation(), sc, false)
	if target.node != nil {
		// Which target rows MERGE reaches depends on its join and WHEN
		// clauses: not judged.
		target.node.unjudged = true
	}
	if src := a.fromItem(s.GetSourceRelation(), sc); src != nil {
		sc.items = append(sc.items, src)
		lv.addMember(src)
	}
	sc.items = append(sc.items, target)
	lv.addMember(target)
	a.refer(a.expr(s.GetJoinCondition(), sc))
	lv.addConj(s.GetJoinCondition(), sc, nil)
	for _, n := range s.GetMergeWhenClauses() {
		wc := n.GetMergeWhenClause()
		if wc == nil {
			continue
		}
		a.refer(a.expr(wc.GetCondition(), sc))
		switch wc.GetCommandType() {
		case pg_query.CmdType_CMD_UPDATE:
			a.setList(target.rel, wc.GetTargetList(), sc)
		case pg_query.CmdType_CMD_INSERT:
			for _, v := range wc.GetValues() {
				a.write(target.rel, a.expr(v, sc))
			}
		}
	}
	out := a.targetList(s.GetReturningList(), sc)
	a.endLevel(lv)
	return out
}
