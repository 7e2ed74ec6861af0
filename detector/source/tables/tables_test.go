package tables

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
	"github.com/pgtripwire/pgtripwire/detector/health"
	"github.com/pgtripwire/pgtripwire/detector/source/statements"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type recorder struct {
	mu     sync.Mutex
	events []model.Event
}

func (r *recorder) HandleEvents(_ context.Context, events []model.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, events...)
	return nil
}

func (r *recorder) of(source model.Source) []model.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []model.Event
	for _, e := range r.events {
		if e.Source == source {
			out = append(out, e)
		}
	}
	return out
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type runner interface{ Run(context.Context) error }

func run(t *testing.T, r runner) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: got %v, want context.Canceled", err)
		}
	})
}

// start runs the statements source and the tables source as the detector wires them (the
// statements events pass through Observing), both every second, and returns their sink.
func start(t *testing.T, db *pgtest.Database) *recorder {
	t.Helper()
	sink := &recorder{}
	startWith(t, db, sink)
	return sink
}

// startWith is start with the sink given, and returns the sources' registry.
func startWith(t *testing.T, db *pgtest.Database, sink Sink) *prometheus.Registry {
	t.Helper()
	conn, err := pgx.ParseConfig(db.SuperuserDSN())
	if err != nil {
		t.Fatal(err)
	}
	sensitive := map[string][]string{"public.users": {"email", "username", "password_hash"}}
	reg := prometheus.NewRegistry()
	h := health.New(reg)
	h.Register(Component)
	h.Register(statements.Component)
	// No warm-up: these tests read only after the source is healthy, and wait for the
	// counters themselves.
	tables := New(Config{Conn: conn, Interval: time.Second, Sensitive: sensitive, WarmUp: time.Nanosecond,
		ReconnectInitial: 100 * time.Millisecond}, sink, h, zap.NewNop(), reg)
	stmts := statements.New(statements.Config{Conn: conn, Interval: time.Second, CatalogRefresh: time.Minute,
		SearchPath: []string{"$user", "public"}, Sensitive: sensitive}, tables.Observing(sink), h, zap.NewNop(), reg)
	run(t, tables)
	run(t, stmts)
	eventually(t, 20*time.Second, "healthy sources", func() bool { ok, _ := h.Ready(); return ok })
	eventually(t, 10*time.Second, "the end of the warm-up", func() bool {
		return gaugeValue(t, reg, "pgtripwire_tables_baseline_complete") == 1
	})
	return reg
}

// gaugeValue is the value of an unlabelled gauge of reg, 0 when it does not exist.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	if m := metric(t, reg, name); m != nil {
		return m.GetGauge().GetValue()
	}
	return 0
}

// polls is the number of successful polls of the tables source so far.
func polls(t *testing.T, reg *prometheus.Registry) uint64 {
	t.Helper()
	if m := metric(t, reg, "pgtripwire_tables_poll_duration_seconds"); m != nil {
		return m.GetHistogram().GetSampleCount()
	}
	return 0
}

func metric(t *testing.T, reg *prometheus.Registry, name string) *dto.Metric {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) > 0 {
			return f.GetMetric()[0]
		}
	}
	return nil
}

// server is a cluster with pg_stat_statements' production default, track = top: what a
// function reads inside is not a statement of its own.
func server(t *testing.T) *pgtest.Database {
	t.Helper()
	db := pgtest.NewDatabaseIn(t, pgtest.NewServer(t, map[string]string{"pg_stat_statements.track": "top"}))
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, username text, password_hash text)`)
	db.Exec(t, `INSERT INTO public.users SELECT i, 'u' || i || '@example.com', 'u' || i, md5(i::text)
		FROM generate_series(1, 40000) i`)
	db.CreateRole(t, "tables_reader")
	db.Exec(t, `GRANT SELECT ON public.users TO tables_reader`)
	return db
}

// Acceptance 3: SELECT table_to_xml('users', …) by a non-superuser returns one row; the
// 40,000 tuples it read are unexplained within 5 s.
func TestTableToXMLIsUnexplained(t *testing.T) {
	db := server(t)
	sink := start(t, db)
	conn := db.Conn(t, "tables_reader")
	var size int
	if err := conn.QueryRow(t.Context(), `SELECT length(table_to_xml('users', true, false, '')::text)`).Scan(&size); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	// PostgreSQL publishes a backend's table statistics when it goes idle, but waits up
	// to 10 s (PGSTAT_IDLE_INTERVAL) when it published less than a second before (at
	// connection start, say): the 5 s count from when the reads are visible.
	waitForReads(t, db, 40_000)
	visible := time.Now()
	eventually(t, 5*time.Second, "unexplained reads", func() bool { return len(sink.of(model.SourceTables)) > 0 })
	t.Logf("reads visible after %s, reported after %s", visible.Sub(begin).Round(time.Millisecond),
		time.Since(begin).Round(time.Millisecond))
	ev := sink.of(model.SourceTables)[0]
	if ev.Kind != KindUnexplainedReads || ev.Relation != "public.users" || ev.Rows < 40_000 || ev.Database != db.Name ||
		ev.Complete || ev.Calls != 0 {
		t.Errorf("got %+v, want unexplained reads of at least 40000 rows of public.users, incomplete, no calls", ev)
	}
}

// flakySink refuses the first hand-over that carries a tables event, as a pipeline that
// cannot write its alert log would, and records what it accepts.
type flakySink struct {
	recorder
	mu      sync.Mutex
	refused int
}

func (f *flakySink) HandleEvents(ctx context.Context, events []model.Event) error {
	f.mu.Lock()
	refuse := f.refused == 0 && slices.ContainsFunc(events, func(e model.Event) bool { return e.Source == model.SourceTables })
	if refuse {
		f.refused++
	}
	f.mu.Unlock()
	if refuse {
		return errors.New("alert log refuses writes")
	}
	return f.recorder.HandleEvents(ctx, events)
}

func (f *flakySink) refusals() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refused
}

// Unexplained reads whose hand-over failed are offered again, and reported once.
func TestUnexplainedReadsSurviveAFailedHandOver(t *testing.T) {
	db := server(t)
	sink := &flakySink{}
	reg := startWith(t, db, sink)
	conn := db.Conn(t, "tables_reader")
	if _, err := conn.Exec(t.Context(), `SELECT length(table_to_xml('users', true, false, '')::text)`); err != nil {
		t.Fatal(err)
	}
	waitForReads(t, db, 40_000)
	eventually(t, 10*time.Second, "unexplained reads after the refused hand-over", func() bool {
		return len(sink.of(model.SourceTables)) > 0
	})
	if got := sink.refusals(); got != 1 {
		t.Fatalf("refused hand-overs: got %d, want 1 (the reads were reported without being refused first)", got)
	}
	// Three more polls: the reads must not come again.
	after := polls(t, reg) + 3
	eventually(t, 10*time.Second, "three more polls", func() bool { return polls(t, reg) >= after })
	got := sink.of(model.SourceTables)
	if len(got) != 1 || got[0].Relation != "public.users" || got[0].Rows < 40_000 || got[0].Rows >= 80_000 {
		t.Errorf("got %+v, want one event of the 40,000 reads of public.users", got)
	}
}

// Lookups by index, and a bulk read that the statements source sees, are explained.
func TestOrdinaryReadsAreExplained(t *testing.T) {
	db := server(t)
	sink := start(t, db)
	conn := db.Conn(t, "tables_reader")
	for i := range 500 {
		if _, err := conn.Exec(t.Context(), `SELECT email, password_hash FROM users WHERE id = $1`, i+1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.Exec(t.Context(), `SELECT email, password_hash FROM users`); err != nil {
		t.Fatal(err)
	}
	// The bulk read's statement event shows the statements source has seen it; the
	// tables source then needs its grace period and a poll.
	eventually(t, 10*time.Second, "statement event of the bulk read", func() bool {
		for _, e := range sink.of(model.SourceStatements) {
			if e.Rows >= 40_000 {
				return true
			}
		}
		return false
	})
	// Table statistics may reach the server up to 10 s after the statement: wait for
	// them, then for the grace period and a poll.
	waitForReads(t, db, 40_000)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if got := sink.of(model.SourceTables); len(got) > 0 {
			t.Fatalf("explained reads reported: %+v", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitForReads waits until pg_stat_user_tables shows at least n tuples read
// sequentially from public.users.
func waitForReads(t *testing.T, db *pgtest.Database, n int64) {
	t.Helper()
	su := db.Conn(t, "postgres")
	eventually(t, 20*time.Second, "table statistics of the reads", func() bool {
		var read int64
		if err := su.QueryRow(t.Context(), `SELECT seq_tup_read FROM pg_stat_user_tables
			WHERE relid = 'public.users'::regclass`).Scan(&read); err != nil {
			t.Fatal(err)
		}
		return read >= n
	})
}

func TestSettle(t *testing.T) {
	at := time.Unix(0, 0)
	pending := []amount{{at, 100}, {at, 50}}
	credits := []amount{{at, 120}, {at, 10}}
	got := settle(pending, credits)
	if len(got) != 1 || got[0].rows != 20 {
		t.Errorf("pending: got %v, want one read of 20 left", got)
	}
	if credits[0].rows != 0 || credits[1].rows != 0 {
		t.Errorf("credits: got %v, want both used", credits)
	}
}

func TestReadsBetween(t *testing.T) {
	for _, tc := range []struct {
		name string
		p, c counters
		want int64
	}{
		{"seq scan", counters{0, 0, 0}, counters{40000, 0, 0}, 40000},
		{"lookups", counters{0, 0, 0}, counters{0, 500, 500}, 0},
		{"bulk index read", counters{0, 0, 0}, counters{0, 40000, 1}, 39990},
		{"reset", counters{5000, 10, 10}, counters{300, 0, 0}, 300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := readsBetween(tc.p, tc.c, 10); got != tc.want {
				t.Errorf("got %d, want %d", got, tc.want)
			}
		})
	}
}

// Reads published in the seconds after the first poll were made before it (a backend
// publishes its counters up to 10 s late): they are history, not unexplained reads.
func TestWarmUpAbsorbsLateCounters(t *testing.T) {
	s := New(Config{Interval: time.Second, Sensitive: map[string][]string{"public.users": {"email"}}},
		&recorder{}, nil, zap.NewNop(), prometheus.NewRegistry())
	t0 := time.Unix(1_700_000_000, 0)
	poll := func(at time.Duration, seqRead int64) []model.Event {
		next, events := s.account(t0.Add(at), "app", map[string]counters{"public.users": {seqRead: seqRead}})
		s.commit(next)
		return events
	}
	poll(0, 0)
	if got := poll(5*time.Second, 900_000); len(got) != 0 {
		t.Errorf("during the warm-up: got %+v, want nothing", got)
	}
	poll(12*time.Second, 900_000)
	poll(13*time.Second, 940_000)
	got := poll(15*time.Second, 940_000)
	if len(got) != 1 || got[0].Rows != 40_000 {
		t.Errorf("after the warm-up: got %+v, want one event of the 40,000 new reads", got)
	}
}

// TestCountersAreThoseOfPgStatUserTables checks that countersQuery, which calls the
// statistics functions for the configured tables only, reads what pg_stat_user_tables
// shows: the sum over a partitioned table's partitions, sequential and index reads, a
// table without indexes, and nothing for a view or a table that does not exist.
func TestCountersAreThoseOfPgStatUserTables(t *testing.T) {
	db := pgtest.NewDatabase(t)
	db.Exec(t, `
		CREATE SCHEMA "Odd schema";
		CREATE TABLE "Odd schema".events (id int, at date, payload text) PARTITION BY RANGE (at);
		CREATE TABLE "Odd schema".events_1 PARTITION OF "Odd schema".events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
		CREATE TABLE "Odd schema".events_2 PARTITION OF "Odd schema".events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
		CREATE INDEX ON "Odd schema".events (id);
		INSERT INTO "Odd schema".events SELECT i, date '2024-06-01' + (i % 400), 'p' || i FROM generate_series(1, 2000) i;
		CREATE TABLE public.heap_only (id int, v text);
		INSERT INTO public.heap_only SELECT i, 'v' FROM generate_series(1, 300) i;
		CREATE VIEW public.a_view AS SELECT * FROM public.heap_only;
		ANALYZE`)
	db.Exec(t, `SET enable_seqscan = off; SELECT count(payload) FROM "Odd schema".events WHERE id < 500;
		RESET enable_seqscan; SELECT count(*) FROM "Odd schema".events; SELECT count(*) FROM public.heap_only`)

	conn := db.Conn(t, "postgres")
	ctx := t.Context()
	// A backend publishes its counters at the end of its transaction at the latest one
	// second later: wait until the view shows the reads.
	eventually(t, 15*time.Second, "counters published", func() bool {
		var n int64
		if err := conn.QueryRow(ctx, `SELECT coalesce(sum(idx_tup_fetch), 0) FROM pg_stat_user_tables
			WHERE schemaname = 'Odd schema'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	})
	if _, err := conn.Exec(ctx, `SELECT pg_stat_clear_snapshot()`); err != nil {
		t.Fatal(err)
	}

	tables := []string{`"Odd schema".events`, "public.heap_only", "public.a_view", "public.missing"}
	var idx []int32
	var schemas, names []string
	for i, q := range tables {
		schema, name, err := catalog.ParseQualifiedName(q)
		if err != nil {
			t.Fatal(err)
		}
		idx, schemas, names = append(idx, int32(i)), append(schemas, schema), append(names, name)
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}) // one statistics snapshot
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, `SET LOCAL stats_fetch_consistency = snapshot`); err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(ctx, countersQuery, idx, schemas, names)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]counters{}
	var i int32
	var c counters
	if _, err := pgx.ForEachRow(rows, []any{&i, &c.seqRead, &c.idxFetch, &c.idxScan}, func() error {
		got[tables[i]] = c
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := map[string]counters{}
	for _, w := range []struct {
		table, where string
	}{
		{`"Odd schema".events`, `schemaname = 'Odd schema'`},
		{"public.heap_only", `schemaname = 'public' AND relname = 'heap_only'`},
	} {
		if err := tx.QueryRow(ctx, `SELECT sum(coalesce(seq_tup_read, 0))::bigint, sum(coalesce(idx_tup_fetch, 0))::bigint,
			sum(coalesce(idx_scan, 0))::bigint FROM pg_stat_user_tables WHERE `+w.where).
			Scan(&c.seqRead, &c.idxFetch, &c.idxScan); err != nil {
			t.Fatal(err)
		}
		want[w.table] = c
	}
	if len(got) != len(want) || got[tables[0]] != want[tables[0]] || got[tables[1]] != want[tables[1]] {
		t.Errorf("counters: got %+v, want %+v (pg_stat_user_tables)", got, want)
	}
	if w := want[tables[0]]; w.seqRead == 0 || w.idxFetch == 0 || w.idxScan == 0 {
		t.Errorf("the partitioned table's reads were not all published: %+v", w)
	}
}
