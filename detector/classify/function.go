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
func (a *analyzer) callUserFunction(fns []*catalog.Function, args []lineage) []column {
	var out []column
	for _, f := range fns {
		out = mergeColumns(out, a.analyzeFunction(f, args))
	}
	return out
}

// funcKey identifies a function analysis that can be reused: one whose
// arguments carry no sensitive lineage.
type funcKey = *catalog.Function

// analyzeFunction returns the output columns of one call of f.
func (a *analyzer) analyzeFunction(f *catalog.Function, args []lineage) []column {
	argsFree := columnsLineage(argColumns(args)) == nil
	if argsFree {
		if cols, ok := a.funcCols[f]; ok {
			return cols
		}
	}
	if a.calling[f] {
		// A recursive function returns what its other branches return;
		// this classifier does not iterate to a fixed point over bodies.
		a.problem("function %s calls itself", f.Signature())
		return a.opaqueResult(f, args)
	}
	if !a.enter() {
		return a.opaqueResult(f, args)
	}
	defer a.leaveDepth()

	a.calling[f] = true
	saved := a.frame
	a.frame = newFrame(f, args)
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
	)
	switch f.Language {
	case "sql":
		body, ok = a.sqlFunctionBody(f)
	case "plpgsql":
		body, unfollowed = a.plpgsqlFunctionBody(f)
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
	if argsFree {
		a.funcCols[f] = cols
	}
	return cols
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
	scope  *scope
}

func newFrame(f *catalog.Function, args []lineage) *frame {
	fr := &frame{params: make([]lineage, len(f.Args))}
	item := &rte{name: f.Name}
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
			return []column{{name: f.Name, src: a.expr(ret.GetReturnval(), a.frame.scope)}}, true
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
		return a.query(stmts[last], nil)
	}
	a.withoutExecution(false, func() { a.statementOp(stmts[last]) })
	return nil
}

// callArgs analyzes a call's arguments one by one.
func (a *analyzer) callArgs(fc *pg_query.FuncCall, sc *scope) []lineage {
	args := make([]lineage, len(fc.GetArgs()))
	named := false
	for i, n := range fc.GetArgs() {
		args[i] = a.expr(n, sc)
		named = named || n.GetNamedArgExpr() != nil
	}
	if named {
		// f(b => email): rather than match names to parameters, let every
		// argument reach every parameter.
		all := columnsLineage(argColumns(args))
		for i := range args {
			args[i] = all
		}
	}
	return args
}

// userCall analyzes a call of a catalog function; ok is false for built-in
// and extension functions.
func (a *analyzer) userCall(fc *pg_query.FuncCall, sc *scope) ([]column, bool) {
	fns := a.resolveFunctions(fc.GetFuncname(), len(fc.GetArgs()))
	if len(fns) == 0 {
		return nil, false
	}
	return a.callUserFunction(slices.Clip(fns), a.callArgs(fc, sc)), true
}
