package tables

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/detector/source/activity"
	"github.com/pgtripwire/pgtripwire/detector/source/statements"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/sourcetest"
	"github.com/pgtripwire/pgtripwire/model"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// observedBy is the detector's wiring of a source.Observer: the events sink accepted
// are shown to obs.
type observedBy struct {
	sink source.Sink
	obs  source.Observer
}

func (o observedBy) HandleEvents(ctx context.Context, events []model.Event) error {
	if err := o.sink.HandleEvents(ctx, events); err != nil {
		return err
	}
	o.obs.Observe(events)
	return nil
}

// started is the statements and tables sources running as the detector wires them.
type started struct {
	// tables holds the tables source's events; statements the statements source's,
	// which the tables source observes once accepted.
	tables, statements *sourcetest.Recorder
	// reg holds the tables source's metrics and those of its polling loop.
	reg *prometheus.Registry
}

// start runs the statements source and the tables source as the detector wires them
// (each on its own connection, the statements events shown to the tables source), both
// every second, and waits until both are healthy and the tables source's warm-up is over.
func start(t *testing.T, db *pgtest.Database) *started {
	t.Helper()
	return startWith(t, db, &sourcetest.Recorder{}, nil)
}

// startWith is start with the tables source's sink given and, when readers is not nil,
// the activity sampler running too (on its own connection, every second), noting the
// readers of the sensitive tables in readers, which the tables source reads.
func startWith(t *testing.T, db *pgtest.Database, sink *sourcetest.Recorder, readers *source.Readers) *started {
	return startSampling(t, db, sink, readers, false)
}

// startSampling is startWith, with the tables source sampling the readers itself
// (Config.SampleReaders, as on a server shared by many databases) when self is true,
// instead of the activity sampler.
func startSampling(t *testing.T, db *pgtest.Database, sink *sourcetest.Recorder, readers *source.Readers, self bool) *started {
	t.Helper()
	conn, err := pgx.ParseConfig(db.SuperuserDSN())
	if err != nil {
		t.Fatal(err)
	}
	sensitive := map[string][]string{"public.users": {"email", "username", "password_hash"}}
	st := &started{tables: sink, statements: &sourcetest.Recorder{}, reg: prometheus.NewRegistry()}
	// No warm-up: these tests read only after the source is healthy, and wait for the
	// counters themselves.
	tables := New(Config{Interval: time.Second, Sensitive: sensitive, WarmUp: time.Nanosecond, Readers: readers,
		SampleReaders: self}, sink, zap.NewNop(), st.reg)
	stmts := statements.New(statements.Config{CatalogRefresh: time.Minute, SearchPath: []string{"$user", "public"},
		Sensitive: sensitive}, observedBy{sink: st.statements, obs: tables}, zap.NewNop(), st.reg)
	ht := sourcetest.Start(t, conn, st.reg, source.Polled{Name: Name, Poller: tables, Interval: time.Second})
	// A loop of its own, as in the detector; its loop metrics and health in another
	// registry, which one loop's metrics occupy.
	hs := sourcetest.Start(t, conn, nil, source.Polled{Name: statements.Name, Poller: stmts, Interval: time.Second})
	sourcetest.WaitReady(t, ht)
	sourcetest.WaitReady(t, hs)
	if readers != nil && !self {
		sampler := activity.NewActivity(activity.Config{Sensitive: sensitive, Readers: readers}, &sourcetest.Recorder{},
			zap.NewNop(), prometheus.NewRegistry())
		sourcetest.WaitReady(t, sourcetest.Start(t, conn, nil, source.Polled{Name: activity.Name, Poller: sampler, Interval: time.Second}))
	}
	sourcetest.Eventually(t, 10*time.Second, "the end of the warm-up", func() bool {
		m := metric(t, st.reg, "pgtripwire_tables_baseline_complete", "")
		return m != nil && m.GetGauge().GetValue() == 1
	})
	return st
}

// polls is the number of successful polls of the tables source so far.
func (st *started) polls(t *testing.T) float64 {
	t.Helper()
	m := metric(t, st.reg, "pgtripwire_source_polls_total", Name)
	if m == nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

// waitPolls waits until n more polls of the tables source succeeded than when it was
// called.
func (st *started) waitPolls(t *testing.T, n int) {
	t.Helper()
	want := st.polls(t) + float64(n)
	sourcetest.Eventually(t, 10*time.Second, fmt.Sprintf("%d more polls", n), func() bool { return st.polls(t) >= want })
}

// metric returns the series of reg's metric name labelled with source, or its first
// series when source is "", and nil when there is none.
func metric(t *testing.T, reg *prometheus.Registry, name, source string) *dto.Metric {
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
			if source == "" {
				return m
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == "source" && l.GetValue() == source {
					return m
				}
			}
		}
	}
	return nil
}

// of returns the events of src that r recorded.
func of(r *sourcetest.Recorder, src model.Source) []model.Event {
	return r.Find(func(e model.Event) bool { return e.Source == src })
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
	st := start(t, db)
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
	sourcetest.Eventually(t, 5*time.Second, "unexplained reads", func() bool { return len(of(st.tables, Name)) > 0 })
	t.Logf("reads visible after %s, reported after %s", visible.Sub(begin).Round(time.Millisecond),
		time.Since(begin).Round(time.Millisecond))
	ev := of(st.tables, Name)[0]
	if ev.Kind != KindUnexplainedReads || ev.Relation != "public.users" || ev.Rows < 40_000 || ev.Database != db.Name ||
		ev.Complete || ev.Calls != 0 {
		t.Errorf("got %+v, want unexplained reads of at least 40000 rows of public.users, incomplete, no calls", ev)
	}
}

// A read only the counters see (table_to_xml returns one row), by a transaction long
// enough for the activity sampler to see it holding the table (a sample a second; it
// holds the table 2 s), names its reader; a session of another role reading another
// table at the same time is not named.
//
// On a server watched with many databases the table counters sample the locks
// themselves, in their own round trip (Config.SampleReaders): the reader is named alike.
func TestUnexplainedReadsNameTheirReader(t *testing.T) {
	for _, tc := range []struct {
		name string
		self bool
	}{{"sampled by the activity source", false}, {"sampled by the table counters", true}} {
		t.Run(tc.name, func(t *testing.T) { unexplainedReadsNameTheirReader(t, tc.self) })
	}
}

func unexplainedReadsNameTheirReader(t *testing.T, self bool) {
	db := server(t)
	db.Exec(t, `CREATE TABLE public.orders (id int, total int); INSERT INTO public.orders SELECT i, i FROM generate_series(1, 1000) i`)
	db.CreateRole(t, "tables_bystander")
	db.Exec(t, `GRANT SELECT ON public.orders TO tables_bystander`)
	st := startSampling(t, db, &sourcetest.Recorder{}, source.NewReaders(0), self)

	bystander := db.Conn(t, "tables_bystander")
	if _, err := bystander.Exec(t.Context(), `BEGIN; SELECT count(*) FROM orders`); err != nil {
		t.Fatal(err)
	}
	conn := db.Conn(t, "tables_reader")
	var pid int32
	if err := conn.QueryRow(t.Context(), `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), `BEGIN; SELECT length(table_to_xml('users', true, false, '')::text);
		SELECT pg_sleep(2); COMMIT`); err != nil {
		t.Fatal(err)
	}
	waitForReads(t, db, 40_000)
	sourcetest.Eventually(t, 5*time.Second, "unexplained reads", func() bool { return len(of(st.tables, Name)) > 0 })
	got := of(st.tables, Name)
	if len(got) != 1 || got[0].Role != "tables_reader" || got[0].PID != pid || got[0].ClientAddr != "127.0.0.1" ||
		got[0].Rows < 40_000 {
		t.Errorf("got %+v, want one event of the 40,000 reads by tables_reader (pid %d) from 127.0.0.1", got, pid)
	}
}

// Unexplained reads whose hand-over failed are offered again, and reported once.
func TestUnexplainedReadsSurviveAFailedHandOver(t *testing.T) {
	db := server(t)
	// The tables source's only non-empty hand-overs carry its events: the first is
	// refused, as a pipeline that cannot write its alert log would.
	st := startWith(t, db, &sourcetest.Recorder{Refuse: 1}, nil)
	conn := db.Conn(t, "tables_reader")
	if _, err := conn.Exec(t.Context(), `SELECT length(table_to_xml('users', true, false, '')::text)`); err != nil {
		t.Fatal(err)
	}
	waitForReads(t, db, 40_000)
	sourcetest.Eventually(t, 10*time.Second, "unexplained reads after the refused hand-over", func() bool {
		return len(of(st.tables, Name)) > 0
	})
	if got := st.tables.Refused(); got != 1 {
		t.Fatalf("refused hand-overs: got %d, want 1 (the reads were reported without being refused first)", got)
	}
	// Three more polls: the reads must not come again.
	st.waitPolls(t, 3)
	got := st.tables.Events()
	if len(got) != 1 || got[0].Relation != "public.users" || got[0].Rows < 40_000 || got[0].Rows >= 80_000 {
		t.Errorf("got %+v, want one event of the 40,000 reads of public.users", got)
	}
}

// Lookups by index, and a bulk read that the statements source sees, are explained.
func TestOrdinaryReadsAreExplained(t *testing.T) {
	db := server(t)
	st := start(t, db)
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
	sourcetest.Eventually(t, 10*time.Second, "statement event of the bulk read", func() bool {
		for _, e := range of(st.statements, statements.Name) {
			if e.Rows >= 40_000 {
				return true
			}
		}
		return false
	})
	// Table statistics may reach the server up to 10 s after the statement: wait for
	// them, then for the polls that would report them were they unexplained: the one
	// perhaps under way, the next, which counts them, and two more for the grace period
	// (1 s, one interval, which a tick may fall just short of).
	waitForReads(t, db, 40_000)
	st.waitPolls(t, 4)
	if got := st.tables.Events(); len(got) > 0 {
		t.Fatalf("explained reads reported: %+v", got)
	}
}

// waitForReads waits until pg_stat_user_tables shows at least n tuples read
// sequentially from public.users.
func waitForReads(t *testing.T, db *pgtest.Database, n int64) {
	t.Helper()
	su := db.Conn(t, "postgres")
	sourcetest.Eventually(t, 20*time.Second, "table statistics of the reads", func() bool {
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
	pending := []amount{{at: at, rows: 100}, {at: at, rows: 50}}
	credits := []amount{{at: at, rows: 120}, {at: at, rows: 10}}
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
		&sourcetest.Recorder{}, zap.NewNop(), prometheus.NewRegistry())
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

// Unexplained reads name the sessions seen holding the table while they were made:
// one event per reader (role, client, application), each with all the rows; none seen,
// one role-less event; readers seen only long before, or only after the counters
// moved, are not named.
func TestUnexplainedReadsAttributedToReaders(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	reader := func(role, app string, pid int32) source.Reader {
		return source.Reader{Relation: "public.users", PID: pid, Role: role, ClientAddr: "10.0.0.9", Application: app, Since: at(-30)}
	}
	type sample struct {
		at   float64
		seen []source.Reader
	}
	type named struct {
		role, app string
		pid       int32
	}
	for _, tc := range []struct {
		name    string
		samples []sample
		want    []named
	}{
		{"nobody seen", []sample{{1, nil}, {1.5, nil}, {2, nil}}, []named{{}}},
		{"one reader", []sample{{1, nil}, {1.5, []source.Reader{reader("intruder", "psql", 41)}}, {2, nil}},
			[]named{{"intruder", "psql", 41}}},
		{"one reader in two sessions", []sample{
			{1.2, []source.Reader{reader("intruder", "psql", 41)}},
			{1.5, []source.Reader{reader("intruder", "psql", 41), reader("intruder", "psql", 42)}},
		}, []named{{"intruder", "psql", 0}}},
		{"two readers", []sample{{1.5, []source.Reader{reader("intruder", "psql", 41), reader("app", "web", 7)}}},
			[]named{{"app", "web", 7}, {"intruder", "psql", 41}}},
		// The previous poll was at 1 s: the counters it missed were published after it,
		// by transactions that ended from 1 s - PublishDelay on.
		{"seen long before", []sample{{-20, []source.Reader{reader("earlier", "psql", 5)}}, {-19, nil}, {1.5, nil}},
			[]named{{}}},
		{"seen just before the publication delay", []sample{{-11.5, []source.Reader{reader("earlier", "psql", 5)}}, {-10.5, nil}},
			[]named{{"earlier", "psql", 5}}},
		{"first seen after the counters moved", []sample{{1.5, nil}, {2.5, []source.Reader{reader("later", "psql", 6)}}},
			[]named{{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			readers := source.NewReaders(0)
			s := New(Config{Interval: time.Second, Sensitive: map[string][]string{"public.users": {"email"}},
				WarmUp: time.Nanosecond, Readers: readers}, &sourcetest.Recorder{}, zap.NewNop(), prometheus.NewRegistry())
			poll := func(secs float64, seqRead int64) []model.Event {
				next, events := s.account(at(secs), "app", map[string]counters{"public.users": {seqRead: seqRead}})
				s.commit(next)
				return events
			}
			poll(-40, 0) // the baseline
			for _, smp := range tc.samples {
				if smp.at < 1 {
					readers.Note(at(smp.at), smp.seen)
				}
			}
			poll(1, 0)
			for _, smp := range tc.samples {
				if smp.at >= 1 {
					readers.Note(at(smp.at), smp.seen)
				}
			}
			if got := poll(2, 40_000); len(got) != 0 {
				t.Fatalf("within the grace period: got %+v, want nothing yet", got)
			}
			got := poll(3.5, 40_000)
			var gotNamed []named
			for _, ev := range got {
				gotNamed = append(gotNamed, named{ev.Role, ev.Application, ev.PID})
				if ev.Rows != 40_000 || ev.Relation != "public.users" || ev.Kind != KindUnexplainedReads ||
					(ev.Role != "" && ev.ClientAddr != "10.0.0.9") {
					t.Errorf("event %+v: want all 40,000 unexplained reads of public.users, with the reader's client", ev)
				}
			}
			if fmt.Sprint(gotNamed) != fmt.Sprint(tc.want) {
				t.Errorf("readers named: got %v, want %v", gotNamed, tc.want)
			}
		})
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
	sourcetest.Eventually(t, 15*time.Second, "counters published", func() bool {
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
	// PostgreSQL 15 made the statistics snapshot a setting; 14 always takes one per
	// transaction.
	if _, err := tx.Exec(ctx, `SELECT set_config('stats_fetch_consistency', 'snapshot', true)
		WHERE current_setting('server_version_num')::int >= 150000`); err != nil {
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
