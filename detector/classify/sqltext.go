package classify

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
)

// Some built-in and contrib functions run SQL or read a table named in a
// string argument: query_to_xml('SELECT email FROM users', ...),
// table_to_xml('users', ...), dblink('...', 'SELECT ...'). Where the string
// is a literal (pg_stat_activity's texts keep literals) it is classified like
// the statement text itself; where it is not (pg_stat_statements replaces
// literals with $n) the result is incomplete. The functions' own results are
// computed from what the SQL returns, so they carry its lineage.

// sqlTextKind says what a function does with its text argument.
type sqlTextKind int

const (
	// textQuery: the argument is a query whose rows the function returns.
	textQuery sqlTextKind = iota
	// textQuerySchema: the argument is a query whose shape (not rows) is
	// returned.
	textQuerySchema
	// textCommand: the argument is a statement run for its effects.
	textCommand
	// textTable: the argument names a table whose rows are returned.
	textTable
	// textTableSchema: the argument names a table whose shape is returned.
	textTableSchema
	// textSchema: the argument names a schema all of whose tables' rows are
	// returned.
	textSchema
	// textDatabase: every table of the database is returned.
	textDatabase
	// textCursor: the argument names a cursor whose rows are returned.
	textCursor
)

type sqlTextFunc struct {
	kind sqlTextKind
	// arg is the position of the text argument; dblinkArg picks it.
	arg int
}

const dblinkArg = -1

// sqlTextFuncs are the functions whose string argument is SQL or a relation
// name, by name (built-in ones in pg_catalog, dblink's wherever the extension
// was installed).
var sqlTextFuncs = map[string]sqlTextFunc{
	"query_to_xml":                  {textQuery, 0},
	"query_to_xml_and_xmlschema":    {textQuery, 0},
	"query_to_xmlschema":            {textQuerySchema, 0},
	"table_to_xml":                  {textTable, 0},
	"table_to_xml_and_xmlschema":    {textTable, 0},
	"table_to_xmlschema":            {textTableSchema, 0},
	"cursor_to_xml":                 {textCursor, 0},
	"schema_to_xml":                 {textSchema, 0},
	"schema_to_xml_and_xmlschema":   {textSchema, 0},
	"database_to_xml":               {textDatabase, 0},
	"database_to_xml_and_xmlschema": {textDatabase, 0},
	"dblink":                        {textQuery, dblinkArg},
	"dblink_exec":                   {textCommand, dblinkArg},
	"dblink_send_query":             {textQuery, 1},
	"dblink_open":                   {textQuery, 2},
}

// sqlTextCall analyzes a call of one of sqlTextFuncs; ok is false for other
// functions.
func (a *analyzer) sqlTextCall(fc *pg_query.FuncCall, sc *scope) ([]column, bool) {
	name := lastName(fc.GetFuncname())
	spec, ok := sqlTextFuncs[name]
	if !ok {
		return nil, false
	}
	if schema := schemaName(fc.GetFuncname()); schema != "" && schema != "pg_catalog" && len(a.cat.LookupFunctions(schema, name)) > 0 {
		// A catalog function of that name: not the built-in.
		return nil, false
	}
	if dblinkFunctions[name] {
		// The SQL runs in another session, whatever its text.
		a.shapes |= shapeDynamicSQL
	}
	args := fc.GetArgs()
	pos := spec.arg
	if pos == dblinkArg {
		pos = dblinkQueryArg(args)
	}
	// The other arguments (flags, connection strings, namespaces) shape the
	// output but are not returned.
	for i, n := range args {
		if i != pos {
			a.refer(a.expr(n, sc))
		}
	}
	if spec.kind == textDatabase {
		return []column{{name: name, src: a.everyRelation("")}}, true
	}
	if pos < 0 || pos >= len(args) {
		return nil, false
	}
	text, literal := stringLiteral(args[pos])
	if !literal {
		a.shapes |= shapeDynamicSQL
		a.refer(a.expr(args[pos], sc))
		a.problem("the SQL or relation argument of %s is not a literal: what it reads is unknown", name)
		return []column{{name: name}}, true
	}
	var src lineage
	switch spec.kind {
	case textQuery:
		return a.sqlText(name, text, false), true
	case textQuerySchema:
		// Only the query's shape is returned; it is planned, not run.
		a.withoutExecution(true, func() { a.refer(columnsLineage(a.sqlText(name, text, false))) })
	case textCommand:
		a.sqlText(name, text, true)
	case textTable, textTableSchema:
		schema, rel, err := catalog.ParseQualifiedName(text)
		if err != nil {
			rel, err = catalog.ParseIdentifier(text)
			schema = ""
		}
		if err != nil {
			a.problem("the relation argument of %s cannot be parsed", name)
			break
		}
		item := a.relation(&pg_query.RangeVar{Schemaname: schema, Relname: rel}, &scope{}, false)
		if spec.kind == textTable {
			touchAll(item)
			src = columnsLineage(item.star())
		}
	case textSchema:
		id, err := catalog.ParseIdentifier(text)
		if err != nil {
			a.problem("the schema argument of %s cannot be parsed", name)
			break
		}
		src = a.everyRelation(id)
	case textCursor:
		a.problem("%s reads from a cursor: what it reads is unknown", name)
	}
	return []column{{name: name, src: src}}, true
}

// dblinkQueryArg picks dblink's and dblink_exec's SQL argument: (sql),
// (connection, sql), (sql, fail_on_error) or (connection, sql,
// fail_on_error).
func dblinkQueryArg(args []*pg_query.Node) int {
	switch len(args) {
	case 1:
		return 0
	case 2:
		if isBoolConst(args[1]) {
			return 0
		}
		return 1
	case 3:
		return 1
	}
	return -1
}

func isBoolConst(n *pg_query.Node) bool {
	for n.GetTypeCast() != nil {
		n = n.GetTypeCast().GetArg()
	}
	_, ok := n.GetAConst().GetVal().(*pg_query.A_Const_Boolval)
	return ok
}

// stringLiteral returns the value of a string constant, possibly cast
// ('users'::regclass).
func stringLiteral(n *pg_query.Node) (string, bool) {
	for n.GetTypeCast() != nil {
		n = n.GetTypeCast().GetArg()
	}
	if s, ok := n.GetAConst().GetVal().(*pg_query.A_Const_Sval); ok {
		return s.Sval.GetSval(), true
	}
	return "", false
}

// sqlText classifies SQL carried in a string argument of fn and returns the
// columns of its last statement's rows; asCommand runs it for its effects
// only (rows discarded). Relation names in it resolve as in the statement.
func (a *analyzer) sqlText(fn, text string, asCommand bool) []column {
	if !a.enter() {
		return nil
	}
	defer a.leaveDepth()
	tree, err := pg_query.Parse(text)
	if err != nil {
		a.problem("the SQL argument of %s cannot be parsed", fn)
		if tokens, scanErr := pg_query.Scan(text); scanErr == nil {
			a.scanRelations(text, tokens.GetTokens())
		}
		return nil
	}
	var stmts []*pg_query.Node
	for _, raw := range tree.GetStmts() {
		stmts = append(stmts, raw.GetStmt())
	}
	// Parameters of an enclosing function body are not visible in the text.
	saved := a.frame
	a.frame = nil
	defer func() { a.frame = saved }()
	if asCommand {
		a.withoutExecution(false, func() {
			for _, s := range stmts {
				a.statementOp(s)
			}
		})
		return nil
	}
	return a.bodyStatements(stmts)
}

// everyRelation returns the lineage of every column of every relation in
// schema (every non-system schema when ""), as schema_to_xml and
// database_to_xml return them all.
func (a *analyzer) everyRelation(schema string) lineage {
	var out lineage
	for _, rel := range a.cat.Relations() {
		if schema != "" && rel.Schema != schema {
			continue
		}
		if !a.cat.HasSensitive(rel.QualifiedName()) && !rel.Kind.HasDefinition() && len(rel.Inherits) == 0 {
			continue
		}
		a.relations[rel.QualifiedName()] = true
		cols := a.relationColumns(rel)
		out = union(out, columnsLineage(cols))
		if rel.Kind != catalog.View {
			touch(a.relationNode(rel, true, cols)) // every row
		}
	}
	return out
}
