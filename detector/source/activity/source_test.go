package activity

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/sourcetest"
	"github.com/pgtripwire/pgtripwire/model"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// start runs the two samplers on one connection, as the detector does, until the test
// ends: activity every interval, COPY every second. adjust may change their
// configuration (its default: min_running 2 s, public.users sensitive).
func start(t *testing.T, db *pgtest.Database, interval time.Duration, adjust func(*Config)) *sourcetest.Recorder {
	t.Helper()
	conn, err := pgx.ParseConfig(db.SuperuserDSN())
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		MinRunning: 2 * time.Second,
		SearchPath: []string{"$user", "public"},
		Sensitive:  map[string][]string{"public.users": {"email", "username", "password_hash"}},
	}
	if adjust != nil {
		adjust(&cfg)
	}
	sink := &sourcetest.Recorder{}
	reg := prometheus.NewRegistry()
	h := sourcetest.Start(t, conn, reg,
		source.Polled{Name: Name, Poller: NewActivity(cfg, sink, zap.NewNop(), reg), Interval: interval},
		source.Polled{Name: CopyName, Poller: NewCopy(cfg, sink, zap.NewNop()), Interval: time.Second})
	sourcetest.WaitReady(t, h)
	return sink
}

// seed creates public.users with n rows whose password hashes are padding bytes long,
// readable by role.
func seed(t *testing.T, db *pgtest.Database, n, padding int, role string) {
	t.Helper()
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, username text, password_hash text)`)
	db.Exec(t, fmt.Sprintf(`INSERT INTO public.users
		SELECT i, 'u' || i || '@example.com', 'u' || i, rpad(md5(i::text), %d, 'x') FROM generate_series(1, %d) i`, padding, n))
	db.CreateRole(t, role)
	db.Exec(t, fmt.Sprintf(`GRANT SELECT ON public.users TO %s`, role))
}

// connect opens a connection as role with an application name, and returns it with
// its backend pid.
func connect(t *testing.T, db *pgtest.Database, role, application string) (*pgx.Conn, int32) {
	t.Helper()
	cfg, err := pgx.ParseConfig(db.DSN(role))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = application
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	})
	var pid int32
	if err := conn.QueryRow(t.Context(), `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return conn, pid
}

// Acceptance 1: a read of 40,000 rows of email and password_hash slowed to ~10 s is
// reported while it still runs.
func TestSlowSensitiveReadReportedWhileRunning(t *testing.T) {
	db := pgtest.NewDatabase(t)
	seed(t, db, 40_000, 60, "act_dumper")
	sink := start(t, db, time.Second, nil)
	conn, pid := connect(t, db, "act_dumper", "dump-tool")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	finished := make(chan error, 1)
	began := time.Now()
	go func() {
		rows, err := conn.Query(ctx, `SELECT email, password_hash, pg_sleep(0.00025) FROM users`)
		if err == nil {
			for rows.Next() {
			}
			rows.Close()
			err = rows.Err()
		}
		finished <- err
	}()

	var got []model.Event
	sourcetest.Eventually(t, 8*time.Second, "activity event for the running dump", func() bool {
		got = sink.Find(func(e model.Event) bool { return e.PID == pid })
		return len(got) > 0
	})
	select {
	case err := <-finished:
		t.Fatalf("the dump ended (%v) after %s, before the event was checked: not caught while running", err, time.Since(began))
	default:
	}
	t.Logf("reported after %s", time.Since(began).Round(time.Millisecond))
	ev := got[0]
	want := model.Event{Source: Name, Kind: KindRunning, Role: "act_dumper", Database: db.Name,
		ClientAddr: "127.0.0.1", Application: "dump-tool", Relation: "public.users", Operation: "SELECT",
		SensitiveRead: []string{"email", "password_hash"}, Complete: true, PID: pid}
	if ev.Source != want.Source || ev.Kind != want.Kind || ev.Role != want.Role || ev.Database != want.Database ||
		ev.ClientAddr != want.ClientAddr || ev.Application != want.Application || ev.Relation != want.Relation ||
		ev.Operation != want.Operation || !slices.Equal(ev.SensitiveRead, want.SensitiveRead) ||
		ev.Complete != want.Complete || ev.Calls != 0 || ev.Statement != "" || ev.QueryID == 0 {
		t.Errorf("event:\n got %+v\nwant %+v (with a query id, no calls, no text)", ev, want)
	}
	if ev.Running < 2*time.Second {
		t.Errorf("running: got %s, want at least min_running (2s)", ev.Running)
	}
	cancel()
	<-finished
}

func TestShortOrHarmlessStatementsNotReported(t *testing.T) {
	db := pgtest.NewDatabase(t)
	seed(t, db, 100, 60, "act_app")
	sink := start(t, db, 200*time.Millisecond, func(c *Config) { c.MinRunning = time.Second })
	conn, pid := connect(t, db, "act_app", "app")

	// Long but reading nothing sensitive; sensitive but short.
	for _, sql := range []string{
		`SELECT id, pg_sleep(0.015) FROM users`,
		`SELECT count(*), pg_sleep(1.5) FROM users`,
		`SELECT email, pg_sleep(0.3) FROM users WHERE id = 1`,
	} {
		if _, err := conn.Exec(t.Context(), sql); err != nil {
			t.Fatal(err)
		}
	}
	sink.WaitCalls(t, 2)
	if got := sink.Find(func(e model.Event) bool { return e.PID == pid }); len(got) > 0 {
		t.Errorf("reported: %+v", got)
	}
}

func TestReportedAgainAsItKeepsRunning(t *testing.T) {
	db := pgtest.NewDatabase(t)
	seed(t, db, 10, 60, "act_slow")
	sink := start(t, db, 100*time.Millisecond, func(c *Config) { c.MinRunning = 500 * time.Millisecond })
	conn, pid := connect(t, db, "act_slow", "app")
	if _, err := conn.Exec(t.Context(), `SELECT email, pg_sleep(0.25) FROM users`); err != nil { // 2.5 s
		t.Fatal(err)
	}
	got := sink.Find(func(e model.Event) bool { return e.PID == pid })
	// At 0.5 s, then doubling: about 1 s and 2 s.
	if len(got) != 3 {
		var at []time.Duration
		for _, e := range got {
			at = append(at, e.Running.Round(100*time.Millisecond))
		}
		t.Fatalf("events at running times %v, want 3 (0.5 s, ~1 s, ~2 s)", at)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Running < 2*got[i-1].Running-200*time.Millisecond {
			t.Errorf("event %d at %s, want about twice %s", i, got[i].Running, got[i-1].Running)
		}
	}
}

func TestTruncatedTextIsIncomplete(t *testing.T) {
	srv := pgtest.NewServer(t, map[string]string{"track_activity_query_size": "100"})
	db := pgtest.NewDatabaseIn(t, srv)
	seed(t, db, 10, 60, "act_long_text")
	sink := start(t, db, 100*time.Millisecond, func(c *Config) { c.MinRunning = 300 * time.Millisecond })
	conn, pid := connect(t, db, "act_long_text", "app")
	ids := strings.Repeat("1, ", 100) + "1"
	if _, err := conn.Exec(t.Context(), `SELECT id, pg_sleep(1) FROM public.users WHERE id IN (`+ids+`) OR email IS NOT NULL LIMIT 1`); err != nil {
		t.Fatal(err)
	}
	got := sink.Find(func(e model.Event) bool { return e.PID == pid })
	if len(got) == 0 {
		t.Fatal("a statement cut at track_activity_query_size naming a sensitive table was not reported")
	}
	if got[0].Complete || got[0].Relation != "public.users" {
		t.Errorf("got relation %q complete %v, want public.users, incomplete", got[0].Relation, got[0].Complete)
	}
}

func TestAttribution(t *testing.T) {
	db := pgtest.NewDatabase(t)
	seed(t, db, 10, 60, "act_attr")
	attribution := source.NewAttribution(0, nil)
	sink := start(t, db, 100*time.Millisecond, func(c *Config) { c.Attribution = attribution })
	const sql = `SELECT email, pg_sleep(0.5) FROM users WHERE id = 1`
	conn, _ := connect(t, db, "act_attr", "billing")
	if _, err := conn.Exec(t.Context(), sql); err != nil {
		t.Fatal(err)
	}
	var queryID int64
	su := db.Conn(t, "postgres")
	if err := su.QueryRow(t.Context(), `SELECT queryid FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
		WHERE r.rolname = 'act_attr' AND s.query LIKE '%pg_sleep(%'`).Scan(&queryID); err != nil {
		t.Fatal(err)
	}
	addr, app, ok := attribution.Lookup(queryID, "act_attr")
	if !ok || addr != "127.0.0.1" || app != "billing" {
		t.Fatalf("Lookup: got %q %q %v, want 127.0.0.1 billing true", addr, app, ok)
	}
	if _, _, ok := attribution.Lookup(queryID, "someone_else"); ok {
		t.Error("Lookup for another role: got ok, want unknown")
	}

	// The same statement from another application: which one a delta counts is unknown.
	other, _ := connect(t, db, "act_attr", "intruder")
	if _, err := other.Exec(t.Context(), sql); err != nil {
		t.Fatal(err)
	}
	sink.WaitCalls(t, 1)
	if addr, app, ok := attribution.Lookup(queryID, "act_attr"); ok {
		t.Errorf("Lookup after two clients: got %q %q, want unknown", addr, app)
	}
}

// Sessions holding a lock on a sensitive table — in a transaction left open, through
// a partition, running or idle — are noted as its readers with their role, client and
// application; a session holding only other tables is not, and a reader that committed
// is not a reader of the time after.
func TestReadersSampled(t *testing.T) {
	db := pgtest.NewDatabase(t)
	seed(t, db, 100, 60, "act_reader")
	db.Exec(t, `CREATE TABLE public.events (id int, at date, payload text) PARTITION BY RANGE (at);
		CREATE TABLE public.events_2025 PARTITION OF public.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
		CREATE TABLE public.orders (id int, total int);
		GRANT SELECT ON public.events, public.events_2025, public.orders TO act_reader`)
	readers := source.NewReaders(0)
	sink := start(t, db, 100*time.Millisecond, func(c *Config) {
		c.Sensitive["public.events"] = []string{"payload"}
		c.Readers = readers
	})

	reader, readerPID := connect(t, db, "act_reader", "report")
	partition, partitionPID := connect(t, db, "act_reader", "etl")
	bystander, bystanderPID := connect(t, db, "act_reader", "orders")
	for _, s := range []struct {
		conn *pgx.Conn
		sql  string
	}{
		{reader, `SELECT count(*) FROM users`},
		{partition, `SELECT count(*) FROM events_2025`},
		{bystander, `SELECT count(*) FROM orders`},
	} {
		// Left open: the locks are held until the transaction ends.
		if _, err := s.conn.Exec(t.Context(), "BEGIN; "+s.sql); err != nil {
			t.Fatal(err)
		}
	}
	began := time.Now()
	sink.WaitCalls(t, 2)
	var got []source.Reader
	for _, rel := range []string{"public.users", "public.events", "public.orders"} {
		got = append(got, readers.Seen(rel, began, time.Now())...)
	}
	want := map[int32]source.Reader{
		readerPID:    {Relation: "public.users", PID: readerPID, Role: "act_reader", ClientAddr: "127.0.0.1", Application: "report"},
		partitionPID: {Relation: "public.events", PID: partitionPID, Role: "act_reader", ClientAddr: "127.0.0.1", Application: "etl"},
	}
	if len(got) != len(want) {
		t.Fatalf("readers: got %+v, want the sessions %d and %d only (not %d, which holds no sensitive table)",
			got, readerPID, partitionPID, bystanderPID)
	}
	for _, r := range got {
		w := want[r.PID]
		if r.Relation != w.Relation || r.Role != w.Role || r.ClientAddr != w.ClientAddr || r.Application != w.Application ||
			r.Since.IsZero() || r.LastSeen.Before(r.FirstSeen) {
			t.Errorf("reader %d: got %+v, want %+v with its transaction's start", r.PID, r, w)
		}
	}

	if _, err := reader.Exec(t.Context(), `COMMIT`); err != nil {
		t.Fatal(err)
	}
	committed := time.Now()
	sink.WaitCalls(t, 6)
	// From a sample (every 100 ms) surely taken after the commit.
	if got := readers.Seen("public.users", committed.Add(300*time.Millisecond), time.Now()); len(got) > 0 {
		t.Errorf("readers of public.users after the commit: got %+v, want none", got)
	}
}

// blockingWriter is a COPY client that stops reading at the first row until released.
type blockingWriter struct {
	first   sync.Once
	blocked chan struct{}
	release chan struct{}
	rows    int
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.first.Do(func() {
		close(w.blocked)
		<-w.release
	})
	w.rows++
	return len(p), nil
}

// Acceptance 2: a COPY users TO STDOUT whose client reads slowly is reported before it
// ends, with the tuples copied so far.
func TestSlowCopyReportedBeforeItEnds(t *testing.T) {
	db := pgtest.NewDatabase(t)
	// 40,000 rows of 1 kB: far more than the socket buffers hold, so the server waits
	// for the client in the middle of the COPY.
	seed(t, db, 40_000, 1000, "act_copier")
	db.Exec(t, `CREATE VIEW public.contacts AS SELECT id, email FROM public.users`)
	db.Exec(t, `GRANT SELECT ON public.contacts TO act_copier`)
	sink := start(t, db, time.Second, nil)

	for _, tc := range []struct {
		name, sql string
		want      []string
	}{
		{"table", `COPY users TO STDOUT`, []string{"email", "password_hash", "username"}},
		{"query", `COPY (SELECT c.email, u.password_hash FROM contacts c JOIN users u USING (id)) TO STDOUT`,
			[]string{"email", "password_hash"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, pid := connect(t, db, "act_copier", "exporter")
			w := &blockingWriter{blocked: make(chan struct{}), release: make(chan struct{})}
			finished := make(chan error, 1)
			go func() {
				_, err := conn.PgConn().CopyTo(context.Background(), w, tc.sql)
				finished <- err
			}()
			<-w.blocked
			var got []model.Event
			sourcetest.Eventually(t, 5*time.Second, "copy event", func() bool {
				got = sink.Find(func(e model.Event) bool { return e.PID == pid })
				return len(got) > 0
			})
			select {
			case err := <-finished:
				t.Fatalf("COPY ended (%v) before it was reported", err)
			default:
			}
			close(w.release)
			if err := <-finished; err != nil {
				t.Fatal(err)
			}
			if w.rows != 40_000 {
				t.Fatalf("client read %d rows, want 40000", w.rows)
			}
			ev := got[0]
			if ev.Source != CopyName || ev.Kind != KindCopyProgress || ev.Role != "act_copier" ||
				ev.Relation != "public.users" || !slices.Equal(ev.SensitiveRead, tc.want) || ev.Operation != "COPY" ||
				ev.Application != "exporter" || ev.Calls != 0 {
				t.Errorf("event: got %+v, want copy of public.users %v by act_copier", ev, tc.want)
			}
			if ev.Rows <= 0 || ev.Rows >= 40_000 {
				t.Errorf("rows so far: got %d, want some but not all of 40000", ev.Rows)
			}
			// Each event carries the COPY's total so far: it only grows, and never passes
			// what was copied.
			sink.WaitCalls(t, 2)
			var last int64
			for _, e := range sink.Find(func(e model.Event) bool { return e.PID == pid }) {
				if e.Rows < last || e.Rows > 40_000 {
					t.Errorf("rows so far: got %d after %d, want a growing total of at most 40000", e.Rows, last)
				}
				last = e.Rows
			}

		})
	}
}
