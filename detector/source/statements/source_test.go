package statements

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/health"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/sourcetest"
	"github.com/pgtripwire/pgtripwire/model"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type started struct {
	src    *Source
	sink   *sourcetest.Recorder
	health *health.Status
}

// rows sums the rows of the events about role and relation handed over so far.
func (st *started) rows(role, relation string) (n int64, events []model.Event) {
	events = st.sink.Find(func(e model.Event) bool { return e.Role == role && e.Relation == relation })
	for _, e := range events {
		n += e.Rows
	}
	return n, events
}

func startSource(t *testing.T, db *pgtest.Database, sink *sourcetest.Recorder) *started {
	t.Helper()
	return startSourceWith(t, sink, sourceOptions{dsn: db.SuperuserDSN(), interval: 100 * time.Millisecond})
}

func startSourceEvery(t *testing.T, db *pgtest.Database, sink *sourcetest.Recorder, interval time.Duration) *started {
	t.Helper()
	return startSourceWith(t, sink, sourceOptions{dsn: db.SuperuserDSN(), interval: interval})
}

type sourceOptions struct {
	dsn            string
	interval       time.Duration
	noWaitOK       bool          // do not wait for the source to report healthy
	catalogRefresh time.Duration // default 1m
	attribution    *source.Attribution
	stateDir       string
	now            func() time.Time
}

// startSourceWith runs the source on a polling loop, as the detector does, until the
// test ends.
func startSourceWith(t *testing.T, sink *sourcetest.Recorder, o sourceOptions) *started {
	t.Helper()
	conn, err := pgx.ParseConfig(o.dsn)
	if err != nil {
		t.Fatal(err)
	}
	if o.catalogRefresh == 0 {
		o.catalogRefresh = time.Minute
	}
	reg := prometheus.NewRegistry()
	st := &started{sink: sink}
	st.src = New(Config{
		CatalogRefresh: o.catalogRefresh,
		SearchPath:     []string{"$user", "public"},
		Sensitive:      map[string][]string{"public.users": {"email", "username", "password_hash"}},
		Attribution:    o.attribution,
		StateDir:       o.stateDir,
		Now:            o.now,
	}, sink, zap.NewNop(), reg)
	st.health = sourcetest.Start(t, conn, reg, source.Polled{Name: Name, Poller: st.src, Interval: o.interval})
	if !o.noWaitOK {
		sourcetest.WaitReady(t, st.health)
	}
	return st
}

// problem is the source's health problem, "" when healthy or still starting.
func (st *started) problem() string {
	_, why := st.health.Ready()
	if why[Name] == "starting" {
		return ""
	}
	return why[Name]
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

func seed(t *testing.T, db *pgtest.Database, users int, roles ...string) {
	t.Helper()
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, username text, password_hash text);
		CREATE TABLE public.orders (id int, user_id int, total numeric)`)
	db.Exec(t, `INSERT INTO public.users SELECT i, 'u' || i || '@example.com', 'u' || i, md5(i::text)
		FROM generate_series(1, $1::int) i`, users)
	for _, role := range roles {
		db.CreateRole(t, role)
		db.Exec(t, fmt.Sprintf(`GRANT SELECT ON public.users, public.orders TO %s`, role))
	}
}

func query(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	rows, err := conn.Query(t.Context(), sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestEventsPerRoleAndStatement(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seed(t, db, 3000, "stmt_alice", "stmt_bob")
	// Activity before the source starts is history: the first poll is a baseline.
	alice := db.Conn(t, "stmt_alice")
	query(t, alice, `SELECT email FROM users`)
	st := startSource(t, db, &sourcetest.Recorder{})

	query(t, alice, `SELECT email FROM users`)
	query(t, alice, `SELECT email FROM users`)
	bob := db.Conn(t, "stmt_bob")
	query(t, bob, `SELECT * FROM users WHERE id <= $1`, 10)
	query(t, bob, `SELECT id, total FROM orders`)

	sourcetest.Eventually(t, 5*time.Second, "events for both roles", func() bool {
		a, _ := st.rows("stmt_alice", "public.users")
		b, _ := st.rows("stmt_bob", "public.users")
		return a == 6000 && b == 10
	})
	_, aliceEvents := st.rows("stmt_alice", "public.users")
	got := aliceEvents[0]
	if !slices.Equal(got.SensitiveRead, []string{"email"}) || got.Operation != "SELECT" || !got.Complete ||
		got.Database != db.Name || got.Source != Name || got.QueryID == 0 {
		t.Errorf("got %+v, want a complete SELECT event reading email with its queryid", got)
	}
	_, bobEvents := st.rows("stmt_bob", "public.users")
	if !slices.Equal(bobEvents[0].SensitiveRead, []string{"email", "password_hash", "username"}) {
		t.Errorf("SELECT *: got read %v, want every sensitive column", bobEvents[0].SensitiveRead)
	}
	if _, ev := st.rows("stmt_bob", "public.orders"); len(ev) != 0 {
		t.Errorf("got events %v for a non-sensitive table, want none", ev)
	}
	// Texts are fetched once per queryid, not per poll or per call. The source's own
	// statements are new queryids too at first: wait until fetching has settled.
	fetched, since := -1.0, time.Now()
	sourcetest.Eventually(t, 10*time.Second, "text fetching to settle", func() bool {
		if v := testutil.ToFloat64(st.src.metrics.textsFetched); v != fetched {
			fetched, since = v, time.Now()
		}
		return time.Since(since) > time.Second // ten polls without a new text
	})
	query(t, alice, `SELECT email FROM users`)
	sourcetest.Eventually(t, 5*time.Second, "the third read", func() bool {
		a, _ := st.rows("stmt_alice", "public.users")
		return a == 9000
	})
	if got := testutil.ToFloat64(st.src.metrics.textsFetched); got != fetched {
		t.Errorf("texts fetched: got %v after a known statement ran again, want still %v", got, fetched)
	}
}

// Events carry the client the activity samples noted for their (query id, role), and
// none for a role the samples did not see run it: a client is never invented.
func TestEventsCarryTheAttributedClient(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seed(t, db, 100, "stmt_attr_known", "stmt_attr_unknown")
	known, unknown := db.Conn(t, "stmt_attr_known"), db.Conn(t, "stmt_attr_unknown")
	// Run once before the source starts (history, for the baseline) to learn the query
	// id, which does not depend on the role.
	const read = `SELECT email FROM users`
	query(t, known, read)
	query(t, unknown, read)
	var queryID int64
	if err := db.Conn(t, "postgres").QueryRow(t.Context(), `SELECT queryid FROM pg_stat_statements
		WHERE query = $1 AND userid = 'stmt_attr_known'::regrole
		AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())`, read).Scan(&queryID); err != nil {
		t.Fatal(err)
	}
	attr := source.NewAttribution(0, nil)
	attr.Note(queryID, "stmt_attr_known", "10.0.0.7", "billing", time.Now())

	st := startSourceWith(t, &sourcetest.Recorder{}, sourceOptions{dsn: db.SuperuserDSN(), interval: 100 * time.Millisecond, attribution: attr})
	query(t, known, read)
	query(t, unknown, read)
	sourcetest.Eventually(t, 5*time.Second, "events for both roles", func() bool {
		a, _ := st.rows("stmt_attr_known", "public.users")
		b, _ := st.rows("stmt_attr_unknown", "public.users")
		return a == 100 && b == 100
	})
	_, knownEvents := st.rows("stmt_attr_known", "public.users")
	if got := knownEvents[0]; got.QueryID != queryID || got.ClientAddr != "10.0.0.7" || got.Application != "billing" {
		t.Errorf("attributed: got queryid %d client %q application %q, want %d 10.0.0.7 billing",
			got.QueryID, got.ClientAddr, got.Application, queryID)
	}
	_, unknownEvents := st.rows("stmt_attr_unknown", "public.users")
	if got := unknownEvents[0]; got.ClientAddr != "" || got.Application != "" {
		t.Errorf("unattributed: got client %q application %q, want none (never invented)", got.ClientAddr, got.Application)
	}
}

func TestResetCountsEveryEntryFromZero(t *testing.T) {
	t.Parallel()
	// pg_stat_statements_reset() is cluster-wide: a cluster of its own.
	db := pgtest.NewDatabaseIn(t, pgtest.NewServer(t, nil))
	seed(t, db, 2000, "stmt_mallory")
	reads := func(n int) string {
		return "SET ROLE stmt_mallory;" + repeat(" SELECT email, password_hash FROM users;", n)
	}
	db.Exec(t, reads(5)) // 10,000 rows before the start: history
	st := startSourceEvery(t, db, &sourcetest.Recorder{}, time.Second)

	// Between two polls: a reset, then more reads than before it. Without noticing
	// the reset, the counters look like they grew by one call.
	db.Exec(t, "SELECT pg_stat_statements_reset();"+reads(6))
	sourcetest.Eventually(t, 5*time.Second, "the reads after the reset", func() bool {
		rows, _ := st.rows("stmt_mallory", "public.users")
		return rows > 0
	})
	rows, events := st.rows("stmt_mallory", "public.users")
	if rows != 12000 || testutil.ToFloat64(st.src.metrics.resets) != 1 {
		t.Fatalf("got %d rows in %v, resets %v; want 12000 rows (6 calls counted from zero) and 1 reset",
			rows, events, testutil.ToFloat64(st.src.metrics.resets))
	}
}

func TestEvictionsAreCountedAndEvictedEntriesCountInFull(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabaseIn(t, pgtest.NewServer(t, map[string]string{"pg_stat_statements.max": "100"}))
	seed(t, db, 1000, "stmt_eve")
	eve := db.Conn(t, "stmt_eve")
	st := startSource(t, db, &sourcetest.Recorder{})

	query(t, eve, `SELECT username FROM users`)
	sourcetest.Eventually(t, 5*time.Second, "the first read", func() bool {
		rows, _ := st.rows("stmt_eve", "public.users")
		return rows == 1000
	})
	// 300 distinct statements overflow a 100-entry pg_stat_statements.
	for i := range 300 {
		query(t, eve, fmt.Sprintf(`SELECT id%s FROM orders`, repeat(" + 1", i)))
	}
	sourcetest.Eventually(t, 5*time.Second, "evictions counted", func() bool {
		return testutil.ToFloat64(st.src.metrics.evictions) > 0
	})
	query(t, eve, `SELECT username FROM users`)
	sourcetest.Eventually(t, 5*time.Second, "the second read", func() bool {
		rows, _ := st.rows("stmt_eve", "public.users")
		return rows >= 2000
	})
	if rows, events := st.rows("stmt_eve", "public.users"); rows != 2000 {
		t.Fatalf("got %d rows in %v, want 2000: an evicted and re-created entry counts from zero", rows, events)
	}
}

func TestRefusedHandOverIsOfferedAgain(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seed(t, db, 4000, "stmt_carol")
	st := startSource(t, db, &sourcetest.Recorder{Refuse: 2})

	query(t, db.Conn(t, "stmt_carol"), `SELECT password_hash FROM users`)
	sourcetest.Eventually(t, 5*time.Second, "the read delivered", func() bool {
		rows, _ := st.rows("stmt_carol", "public.users")
		return rows > 0
	})
	rows, events := st.rows("stmt_carol", "public.users")
	if rows != 4000 || st.sink.Refused() != 2 {
		t.Fatalf("got %d rows in %v after %d refusals, want 4000 exactly once after 2", rows, events, st.sink.Refused())
	}
}

func TestUnreachableDatabaseIsUnhealthyNotFatal(t *testing.T) {
	t.Parallel()
	conn, err := pgx.ParseConfig("postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	src := New(Config{CatalogRefresh: time.Minute}, &sourcetest.Recorder{}, zap.NewNop(), reg)
	// The loop keeps reconnecting; sourcetest.Start checks it stops cleanly at the end.
	h := sourcetest.Start(t, conn, reg, source.Polled{Name: Name, Poller: src, Interval: time.Second})
	sourcetest.Eventually(t, 5*time.Second, "three failed attempts", func() bool {
		return sourceCounter(t, reg, "pgtripwire_source_errors_total") >= 3
	})
	if ok, why := h.Ready(); ok || why[Name] == "" || why[Name] == "starting" {
		t.Errorf("got ready=%v why=%v, want unready with the connection error", ok, why)
	}
}

func repeat(s string, n int) string {
	out := ""
	for range n {
		out += s
	}
	return out
}

func TestRoleWithoutReadAllStatsIsReportedBlind(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seed(t, db, 100, "stmt_dave")
	db.CreateRole(t, "stmt_unprivileged_detector")
	query(t, db.Conn(t, "stmt_dave"), `SELECT email FROM users`)

	st := startSourceWith(t, &sourcetest.Recorder{}, sourceOptions{
		dsn: db.DSN("stmt_unprivileged_detector"), interval: 100 * time.Millisecond, noWaitOK: true})
	sourcetest.Eventually(t, 10*time.Second, "a health problem", func() bool { return st.problem() != "" })
	if got := st.problem(); !strings.Contains(got, "hidden") || !strings.Contains(got, "pg_read_all_stats") {
		t.Fatalf("got problem %q, want it to say entries are hidden and how to grant pg_read_all_stats", got)
	}
	if got := testutil.ToFloat64(st.src.metrics.hidden); got < 1 {
		t.Errorf("pgtripwire_statements_hidden_entries: got %v, want at least dave's entry", got)
	}
}

func TestMissingExtensionSaysHowToFix(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	db.Exec(t, `DROP EXTENSION pg_stat_statements`)
	st := startSourceWith(t, &sourcetest.Recorder{}, sourceOptions{dsn: db.SuperuserDSN(), interval: 100 * time.Millisecond, noWaitOK: true})
	sourcetest.Eventually(t, 10*time.Second, "a health problem", func() bool { return st.problem() != "" })
	if got := st.problem(); !strings.Contains(got, "CREATE EXTENSION pg_stat_statements") {
		t.Fatalf("got problem %q, want the fix", got)
	}
}

// readThroughCursor reads the whole users table as psql with FETCH_COUNT=500 does.
func readThroughCursor(t *testing.T, conn *pgx.Conn, declare, fetch string) int {
	t.Helper()
	ctx := t.Context()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, declare, pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	total := 0
	for {
		rows, err := tx.Query(ctx, fetch, pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			n++
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		total += n
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return total
}

func TestReadsThroughCursorsAreAttributedToTheirDeclaration(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seed(t, db, 5000, "stmt_frank")
	st := startSourceEvery(t, db, &sourcetest.Recorder{}, time.Second)
	frank := db.Conn(t, "stmt_frank")

	tests := []struct{ name, declare, fetch string }{
		{"psql FETCH_COUNT", `DECLARE _psql_cursor NO SCROLL CURSOR FOR SELECT email, username, password_hash FROM users`,
			`FETCH FORWARD 500 FROM _psql_cursor`},
		{"psycopg2 named cursor", `DECLARE "c_7f3a_1" CURSOR WITHOUT HOLD FOR SELECT * FROM public.users`,
			`FETCH FORWARD 2000 FROM "c_7f3a_1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := st.rows("stmt_frank", "public.users")
			if n := readThroughCursor(t, frank, tt.declare, tt.fetch); n != 5000 {
				t.Fatalf("read %d rows through the cursor, want 5000", n)
			}
			sourcetest.Eventually(t, 5*time.Second, "the fetched rows attributed to public.users", func() bool {
				rows, _ := st.rows("stmt_frank", "public.users")
				return rows-before == 5000
			})
			_, events := st.rows("stmt_frank", "public.users")
			var perCall int64
			for _, e := range events {
				if e.Operation != "FETCH" {
					continue
				}
				if !slices.Equal(e.SensitiveRead, []string{"email", "password_hash", "username"}) {
					t.Errorf("got %+v, want FETCH events reading the cursor's columns", e)
				}
				perCall = max(perCall, e.RowsPerCall())
			}
			if perCall < 1000 {
				t.Errorf("largest rows per call %d: want the cursor's pages counted per declared query (>= 1000), not per FETCH", perCall)
			}
		})
	}
}

// pg_stat_statements counts a SQL-level EXECUTE under its prepared query, whose text is
// the PREPARE statement: the rows belong to the PREPARE's classification.
func TestPreparedStatementsCountUnderTheirPrepare(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seed(t, db, 3000, "stmt_grace")
	st := startSource(t, db, &sourcetest.Recorder{})
	grace := db.Conn(t, "stmt_grace")
	ctx := t.Context()
	if _, err := grace.Exec(ctx, `PREPARE dump AS SELECT email, password_hash FROM users`, pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	rows, err := grace.Query(ctx, `EXECUTE dump`, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	rows.Close()
	sourcetest.Eventually(t, 5*time.Second, "the execution's rows on public.users", func() bool {
		n, events := st.rows("stmt_grace", "public.users")
		return n == 3000 && slices.Contains(events[0].SensitiveRead, "password_hash")
	})
}

func TestUnclassifiableReadsStillMakeEvents(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seed(t, db, 2000, "stmt_heidi")
	heidi := db.Conn(t, "stmt_heidi")
	// A cursor declared before the source started: its FETCH cannot be attributed.
	ctx := t.Context()
	tx, err := heidi.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `DECLARE early CURSOR FOR SELECT email FROM users`, pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	st := startSource(t, db, &sourcetest.Recorder{})
	r, err := tx.Query(ctx, `FETCH ALL FROM early`, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	sourcetest.Eventually(t, 5*time.Second, "an event without a relation", func() bool {
		_, events := st.rows("stmt_heidi", "")
		for _, e := range events {
			if e.Operation == "FETCH" && !e.Complete && e.Rows == 2000 {
				return true
			}
		}
		return false
	})
}

// A view created after the source started is classified within seconds, not at the
// next full catalog refresh (an hour here).
func TestSchemaChangesAreSeenWithinSeconds(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seed(t, db, 3000, "stmt_ivan")
	st := startSourceWith(t, &sourcetest.Recorder{}, sourceOptions{dsn: db.SuperuserDSN(), interval: 100 * time.Millisecond,
		catalogRefresh: time.Hour})
	db.Exec(t, `CREATE VIEW public.directory AS SELECT username AS login, email AS contact FROM public.users;
		GRANT SELECT ON public.directory TO stmt_ivan`)
	query(t, db.Conn(t, "stmt_ivan"), `SELECT login, contact FROM directory`)
	sourcetest.Eventually(t, 15*time.Second, "the view's read classified as a read of users", func() bool {
		_, events := st.rows("stmt_ivan", "public.users")
		return len(events) > 0 && events[len(events)-1].Complete &&
			slices.Equal(events[len(events)-1].SensitiveRead, []string{"email", "username"})
	})
}

// Events carry the statement for on-call, redacted: on PostgreSQL 14 and 15
// pg_stat_statements keeps the literals of utility statements such as DECLARE, so its
// text is not shown as it is.
func TestEventsCarryTheRedactedStatement(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seed(t, db, 2000, "stmt_judy")
	st := startSource(t, db, &sourcetest.Recorder{})
	judy := db.Conn(t, "stmt_judy")
	ctx := t.Context()
	const secret = "judy-secret-7f3a"
	query(t, judy, `SELECT email FROM users WHERE email <> '`+secret+`'`, pgx.QueryExecModeSimpleProtocol)
	tx, err := judy.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `DECLARE c CURSOR FOR SELECT password_hash FROM users /* `+secret+` */ WHERE username <> '`+secret+`'`,
		pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	r, err := tx.Query(ctx, `FETCH ALL FROM c`, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()

	want := map[string]string{
		"SELECT": `SELECT email FROM users WHERE email <> $1`,
		// A FETCH's events carry the DECLARE, which pg_stat_statements keeps with its
		// literal on PostgreSQL 14 and 15.
		"FETCH": `DECLARE c CURSOR FOR SELECT password_hash FROM users WHERE username <> $1`,
	}
	sourcetest.Eventually(t, 5*time.Second, "events of the SELECT and of the cursor's FETCH", func() bool {
		_, events := st.rows("stmt_judy", "public.users")
		seen := map[string]bool{}
		for _, e := range events {
			seen[e.Operation] = true
		}
		return seen["SELECT"] && seen["FETCH"]
	})
	_, events := st.rows("stmt_judy", "public.users")
	for _, e := range events {
		if strings.Contains(e.Statement, secret) {
			t.Errorf("%s event: statement %q holds the literal", e.Operation, e.Statement)
		}
		if w, ok := want[e.Operation]; ok && e.Statement != w {
			t.Errorf("%s event: got statement %q, want %q", e.Operation, e.Statement, w)
		}
	}
	var kept string
	if err := db.Conn(t, "postgres").QueryRow(ctx, `SELECT query FROM pg_stat_statements
		WHERE query LIKE 'DECLARE c CURSOR%' AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&kept); err != nil {
		t.Fatal(err)
	}
	t.Logf("pg_stat_statements keeps %q", kept)
}
