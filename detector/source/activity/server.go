package activity

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/model"
)

// serverBackend is a row of a server's shared sample: a backend of one of the
// databases the detector watches on the server (source.Server).
type serverBackend struct {
	database string
	backend
	relid uint32 // COPY only: the relation copied, named by the database's sampler
}

// serverActivityQuery is activityQuery for the databases of a source.Server ($2).
const serverActivityQuery = `SELECT a.datname::text, a.pid, coalesce(a.usename::text, ''), CASE WHEN a.client_port = -1 THEN 'local' ELSE coalesce(host(a.client_addr), '') END,
  coalesce(a.application_name, ''), coalesce(a.query_id, 0), a.query_start,
  extract(epoch FROM clock_timestamp() - a.query_start)::float8,
  CASE WHEN clock_timestamp() - a.query_start >= make_interval(secs => $1) THEN a.query END
FROM pg_stat_activity a
WHERE a.datname = ANY($2) AND a.state = 'active' AND a.backend_type = 'client backend'
  AND a.pid <> pg_backend_pid() AND a.query_start IS NOT NULL`

// serverCopyQuery is copyQuery for the databases of a source.Server ($1): the relation
// is left as its oid, which only a connection to its database can name.
const serverCopyQuery = `SELECT p.datname::text, p.pid, coalesce(a.usename::text, ''), CASE WHEN a.client_port = -1 THEN 'local' ELSE coalesce(host(a.client_addr), '') END,
  coalesce(a.application_name, ''), coalesce(a.query_id, 0), a.query_start,
  extract(epoch FROM clock_timestamp() - a.query_start)::float8, a.query,
  coalesce(p.relid, 0), p.type, p.tuples_processed
FROM pg_stat_progress_copy p
JOIN pg_stat_activity a ON a.pid = p.pid
WHERE p.command = 'COPY TO' AND p.datname = ANY($1) AND a.query_start IS NOT NULL`

// sharedActivity returns the server's pg_stat_activity sample, taken at most half an
// interval ago: one round trip for the activity samplers of every database. The
// samplers' min_running is the configuration's, the same for all; it is in the read's
// name all the same, so that two settings never share a sample.
func (l *live) sharedActivity(ctx context.Context) ([]serverBackend, error) {
	server, minRunning := l.cfg.Server, l.cfg.MinRunning.Seconds()
	rows, _, err := source.Shared(ctx, server, fmt.Sprintf("activity min_running=%g", minRunning), l.cfg.Interval/2,
		func(ctx context.Context, conn *pgx.Conn) ([]serverBackend, error) {
			rows, err := conn.Query(ctx, serverActivityQuery, minRunning, server.Databases())
			if err != nil {
				return nil, fmt.Errorf("sample pg_stat_activity of the server: %w", err)
			}
			var out []serverBackend
			var b serverBackend
			var running float64
			_, err = pgx.ForEachRow(rows, []any{&b.database, &b.pid, &b.role, &b.addr, &b.app, &b.queryID, &b.start,
				&running, &b.text}, func() error {
				b.running = secondsToDuration(running)
				out = append(out, b)
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("sample pg_stat_activity of the server: %w", err)
			}
			return out, nil
		})
	return rows, err
}

// sharedCopies returns the server's pg_stat_progress_copy sample, taken at most half
// an interval ago: one round trip for the COPY samplers of every database.
func (l *live) sharedCopies(ctx context.Context) ([]serverBackend, error) {
	server := l.cfg.Server
	rows, _, err := source.Shared(ctx, server, "copy", l.cfg.Interval/2,
		func(ctx context.Context, conn *pgx.Conn) ([]serverBackend, error) {
			rows, err := conn.Query(ctx, serverCopyQuery, server.Databases())
			if err != nil {
				return nil, fmt.Errorf("sample pg_stat_progress_copy of the server: %w", err)
			}
			var out []serverBackend
			var b serverBackend
			var running float64
			_, err = pgx.ForEachRow(rows, []any{&b.database, &b.pid, &b.role, &b.addr, &b.app, &b.queryID, &b.start,
				&running, &b.text, &b.relid, &b.operation, &b.tuples}, func() error {
				b.running = secondsToDuration(running)
				out = append(out, b)
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("sample pg_stat_progress_copy of the server: %w", err)
			}
			return out, nil
		})
	return rows, err
}

// BlindSpot is why the last shared sample of the server failed (a source.Server's):
// the sampler's health, while its database's other sources poll on.
func (l *live) BlindSpot() error { return l.sharedErr }

// nameRelations names the relation each COPY of the sample copies, over the
// database's own connection (the server's sample has only oids): one round trip, only
// while a COPY runs.
func (c *Copy) nameRelations(ctx context.Context, conn *pgx.Conn) error {
	rows, err := conn.Query(ctx, `SELECT c.oid, n.nspname::text, c.relname::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY($1)`, c.relids)
	if err != nil {
		return fmt.Errorf("name the relations copied: %w", err)
	}
	names := map[uint32]string{}
	var oid uint32
	var schema, name string
	if _, err := pgx.ForEachRow(rows, []any{&oid, &schema, &name}, func() error {
		names[oid] = model.QualifiedName(schema, name)
		return nil
	}); err != nil {
		return fmt.Errorf("name the relations copied: %w", err)
	}
	for i := range c.rows {
		c.rows[i].relation = names[c.relids[i]]
	}
	return nil
}
