// Package classify tells, for one SQL text, which relations it touches and
// which sensitive columns' values it returns or copies (reads) and which it
// only uses in predicates, ordering or grouping (references). It resolves the
// statement against a catalog snapshot the way PostgreSQL's parse analysis
// does — scopes, aliases, *, whole-row references, subqueries, CTEs, set
// operations, views and functions — on the tree of PostgreSQL's own parser
// (pg_query). docs/classification.md states the semantics for users.
//
// Decisions worth knowing when reading a Result:
//   - A value derived from a column by any operator or function carries the
//     column (lower(email), left(password_hash, 7), string_agg), except the
//     value-free ones, whose arguments are only referenced: count, lengths,
//     and everything returning a truth value — comparisons, LIKE, IN,
//     IS [NOT] NULL, AND/OR/NOT, CASE conditions (valueFreeFunctions,
//     isPredicate). EXISTS and IN/ANY/ALL subqueries are references; scalar
//     and ARRAY subqueries pass values.
//   - Views and materialized views are expanded: their columns carry the
//     lineage of their definition, and the relations under them are listed.
//   - Partitions and inheritance children of a configured table carry its
//     sensitive columns, reported under the configured table's name; both
//     relations are listed.
//   - Calls of the catalog's functions are followed into their bodies (SQL;
//     PL/pgSQL best effort, function.go and plpgsql.go). A PL/pgSQL body that
//     cannot be analysed makes the result incomplete only when it could reach
//     sensitive data (reach.go): when an identifier of its text, as
//     pg_query's lexer splits it, names in any schema a sensitive relation, a
//     partition or child of one, a view over one or a function that could
//     reach one (transitively), or when it runs dynamic SQL (EXECUTE, dblink,
//     query_to_xml and kin), calls a function in another language, or cannot
//     be scanned; the sensitive relations it reaches are listed. Otherwise
//     the call carries its arguments only, whatever SECURITY DEFINER says. A
//     table named in a string literal needs EXECUTE or one of those functions
//     to be read, so literals are not scanned; triggers, rules, operators and
//     casts the body sets off without naming them are not followed. A body in
//     another language makes the result incomplete unless the function
//     returns nothing or a boolean. Built-in and extension functions carry
//     their arguments.
//   - SQL in string literals of query_to_xml, table_to_xml, dblink and
//     their kin is classified (sqltext.go); without the literal
//     (pg_stat_statements' $n) the result is incomplete.
//   - COPY ... TO a server file or program is its own operation
//     (OperationCopyToFile, OperationCopyToProgram).
//   - Writes: a value stored into a relation from another one (INSERT ...
//     SELECT, UPDATE ... FROM, MERGE, CREATE TABLE AS, SELECT INTO, REFRESH
//     MATERIALIZED VIEW) is a read; one moved within the same table
//     (UPDATE users SET username = email) is a reference.
//   - DISTINCT, UNION (not ALL), INTERSECT and EXCEPT compare their columns:
//     references. EXCEPT returns only its left side.
//   - EXPLAIN returns no rows: its statement's outputs are references, and
//     its copies count only under ANALYZE. CALL and DO are incomplete.
//   - Cursors and prepared statements: DECLARE CURSOR and PREPARE are
//     classified as if their query ran, FETCH, MOVE and EXECUTE are
//     incomplete, CLOSE and DEALLOCATE read nothing; all of them report the
//     cursor or prepared statement name in Result.Name, so that the caller
//     can attribute a FETCH to its DECLARE and an EXECUTE to its PREPARE.
//   - A relation name written without a schema resolves through the
//     configured search path, but a session may have set its own. Where the
//     catalog has sensitive tables of that name in other schemas, they are
//     listed too, with the sensitive columns the statement would read or
//     reference if the name resolved to each of them, and the result is
//     incomplete: pg_stat_statements keeps the text, not the relations the
//     session saw. Schema-qualified names, CTE names and the names inside view
//     definitions (qualified as the catalog's loading session saw them) are
//     not ambiguous.
//   - Unqualified pg_* names the snapshot does not know, and anything in
//     pg_catalog or information_schema, are PostgreSQL's own relations: listed,
//     never sensitive, never a problem.
//   - Access patterns (Result.Access) are judged on a graph of the row
//     sources of the statement and the equalities and restrictions between
//     them, against the snapshot's unique keys (access.go, judge.go,
//     keyexpr.go). Shapes (Result.Shapes) are recognised along the way
//     (shape.go): folding aggregates and ARRAY(subquery) over sensitive
//     columns that are read, server file functions and COPY to or from a
//     file or program, unpinned reads of the catalog's column and role
//     relations, dynamic SQL. The shapes SQL injection leaves are judged in
//     the text itself, not in view definitions or function bodies
//     (injection.go); a cast that fails on a sensitive value returns it in
//     its error message, so its columns are read.
//
// It is the only package that sees pg_query: callers get plain Go values. It
// never deparses input and never reports literals or SQL text. It is not a
// security boundary by itself: a statement it cannot fully resolve is reported
// as incomplete, never as safe.
package classify

import (
	"errors"
	"fmt"
	"github.com/pgtripwire/pgtripwire/model"
	"slices"
	"sort"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	pgparser "github.com/pganalyze/pg_query_go/v6/parser"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
)

// Operation names. Operation is the statement's command. A text with several
// statements reports the first one that does something: not OperationOther,
// and not OperationClose or OperationDeallocate, which only release, unless
// nothing else is there.
const (
	OperationSelect     = "SELECT"
	OperationSelectInto = "SELECT INTO"
	OperationInsert     = "INSERT"
	OperationUpdate     = "UPDATE"
	OperationDelete     = "DELETE"
	OperationMerge      = "MERGE"
	OperationCopy       = "COPY"
	// OperationCopyToFile and OperationCopyToProgram are COPY ... TO a
	// server-side file or program: the data leaves through the database
	// server itself, past any client-side control, which deserves a higher
	// severity than COPY ... TO STDOUT (OperationCopy, which also names COPY
	// ... FROM, a write).
	OperationCopyToFile     = "COPY TO FILE"
	OperationCopyToProgram  = "COPY TO PROGRAM"
	OperationCreateTableAs  = "CREATE TABLE AS"
	OperationCreateMatView  = "CREATE MATERIALIZED VIEW"
	OperationRefreshMatView = "REFRESH MATERIALIZED VIEW"
	OperationCreateView     = "CREATE VIEW"
	OperationDeclareCursor  = "DECLARE CURSOR"
	OperationFetch          = "FETCH"
	OperationMove           = "MOVE"
	OperationClose          = "CLOSE"
	OperationExplain        = "EXPLAIN"
	OperationPrepare        = "PREPARE"
	OperationExecute        = "EXECUTE"
	OperationDeallocate     = "DEALLOCATE"
	OperationTruncate       = "TRUNCATE"
	OperationCall           = "CALL"
	OperationDo             = "DO"
	OperationOther          = "OTHER"
)

// Access patterns (Result.Access): how a statement reaches a table's rows, judged
// from the query and the table's indexes.
const (
	// AccessPoint: equality on every column (or expression) of a unique index or
	// the primary key, conjoined at the top of the WHERE clause: at most one row
	// per call, a lookup such as a login.
	AccessPoint = "point"
	// AccessRange: a bounded range or a keyed page (WHERE id > $1 ORDER BY id
	// LIMIT $2), or equality on what is not unique.
	AccessRange = "range"
	// AccessPage: an OFFSET page, or a LIMIT without a predicate that bounds it.
	AccessPage = "page"
	// AccessScan: every row of the table (no restricting predicate).
	AccessScan = "scan"
)

// Shapes (Result.Shapes): what a statement does beyond the columns it reads.
const (
	// ShapeFolded: sensitive values of many rows are folded into fewer output
	// rows (string_agg, array_agg, json(b)_agg, xmlagg, ARRAY(subquery), a
	// recursive CTE concatenating rows, …): the rows returned understate the
	// rows read.
	ShapeFolded = "folded"
	// ShapeServerFile: values leave through the server itself: COPY … TO a file
	// or program, lo_export, or a server file is read (pg_read_file,
	// pg_read_binary_file, pg_ls_dir, pg_stat_file).
	ShapeServerFile = "server_file"
	// ShapeCatalogColumns: the columns of user tables are enumerated
	// (information_schema.columns/tables, pg_attribute with pg_class over user
	// schemas) rather than one named table's looked up.
	ShapeCatalogColumns = "catalog_columns"
	// ShapeCatalogRoles: roles are enumerated (pg_roles, pg_user, pg_shadow,
	// pg_authid, pg_auth_members, information_schema role views).
	ShapeCatalogRoles = "catalog_roles"
	// ShapeDynamicSQL: SQL built at run time (DO or PL/pgSQL EXECUTE, dblink,
	// query_to_xml with a non-literal query).
	ShapeDynamicSQL = "dynamic_sql"

	// The shapes SQL injection leaves in the statement the application runs (#16):
	// each names how sensitive values were pulled out through another statement.

	// ShapeInjectionUnion: a UNION (ALL) arm reads sensitive columns while another arm
	// is the application's query, the sensitive arm padded with NULLs or constants to
	// match its columns (union-based extraction).
	ShapeInjectionUnion = "injection_union"
	// ShapeInjectionSubquery: a sensitive value pulled out by a scalar subquery — with
	// OFFSET/LIMIT or another row pick — inside another statement's predicate or target
	// list (boolean-blind extraction, a value at a time: substr((SELECT password_hash
	// FROM users LIMIT 1 OFFSET 3), 5, 1) = 'a').
	ShapeInjectionSubquery = "injection_subquery"
	// ShapeInjectionCast: a sensitive value cast to a type it cannot be (a number, a
	// date, a boolean), whose error message then quotes it (error-based extraction).
	ShapeInjectionCast = "injection_cast"
	// ShapeInjectionMarkers: a sensitive value wrapped in CHR()/string markers, as
	// extraction tools wrap what they pull out to find it in the page.
	ShapeInjectionMarkers = "injection_markers"
	// ShapeInjectionSleep: a sleep function (pg_sleep and kin) in a predicate or
	// conditional expression, a subquery, a target list beside other work, or a
	// stacked text (time-blind extraction); not a sleep alone (SELECT pg_sleep(1)).
	ShapeInjectionSleep = "injection_sleep"
	// ShapeStacked: more than one statement in one text, the last ones after a
	// statement an application would run alone (stacked queries): a query or data
	// change first, then anything but transaction control. Textual: a script of
	// queries run by a person is stacked too, so rules scope it to application
	// roles.
	ShapeStacked = "stacked"
)

// InjectionShape reports whether shape is one SQL injection leaves (ShapeInjection*,
// ShapeStacked).
func InjectionShape(shape string) bool {
	switch shape {
	case ShapeInjectionUnion, ShapeInjectionSubquery, ShapeInjectionCast, ShapeInjectionMarkers,
		ShapeInjectionSleep, ShapeStacked:
		return true
	}
	return false
}

// Result is the classification of one SQL text.
type Result struct {
	// Operation is the command of the (first significant) statement.
	Operation string `json:"operation"`
	// Name is, for the statement Operation reports, the cursor (portal) name
	// of DECLARE CURSOR, FETCH, MOVE and CLOSE, or the prepared statement
	// name of PREPARE, EXECUTE and DEALLOCATE, as PostgreSQL stores it
	// (unquoted names folded to lower case); "" for other operations and for
	// CLOSE ALL and DEALLOCATE ALL. FETCH, MOVE and EXECUTE are always
	// incomplete, as their text does not say what they read: the caller
	// attributes them to the DECLARE CURSOR or PREPARE of the same Name in the
	// same session.
	Name string `json:"name,omitempty"`
	// Relations are the catalog relations the text touches, schema-qualified
	// (catalog.QualifiedName), sorted: tables, views and the relations views
	// are defined over, targets of writes. Relations being created are not
	// listed.
	Relations []string `json:"relations"`
	// SensitiveRead are the sensitive columns ("schema.table.column") whose
	// values, or values derived from them, leave the statement: returned to
	// the client or copied into another relation. Sorted.
	SensitiveRead []string `json:"sensitive_read"`
	// SensitiveReferenced are the sensitive columns used only in predicates,
	// joins, grouping, ordering or value-free aggregates (count), not in
	// SensitiveRead. Sorted.
	SensitiveReferenced []string `json:"sensitive_referenced"`
	// Access says, for each sensitive table the statement reads or references
	// (keyed by its schema-qualified name, as the keys of SensitiveRead), how
	// the statement reaches its rows: AccessPoint, AccessRange, AccessPage or
	// AccessScan. A table it cannot judge is absent.
	Access map[string]string `json:"access,omitempty"`
	// Shapes name what the classifier recognised beyond the columns (Shape*
	// constants), sorted.
	Shapes []string `json:"shapes,omitempty"`
	// Complete is true when every part of the text was resolved. When false,
	// the other fields are a lower bound and must not be taken as evidence
	// that nothing sensitive was read.
	Complete bool `json:"complete"`
	// Problems say why the result is incomplete: a parse error, an unknown
	// relation or column, an unsupported construct. They name identifiers but
	// never contain literals or SQL text. Sorted.
	Problems []string `json:"problems,omitempty"`
}

// maxDepth bounds the analyzer's recursion (nested subqueries, expressions,
// views over views): deeper input is reported as incomplete.
const maxDepth = 500

// maxSteps bounds the work spent on one text. Recursive CTEs are analyzed
// until their lineage settles, so nesting them multiplies work; a crafted
// statement must not stall the detector.
const maxSteps = 200_000

var emptySnapshot = func() *catalog.Snapshot {
	s, err := catalog.New(nil, nil)
	if err != nil {
		panic(err) // cannot happen: no input to reject
	}
	return s
}()

// Classify classifies sql, one or more statements (normalized texts with $n
// placeholders included), against cat. Unqualified relation names resolve
// through searchPath with role standing for "$user"; sensitive tables of the
// same name in other schemas are reported too and make the result incomplete,
// since the session may have set another search_path. A nil cat is an empty
// catalog: every relation is unknown. Classify never panics and never
// returns an error: what it cannot resolve makes the result incomplete.
func Classify(sql string, cat *catalog.Snapshot, searchPath []string, role string) (res Result) {
	if cat == nil {
		cat = emptySnapshot
	}
	a := newAnalyzer(cat, searchPath, role)
	defer func() {
		// Defence in depth for a daemon fed attacker-written SQL: a bug here
		// must cost one classification, not the process. Fuzzing looks for
		// this problem, so it does not hide bugs from tests.
		if r := recover(); r != nil {
			a.problem(problemInternal)
			res = a.result(OperationOther, "")
		}
	}()

	tree, err := pg_query.Parse(sql)
	if err != nil {
		return a.unparsable(sql, err)
	}
	op, name := a.statements(tree.GetStmts())
	a.injectionShapes(tree.GetStmts())
	a.judge()
	a.catalogShapes()
	a.ambiguousNames(tree.GetStmts())
	res = a.result(op, name)
	res.Access = a.access()
	return res
}

// Problems that alternative analyses (see ambiguousNames) pass on.
const (
	problemInternal   = "internal classifier error"
	problemTooDeep    = "statement nested too deeply"
	problemTooComplex = "statement too complex"
)

// statements classifies each statement and returns the operation and name to
// report: those of the first statement of the highest significance.
func (a *analyzer) statements(stmts []*pg_query.RawStmt) (op, name string) {
	op = OperationOther
	for _, raw := range stmts {
		stmtOp, stmtName := a.statement(raw.GetStmt())
		if significance(stmtOp) > significance(op) {
			op, name = stmtOp, stmtName
		}
	}
	return op, name
}

func significance(op string) int {
	switch op {
	case OperationOther:
		return 0
	case OperationClose, OperationDeallocate:
		return 1
	}
	return 2
}

// analyzer holds the state of one classification.
type analyzer struct {
	cat        *catalog.Snapshot
	searchPath []string
	role       string

	relations  map[string]bool
	read       lineage
	referenced lineage
	problems   map[string]bool

	baseCols  map[string][]column // relation columns, by qualified name
	expanding map[string]bool     // views being expanded, against cycles
	depth     int
	steps     int

	// discardOutputs is set under EXPLAIN and CREATE VIEW: the statement's
	// result rows do not reach the client.
	discardOutputs bool
	// noEffects is set when the statement does not execute at all (EXPLAIN
	// without ANALYZE, CREATE VIEW): nothing is copied anywhere.
	noEffects bool

	// unqualified records the relation names written without a schema
	// outside view definitions, with the qualified name each resolved to
	// ("" for none).
	unqualified map[string]string
	// binding, when set, overrides how one unqualified name resolves.
	binding *binding

	// frame is the parameter namespace of the function body being
	// analysed, nil outside function bodies.
	frame *frame
	// calling holds the functions being analysed, against recursion.
	calling map[*catalog.Function]bool
	// funcCols caches the output of functions called without sensitive
	// arguments.
	funcCols map[funcKey]funcResult
	// reaches caches what unanalysable function bodies could read, and scans
	// the texts scanned to decide it (reach.go).
	reaches map[*catalog.Function]reach
	scans   map[scanKey]textFacts

	// Access patterns (access.go): the row sources and query levels of the
	// text, the level of each subquery in an expression, the alias node of
	// each expanded view, and the level or function result just analysed.
	nodes     []*rowNode
	levels    []*level
	sublinks  map[*pg_query.SubLink]*rowNode
	viewNodes map[string]*rowNode
	lastLevel *rowNode
	lastFunc  *rowNode
	keyCache  map[keyCacheKey][][]string
	// inMatview is set while a materialized view's definition is expanded:
	// reading the view does not run it.
	inMatview int
	// altNodes are the row sources of the alternative analyses of
	// ambiguous names (ambiguous.go), judged there.
	altNodes []*rowNode

	// shapes recognised so far; folded holds the sensitive columns folded
	// by an aggregate or array constructor, a shape once they are read.
	shapes shapeSet
	folded lineage

	// Injection shapes (injection.go): facts about the text's own nodes,
	// nil until one is recorded, and the capture of the sensitive columns
	// a scalar subquery's target list uses.
	inj         *injectionFacts
	capture     lineage
	capturing   bool
	captureNext bool
	lastUses    lineage
}

func newAnalyzer(cat *catalog.Snapshot, searchPath []string, role string) *analyzer {
	return &analyzer{
		cat:        cat,
		searchPath: searchPath,
		role:       role,
		relations:  make(map[string]bool),
		read:       make(lineage),
		referenced: make(lineage),
		problems:   make(map[string]bool),
		baseCols:   make(map[string][]column),
		expanding:  make(map[string]bool),

		unqualified: make(map[string]string),
		calling:     make(map[*catalog.Function]bool),
		funcCols:    make(map[funcKey]funcResult),
		reaches:     make(map[*catalog.Function]reach),
		scans:       make(map[scanKey]textFacts),
		sublinks:    make(map[*pg_query.SubLink]*rowNode),
		viewNodes:   make(map[string]*rowNode),
	}
}

func (a *analyzer) problem(format string, args ...any) {
	if len(args) == 0 {
		a.problems[format] = true
		return
	}
	a.problems[fmt.Sprintf(format, args...)] = true
}

// leave records columns whose values leave the statement as result rows.
func (a *analyzer) leave(cols []column) {
	for _, c := range cols {
		if a.discardOutputs {
			addAll(a.referenced, c.src)
		} else {
			addAll(a.read, c.src)
		}
	}
}

// copied records values copied into another relation (CREATE TABLE AS,
// SELECT INTO, REFRESH MATERIALIZED VIEW).
func (a *analyzer) copied(cols []column) {
	for _, c := range cols {
		if a.noEffects {
			addAll(a.referenced, c.src)
		} else {
			addAll(a.read, c.src)
		}
	}
}

// write records values written into target (INSERT, UPDATE SET, MERGE): a
// value coming from another relation is a copy, hence a read; one moved
// within target (UPDATE users SET username = email) stays inside and is only
// referenced.
func (a *analyzer) write(target string, src lineage) {
	for s := range src {
		if s.rel == target || a.noEffects {
			a.referenced[s] = struct{}{}
		} else {
			a.read[s] = struct{}{}
		}
	}
}

func (a *analyzer) refer(src lineage) {
	addAll(a.referenced, src)
	if a.capturing && len(src) > 0 {
		if a.capture == nil {
			a.capture = make(lineage, len(src))
		}
		addAll(a.capture, src)
	}
}

func (a *analyzer) restoreCapture(capture lineage, capturing bool) {
	a.capture, a.capturing = capture, capturing
}

func (a *analyzer) result(op, name string) Result {
	res := Result{
		Operation:           op,
		Name:                name,
		Relations:           sortedKeys(a.relations),
		SensitiveRead:       []string{},
		SensitiveReferenced: []string{},
		Complete:            len(a.problems) == 0,
	}
	for s := range a.read {
		res.SensitiveRead = append(res.SensitiveRead, s.String())
	}
	for s := range a.referenced {
		if _, isRead := a.read[s]; !isRead {
			res.SensitiveReferenced = append(res.SensitiveReferenced, s.String())
		}
	}
	sort.Strings(res.SensitiveRead)
	sort.Strings(res.SensitiveReferenced)
	shapes := a.shapes
	for s := range a.folded {
		if _, isRead := a.read[s]; isRead {
			shapes |= shapeFolded
			break
		}
	}
	res.Shapes = shapes.names()
	if len(a.problems) > 0 {
		res.Problems = sortedKeys(a.problems)
	}
	return res
}

// access returns Result.Access: the tables whose sensitive columns the text
// reads or references, with how it reaches their rows.
func (a *analyzer) access() map[string]string {
	tables := make(map[string]bool)
	for s := range a.read {
		tables[s.rel] = true
	}
	for s := range a.referenced {
		tables[s.rel] = true
	}
	if len(tables) == 0 {
		return nil
	}
	return accessOf(slices.Concat(a.nodes, a.altNodes), tables)
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// parseProblem describes a parse error without the text near it, which
// PostgreSQL quotes and which may hold literals.
func parseProblem(err error) string {
	msg := err.Error()
	pos := 0
	var perr *pgparser.Error
	if errors.As(err, &perr) {
		msg, pos = perr.Message, perr.Cursorpos
	}
	for _, cut := range []string{" at or near", `"`, "'"} {
		if i := strings.Index(msg, cut); i >= 0 {
			msg = msg[:i]
		}
	}
	msg = strings.TrimSpace(msg)
	if len(msg) > 80 {
		msg = msg[:80]
	}
	if msg == "" {
		msg = "syntax error"
	}
	if pos > 0 {
		return fmt.Sprintf("parse error: %s at offset %d", msg, pos)
	}
	return "parse error: " + msg
}

// SensitiveRelations lists the tables of sensitive (schema-qualified, in order) that r
// involves: those whose sensitive columns it reads or references, and, when r is
// incomplete, those it mentions at all — an unreadable statement is never evidence that
// a table it names was not read.
func (r Result) SensitiveRelations(sensitive []string) []string {
	var rels []string
	for _, rel := range sensitive {
		if len(ColumnsOf(rel, r.SensitiveRead)) > 0 || len(ColumnsOf(rel, r.SensitiveReferenced)) > 0 ||
			(!r.Complete && slices.Contains(r.Relations, rel)) {
			rels = append(rels, rel)
		}
	}
	return rels
}

// About returns base as the event about one relation rel of the statement: its
// sensitive columns read and referenced there, and how the statement reaches it. Every
// source that classifies a statement makes its events so.
func (r Result) About(base model.Event, rel string) model.Event {
	base.Relation = rel
	base.SensitiveRead = ColumnsOf(rel, r.SensitiveRead)
	base.SensitiveReferenced = ColumnsOf(rel, r.SensitiveReferenced)
	base.Access = r.Access[rel]
	return base
}

// ColumnsOf returns the column names of rel among qualified "schema.table.column" names
// (a Result's SensitiveRead or SensitiveReferenced), in their order.
func ColumnsOf(rel string, qualified []string) []string {
	var cols []string
	prefix := rel + "."
	for _, q := range qualified {
		if col, ok := strings.CutPrefix(q, prefix); ok {
			cols = append(cols, col)
		}
	}
	return cols
}
