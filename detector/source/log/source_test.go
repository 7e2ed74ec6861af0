package log

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/pgtripwire/pgtripwire/detector/classify"
	"github.com/pgtripwire/pgtripwire/detector/health"
	"github.com/pgtripwire/pgtripwire/internal/pgserver"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/sourcetest"
	"github.com/pgtripwire/pgtripwire/model"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// logged is a server logging for the log source, with a database holding the
// sensitive table public.users (email, password_hash) and a role with a password.
type logged struct {
	srv  *pgserver.Server
	dir  string
	db   *pgtest.Database
	role string
}

func newLogged(t *testing.T, destination string, settings map[string]string) *logged {
	t.Helper()
	srv, dir := pgtest.NewLoggingServer(t, destination, settings)
	db := pgtest.NewDatabaseIn(t, srv)
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, password_hash text, plan text);
		INSERT INTO public.users SELECT i, 'u' || i || '@example.com', md5(i::text), 'free' FROM generate_series(1, 20) i`)
	role := "app_" + db.Name[len(db.Name)-2:]
	db.CreateRole(t, role)
	db.Exec(t, `GRANT SELECT (id, plan) ON public.users TO `+role)
	pgtest.RequirePassword(t, srv, role, "right")
	return &logged{srv: srv, dir: dir, db: db, role: role}
}

// run runs a log source over l until the test ends (or stop), with its events
// going to rec.
type running struct {
	src    *Source
	rec    *sourcetest.Recorder
	health *health.Status
	stop   func()
}

func (l *logged) run(t *testing.T, cfg Config, rec *sourcetest.Recorder) *running {
	t.Helper()
	conn, err := pgx.ParseConfig(l.db.SuperuserDSN())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Directory == "" && cfg.SyslogListen == "" {
		cfg.Directory = l.dir
	}
	cfg.Conn = conn
	cfg.Sensitive = map[string][]string{"public.users": {"email", "password_hash"}}
	cfg.SearchPath = []string{"$user", "public"}
	reg := prometheus.NewRegistry()
	h := health.New(reg)
	h.Register(Name)
	src := New(cfg, rec, h, zaptest.NewLogger(t), reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		})
	}
	t.Cleanup(stop)
	sourcetest.Eventually(t, 30*time.Second, "the log source healthy", func() bool { ok, _ := h.Ready(); return ok })
	return &running{src: src, rec: rec, health: h, stop: stop}
}

// fail runs sql as role (simple protocol, as psql), wanting an error.
func fail(t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.PgConn().Exec(t.Context(), sql).ReadAll(); err == nil {
		t.Fatalf("%s: got no error", sql)
	}
}

func ofKind(kind string) func(model.Event) bool {
	return func(e model.Event) bool { return e.Kind == kind }
}

// The events of what only the log shows, read from the server's jsonlog and csvlog
// files: a failed login, a permission denied on the sensitive table, syntax and cast
// errors (the cast one an error-based extraction of an email), a failed statement
// reading the sensitive columns; and nothing for work that succeeds or errors that
// touch no sensitive table.
func TestEvents(t *testing.T) {
	for _, format := range []string{FormatJSON, FormatCSV} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			l := newLogged(t, format, nil)
			rec := &sourcetest.Recorder{}
			r := l.run(t, Config{Format: format}, rec)

			if _, err := pgx.Connect(t.Context(), strings.Replace(l.db.DSN(l.role), l.role+"@", l.role+":wrong@", 1)); err == nil {
				t.Fatal("login with a wrong password: got no error")
			}
			super := l.db.Conn(t, "postgres")
			// A type modifier, as sqlmap's error-based payloads write it: redaction turns
			// it into a placeholder the parser refuses; the statement is classified anyway.
			fail(t, super, `SELECT CAST(CAST(email AS varchar(300)) AS int) FROM users WHERE id = 7`)
			fail(t, super, `SELEC email FROM users`)
			fail(t, super, `SELECT email, 1/0 FROM users`)
			fail(t, super, `SELECT 1/0`) // no sensitive table: no event
			if _, err := super.Exec(t.Context(), `SELECT plan FROM users`); err != nil {
				t.Fatal(err)
			}
			appConn, err := pgx.Connect(t.Context(), strings.Replace(l.db.DSN(l.role), l.role+"@", l.role+":right@", 1))
			if err != nil {
				t.Fatal(err)
			}
			defer appConn.Close(context.Background())
			fail(t, appConn, `SELECT email FROM users WHERE id = 1`)

			sourcetest.Eventually(t, 30*time.Second, "five events", func() bool { return len(rec.Events()) >= 5 })
			time.Sleep(500 * time.Millisecond) // and no more
			events := rec.Events()
			for _, e := range events {
				t.Logf("%+v", e)
			}
			if len(events) != 5 {
				t.Fatalf("got %d events, want 5", len(events))
			}
			auth := rec.Find(ofKind(KindAuthFailed))
			if len(auth) != 1 || auth[0].Role != l.role || auth[0].ClientAddr != "127.0.0.1" || auth[0].Object != "28P01" ||
				auth[0].Database != l.db.Name || auth[0].Source != Name {
				t.Errorf("auth_failed: %+v", auth)
			}
			cast := rec.Find(ofKind(KindCastError))
			if len(cast) != 1 || cast[0].Relation != "public.users" || !slices.Equal(cast[0].SensitiveRead, []string{"email"}) ||
				cast[0].Object != "22P02" || cast[0].Role != "postgres" || cast[0].Operation != "SELECT" || !cast[0].Complete ||
				cast[0].Statement != "SELECT CAST(CAST(email AS varchar($1)) AS int) FROM users WHERE id = $2" ||
				!slices.Contains(cast[0].Shapes, classify.ShapeInjectionCast) {
				t.Errorf("cast_error: %+v", cast)
			}
			syntax := rec.Find(ofKind(KindSyntaxError))
			if len(syntax) != 1 || syntax[0].Object != "42601" || syntax[0].Complete {
				t.Errorf("syntax_error: %+v (want incomplete: the text does not parse)", syntax)
			}
			stmt := rec.Find(ofKind(KindStatementError))
			if len(stmt) != 1 || stmt[0].Object != "22012" || !slices.Equal(stmt[0].SensitiveRead, []string{"email"}) {
				t.Errorf("statement_error: %+v", stmt)
			}
			denied := rec.Find(ofKind(KindPermissionDenied))
			if len(denied) != 1 || denied[0].Role != l.role || denied[0].Relation != "public.users" ||
				!slices.Equal(denied[0].SensitiveRead, []string{"email"}) {
				t.Errorf("permission_denied: %+v", denied)
			}
			r.stop()
		})
	}
}

// lines counts the log lines (of every file of dir whose name holds infix) holding marker.
func lines(t *testing.T, dir, infix, marker string) int {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	n := 0
	for _, f := range files {
		if !strings.Contains(filepath.Base(f), infix) {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		n += strings.Count(string(b), marker)
	}
	return n
}

// copyTruncate does what logrotate's copytruncate does: copy the file, then truncate
// it in place (the server goes on appending to it, now from its start).
func copyTruncate(t *testing.T, path string) {
	t.Helper()
	src, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(path + ".1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
}

// newest returns the newest file of dir with suffix.
func newest(t *testing.T, dir, suffix string) string {
	t.Helper()
	cs, err := (&tailer{dir: dir, suffix: suffix}).candidates()
	if err != nil || len(cs) == 0 {
		t.Fatalf("no %s file in %s: %v", suffix, dir, err)
	}
	return filepath.Join(dir, cs[len(cs)-1].name)
}

// Acceptance 3 of #16: a stream of errors, during which the log is rotated by the
// server (pg_rotate_logfile, and log_rotation_size), by renaming the file, and by
// copy-truncate, and the detector is stopped and started again, is seen exactly once:
// as many events as errors, each error once.
func TestRotationAndRestart_NoLineLostOrRepeated(t *testing.T) {
	l := newLogged(t, FormatJSON, map[string]string{"log_rotation_size": "64kB"})
	state := t.TempDir()
	rec := &sourcetest.Recorder{}
	// A slow poll, so that rotations land while lines are still unread.
	cfg := Config{Format: FormatJSON, StateDir: state, Poll: 700 * time.Millisecond}
	r := l.run(t, cfg, rec)
	super := l.db.Conn(t, "postgres")
	n := 0
	rec2 := &sourcetest.Recorder{}
	t.Cleanup(func() {
		if t.Failed() {
			files, _ := filepath.Glob(filepath.Join(l.dir, "*"))
			for _, f := range files {
				fi, _ := os.Stat(f)
				t.Logf("%s %d %v: %d errors", filepath.Base(f), fi.Size(), fi.ModTime(), lines(t, l.dir, filepath.Base(f), `"state_code":"22P02"`))
			}
			t.Logf("%d events before the restart, %d after", len(rec.Events()), len(rec2.Events()))
			if d := os.Getenv("LOG_TEST_KEEP"); d != "" {
				for _, f := range files {
					b, _ := os.ReadFile(f)
					_ = os.WriteFile(filepath.Join(d, filepath.Base(f)), b, 0o644)
				}
			}
		}
	})
	burst := func(count int) {
		t.Helper()
		for range count {
			n++
			// The alias names the error in its event: the statement is shown redacted.
			fail(t, super, fmt.Sprintf(`SELECT CAST(email AS int) AS seq_%d FROM users WHERE id = %d`, n, n%20+1))
		}
	}
	// Waits until the server has written every error so far to its files.
	flushed := func() {
		t.Helper()
		sourcetest.Eventually(t, 20*time.Second, "the server's log holding every error", func() bool {
			return lines(t, l.dir, "", `"state_code":"22P02"`) >= n
		})
	}

	burst(300) // over 64 kB: log_rotation_size rotates at least once
	if _, err := super.Exec(t.Context(), `SELECT pg_rotate_logfile()`); err != nil {
		t.Fatal(err)
	}
	burst(50)

	// From here on the test's rotations are the only ones: the source has caught up
	// when it has the newest file open.
	if _, err := super.Exec(t.Context(), `ALTER SYSTEM SET log_rotation_size = 0`); err != nil {
		t.Fatal(err)
	}
	if _, err := super.Exec(t.Context(), `SELECT pg_reload_conf()`); err != nil {
		t.Fatal(err)
	}
	caughtUp := func() {
		t.Helper()
		sourcetest.Eventually(t, 30*time.Second, "the source caught up", func() bool { return len(rec.Events()) >= n })
	}

	// Rename rotation: the file the source reads is moved away (the server still
	// writes it), then the server is told to open a new one.
	caughtUp()
	cur := newest(t, l.dir, ".json")
	if err := os.Rename(cur, cur+".renamed"); err != nil {
		t.Fatal(err)
	}
	burst(50)
	time.Sleep(1100 * time.Millisecond) // a new file name (log_filename has seconds)
	if _, err := super.Exec(t.Context(), `SELECT pg_rotate_logfile()`); err != nil {
		t.Fatal(err)
	}
	burst(50)

	// Copy-truncate, with lines not read yet (when the source has not read them
	// meanwhile: both must work).
	caughtUp()
	burst(50)
	flushed()
	copyTruncate(t, newest(t, l.dir, ".json"))
	burst(50)

	// A restart: stopped in the middle of the stream, started again on its saved position.
	r.stop()
	burst(50)
	l.run(t, cfg, rec2)
	burst(50)

	all := func() []model.Event {
		return append(rec.Find(ofKind(KindCastError)), rec2.Find(ofKind(KindCastError))...)
	}
	sourcetest.Eventually(t, 30*time.Second, fmt.Sprintf("%d cast_error events", n), func() bool { return len(all()) >= n })
	time.Sleep(time.Second) // and no more
	seen := map[int]int{}
	for _, e := range all() {
		var seq int
		if _, err := fmt.Sscanf(e.Statement, "SELECT CAST(email AS int) AS seq_%d", &seq); err != nil {
			t.Fatalf("event statement %q: %v", e.Statement, err)
		}
		seen[seq]++
	}
	for i := 1; i <= n; i++ {
		if seen[i] != 1 {
			t.Errorf("error %d: seen %d times, want once", i, seen[i])
		}
	}
	if got := len(all()); got != n {
		t.Errorf("got %d events for %d errors", got, n)
	}
	if len(rec2.Events()) == 0 {
		t.Error("the restarted source handed over nothing")
	}
	t.Logf("%d errors, %d events before the restart, %d after", n, len(rec.Events()), len(rec2.Events()))
}
