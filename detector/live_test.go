package detector_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/source/catalogwatch"
	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

// #6 acceptance 1: a read of 40,000 rows of email and password_hash slowed to ~10 s is
// alerted while it is still running.
func TestSlowSensitiveReadAlertedWhileRunning(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seedUsers(t, db, 40_000)
	r := detectortest.Start(t, detectortest.Config(t, db))
	conn := db.Conn(t, "mallory")
	finished := make(chan error, 1)
	start := time.Now()
	go func() {
		rows, err := conn.Query(context.Background(), `SELECT email, password_hash, pg_sleep(0.00025) FROM users`)
		if err == nil {
			for rows.Next() {
			}
			err = rows.Err()
		}
		finished <- err
	}()
	got := r.WaitAlert(t, 10*time.Second, "SensitiveReadInProgress", map[string]string{"role": "mallory", "table": "public.users"})
	select {
	case err := <-finished:
		t.Fatalf("the read ended (%v, after %v) before it was alerted", err, time.Since(start))
	default:
	}
	t.Logf("alerted %v into the read", time.Since(start).Round(time.Millisecond))
	if got.Labels["pid"] == "" || got.Severity != model.SeverityWarning {
		t.Errorf("got %+v, want the backend's pid to terminate", got)
	}
	if err := <-finished; err != nil {
		t.Fatal(err)
	}
}

// blockingWriter takes the first row of a COPY and then blocks until released, like a
// client reading slowly: the server stalls on a full socket in the middle of the COPY.
type blockingWriter struct {
	first   sync.Once
	blocked chan struct{}
	release chan struct{}
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.first.Do(func() {
		close(w.blocked)
		<-w.release
	})
	return len(p), nil
}

// #6 acceptance 2: COPY users TO STDOUT whose client reads slowly is alerted before the
// COPY ends.
func TestSlowCopyAlertedBeforeItEnds(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seedUsers(t, db, 40_000)
	// 40 MB: far more than the socket buffers hold.
	db.Exec(t, `ALTER TABLE users ADD COLUMN bio text NOT NULL DEFAULT repeat('x', 1000)`)
	r := detectortest.Start(t, detectortest.Config(t, db))
	conn := db.Conn(t, "mallory")
	w := &blockingWriter{blocked: make(chan struct{}), release: make(chan struct{})}
	finished := make(chan error, 1)
	go func() {
		_, err := conn.PgConn().CopyTo(context.Background(), w, `COPY users TO STDOUT`)
		finished <- err
	}()
	<-w.blocked
	r.WaitAlert(t, 10*time.Second, "SensitiveCopy", map[string]string{"role": "mallory", "table": "public.users"})
	select {
	case err := <-finished:
		t.Fatalf("the COPY ended (%v) before it was alerted", err)
	default:
	}
	close(w.release)
	if err := <-finished; err != nil {
		t.Fatal(err)
	}
}

// #6 acceptance 3: the moves that blind or arm an intruder, each a new alert within 5 s.
func TestBlindingMovesAlertWithin5s(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seedUsers(t, db, 20_000)
	cfg := detectortest.Config(t, db)
	detectortest.PollSettings(t, cfg, catalogwatch.Name).Enabled = true
	r := detectortest.Start(t, cfg)
	// Roles are cluster-wide: names unique to this test keep parallel tests apart.
	slotter, escalated, reader, resetter := db.Name+"_slotter", db.Name+"_esc", db.Name+"_reader", db.Name+"_resetter"
	slot := db.Name + "_exfil"
	// A slot keeps its database from being dropped and the server's WAL from recycling.
	defer db.Exec(t, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, slot)
	db.CreateRole(t, slotter, "REPLICATION")
	db.CreateRole(t, escalated)
	db.CreateRole(t, reader)
	db.CreateRole(t, resetter)
	// No argument list: PostgreSQL 17's pg_stat_statements added one (minmax_only).
	db.Exec(t, fmt.Sprintf(`GRANT EXECUTE ON FUNCTION pg_stat_statements_reset TO %s`, resetter))
	r.WaitReady(t, true, 30*time.Second)
	// The catalog watch's state must hold these roles before the moves: wait for a poll
	// that began after they were made (the one running now may have begun before).
	polled := r.Counter(t, "pgtripwire_source_polls_total", map[string]string{"source": "catalog"}) + 2
	eventually(t, 10*time.Second, "two catalog polls", func() bool {
		return r.Counter(t, "pgtripwire_source_polls_total", map[string]string{"source": "catalog"}) >= polled
	})

	cases := []struct {
		name   string
		do     func(t *testing.T)
		rule   string
		labels map[string]string
	}{
		{"a logical slot created by another role", func(t *testing.T) {
			if _, err := db.Conn(t, slotter).Exec(t.Context(), `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
				t.Fatal(err)
			}
		}, "ForeignReplicationSlot", map[string]string{"kind": "slot_created", "object": slot}},
		{"ALTER ROLE … BYPASSRLS", func(t *testing.T) {
			db.Exec(t, fmt.Sprintf(`ALTER ROLE %s BYPASSRLS`, escalated))
		}, "RolePrivilegeEscalation", map[string]string{"role": escalated, "object": "BYPASSRLS"}},
		{"GRANT pg_read_all_data", func(t *testing.T) {
			db.Exec(t, fmt.Sprintf(`GRANT pg_read_all_data TO %s`, reader))
		}, "RolePrivilegeEscalation", map[string]string{"role": reader, "object": "pg_read_all_data"}},
		{"pg_stat_statements_reset()", func(t *testing.T) {
			if _, err := db.Conn(t, resetter).Exec(t.Context(), `SELECT pg_stat_statements_reset()`); err != nil {
				t.Fatal(err)
			}
		}, "StatisticsReset", map[string]string{"kind": "stats_reset", "object": "pg_stat_statements"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			tc.do(t)
			r.WaitAlert(t, 5*time.Second, tc.rule, tc.labels)
			t.Logf("alerted after %v", time.Since(start).Round(time.Millisecond))
		})
	}
}

// #6 acceptance 3, the read no statement shows as rows: table_to_xml returns one row.
// With pg_stat_statements.track = all (the test servers' setting) the SELECT it runs
// inside is a statement of its own, and the bulk-read rule pages within seconds. With
// track = top only the table counters see it; PostgreSQL publishes a backend's counters
// when it goes idle, but waits up to 10 s (PGSTAT_IDLE_INTERVAL) when it published less
// than a second before, so that alert is allowed 20 s.
func TestTableToXMLAlerted(t *testing.T) {
	t.Parallel()
	t.Run("track=all", func(t *testing.T) {
		t.Parallel()
		db := pgtest.NewDatabase(t)
		seedUsers(t, db, 20_000)
		r := detectortest.Start(t, detectortest.Config(t, db))
		readAs(t, db, "mallory", `SELECT table_to_xml('users', true, false, '')`)
		r.WaitAlert(t, 5*time.Second, "SensitiveBulkRead", map[string]string{"role": "mallory", "table": "public.users"})
	})
	t.Run("track=top", func(t *testing.T) {
		t.Parallel()
		db := pgtest.NewDatabaseIn(t, pgtest.NewServer(t, map[string]string{"pg_stat_statements.track": "top"}))
		seedUsers(t, db, 20_000)
		r := detectortest.Start(t, detectortest.Config(t, db))
		// The tables source's warm-up: counters published in its first 11 s are history.
		eventually(t, 20*time.Second, "the end of the tables source's warm-up", func() bool {
			return r.Gauge(t, "pgtripwire_tables_baseline_complete", nil) == 1
		})
		readAs(t, db, "mallory", `SELECT table_to_xml('users', true, false, '')`)
		r.WaitAlert(t, 20*time.Second, "UnexplainedSensitiveReads", map[string]string{"table": "public.users"})
		for _, a := range r.Lines(t) {
			if a.Rule == "SensitiveBulkRead" {
				t.Errorf("got %+v with track=top: the counters were the only witness expected", a)
			}
		}
	})
}
