package statements

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/sourcetest"
)

// benchEntries is the size of pg_stat_statements the poll cost is measured at.
const benchEntries = 5000

// allTextsQuery is what a naive poller runs: every counter with its text.
const allTextsQuery = `SELECT userid, dbid, toplevel, queryid, calls, rows, query
FROM pg_stat_statements(true)
WHERE dbid = $1 AND queryid IS NOT NULL`

// BenchmarkPoll measures one poll against a real server holding 5,000
// pg_stat_statements entries for the monitored database. ns/op is the whole
// steady-state poll as the source runs it (two queries in one round trip, deltas,
// classification cache, hand-over); server-ms/op is PostgreSQL's execution time of
// the counters query (EXPLAIN ANALYZE), next to that of a query reading all texts.
func BenchmarkPoll(b *testing.B) {
	srv := pgtest.NewServer(b, map[string]string{"pg_stat_statements.max": "10000"})
	db := pgtest.NewDatabaseIn(b, srv)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.SuperuserDSN())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	fillStatements(b, conn, benchEntries)

	var dbID uint32
	if err := conn.QueryRow(ctx, `SELECT oid FROM pg_database WHERE datname = current_database()`).Scan(&dbID); err != nil {
		b.Fatal(err)
	}
	var entries int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_statements WHERE dbid = $1`, dbID).Scan(&entries); err != nil {
		b.Fatal(err)
	}
	if entries < benchEntries {
		b.Fatalf("got %d pg_stat_statements entries, want at least %d", entries, benchEntries)
	}

	b.Run("steady-state", func(b *testing.B) {
		reg := prometheus.NewRegistry()
		src := New(Config{
			CatalogRefresh: time.Hour,
			SearchPath:     []string{"$user", "public"},
			Sensitive:      map[string][]string{"public.users": {"email", "username", "password_hash"}},
		}, &sourcetest.Recorder{}, zap.NewNop(), reg)
		if err := src.Start(ctx, conn); err != nil {
			b.Fatal(err)
		}
		// Two polls reach the steady state: a baseline, then one that fetches the
		// texts of the source's own new statements.
		for range 2 {
			if err := src.Poll(ctx, conn); err != nil {
				b.Fatal(err)
			}
		}
		b.ResetTimer()
		for b.Loop() {
			if err := src.Poll(ctx, conn); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		b.ReportMetric(serverMillis(b, conn, pollQuery, dbID), "server-ms/op")
		b.ReportMetric(float64(entries), "entries")
	})
	b.Run("all-texts", func(b *testing.B) {
		for b.Loop() {
			rows, err := conn.Query(ctx, allTextsQuery, dbID)
			if err != nil {
				b.Fatal(err)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		b.ReportMetric(serverMillis(b, conn, allTextsQuery, dbID), "server-ms/op")
		b.ReportMetric(float64(entries), "entries")
	})
}

// fillStatements runs n statements of distinct structure, hence n queryids: 100
// tables times expressions of 0 to n/100-1 additions. Each text is padded to about
// 1 KB with a comment (kept in pg_stat_statements, ignored by the queryid), the size of
// typical ORM-generated SQL: the cost of reading texts grows with their length.
func fillStatements(b *testing.B, conn *pgx.Conn, n int) {
	b.Helper()
	ctx := context.Background()
	tables := 100
	for i := range tables {
		if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE TABLE bench_%d (a int)`, i)); err != nil {
			b.Fatal(err)
		}
	}
	padding := repeat("app=checkout controller=orders action=list ", 22)
	batch := &pgx.Batch{}
	for i := range n {
		batch.Queue(fmt.Sprintf(`/* %s */ SELECT a%s FROM bench_%d`, padding, repeat(" + 1", i/tables), i%tables))
	}
	if err := conn.SendBatch(ctx, batch).Close(); err != nil {
		b.Fatal(err)
	}
}

// serverMillis is the mean execution time PostgreSQL reports for sql over 20 runs.
func serverMillis(b *testing.B, conn *pgx.Conn, sql string, args ...any) float64 {
	b.Helper()
	const runs = 20
	var total float64
	for range runs {
		var plan []struct {
			ExecutionTime float64 `json:"Execution Time"`
		}
		var raw []byte
		if err := conn.QueryRow(context.Background(), "EXPLAIN (ANALYZE, FORMAT JSON) "+sql, args...).Scan(&raw); err != nil {
			b.Fatal(err)
		}
		if err := json.Unmarshal(raw, &plan); err != nil || len(plan) != 1 {
			b.Fatalf("EXPLAIN output %s: %v", raw, err)
		}
		total += plan[0].ExecutionTime
	}
	return total / runs
}
