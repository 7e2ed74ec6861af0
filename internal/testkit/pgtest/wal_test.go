package pgtest

import (
	"context"
	"testing"
)

// TestCommitEndAgreesWithWALInspect: the position CommitEnd finds by logical decoding on
// PostgreSQL 14 is the commit record's end that pg_walinspect reads on 15 and later.
func TestCommitEndAgreesWithWALInspect(t *testing.T) {
	db := NewDatabase(t)
	conn := db.Conn(t, "postgres")
	db.Exec(t, `CREATE TABLE t (n int)`)
	if db.Server.Version() < 15 {
		if got := CommitEnd(t, conn, `INSERT INTO t VALUES (1)`); got == 0 {
			t.Fatal("CommitEnd = 0/0")
		}
		t.Skip("no pg_walinspect before 15 to compare with")
	}
	inspected := CommitEnd(t, conn, `INSERT INTO t VALUES (1)`)
	decoded := commitEndDecoded(t, conn, `INSERT INTO t VALUES (2)`)
	if decoded <= inspected {
		t.Fatalf("decoded commit end %s, want after the first transaction's %s", decoded, inspected)
	}
	var xid string
	if err := conn.QueryRow(context.Background(), `SELECT xmin::text FROM t WHERE n = 2`).Scan(&xid); err != nil {
		t.Fatal(err)
	}
	want := lsn(t, conn, `SELECT end_lsn::text FROM pg_get_wal_records_info($1::pg_lsn, pg_current_wal_flush_lsn())
		WHERE record_type = 'COMMIT' AND xid::text = $2`, inspected.String(), xid)
	if decoded != want {
		t.Errorf("decoded commit end %s, pg_walinspect says %s", decoded, want)
	}
}
