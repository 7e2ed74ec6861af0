package catalog

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
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
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname !~ '^pg_(toast|temp_)'`

// Load reads the relations of the database q is connected to and builds a
// snapshot with the given sensitive-column configuration (see New). It runs
// two read-only catalog queries on q's session and must not share that session
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
			r       Relation
			kind    string
			viewDef *string
		)
		if err := row.Scan(&r.Schema, &r.Name, &kind, &r.Columns, &viewDef); err != nil {
			return Relation{}, err
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
	snap, err := New(relations, sensitive, WithViewSearchPath(path))
	if err != nil {
		return nil, fmt.Errorf("load catalog: %w", err)
	}
	return snap, nil
}
