package classify

import (
	"slices"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// shapeSet holds the shapes recognised in a text (Result.Shapes).
type shapeSet uint16

const (
	shapeFolded shapeSet = 1 << iota
	shapeServerFile
	shapeCatalogColumns
	shapeCatalogRoles
	shapeDynamicSQL
	shapeInjectionUnion
	shapeInjectionSubquery
	shapeInjectionCast
	shapeInjectionMarkers
	shapeInjectionSleep
	shapeStacked
)

// shapeNames in the order Result.Shapes sorts them.
var shapeNames = []struct {
	bit  shapeSet
	name string
}{
	{shapeCatalogColumns, ShapeCatalogColumns},
	{shapeCatalogRoles, ShapeCatalogRoles},
	{shapeDynamicSQL, ShapeDynamicSQL},
	{shapeFolded, ShapeFolded},
	{shapeInjectionCast, ShapeInjectionCast},
	{shapeInjectionMarkers, ShapeInjectionMarkers},
	{shapeInjectionSleep, ShapeInjectionSleep},
	{shapeInjectionSubquery, ShapeInjectionSubquery},
	{shapeInjectionUnion, ShapeInjectionUnion},
	{shapeServerFile, ShapeServerFile},
	{shapeStacked, ShapeStacked},
}

func (s shapeSet) names() []string {
	if s == 0 {
		return nil
	}
	var out []string
	for _, n := range shapeNames {
		if s&n.bit != 0 {
			out = append(out, n.name)
		}
	}
	return out
}

// foldingAggregates combine values of many rows into one value that carries
// them all: over sensitive columns they make Result.Shapes "folded". Value-
// free aggregates (count, bool_and) are not here, nor are min and max, which
// return one row's value.
var foldingAggregates = map[string]bool{
	"string_agg": true, "array_agg": true, "xmlagg": true,
	"json_agg": true, "jsonb_agg": true, "json_agg_strict": true, "jsonb_agg_strict": true,
	"json_object_agg": true, "jsonb_object_agg": true,
	"json_object_agg_strict": true, "jsonb_object_agg_strict": true,
	"json_object_agg_unique": true, "jsonb_object_agg_unique": true,
	"json_object_agg_unique_strict": true, "jsonb_object_agg_unique_strict": true,
	"range_agg": true,
}

// aggregates are the built-in aggregates a level is recognised by (one row
// without GROUP BY; not a simple subquery).
var aggregates = map[string]bool{
	"count": true, "sum": true, "avg": true, "min": true, "max": true, "any_value": true,
	"bool_and": true, "bool_or": true, "every": true, "bit_and": true, "bit_or": true, "bit_xor": true,
	"stddev": true, "stddev_pop": true, "stddev_samp": true, "variance": true, "var_pop": true, "var_samp": true,
	"mode": true, "percentile_cont": true, "percentile_disc": true,
}

// serverFileFunctions read or write files of the database server, or move
// data between the database and them: Result.Shapes "server_file", whatever
// table is involved. adminpack's are included wherever the extension was
// installed.
var serverFileFunctions = map[string]bool{
	"pg_read_file": true, "pg_read_binary_file": true, "pg_stat_file": true, "pg_ls_dir": true,
	"lo_export": true, "lo_import": true,
	"pg_ls_logdir": true, "pg_ls_waldir": true, "pg_ls_tmpdir": true, "pg_ls_archive_statusdir": true,
	"pg_ls_logicalsnapdir": true, "pg_ls_logicalmapdir": true, "pg_ls_replslotdir": true,
	"pg_file_write": true, "pg_file_rename": true, "pg_file_unlink": true, "pg_file_sync": true, "pg_logdir_ls": true,
}

// dblinkFunctions run SQL in another session (or database): dynamic SQL
// whether or not the text is a literal.
var dblinkFunctions = map[string]bool{
	"dblink": true, "dblink_exec": true, "dblink_open": true, "dblink_fetch": true,
	"dblink_send_query": true, "dblink_get_result": true,
}

// builtinCall reports whether a call names a built-in or extension function
// rather than one of the snapshot's: unqualified (PostgreSQL searches
// pg_catalog first), in pg_catalog, or in a schema where the snapshot has no
// function of that name (an extension's).
func (a *analyzer) builtinCall(names []*pg_query.Node) bool {
	schema := schemaName(names)
	return schema == "" || schema == "pg_catalog" || len(a.cat.LookupFunctions(schema, lastName(names))) == 0
}

// shapeOfCall records the shapes a function call makes and whether it is an
// aggregate of the current level.
func (a *analyzer) shapeOfCall(fc *pg_query.FuncCall, sc *scope, args lineage) {
	names := fc.GetFuncname()
	name := lastName(names)
	if !a.builtinCall(names) {
		return
	}
	switch {
	case serverFileFunctions[name]:
		a.shapes |= shapeServerFile
	case dblinkFunctions[name]:
		a.shapes |= shapeDynamicSQL
	case foldingAggregates[name] && len(args) > 0:
		a.folded = union(a.folded, args)
	}
	if lv := levelOf(sc); lv != nil {
		if fc.GetOver() != nil {
			lv.hasWindow = true
		} else if aggregates[name] || foldingAggregates[name] || fc.GetAggStar() {
			lv.hasAgg = true
		}
	}
}

// recursiveFold marks as folded the sensitive columns a recursive CTE
// accumulates: a column its recursive term computes from its own previous
// value and more (acc || u.email, array_append(acc, u.email)), as opposed to
// one it passes along (a tree walk).
func (a *analyzer) recursiveFold(cte *pg_query.CommonTableExpr, cols []column) {
	sel := cte.GetCtequery().GetSelectStmt()
	if sel == nil || sel.GetOp() != pg_query.SetOperation_SETOP_UNION || sel.GetRarg() == nil {
		return
	}
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.name
	}
	for i, t := range sel.GetRarg().GetTargetList() {
		if i >= len(cols) || len(cols[i].src) == 0 {
			continue
		}
		v := t.GetResTarget().GetVal()
		if v.GetColumnRef() != nil {
			continue
		}
		if mentionsColumn(v, names, 0) {
			a.folded = union(a.folded, cols[i].src)
		}
	}
}

// mentionsColumn reports whether an expression refers to a column named in
// names, outside subqueries.
func mentionsColumn(n *pg_query.Node, names []string, depth int) bool {
	if n == nil || depth > maxCanonDepth*4 {
		return false
	}
	if cr := n.GetColumnRef(); cr != nil {
		parts, star := columnRefParts(cr)
		return !star && len(parts) > 0 && slices.Contains(names, parts[len(parts)-1])
	}
	if n.GetSubLink() != nil || n.GetSelectStmt() != nil {
		return false
	}
	found := false
	childNodes(n.ProtoReflect(), func(c *pg_query.Node) {
		found = found || mentionsColumn(c, names, depth+1)
	})
	return found
}

// sysRelation describes a system relation for the catalog shapes.
type sysRelation struct {
	// shape is the shape reading the relation unpinned makes: an
	// enumeration of user tables' columns or of roles; 0 for relations that
	// only help pin one (pg_class by name or oid).
	shape shapeSet
	// keys are the columns whose value names one object (a table, a role).
	keys [][]string
}

func (s *sysRelation) hasColumn(name string) bool {
	if s == nil {
		return false
	}
	for _, k := range s.keys {
		if slices.Contains(k, name) {
			return true
		}
	}
	return false
}

// sysRelations are the system relations of the catalog shapes. Reading one
// whose shape is set without pinning one of its keys to a constant, a list
// of constants, or a column of a row source that is itself pinned (pg_class
// pinned by relname, joined on attrelid = oid) enumerates tables' columns or
// roles, which is the reconnaissance docs/classification.md describes.
var sysRelations = map[string]*sysRelation{
	"information_schema.columns":           {shapeCatalogColumns, [][]string{{"table_name"}}},
	"information_schema.tables":            {shapeCatalogColumns, [][]string{{"table_name"}}},
	"information_schema.views":             {shapeCatalogColumns, [][]string{{"table_name"}}},
	"information_schema.column_privileges": {shapeCatalogColumns, [][]string{{"table_name"}}},
	"pg_catalog.pg_attribute":              {shapeCatalogColumns, [][]string{{"attrelid"}}},
	"pg_catalog.pg_class":                  {0, [][]string{{"oid"}, {"relname"}}},
	"pg_catalog.pg_tables":                 {0, [][]string{{"tablename"}}},
	"pg_catalog.pg_index":                  {0, [][]string{{"indexrelid"}}},

	"pg_catalog.pg_roles":                                  {shapeCatalogRoles, [][]string{{"rolname"}, {"oid"}}},
	"pg_catalog.pg_authid":                                 {shapeCatalogRoles, [][]string{{"rolname"}, {"oid"}}},
	"pg_catalog.pg_user":                                   {shapeCatalogRoles, [][]string{{"usename"}, {"usesysid"}}},
	"pg_catalog.pg_shadow":                                 {shapeCatalogRoles, [][]string{{"usename"}, {"usesysid"}}},
	"pg_catalog.pg_group":                                  {shapeCatalogRoles, [][]string{{"groname"}, {"grosysid"}}},
	"pg_catalog.pg_auth_members":                           {shapeCatalogRoles, [][]string{{"roleid"}, {"member"}}},
	"information_schema.applicable_roles":                  {shapeCatalogRoles, [][]string{{"role_name"}, {"grantee"}}},
	"information_schema.enabled_roles":                     {shapeCatalogRoles, [][]string{{"role_name"}}},
	"information_schema.administrable_role_authorizations": {shapeCatalogRoles, [][]string{{"role_name"}, {"grantee"}}},
}

// catalogShapes records the catalog shapes of the system relations the text
// reads without pinning them to one named object.
func (a *analyzer) catalogShapes() {
	for _, n := range a.nodes {
		if n.kind != nodeRelation || n.sys == nil || n.sys.shape == 0 || n.ghost || a.shapes&n.sys.shape != 0 {
			continue
		}
		if !a.namedObject(n, make(map[colRef]bool)) {
			a.shapes |= n.sys.shape
		}
	}
}

// namedObject reports whether a system relation's rows are those of named
// objects: every part of one of its keys is named. seen makes the search
// through equalities visit each column once; a column reached twice counts
// as not named, which errs towards reporting the shape.
func (a *analyzer) namedObject(n *rowNode, seen map[colRef]bool) bool {
	for _, key := range n.sys.keys {
		named := true
		for _, part := range key {
			named = named && a.namedValue(colRef{node: n, col: part}, seen)
		}
		if named {
			return true
		}
	}
	return false
}

// namedValue reports whether a column's values are named by the statement:
// equal to a constant or a list of constants, or to a column of a row source
// that is itself a named object or a single row.
func (a *analyzer) namedValue(r colRef, seen map[colRef]bool) bool {
	for range maxDepth {
		if r.node == nil || seen[r] || len(seen) > maxSteps {
			return false
		}
		seen[r] = true
		n := r.node
		if n.cls == classPoint || n.oneRow {
			return true
		}
		if n.kind == nodeRelation {
			break
		}
		if n.namedRows {
			return true
		}
		if r.pos < 0 || r.pos >= len(n.out) {
			return false
		}
		r = n.out[r.pos]
	}
	n := r.node
	if n == nil || n.kind != nodeRelation {
		return false
	}
	if n.named[r.col] {
		return true
	}
	for _, al := range n.alts[r.col] {
		if al.ref.node != nil && al.ref.node != n && a.namedValue(al.ref, seen) {
			return true
		}
	}
	// A column of a named object (pg_class pinned by relname) names one.
	return n.sys != nil && !seen[colRef{node: n}] && func() bool {
		seen[colRef{node: n}] = true
		return a.namedObject(n, seen)
	}()
}
