package classify

import (
	"slices"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
)

// Calls of the catalog's functions (user functions of non-system schemas) are
// followed into their bodies: SQL functions always, PL/pgSQL functions when
// their body is made of statements whose data flow is static (see
// plpgsql.go). A function's output columns carry the lineage of what its body
// returns; its arguments flow in through $n and named parameters. A function
// whose body cannot be analysed makes the result incomplete when it could read
// sensitive data: a PL/pgSQL body when its identifiers reach a sensitive
// relation or it runs dynamic SQL (reach.go); a body in another language
// unless its result type cannot carry a credential value
// (valueFreeReturnTypes).

// valueFreeReturnTypes are result types that cannot carry a sensitive value:
// nothing (void, triggers) or one bit (boolean). Any other type — numbers
// included, as a purpose-built function can encode text in them — could.
var valueFreeReturnTypes = map[string]bool{
	"void": true, "trigger": true, "event_trigger": true, "boolean": true,
}

// resolveFunctions returns the catalog functions a call of names with nargs
// arguments can resolve to. A name on the search path resolves to the
// overloads of the first schema that has one with a matching arity; an
// unqualified name found only off the path is ambiguous, as for relations: a
// session may have set a search_path that reaches it. Names the catalog does
// not have are built-in or extension functions: nil.
func (a *analyzer) resolveFunctions(names []*pg_query.Node, nargs int) []*catalog.Function {
	name := lastName(names)
	if len(a.cat.FunctionsNamed(name)) == 0 {
		return nil
	}
	accepting := func(fns []*catalog.Function) []*catalog.Function {
		var out []*catalog.Function
		for _, f := range fns {
			if f.Accepts(nargs) {
				out = append(out, f)
			}
		}
		return out
	}
	if schema := schemaName(names); schema != "" {
		return accepting(a.cat.LookupFunctions(schema, name))
	}
	for _, schema := range a.searchPath {
		if schema == "$user" {
			if a.role == "" {
				continue
			}
			schema = a.role
		}
		if fns := accepting(a.cat.LookupFunctions(schema, name)); len(fns) > 0 {
			return fns
		}
	}
	fns := accepting(a.cat.FunctionsNamed(name))
	for _, f := range fns {
		a.problem("function name %q is not on the search path: a session search_path could resolve it to %s", name, f.QualifiedName())
	}
	return fns
}

// callUserFunction analyzes a call of the catalog functions fns (overloads
// the call may resolve to) with the given argument lineages and returns the
// output columns, each carrying what any candidate's column at that position
// carries.
//
// deps are the row sources each argument's value depends on: a lookup in
// the body by a parameter is a point only when the argument is one value.
// The row source of the call's result is left in a.lastFunc.
func (a *analyzer) callUserFunction(fns []*catalog.Function, args []lineage, deps [][]*rowNode) []column {
	var (
		out   []column
		nodes []*rowNode
	)
	for _, f := range fns {
		cols, node := a.analyzeFunction(f, args, deps)
		out = mergeColumns(out, cols)
		nodes = append(nodes, node)
	}
	a.lastFunc = nil
	if len(nodes) == 1 {
		a.lastFunc = nodes[0]
	} else if len(nodes) > 1 {
		a.lastFunc = a.aliasNode(nodes, 0, false)
	}
	return out
}

// funcKey identifies a function analysis that can be reused: one whose
// arguments carry no sensitive lineage and depend on no row source.
type funcKey = *catalog.Function

// funcResult is a cached function analysis: its output columns and the row
// source of its result.
type funcResult struct {
	cols []column
	node *rowNode
}

// analyzeFunction returns the output columns of one call of f and the row
// source of its result.
func (a *analyzer) analyzeFunction(f *catalog.Function, args []lineage, deps [][]*rowNode) ([]column, *rowNode) {
	argsFree := columnsLineage(argColumns(args)) == nil && !slices.ContainsFunc(deps, func(d []*rowNode) bool { return len(d) > 0 })
	if argsFree {
		if r, ok := a.funcCols[f]; ok {
			return r.cols, r.node
		}
	}
	if a.calling[f] {
		// A recursive function returns what its other branches return;
		// this classifier does not iterate to a fixed point over bodies.
		a.problem("function %s calls itself", f.Signature())
		return a.opaqueResult(f, args), a.fixedNode(classScan, nil)
	}
	if !a.enter() {
		return a.opaqueResult(f, args), a.fixedNode(classScan, nil)
	}
	defer a.leaveDepth()

	a.calling[f] = true
	saved := a.frame
	a.frame = newFrame(f, args, deps)
	savedPath, savedRole := a.searchPath, a.role
	if f.SearchPath != nil {
		a.searchPath, a.role = f.SearchPath, ""
	}
	var (
		body []column
		ok   bool
		// unfollowed names the PL/pgSQL construct that made the body
		// unanalysable.
		unfollowed string
		// results are the levels whose rows the body returns.
		results []*rowNode
	)
	switch f.Language {
	case "sql":
		body, ok = a.sqlFunctionBody(f)
		if a.lastLevel != nil {
			results = []*rowNode{a.takeLevel()}
		}
	case "plpgsql":
		body, unfollowed, results = a.plpgsqlFunctionBody(f)
		ok = unfollowed == ""
	}
	a.searchPath, a.role = savedPath, savedRole
	a.frame = saved
	delete(a.calling, f)

	var cols []column
	if ok {
		cols = shapeResult(f, body)
	} else {
		cols = a.unanalysable(f, unfollowed, args)
	}
	// A function returns one row unless it returns a set, whose rows come
	// from the queries it returns (or are unknown).
	var node *rowNode
	switch {
	case !f.ReturnsSet:
		node = a.fixedNode(classPoint, nil)
	case ok && len(results) > 0:
		node = a.aliasNode(results, 0, false)
	default:
		node = a.fixedNode(classScan, nil)
	}
	if argsFree {
		a.funcCols[f] = funcResult{cols: cols, node: node}
	}
	return cols, node
}

// unanalysable returns the output of a function whose body is not analysed:
// its arguments may flow anywhere into its result. Whether the result is
// incomplete depends on what the body could read (bodyReach) and, for
// languages other than PL/pgSQL, on the result type:
//   - PL/pgSQL (unfollowed names the construct not followed): incomplete
//     exactly when the body could reach sensitive data, whatever the result
//     type, as its notices and copies are reads too; the sensitive tables it
//     names are listed. A body that reaches none carries only its arguments,
//     like a built-in function. SECURITY DEFINER changes nothing: the body
//     decides.
//   - Other languages, SECURITY DEFINER or not: we cannot see into them, so
//     incomplete unless the result type cannot carry a value.
func (a *analyzer) unanalysable(f *catalog.Function, unfollowed string, args []lineage) []column {
	definer := ""
	if f.SecurityDefiner {
		definer = "SECURITY DEFINER "
	}
	switch f.Language {
	case "plpgsql":
		r := a.bodyReach(f)
		if r.cause != "" {
			for rel := range r.sensitive {
				a.relations[rel] = true
			}
			a.problem("%sfunction %s: PL/pgSQL %s is not analysed and could read sensitive data: %s", definer, f.Signature(), unfollowed, r.cause)
		}
	default:
		if !valueFreeReturnTypes[f.ReturnType] {
			a.problem("%sfunction %s (language %s) is not analysed: what it returns is unknown", definer, f.Signature(), f.Language)
		}
	}
	return a.opaqueResult(f, args)
}

// opaqueResult is f's result shape with every column carrying every argument.
func (a *analyzer) opaqueResult(f *catalog.Function, args []lineage) []column {
	all := columnsLineage(argColumns(args))
	if valueFreeReturnTypes[f.ReturnType] {
		a.refer(all)
		all = nil
	}
	return shapeResult(f, []column{{name: f.Name, src: all}})
}

// shapeResult names the columns a body returns after f's result: its
// composite columns by position, or one scalar column named after f.
func shapeResult(f *catalog.Function, body []column) []column {
	if len(f.ResultColumns) == 0 {
		return []column{{name: f.Name, src: columnsLineage(body)}}
	}
	out := make([]column, len(f.ResultColumns))
	if len(body) != len(out) {
		// A body returning a single composite value (SELECT u FROM users u)
		// or an unexpected shape: every column may carry any of it.
		all := columnsLineage(body)
		for i, n := range f.ResultColumns {
			out[i] = column{name: n, src: all}
		}
		return out
	}
	for i, n := range f.ResultColumns {
		out[i] = column{name: n, src: body[i].src}
	}
	return out
}

func argColumns(args []lineage) []column {
	cols := make([]column, len(args))
	for i, l := range args {
		cols[i].src = l
	}
	return cols
}

// frame is the parameter namespace of the function body being analysed: $n
// and parameter names (also as function_name.parameter) carry the call's
// argument lineage.
type frame struct {
	params []lineage
	// deps are the row sources each parameter's argument depended on.
	deps  [][]*rowNode
	names []string
	scope *scope
}

// depsOf returns the row sources the parameter called name depends on, nil
// for other names (PL/pgSQL variables).
func (fr *frame) depsOf(name string) []*rowNode {
	if i := slices.Index(fr.names, name); i >= 0 && i < len(fr.deps) {
		return fr.deps[i]
	}
	return nil
}

func newFrame(f *catalog.Function, args []lineage, deps [][]*rowNode) *frame {
	fr := &frame{params: make([]lineage, len(f.Args)), deps: make([][]*rowNode, len(f.Args)), names: f.Args}
	item := &rte{name: f.Name, frame: fr}
	var variadic lineage
	for i, l := range args {
		if i < len(fr.params) {
			fr.params[i] = l
		} else {
			variadic = union(variadic, l)
		}
	}
	if f.Variadic && len(fr.params) > 0 {
		fr.params[len(fr.params)-1] = union(fr.params[len(fr.params)-1], variadic)
	}
	for i, d := range deps {
		j := min(i, len(fr.deps)-1)
		if j >= 0 {
			fr.deps[j] = append(fr.deps[j], d...)
		}
	}
	for i, name := range f.Args {
		if name != "" {
			item.cols = append(item.cols, column{name: name, src: fr.params[i]})
		}
	}
	fr.scope = &scope{items: []*rte{item}}
	return fr
}

// rootScope is the parent of a top-level statement's scope: the parameters
// of the function body being analysed, if any.
func (a *analyzer) rootScope(parent *scope) *scope {
	if parent == nil && a.frame != nil {
		return a.frame.scope
	}
	return parent
}

// param returns the lineage of $n.
func (a *analyzer) param(n int32) lineage {
	if a.frame == nil || n < 1 || int(n) > len(a.frame.params) {
		return nil
	}
	return a.frame.params[n-1]
}

// sqlFunctionBody analyzes a SQL function's body: every statement runs, the
// last one's rows are the result.
func (a *analyzer) sqlFunctionBody(f *catalog.Function) ([]column, bool) {
	a.lastLevel = nil
	var stmts []*pg_query.Node
	if f.SQLBody != "" {
		// A SQL-standard body (BEGIN ATOMIC … END or RETURN expr) parses
		// only as part of CREATE FUNCTION.
		tree, err := pg_query.Parse("CREATE FUNCTION f() RETURNS int LANGUAGE sql " + f.SQLBody)
		if err != nil || len(tree.GetStmts()) != 1 {
			a.problem("body of function %s cannot be parsed", f.Signature())
			return nil, true
		}
		body := tree.GetStmts()[0].GetStmt().GetCreateFunctionStmt().GetSqlBody()
		if ret := body.GetReturnStmt(); ret != nil {
			src := a.expr(ret.GetReturnval(), a.frame.scope)
			a.lastLevel = nil
			return []column{{name: f.Name, src: src}}, true
		}
		for _, l := range body.GetList().GetItems() {
			stmts = append(stmts, l.GetList().GetItems()...)
		}
	} else {
		tree, err := pg_query.Parse(f.Body)
		if err != nil {
			a.problem("body of function %s cannot be parsed", f.Signature())
			return nil, true
		}
		for _, raw := range tree.GetStmts() {
			stmts = append(stmts, raw.GetStmt())
		}
	}
	return a.bodyStatements(stmts), true
}

// bodyStatements runs a function body's statements: all but the last one's
// rows are discarded, the last one's are returned.
func (a *analyzer) bodyStatements(stmts []*pg_query.Node) []column {
	if len(stmts) == 0 {
		return nil
	}
	last := len(stmts) - 1
	a.withoutExecution(false, func() {
		for _, s := range stmts[:last] {
			a.statementOp(s)
		}
	})
	switch stmts[last].GetNode().(type) {
	case *pg_query.Node_SelectStmt, *pg_query.Node_InsertStmt, *pg_query.Node_UpdateStmt,
		*pg_query.Node_DeleteStmt, *pg_query.Node_MergeStmt:
		if sel := stmts[last].GetSelectStmt(); sel != nil && sel.GetIntoClause() != nil {
			break
		}
		// The caller finds the rows' level in a.lastLevel.
		a.lastLevel = nil
		return a.query(stmts[last], nil)
	}
	a.withoutExecution(false, func() { a.statementOp(stmts[last]) })
	a.lastLevel = nil
	return nil
}

// callArgs analyzes a call's arguments one by one: their lineage, and the
// row sources their values depend on.
func (a *analyzer) callArgs(fc *pg_query.FuncCall, sc *scope) ([]lineage, [][]*rowNode) {
	args := make([]lineage, len(fc.GetArgs()))
	deps := make([][]*rowNode, len(fc.GetArgs()))
	named := false
	for i, n := range fc.GetArgs() {
		args[i] = a.expr(n, sc)
		named = named || n.GetNamedArgExpr() != nil
		refs, d, _ := a.exprRefs(n, sc)
		for _, r := range refs {
			if !slices.Contains(d, r.node) {
				d = append(d, r.node)
			}
		}
		deps[i] = d
	}
	if named {
		// f(b => email): rather than match names to parameters, let every
		// argument reach every parameter.
		all := columnsLineage(argColumns(args))
		var allDeps []*rowNode
		for _, d := range deps {
			allDeps = append(allDeps, d...)
		}
		for i := range args {
			args[i], deps[i] = all, allDeps
		}
	}
	return args, deps
}

// userCall analyzes a call of a catalog function; ok is false for built-in
// and extension functions.
func (a *analyzer) userCall(fc *pg_query.FuncCall, sc *scope) ([]column, bool) {
	fns := a.resolveFunctions(fc.GetFuncname(), len(fc.GetArgs()))
	if len(fns) == 0 {
		return nil, false
	}
	args, deps := a.callArgs(fc, sc)
	return a.callUserFunction(slices.Clip(fns), args, deps), true
}
