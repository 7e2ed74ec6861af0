package catalog

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ProbeQuery changes whenever DDL touches a relation, a column, a view's rules or a
// function outside the system schemas: every such change writes a new version of the
// catalog row, with a new xmin. It reads four catalogs' tuple headers only, so it is
// cheap enough to run before every decision that a stale snapshot could get wrong,
// unlike Load with its view definitions. Probe runs it; a poller may queue it in a
// batch of its own.
const ProbeQuery = `SELECT
  (SELECT coalesce(sum(hashtext(c.oid::text || '/' || c.xmin::text)), 0)
     FROM pg_catalog.pg_class c
    WHERE c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace))
+ (SELECT coalesce(sum(hashtext(a.attrelid::text || '/' || a.attnum::text || '/' || a.xmin::text)), 0)
     FROM pg_catalog.pg_attribute a
    WHERE a.attrelid >= 16384)
+ (SELECT coalesce(sum(hashtext(r.oid::text || '/' || r.xmin::text)), 0)
     FROM pg_catalog.pg_rewrite r
    WHERE r.ev_class >= 16384)
+ (SELECT coalesce(sum(hashtext(p.oid::text || '/' || p.xmin::text)), 0)
     FROM pg_catalog.pg_proc p
    WHERE p.oid >= 16384)`

// Probe returns a value that changes, with near certainty, whenever the relations,
// columns, view definitions or functions a snapshot holds change. Equal values read
// before a Load and later mean the snapshot Load returned still describes the database.
func Probe(ctx context.Context, q Querier) (int64, error) {
	rows, err := q.Query(ctx, ProbeQuery)
	if err != nil {
		return 0, fmt.Errorf("probe the catalog: %w", err)
	}
	v, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, fmt.Errorf("probe the catalog: %w", err)
	}
	return v, nil
}
