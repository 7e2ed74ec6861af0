package pgtest

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// CommitEnd runs sql in one transaction on conn, a superuser's connection, and returns
// the end position of its commit record: the position a logical replication client may
// confirm once it has dealt with the transaction. It leaves synchronous_commit on in the
// session (the harness turns it off; what is read here must be flushed).
//
// From PostgreSQL 15 on it reads the record with pg_walinspect. On 14, which has no
// pg_walinspect, it decodes the transaction through a temporary test_decoding slot made
// before it: logical decoding reports a commit at its record's end. Other sessions'
// WAL never blurs either answer, as the position after the commit would.
func CommitEnd(t testing.TB, conn *pgx.Conn, sql string) pglogrepl.LSN {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	var version int
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		t.Fatalf("pgtest: commit end: %v", err)
	}
	if version < 150000 {
		return commitEndDecoded(t, conn, sql)
	}
	if _, err := conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_walinspect; SET synchronous_commit = on`); err != nil {
		t.Fatalf("pgtest: commit end: %v", err)
	}
	before := lsn(t, conn, `SELECT pg_current_wal_flush_lsn()::text`)
	xid := commitReturningXID(t, conn, sql)
	return lsn(t, conn, `SELECT end_lsn::text FROM pg_get_wal_records_info($1::pg_lsn, pg_current_wal_flush_lsn())
		WHERE record_type = 'COMMIT' AND xid::text = $2`, before.String(), xid)
}

// commitEndDecoded is CommitEnd through a temporary test_decoding slot.
func commitEndDecoded(t testing.TB, conn *pgx.Conn, sql string) pglogrepl.LSN {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	slot := "pgtest_commit_end_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if _, err := conn.Exec(ctx, `SET synchronous_commit = on`); err != nil {
		t.Fatalf("pgtest: commit end: %v", err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'test_decoding', true)`, slot); err != nil {
		t.Fatalf("pgtest: commit end: create slot: %v", err)
	}
	defer func() {
		if _, err := conn.Exec(context.Background(), `SELECT pg_drop_replication_slot($1)`, slot); err != nil {
			t.Errorf("pgtest: commit end: drop slot: %v", err)
		}
	}()
	xid := commitReturningXID(t, conn, sql)
	// skip-empty-xacts hides other databases' and sessions' empty transactions; the
	// changes themselves are not wanted, only the commit line ("COMMIT <xid>").
	return lsn(t, conn, `SELECT lsn::text FROM pg_logical_slot_peek_changes($1, NULL, NULL,
		'include-xids', '1', 'skip-empty-xacts', '0')
		WHERE data = 'COMMIT ' || $2`, slot, xid)
}

func commitReturningXID(t testing.TB, conn *pgx.Conn, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatalf("pgtest: commit end: %v", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit, a no-op
	if _, err := tx.Exec(ctx, sql); err != nil {
		t.Fatalf("pgtest: commit end: %v", err)
	}
	var xid string
	if err := tx.QueryRow(ctx, `SELECT pg_current_xact_id()::text`).Scan(&xid); err != nil {
		t.Fatalf("pgtest: commit end: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("pgtest: commit end: %v", err)
	}
	return xid
}

func lsn(t testing.TB, conn *pgx.Conn, sql string, args ...any) pglogrepl.LSN {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	var s string
	if err := conn.QueryRow(ctx, sql, args...).Scan(&s); err != nil {
		t.Fatalf("pgtest: %s: %v", sql, err)
	}
	l, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatalf("pgtest: %s: %v", s, err)
	}
	return l
}
