package detector_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

// dynamicDump reads every row of the credential columns through dynamic SQL whose
// table and column names are assembled from pieces, and lets the values out through
// RAISE NOTICE: no statement text names the table, and with
// pg_stat_statements.track = top only the DO block itself is counted, with no rows.
//
// It pauses 0.75 s every 5,000 rows (3 s for 20,000): a transaction holds its lock
// on the table until it ends, and the activity sampler lists those locks once a
// second, so a read that holds the table for longer than a second is seen at least
// once. A faster read is seen only by chance — the honest limit of a sample.
const dynamicDump = `DO $dump$
DECLARE
	r record;
	n int := 0;
BEGIN
	FOR r IN EXECUTE format('SELECT %I, %I, %I FROM %I.%I', 'em' || 'ail', 'user' || 'name',
		'password' || '_hash', 'pub' || 'lic', 'us' || 'ers') LOOP
		RAISE NOTICE '%', row_to_json(r);
		n := n + 1;
		IF n % 5000 = 0 THEN
			PERFORM pg_sleep(0.75);
		END IF;
	END LOOP;
END
$dump$`

// #15, point 3: the dump that only the table counters see names its reader. On a
// server with pg_stat_statements.track = top, a role runs dynamicDump; the
// UnexplainedSensitiveReads warning names that role, its client and application
// within 10 s of the dump's end. A second role, reading another table in transactions
// of its own all the while, is named by no alert.
func TestDynamicDumpNamesItsReader(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabaseIn(t, pgtest.NewServer(t, map[string]string{"pg_stat_statements.track": "top"}))
	seedUsers(t, db, 20_000)
	db.Exec(t, `CREATE TABLE public.orders (id int PRIMARY KEY, total int);
		INSERT INTO public.orders SELECT i, i % 97 FROM generate_series(1, 5000) i`)
	db.CreateRole(t, "intruder")
	db.CreateRole(t, "reporting")
	db.Exec(t, `GRANT SELECT ON public.users TO intruder; GRANT SELECT ON public.orders TO reporting`)

	r := detectortest.Start(t, detectortest.Config(t, db))
	eventually(t, 20*time.Second, "the end of the tables source's warm-up", func() bool {
		return r.Gauge(t, "pgtripwire_tables_baseline_complete", nil) == 1
	})

	// The benign role, busy until the dump is over: each transaction holds orders for
	// 0.3 s, so the sampler sees it too. Stopped before its connection is closed, even
	// when the test fails (cleanups run last registered first).
	benign := connectAs(t, db, "reporting", "dashboard", nil)
	ctx, stop := context.WithCancel(t.Context())
	benignDone := make(chan error, 1)
	go func() {
		var err error
		for err == nil && ctx.Err() == nil {
			_, err = benign.Exec(ctx, `BEGIN; SELECT count(*), sum(total) FROM orders; SELECT pg_sleep(0.3); COMMIT`)
		}
		if ctx.Err() != nil {
			err = nil
		}
		benignDone <- err
	}()
	stopBenign := sync.OnceValue(func() error {
		stop()
		return <-benignDone
	})
	t.Cleanup(func() { _ = stopBenign() })

	var notices atomic.Int64
	dumper := connectAs(t, db, "intruder", "psql", func(*pgconn.PgConn, *pgconn.Notice) { notices.Add(1) })
	began := time.Now()
	if _, err := dumper.Exec(t.Context(), dynamicDump); err != nil {
		t.Fatal(err)
	}
	ended := time.Now()
	if got := notices.Load(); got != 20_000 {
		t.Fatalf("the dump let out %d rows through RAISE NOTICE, want 20000", got)
	}
	got := r.WaitAlert(t, 10*time.Second, "UnexplainedSensitiveReads", map[string]string{"role": "intruder", "table": "public.users"})
	t.Logf("the dump took %s; named %s after its end", ended.Sub(began).Round(time.Millisecond), time.Since(ended).Round(time.Millisecond))
	if err := stopBenign(); err != nil {
		t.Fatalf("the benign role's reads: %v", err)
	}

	if got.Severity != model.SeverityWarning || got.Labels["client_addr"] != "127.0.0.1" || got.Labels["application"] != "psql" ||
		got.Labels["source"] != "tables" || got.Value < 20_000 {
		t.Errorf("got %+v, want a warning of at least 20,000 reads by intruder from 127.0.0.1 (psql)", got)
	}
	for _, a := range r.Lines(t) {
		if a.Labels["role"] == "reporting" {
			t.Errorf("got %+v: the benign role, which read nothing sensitive, was named", a)
		}
		if a.Rule == "SensitiveBulkRead" {
			t.Errorf("got %+v with track = top: the table counters were the only witness expected", a)
		}
	}
}

// connectAs connects to db as role with an application name and, when onNotice is not
// nil, a handler for the notices the server sends; the connection closes when t ends.
func connectAs(t *testing.T, db *pgtest.Database, role, application string, onNotice pgconn.NoticeHandler) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(db.DSN(role))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = application
	cfg.OnNotice = onNotice
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	})
	return conn
}
