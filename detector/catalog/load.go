package catalog

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/pgtripwire/pgtripwire/model"
)

// Querier runs a query; *pgx.Conn, *pgxpool.Pool and pgx.Tx satisfy it.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// searchPathQuery returns the effective search path that pg_get_viewdef will
// qualify names against in relationsQuery, run on the same session.
const searchPathQuery = `SELECT pg_catalog.current_schemas(true)::text[]`

// relationsQuery lists every relation a user can query outside the system
// schemas, with its live columns and, for views, its definition. It touches
// only pg_class, pg_namespace and pg_attribute through their indexes, so it
// stays cheap on databases with thousands of tables.
const relationsQuery = `
SELECT n.nspname::text,
       c.relname::text,
       c.relkind::text,
       ARRAY(SELECT a.attname::text
               FROM pg_catalog.pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum),
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END,
       ARRAY(SELECT pn.nspname::text FROM pg_catalog.pg_inherits i
               JOIN pg_catalog.pg_class pc ON pc.oid = i.inhparent
               JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace
              WHERE i.inhrelid = c.oid ORDER BY i.inhseqno),
       ARRAY(SELECT pc.relname::text FROM pg_catalog.pg_inherits i
               JOIN pg_catalog.pg_class pc ON pc.oid = i.inhparent
              WHERE i.inhrelid = c.oid ORDER BY i.inhseqno)
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname !~ '^pg_(toast|temp_)'`

// indexesQuery lists the unique indexes (primary keys included) of the
// relations relationsQuery returns that PostgreSQL enforces on every row:
// valid, not partial. Key columns come in index order, INCLUDE columns left
// out; an expression column has no attribute and is printed by
// pg_get_indexdef (qualified relative to the session's search path, like view
// definitions). It reads pg_index, never statistics.
const indexesQuery = `
SELECT n.nspname::text,
       c.relname::text,
       ic.relname::text,
       i.indisprimary,
       ARRAY(SELECT COALESCE(a.attname::text, '')
               FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
               LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum AND k.attnum > 0
              WHERE k.ord <= i.indnkeyatts ORDER BY k.ord),
       ARRAY(SELECT CASE WHEN k.attnum = 0 THEN pg_catalog.pg_get_indexdef(i.indexrelid, k.ord::int, true) ELSE '' END
               FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
              WHERE k.ord <= i.indnkeyatts ORDER BY k.ord)
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
  JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE i.indisunique AND i.indisvalid AND i.indpred IS NULL
   AND c.relkind IN ('r', 'p', 'm', 'f')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname !~ '^pg_(toast|temp_)'`

// functionsQuery lists the plain functions of non-system schemas that do not
// belong to an extension, with what classification needs to follow a call:
// arity, parameter names, body, result shape, SECURITY DEFINER and a
// search_path set in the definition. pg_get_function_sqlbody needs
// PostgreSQL 14, as the project does.
const functionsQuery = `
SELECT n.nspname::text,
       p.proname::text,
       l.lanname::text,
       COALESCE(p.proargnames, '{}'::text[]),
       COALESCE(p.proargmodes::text[], '{}'::text[]),
       ARRAY(SELECT pg_catalog.format_type(t, NULL) FROM unnest(p.proargtypes::oid[]) t),
       p.pronargdefaults::int,
       p.provariadic <> 0,
       COALESCE(p.prosrc, ''),
       COALESCE(pg_catalog.pg_get_function_sqlbody(p.oid), ''),
       pg_catalog.format_type(p.prorettype, NULL),
       p.proretset,
       ARRAY(SELECT a.attname::text
               FROM pg_catalog.pg_type t
               JOIN pg_catalog.pg_attribute a ON a.attrelid = t.typrelid
              WHERE t.oid = p.prorettype AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum),
       p.prosecdef,
       (SELECT substr(c, 13) FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%' LIMIT 1)
  FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_catalog.pg_language l ON l.oid = p.prolang
 WHERE p.prokind = 'f'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname !~ '^pg_(toast|temp_)'
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid
                      AND d.deptype = 'e')`

// Load reads the relations of the database q is connected to and builds a
// snapshot with the given sensitive-column configuration (see New). It runs
// four read-only catalog queries on q's session and must not share that session
// with statements changing search_path concurrently. An error leaves nothing
// half-built: callers keep their previous snapshot. pg_get_viewdef can fail on
// a view dropped while the query runs; the next refresh succeeds.
func Load(ctx context.Context, q Querier, sensitive map[string][]string) (*Snapshot, error) {
	rows, err := q.Query(ctx, searchPathQuery)
	if err != nil {
		return nil, fmt.Errorf("load catalog: read search path: %w", err)
	}
	path, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[[]string])
	if err != nil {
		return nil, fmt.Errorf("load catalog: read search path: %w", err)
	}
	// The session's temporary schema leads the path once it has one; its
	// relations are not part of a snapshot.
	path = slices.DeleteFunc(path, func(s string) bool { return strings.HasPrefix(s, "pg_temp_") })

	rows, err = q.Query(ctx, relationsQuery)
	if err != nil {
		return nil, fmt.Errorf("load catalog: list relations: %w", err)
	}
	relations, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Relation, error) {
		var (
			r                        Relation
			kind                     string
			viewDef                  *string
			parentSchemas, parentRel []string
		)
		if err := row.Scan(&r.Schema, &r.Name, &kind, &r.Columns, &viewDef, &parentSchemas, &parentRel); err != nil {
			return Relation{}, err
		}
		for i := range min(len(parentSchemas), len(parentRel)) {
			r.Inherits = append(r.Inherits, model.QualifiedName(parentSchemas[i], parentRel[i]))
		}
		if len(kind) != 1 {
			return Relation{}, fmt.Errorf("relation %s: unexpected relkind %q", r.QualifiedName(), kind)
		}
		r.Kind = Kind(kind[0])
		if viewDef != nil {
			r.ViewDef = *viewDef
		}
		return r, nil
	})
	if err != nil {
		return nil, fmt.Errorf("load catalog: list relations: %w", err)
	}
	if err := loadKeys(ctx, q, relations); err != nil {
		return nil, err
	}
	rows, err = q.Query(ctx, functionsQuery)
	if err != nil {
		return nil, fmt.Errorf("load catalog: list functions: %w", err)
	}
	functions, err := pgx.CollectRows(rows, scanFunction)
	if err != nil {
		return nil, fmt.Errorf("load catalog: list functions: %w", err)
	}
	snap, err := New(relations, sensitive, WithViewSearchPath(path), WithFunctions(functions))
	if err != nil {
		return nil, fmt.Errorf("load catalog: %w", err)
	}
	return snap, nil
}

// loadKeys reads the unique keys of relations (indexesQuery) into them.
func loadKeys(ctx context.Context, q Querier, relations []Relation) error {
	rows, err := q.Query(ctx, indexesQuery)
	if err != nil {
		return fmt.Errorf("load catalog: list unique indexes: %w", err)
	}
	type keyRow struct {
		schema, table string
		key           UniqueKey
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (keyRow, error) {
		var (
			k              keyRow
			columns, exprs []string
		)
		if err := row.Scan(&k.schema, &k.table, &k.key.Name, &k.key.Primary, &columns, &exprs); err != nil {
			return keyRow{}, err
		}
		if len(columns) != len(exprs) {
			return keyRow{}, fmt.Errorf("index %s: %d columns, %d expressions", k.key.Name, len(columns), len(exprs))
		}
		for i := range columns {
			k.key.Parts = append(k.key.Parts, KeyPart{Column: columns[i], Expression: exprs[i]})
		}
		return k, nil
	})
	if err != nil {
		return fmt.Errorf("load catalog: list unique indexes: %w", err)
	}
	byName := make(map[relKey]*Relation, len(relations))
	for i := range relations {
		byName[relKey{relations[i].Schema, relations[i].Name}] = &relations[i]
	}
	for _, k := range keys {
		// A relation created between the two queries is left for the next
		// refresh; a part that is neither column nor expression (an
		// attribute dropped meanwhile) makes the key unusable.
		r, ok := byName[relKey{k.schema, k.table}]
		if !ok || slices.ContainsFunc(k.key.Parts, func(p KeyPart) bool { return (p.Column == "") == (p.Expression == "") }) {
			continue
		}
		r.UniqueKeys = append(r.UniqueKeys, k.key)
	}
	return nil
}

func scanFunction(row pgx.CollectableRow) (Function, error) {
	var (
		f          Function
		names      []string
		modes      []string
		searchPath *string
	)
	err := row.Scan(&f.Schema, &f.Name, &f.Language, &names, &modes, &f.ArgTypes, &f.NumDefaults,
		&f.Variadic, &f.Body, &f.SQLBody, &f.ReturnType, &f.ReturnsSet, &f.ResultColumns,
		&f.SecurityDefiner, &searchPath)
	if err != nil {
		return Function{}, err
	}
	// proargnames covers every parameter when proargmodes is set (OUT and
	// TABLE ones included), only the inputs otherwise.
	var out []string
	for i, name := range names {
		mode := "i"
		if i < len(modes) {
			mode = modes[i]
		}
		switch mode {
		case "i", "b", "v":
			f.Args = append(f.Args, name)
		}
		switch mode {
		case "o", "b", "t":
			out = append(out, name)
		}
	}
	for len(f.Args) < len(f.ArgTypes) {
		f.Args = append(f.Args, "")
	}
	if len(out) > 0 {
		f.ResultColumns = out
	}
	if len(f.ResultColumns) == 0 {
		f.ResultColumns = nil
	}
	if searchPath != nil {
		f.SearchPath = ParseSearchPath(*searchPath)
		if f.SearchPath == nil {
			f.SearchPath = []string{}
		}
	}
	return f, nil
}
