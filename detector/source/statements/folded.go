package statements

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
	"github.com/pgtripwire/pgtripwire/model"
)

// A statement that folds sensitive values of many rows into few
// (SELECT string_agg(email || ':' || password_hash, ',') FROM users) returns one row:
// pg_stat_statements' rows say nothing of what it read. What it read shows in the
// buffer blocks it touched: a call that touched b blocks of a table holding t tuples in
// p pages read at most b·t/p of its rows (and no more than t). The estimate is an upper
// bound: blocks of indexes and of other tables the statement read count as if they
// were the table's, and a block is counted each time it is touched; it is exact for
// the usual fold, a sequential scan of the whole table, and close for a fold over an
// index range. docs/sources.md says so.

// estimate is an event whose tuples visited are estimated from blocks: events[index],
// whose calls each touched blocksPerCall blocks. When readsVisited, its rows read are
// too (a statement that folded the rows, or whose rows pg_stat_statements did not
// count).
type estimate struct {
	index         int
	blocksPerCall int64
	readsVisited  bool
}

// sizesTTL is how long table sizes are reused: they move slowly, and a poll that needs
// them comes every second.
const sizesTTL = 10 * time.Second

// tableSize is what PostgreSQL knows of a table's size: tuples in pages.
type tableSize struct {
	tuples, pages float64
}

// sizesQuery returns, per sensitive table ($1 schemas, $2 names), its tuples and pages
// with its partitions and inheritance children: reltuples and relpages where the table
// was analyzed, else the statistics' live tuples and the size on disk.
const sizesQuery = `WITH RECURSIVE t(relid, idx) AS (
  SELECT c.oid, i FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS cfg(schema, name, i)
  JOIN pg_namespace n ON n.nspname = cfg.schema
  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = cfg.name
  UNION
  SELECT h.inhrelid, t.idx FROM pg_inherits h JOIN t ON h.inhparent = t.relid
)
SELECT t.idx,
  sum(CASE WHEN c.reltuples >= 0 THEN c.reltuples ELSE coalesce(pg_stat_get_live_tuples(c.oid), 0) END)::float8,
  sum(greatest(c.relpages, pg_relation_size(c.oid) / current_setting('block_size')::int))::float8
FROM t JOIN pg_class c ON c.oid = t.relid AND c.relkind IN ('r', 'm', 'p')
GROUP BY t.idx`

// estimate sets the Visited of the events from the blocks their statements touched,
// and the RowsRead of folding statements' events, from the sizes of the tables they are
// about.
func (s *Source) estimate(ctx context.Context, conn *pgx.Conn, now time.Time, events []model.Event, estimates []estimate) error {
	if err := s.refreshSizes(ctx, conn, now, events, estimates); err != nil {
		return err
	}
	for _, e := range estimates {
		ev := &events[e.index]
		perCall := foldedRows(e.blocksPerCall, s.sizes[ev.Relation])
		ev.Visited = max(ev.Rows, perCall*max(ev.Calls, 1))
		if e.readsVisited {
			ev.RowsRead = ev.Visited
		}
	}
	return nil
}

// refreshSizes reads the sizes of the events' tables when they are older than sizesTTL
// or not known yet.
func (s *Source) refreshSizes(ctx context.Context, conn *pgx.Conn, now time.Time, events []model.Event, estimates []estimate) error {
	stale := now.Sub(s.sizesAt) >= sizesTTL
	for _, e := range estimates {
		if _, ok := s.sizes[events[e.index].Relation]; !ok {
			stale = true
		}
	}
	if !stale {
		return nil
	}
	tables := s.sensitive
	schemas, names := make([]string, len(tables)), make([]string, len(tables))
	for i, t := range tables {
		schema, name, err := catalog.ParseQualifiedName(t)
		if err != nil {
			return fmt.Errorf("estimate rows read: table %q: %w", t, err)
		}
		schemas[i], names[i] = schema, name
	}
	sizes := make(map[string]tableSize, len(tables))
	for _, t := range tables {
		sizes[t] = tableSize{} // a table that does not exist (yet) has no size
	}
	rows, err := conn.Query(ctx, sizesQuery, schemas, names)
	if err != nil {
		return fmt.Errorf("estimate rows read: read table sizes: %w", err)
	}
	var idx int64
	var size tableSize
	if _, err := pgx.ForEachRow(rows, []any{&idx, &size.tuples, &size.pages}, func() error {
		if idx >= 1 && int(idx) <= len(tables) {
			sizes[tables[idx-1]] = size
		}
		return nil
	}); err != nil {
		return fmt.Errorf("estimate rows read: read table sizes: %w", err)
	}
	s.sizes, s.sizesAt = sizes, now
	for _, size := range sizes {
		if size.tuples == 0 && size.pages > 0 {
			// Never analyzed, and its inserts not yet in the statistics: read again at
			// the next poll rather than estimate nothing read for sizesTTL.
			s.sizesAt = time.Time{}
		}
	}
	return nil
}

// foldedRows is the rows of a table of the given size that a call touching blocks
// blocks read at most.
func foldedRows(blocks int64, size tableSize) int64 {
	if size.tuples <= 0 || blocks <= 0 {
		return 0
	}
	perPage := size.tuples
	if size.pages >= 1 {
		perPage = size.tuples / size.pages
	}
	return int64(math.Min(size.tuples, math.Ceil(float64(blocks)*perPage)))
}
