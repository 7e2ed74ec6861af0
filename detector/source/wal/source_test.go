package wal

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pgtripwire/pgtripwire/detector/health"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/sourcetest"
	"github.com/pgtripwire/pgtripwire/model"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func isOp(relation, op string) func(model.Event) bool {
	return func(e model.Event) bool { return e.Relation == relation && e.Operation == op }
}

func isMessage(prefix string) func(model.Event) bool {
	return func(e model.Event) bool { return e.Operation == OperationMessage && e.MessagePrefix == prefix }
}

type started struct {
	src    *Source
	sink   *sourcetest.Recorder
	health *health.Status
	reg    *prometheus.Registry
	slot   string
	stop   func() // stops the source and waits for it; cleanup calls it too
}

// startSource starts a source on db with its own slot (slots are cluster-wide), with
// extra connection parameters for its walsender.
func startSource(t *testing.T, db *pgtest.Database, sink *sourcetest.Recorder, params map[string]string) *started {
	t.Helper()
	return startSourceWith(t, db, sink, params, nil)
}

// startSourceWith is startSource with a chance to change the source's configuration.
func startSourceWith(t *testing.T, db *pgtest.Database, sink *sourcetest.Recorder, params map[string]string, configure func(*Config)) *started {
	t.Helper()
	return startSourceSink(t, db, sink, sink, params, configure)
}

// startSourceSink is startSourceWith handing over to sink, which records into rec.
func startSourceSink(t *testing.T, db *pgtest.Database, rec *sourcetest.Recorder, sink source.Sink, params map[string]string, configure func(*Config)) *started {
	t.Helper()
	reg := prometheus.NewRegistry()
	st := &started{sink: rec, health: health.New(reg), reg: reg, slot: db.Name}
	st.health.Register(Name)
	cfg := testConfig(t, db.SuperuserDSN(), st.slot, params, reg)
	if configure != nil {
		configure(&cfg)
	}
	st.src = New(cfg, sink, st.health, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.src.Run(ctx) }()
	var once sync.Once
	st.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Run: got %v, want context.Canceled", err)
			}
		})
	}
	t.Cleanup(st.stop)
	sourcetest.WaitReady(t, st.health)
	return st
}

// testConfig is the tests' configuration of a source connecting with dsn, its shared
// metrics registered with reg: public.users and public.accounts sensitive, status
// updates every 100 ms, quick reconnects.
func testConfig(t *testing.T, dsn, slot string, params map[string]string, reg prometheus.Registerer) Config {
	t.Helper()
	conn, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range params {
		conn.RuntimeParams[k] = v
	}
	return Config{
		Conn:             conn,
		Slot:             slot,
		Tables:           map[string][]string{"public.users": {"email", "username", "password_hash"}, "public.accounts": {"email"}},
		StatusInterval:   100 * time.Millisecond,
		ReconnectInitial: 50 * time.Millisecond,
		ReconnectMax:     200 * time.Millisecond,
		Metrics:          source.NewMetrics(reg),
	}
}

// sourceErrors is pgtripwire_source_errors_total{source="wal"}: the failed sessions
// counted with every other source's (source.Metrics); 0 while it does not exist.
func (st *started) sourceErrors(t *testing.T) float64 {
	t.Helper()
	return sourceCounter(t, st.reg, "pgtripwire_source_errors_total")
}

// sourceCounter is the value of the kit's counter name (source.Metrics) labelled with
// this source, 0 while it does not exist.
func sourceCounter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "source" && l.GetValue() == Name {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// refusingSink refuses every hand-over while refusing, and hands the others to a
// Recorder. The kit's Recorder refuses a number of hand-overs fixed before the source
// starts: a test that must look at the slot while the sink refuses, then let the same
// transaction through, needs to switch.
type refusingSink struct {
	rec      *sourcetest.Recorder
	mu       sync.Mutex
	refusing bool
	refused  int
}

func (r *refusingSink) HandleEvents(ctx context.Context, events []model.Event) error {
	r.mu.Lock()
	if r.refusing {
		r.refused++
		r.mu.Unlock()
		return sourcetest.ErrRefused
	}
	r.mu.Unlock()
	return r.rec.HandleEvents(ctx, events)
}

func (r *refusingSink) refuse(on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refusing = on
}

func (r *refusingSink) refusals() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refused
}

// seed makes public.users (REPLICA IDENTITY FULL) with n rows, public.accounts (default
// replica identity) and public.audit, which no publication holds.
func seed(t *testing.T, db *pgtest.Database, n int) {
	t.Helper()
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, username text, password_hash text, note text);
		ALTER TABLE public.users REPLICA IDENTITY FULL;
		CREATE TABLE public.accounts (id int PRIMARY KEY, email text);
		CREATE TABLE public.audit (id serial PRIMARY KEY, note text);
		INSERT INTO public.accounts SELECT i, 'a' || i || '@example.com' FROM generate_series(1, 10) i`)
	db.Exec(t, `INSERT INTO public.users SELECT i, 'u' || i || '@example.com', 'u' || i, md5(i::text), ''
		FROM generate_series(1, $1::int) i`, n)
}

func connect(t *testing.T, db *pgtest.Database) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), db.SuperuserDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func lsnOf(t testing.TB, conn *pgx.Conn, sql string, args ...any) pglogrepl.LSN {
	t.Helper()
	var text string
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&text); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	lsn, err := pglogrepl.ParseLSN(text)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

func confirmedFlush(t *testing.T, conn *pgx.Conn, slot string) pglogrepl.LSN {
	t.Helper()
	return lsnOf(t, conn, `SELECT coalesce(confirmed_flush_lsn, '0/0')::text FROM pg_replication_slots WHERE slot_name = $1`, slot)
}

// commitEnd runs sql in one transaction and returns the end LSN of its commit record:
// the position the source may confirm once it handled it.
func commitEnd(t testing.TB, conn *pgx.Conn, sql string) pglogrepl.LSN {
	t.Helper()
	return pgtest.CommitEnd(t, conn, sql)
}

const massReset = `UPDATE public.users SET password_hash = md5(password_hash), username = username`

func TestMassUpdateIsOneEventWithChangedColumns(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seed(t, db, 20000)
	st := startSource(t, db, &sourcetest.Recorder{}, nil)

	start := time.Now()
	db.Exec(t, massReset)
	sourcetest.Eventually(t, 5*time.Second, "UPDATE event for public.users", func() bool {
		return len(st.sink.Find(isOp("public.users", OperationUpdate))) > 0
	})
	t.Logf("event after %v", time.Since(start))
	db.Exec(t, `UPDATE public.accounts SET email = 'x' || email`)
	sourcetest.Eventually(t, 5*time.Second, "UPDATE event for public.accounts", func() bool {
		return len(st.sink.Find(isOp("public.accounts", OperationUpdate))) > 0
	})

	got := st.sink.Find(isOp("public.users", OperationUpdate))
	if len(got) != 1 {
		t.Fatalf("got %d UPDATE events for public.users, want 1 (one per transaction): %+v", len(got), got)
	}
	e := got[0]
	if e.Rows != 20000 || e.Calls != 1 || !e.Complete || e.Source != Name || e.Database != db.Name ||
		!slices.Equal(e.Changed, []string{"password_hash"}) || e.Time.IsZero() || e.LSN == 0 || e.SensitiveRead != nil {
		t.Errorf("got %+v, want a complete wal UPDATE of 20000 rows changing password_hash only", e)
	}
	// Without REPLICA IDENTITY FULL the old values are not sent: unknown, not guessed.
	acc := st.sink.Find(isOp("public.accounts", OperationUpdate))
	if len(acc) != 1 || acc[0].Rows != 10 || acc[0].Complete || acc[0].Changed != nil {
		t.Errorf("accounts: got %+v, want one incomplete UPDATE of 10 rows with no changed columns claimed", acc)
	}
	if got := testutil.ToFloat64(st.src.metrics.changes.WithLabelValues(OperationUpdate)); got != 20010 {
		t.Errorf("pgtripwire_wal_changes_total{operation=UPDATE}: got %v, want 20010", got)
	}
	if got := testutil.ToFloat64(st.src.metrics.slotActive); got != 1 {
		t.Errorf("slot active: got %v, want 1", got)
	}
}

func TestConfirmsOnlyWhatTheSinkAccepted(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seed(t, db, 1000)
	rec := &sourcetest.Recorder{}
	sink := &refusingSink{rec: rec}
	st := startSourceSink(t, db, rec, sink, nil, nil)
	conn := connect(t, db)

	sink.refuse(true)
	end := commitEnd(t, conn, massReset)
	// Refused again and again, across reconnects: the transaction is offered each
	// time, so it was not confirmed.
	sourcetest.Eventually(t, 10*time.Second, "three refused hand-overs", func() bool { return sink.refusals() >= 3 })
	if got := confirmedFlush(t, conn, st.slot); got >= end {
		t.Fatalf("while the sink refuses: confirmed_flush_lsn %s, want before the transaction's end %s", got, end)
	}
	if lag := testutil.ToFloat64(st.src.metrics.lag); lag <= 0 {
		t.Errorf("pgtripwire_replication_lag_bytes while the sink refuses: got %v, want > 0", lag)
	}
	if n := testutil.ToFloat64(st.src.metrics.reconnects); n < 2 {
		t.Errorf("reconnects: got %v, want >= 2", n)
	}
	if n := st.sourceErrors(t); n < 2 {
		t.Errorf(`pgtripwire_source_errors_total{source="wal"}: got %v, want >= 2`, n)
	}

	sink.refuse(false)
	sourcetest.Eventually(t, 10*time.Second, "the transaction, once accepted", func() bool {
		return len(rec.Find(isOp("public.users", OperationUpdate))) > 0
	})
	sourcetest.Eventually(t, 5*time.Second, "confirmed_flush_lsn past the transaction's end", func() bool {
		return confirmedFlush(t, conn, st.slot) >= end
	})
	sourcetest.Eventually(t, 5*time.Second, "replication lag back to zero", func() bool {
		return testutil.ToFloat64(st.src.metrics.lag) == 0
	})
	if got := rec.Find(isOp("public.users", OperationUpdate)); len(got) != 1 || got[0].Rows != 1000 {
		t.Errorf("got %+v, want the transaction accepted exactly once, with 1000 rows", got)
	}
}

func TestIdleSlotAdvances(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seed(t, db, 10)
	st := startSource(t, db, &sourcetest.Recorder{}, nil)
	conn := connect(t, db)

	for range 20 {
		db.Exec(t, `INSERT INTO public.audit (note) SELECT 'n' FROM generate_series(1, 100)`)
	}
	now := lsnOf(t, conn, `SELECT pg_current_wal_insert_lsn()::text`)
	sourcetest.Eventually(t, 10*time.Second, "slot past the unpublished writes", func() bool {
		return confirmedFlush(t, conn, st.slot) >= now
	})
	if got := st.sink.Find(func(model.Event) bool { return true }); len(got) != 0 {
		t.Errorf("got events %+v for unpublished tables, want none", got)
	}
}

func TestMessagesBecomeEvents(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seed(t, db, 10)
	st := startSource(t, db, &sourcetest.Recorder{}, nil)

	db.Exec(t, `SELECT pg_logical_emit_message(true, 'other.app', 'x')`)
	db.Exec(t, `SELECT pg_logical_emit_message(true, 'pgtripwire.test', 'x')`)
	db.Exec(t, `SELECT pg_logical_emit_message(false, 'pgtripwire.nontx', 'y')`)
	sourcetest.Eventually(t, 5*time.Second, "message events", func() bool {
		return len(st.sink.Find(isMessage("pgtripwire.test"))) == 1 && len(st.sink.Find(isMessage("pgtripwire.nontx"))) == 1
	})
	if got := st.sink.Find(isMessage("other.app")); len(got) != 0 {
		t.Errorf("got %+v for another prefix, want nothing", got)
	}
	if e := st.sink.Find(isMessage("pgtripwire.test"))[0]; e.Source != Name || e.Database != db.Name || e.Time.IsZero() {
		t.Errorf("got %+v, want a wal event of this database with its commit time", e)
	}
}

func TestRolledBackWorkRaisesNothing(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seed(t, db, 1000)
	st := startSource(t, db, &sourcetest.Recorder{}, nil)
	conn := connect(t, db)

	ctx := context.Background()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM public.users`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	db.Exec(t, `SELECT pg_logical_emit_message(true, 'pgtripwire.marker', '')`)
	sourcetest.Eventually(t, 5*time.Second, "the marker after the rollback", func() bool {
		return len(st.sink.Find(isMessage("pgtripwire.marker"))) == 1
	})
	if got := st.sink.Find(isOp("public.users", OperationDelete)); len(got) != 0 {
		t.Errorf("got %+v for a rolled-back DELETE, want nothing", got)
	}
}

// A walsender with a tiny logical_decoding_work_mem streams large transactions before
// they commit (protocol 2): they are aggregated all the same; aborted ones, and
// rolled-back subtransactions, count for nothing.
func TestStreamedTransactions(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seed(t, db, 20000)
	st := startSource(t, db, &sourcetest.Recorder{}, map[string]string{"logical_decoding_work_mem": "64kB"})
	conn := connect(t, db)
	ctx := context.Background()

	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM public.users`); err != nil {
		t.Fatal(err)
	}
	// Streamed before the abort, so the decoder saw its changes and must drop them.
	sourcetest.Eventually(t, 10*time.Second, "the aborted transaction streamed", func() bool {
		return testutil.ToFloat64(st.src.metrics.streamBlocks) > 0
	})
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	db.Exec(t, `BEGIN;
		SAVEPOINT s;
		UPDATE public.users SET email = email || '.x';
		ROLLBACK TO SAVEPOINT s;
		UPDATE public.users SET password_hash = 'p' WHERE id <= 5;
		COMMIT`)
	db.Exec(t, massReset)
	sourcetest.Eventually(t, 10*time.Second, "two streamed UPDATE events", func() bool {
		return len(st.sink.Find(isOp("public.users", OperationUpdate))) == 2
	})
	got := st.sink.Find(isOp("public.users", OperationUpdate))
	if got[0].Rows != 5 || !slices.Equal(got[0].Changed, []string{"password_hash"}) {
		t.Errorf("savepoint transaction: got %+v, want 5 rows changing password_hash (the rolled-back subtransaction dropped)", got[0])
	}
	if got[1].Rows != 20000 || !slices.Equal(got[1].Changed, []string{"password_hash"}) || !got[1].Complete {
		t.Errorf("mass reset: got %+v, want 20000 rows changing password_hash", got[1])
	}
	if del := st.sink.Find(isOp("public.users", OperationDelete)); len(del) != 0 {
		t.Errorf("got %+v for an aborted streamed DELETE, want nothing", del)
	}
	// Nothing of the aborted transaction is left in flight: the slot still advances.
	db.Exec(t, `INSERT INTO public.audit (note) VALUES ('n')`)
	now := lsnOf(t, conn, `SELECT pg_current_wal_insert_lsn()::text`)
	sourcetest.Eventually(t, 10*time.Second, "slot past the aborted transaction", func() bool {
		return confirmedFlush(t, conn, st.slot) >= now
	})
}

// Tables whose names need quoting (a keyword, upper case) are named in the
// configuration as the catalog quotes them: the source must create the publication
// with them and recognise their changes under those names.
func TestQuotedTableNames(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	db.Exec(t, `CREATE TABLE public."user" (id int PRIMARY KEY, email text);
		CREATE TABLE public."Accounts" (id int PRIMARY KEY, email text);
		ALTER TABLE public."user" REPLICA IDENTITY FULL;
		INSERT INTO public."user" SELECT i, 'u' || i FROM generate_series(1, 10) i;
		INSERT INTO public."Accounts" SELECT i, 'a' || i FROM generate_series(1, 10) i`)
	st := startSourceWith(t, db, &sourcetest.Recorder{}, nil, func(c *Config) {
		c.Tables = map[string][]string{`public."user"`: {"email"}, `public."Accounts"`: {"email"}}
		c.Publication = "quoted"
	})
	db.Exec(t, `UPDATE public."user" SET email = email || 'x'`)
	db.Exec(t, `DELETE FROM public."Accounts"`)
	sourcetest.Eventually(t, 5*time.Second, `UPDATE of public."user" and DELETE from public."Accounts"`, func() bool {
		return len(st.sink.Find(isOp(`public."user"`, OperationUpdate))) == 1 &&
			len(st.sink.Find(isOp(`public."Accounts"`, OperationDelete))) == 1
	})
	if got := st.sink.Find(isOp(`public."user"`, OperationUpdate)); got[0].Rows != 10 || !slices.Equal(got[0].Changed, []string{"email"}) {
		t.Errorf("got %+v, want 10 rows with email changed", got[0])
	}
}

// In auto mode (sources.wal.enabled: auto) the source streams only from a slot and a
// publication that `pgtripwire setup` prepared, with a role that may replicate. Else it
// is off: Run returns nil at once, having created nothing and counted no error, and the
// source no longer holds the detector's readiness back.
func TestAutoStreamsOnlyWhatSetupPrepared(t *testing.T) {
	t.Parallel()
	const publication, slotPlaceholder = "auto_pub", "$slot"
	for _, tc := range []struct {
		name              string
		slot, publication bool   // prepared in the monitored database
		slotElsewhere     bool   // a slot of the same name in another database
		role              string // connect as this role, which may not replicate; "" the superuser
		wantOn            bool
		wantWhy           string // in the warning saying why the source is off
	}{
		{name: "slot and publication", slot: true, publication: true, wantOn: true},
		{name: "no slot", publication: true, wantWhy: "the slot " + slotPlaceholder + " does not exist"},
		{name: "no publication", slot: true, wantWhy: "the publication " + publication + " does not exist"},
		{name: "slot of another database", publication: true, slotElsewhere: true,
			wantWhy: "the slot " + slotPlaceholder + " does not exist in this database"},
		{name: "role without replication", slot: true, publication: true, role: "wal_auto_no_replication",
			wantWhy: "may not open a replication connection"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := pgtest.NewDatabase(t)
			seed(t, db, 10)
			slot := db.Name
			createSlot := `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`
			if tc.publication {
				db.Exec(t, `CREATE PUBLICATION `+publication+` FOR TABLE public.users, public.accounts`)
			}
			if tc.slot {
				db.Exec(t, createSlot, slot)
			}
			if tc.slotElsewhere {
				pgtest.NewDatabaseIn(t, db.Server).Exec(t, createSlot, slot)
			}
			auto := func(c *Config) { c.Auto, c.Publication = true, publication }
			if tc.wantOn {
				st := startSourceWith(t, db, &sourcetest.Recorder{}, nil, auto)
				db.Exec(t, `UPDATE public.accounts SET email = 'x' || email`)
				sourcetest.Eventually(t, 5*time.Second, "UPDATE event for public.accounts", func() bool {
					return len(st.sink.Find(isOp("public.accounts", OperationUpdate))) == 1
				})
				return
			}

			dsn := db.SuperuserDSN()
			if tc.role != "" {
				db.CreateRole(t, tc.role)
				dsn = db.DSN(tc.role)
			}
			reg := prometheus.NewRegistry()
			h := health.New(reg)
			h.Register(Name)
			cfg := testConfig(t, dsn, slot, nil, reg)
			auto(&cfg)
			core, logs := observer.New(zap.WarnLevel)
			src := New(cfg, &sourcetest.Recorder{}, h, zap.New(core), reg)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- src.Run(ctx) }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run: got %v, want nil (off)", err)
				}
			case <-time.After(20 * time.Second):
				_, why := h.Ready()
				cancel()
				<-done
				t.Fatalf("Run did not return within 20s: the source is not off (health: %q)", why[Name])
			}
			wantWhy := strings.ReplaceAll(tc.wantWhy, slotPlaceholder, slot)
			if off := logs.FilterMessage("source off").All(); len(off) != 1 ||
				!strings.Contains(fmt.Sprint(off[0].ContextMap()["error"]), wantWhy) {
				t.Errorf("warnings: got %+v, want one saying the source is off because %s", logs.All(), wantWhy)
			}
			if _, why := h.Ready(); why[Name] != "" {
				t.Errorf("health after Run: got %q, want the component forgotten", why[Name])
			}
			if n := sourceCounter(t, reg, "pgtripwire_source_errors_total"); n != 0 {
				t.Errorf(`pgtripwire_source_errors_total{source="wal"}: got %v, want 0: off is not a failure`, n)
			}
			var slots, publications int
			if err := connect(t, db).QueryRow(t.Context(), `SELECT
				(SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()),
				(SELECT count(*) FROM pg_publication WHERE pubname = $2)`, slot, publication).Scan(&slots, &publications); err != nil {
				t.Fatal(err)
			}
			if (slots == 1) != tc.slot || (publications == 1) != tc.publication {
				t.Errorf("got %d slots and %d publications, want %v and %v: auto mode created what setup did not",
					slots, publications, tc.slot, tc.publication)
			}
		})
	}
}
