package source

import (
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
)

// SensitiveRelationsCTE is a recursive common table expression, sensitive(relid, idx),
// of the configured sensitive tables with their partitions and inheritance children (a
// partition's rows are its table's): relid is a relation's oid, idx the index of its
// configured table in SensitiveTables.Tables. It takes SensitiveTables.Args as $1, $2
// and $3; a query using it starts WITH RECURSIVE.
//
// The sources that run it every poll (the table counters, the lock sample) set
// plan_cache_mode = force_generic_plan on their session: PostgreSQL keeps making a
// custom plan for array arguments, and planning this CTE costs more than running it.
const SensitiveRelationsCTE = `sensitive(relid, idx) AS (
  SELECT c.oid, cfg.idx FROM unnest($1::int[], $2::text[], $3::text[]) cfg(idx, schema, name)
  JOIN pg_namespace n ON n.nspname = cfg.schema
  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = cfg.name
  UNION
  SELECT i.inhrelid, s.idx FROM pg_inherits i JOIN sensitive s ON i.inhparent = s.relid
)`

// SensitiveTables are the configured sensitive tables as SensitiveRelationsCTE takes
// them. The zero value holds none.
type SensitiveTables struct {
	tables         []string // schema-qualified, sorted
	indexes        []int32
	schemas, names []string
}

// NewSensitiveTables returns the tables of sensitive (schema-qualified names, as in
// Env.Sensitive), in sorted order.
func NewSensitiveTables(sensitive map[string][]string) SensitiveTables {
	var s SensitiveTables
	for t := range sensitive {
		s.tables = append(s.tables, t)
	}
	slices.Sort(s.tables)
	for i, t := range s.tables {
		schema, name, err := catalog.ParseQualifiedName(t)
		if err != nil {
			schema, name = "", t // validated by the configuration; never matches
		}
		s.indexes = append(s.indexes, int32(i))
		s.schemas, s.names = append(s.schemas, schema), append(s.names, name)
	}
	return s
}

// Tables returns the tables, sorted: idx in SensitiveRelationsCTE indexes it.
func (s SensitiveTables) Tables() []string { return s.tables }

// Table returns the table of an idx from SensitiveRelationsCTE.
func (s SensitiveTables) Table(idx int32) (string, bool) {
	if idx < 0 || int(idx) >= len(s.tables) {
		return "", false
	}
	return s.tables[idx], true
}

// Args returns the arguments $1, $2 and $3 of SensitiveRelationsCTE.
func (s SensitiveTables) Args() []any { return []any{s.indexes, s.schemas, s.names} }

// ReadersQuery lists the sessions of the connection's database holding a granted lock on
// a sensitive table, one of its partitions or inheritance children (any mode: a reading
// transaction holds AccessShareLock until it ends, whatever SQL it ran), other than the
// sampling session. Autovacuum is left out (its reads are not counted as tuples read),
// and so are parallel workers (their leader holds the same locks). Since is the
// transaction's start, which tells the transactions of one session apart. It takes
// SensitiveTables.Args; ScanReaders reads its rows.
const ReadersQuery = `WITH RECURSIVE ` + SensitiveRelationsCTE + `
SELECT DISTINCT s.idx, l.pid, coalesce(pg_get_userbyid(a.usesysid)::text, ''),
  CASE WHEN a.client_port = -1 THEN 'local' ELSE coalesce(host(a.client_addr), '') END,
  coalesce(a.application_name, ''), coalesce(a.xact_start, a.backend_start, 'epoch')
FROM pg_locks l
JOIN sensitive s ON s.relid = l.relation
CROSS JOIN LATERAL pg_stat_get_activity(l.pid) a
WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND a.backend_type NOT IN ('autovacuum worker', 'parallel worker')`

// ScanReaders reads the rows of ReadersQuery run with tables' arguments into into[:0].
func ScanReaders(rows pgx.Rows, tables SensitiveTables, into []Reader) ([]Reader, error) {
	var r Reader
	var idx int32
	into = into[:0]
	_, err := pgx.ForEachRow(rows, []any{&idx, &r.PID, &r.Role, &r.ClientAddr, &r.Application, &r.Since}, func() error {
		if table, ok := tables.Table(idx); ok {
			r.Relation = table
			into = append(into, r)
		}
		return nil
	})
	if err != nil {
		return into, fmt.Errorf("sample pg_locks: %w", err)
	}
	return into, nil
}
