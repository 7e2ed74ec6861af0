package pgtest_test

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/internal/pgserver"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func scalar[T any](t *testing.T, conn *pgx.Conn, sql string, args ...any) T {
	t.Helper()
	var v T
	if err := conn.QueryRow(t.Context(), sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

func TestNewDatabaseIsolatesTests(t *testing.T) {
	t.Parallel()
	a, b := pgtest.NewDatabase(t), pgtest.NewDatabase(t)
	if a.Name == b.Name {
		t.Fatalf("two databases named %s", a.Name)
	}
	if a.Server != pgtest.Shared(t) || b.Server != a.Server {
		t.Error("NewDatabase did not use the shared cluster")
	}
	if !strings.HasPrefix(a.Name, "testnewdatabaseisolatestests_") {
		t.Errorf("database name %q does not say which test made it", a.Name)
	}

	a.Exec(t, "CREATE TABLE users (email text)")
	a.Exec(t, "INSERT INTO users VALUES ($1)", "a@example.com")
	connB := b.Conn(t, "postgres")
	if got := scalar[bool](t, connB, "SELECT to_regclass('public.users') IS NULL"); !got {
		t.Error("a table made in one test's database is visible in another's")
	}

	// Both have pg_stat_statements, and it sees the statements run in each.
	for _, db := range []*pgtest.Database{a, b} {
		conn := db.Conn(t, "postgres")
		n := scalar[int64](t, conn, `
			SELECT count(*) FROM pg_stat_statements
			WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())`)
		if n == 0 {
			t.Errorf("%s: pg_stat_statements has no entries for its own statements", db.Name)
		}
	}
}

func TestDatabaseIsDroppedWhenTestEnds(t *testing.T) {
	t.Parallel()
	var name string
	t.Run("owner", func(t *testing.T) {
		db := pgtest.NewDatabase(t)
		name = db.Name
		db.Conn(t, "postgres") // an open connection must not block the drop
	})
	conn := pgtest.NewDatabase(t).Conn(t, "postgres")
	if n := scalar[int64](t, conn, "SELECT count(*) FROM pg_database WHERE datname = $1", name); n != 0 {
		t.Errorf("database %s still exists after its test ended", name)
	}
}

func TestCreateRoleIsIdempotentAcrossParallelTests(t *testing.T) {
	t.Parallel()
	const role = "pgtest_shared_reader"
	t.Run("group", func(t *testing.T) {
		for _, name := range []string{"a", "b", "c", "d"} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				db := pgtest.NewDatabase(t)
				db.CreateRole(t, role)
				db.CreateRole(t, role) // twice in one test, too
				conn := db.Conn(t, role)
				if got := scalar[string](t, conn, "SELECT current_user"); got != role {
					t.Errorf("current_user = %q, want %q", got, role)
				}
			})
		}
	})

	db := pgtest.NewDatabase(t)
	db.CreateRole(t, "pgtest_replicator", "REPLICATION")
	db.CreateRole(t, "pgtest_replicator", "REPLICATION", "CONNECTION LIMIT 7")
	conn := db.Conn(t, "pgtest_replicator")
	var login, replication bool
	var limit int
	if err := conn.QueryRow(t.Context(),
		"SELECT rolcanlogin, rolreplication, rolconnlimit FROM pg_roles WHERE rolname = current_user").
		Scan(&login, &replication, &limit); err != nil {
		t.Fatal(err)
	}
	if !login || !replication || limit != 7 {
		t.Errorf("role attributes login=%v replication=%v limit=%d, want true true 7", login, replication, limit)
	}

	db.CreateRole(t, "pgtest_nologin", "NOLOGIN")
	if _, err := pgx.Connect(t.Context(), db.DSN("pgtest_nologin")); err == nil {
		t.Error("a NOLOGIN role could log in")
	}
}

// fatalRecorder stands in for t to observe a helper failing the test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = format
	runtime.Goexit()
}

func TestExecFailsTheTestOnError(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	rec := &fatalRecorder{TB: t}
	var wg sync.WaitGroup
	wg.Go(func() { db.Exec(rec, "SELECT * FROM no_such_table") })
	wg.Wait()
	if rec.msg == "" {
		t.Error("Exec of bad SQL did not fail the test")
	}
}

// TestNewServerSurvivesRestart is the pattern for tests of reconnection:
// a dedicated cluster, stopped and started again on the same address.
func TestNewServerSurvivesRestart(t *testing.T) {
	t.Parallel()
	srv := pgtest.NewServer(t, map[string]string{"track_activity_query_size": "8192"})
	if srv == pgtest.Shared(t) || srv.Port() == pgtest.Shared(t).Port() {
		t.Fatal("NewServer returned the shared cluster")
	}
	db := pgtest.NewDatabaseIn(t, srv)
	db.Exec(t, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (1)")
	if got := scalar[string](t, db.Conn(t, "postgres"), "SHOW track_activity_query_size"); got != "8kB" {
		t.Errorf("track_activity_query_size = %s, want the setting passed to NewServer", got)
	}

	if err := srv.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if conn, err := pgx.Connect(t.Context(), db.SuperuserDSN()); err == nil {
		conn.Close(context.Background())
		t.Fatal("connected while the server was stopped")
	}
	if err := srv.StartAgain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := scalar[int](t, db.Conn(t, "postgres"), "SELECT v FROM kept"); got != 1 {
		t.Errorf("after restart kept.v = %d, want 1", got)
	}
}

// TestMainFailsWithoutServerBinaries runs this test binary with no usable
// PostgreSQL: it must exit non-zero and say why, not skip and pass.
func TestMainFailsWithoutServerBinaries(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestNewDatabaseIsolatesTests$")
	cmd.Env = append(os.Environ(), pgserver.BinDirEnv+"="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("test binary passed without PostgreSQL:\n%s", out)
	}
	if !strings.Contains(string(out), "need a PostgreSQL server") || !strings.Contains(string(out), pgserver.BinDirEnv) {
		t.Errorf("output does not say what is missing:\n%s", out)
	}
}

// TestStandbyOfNewServer is the pattern for tests of read replicas: a
// database made on a cluster of the test's own, read on its standby.
func TestStandbyOfNewServer(t *testing.T) {
	t.Parallel()
	primary := pgtest.NewServer(t, nil)
	db := pgtest.NewDatabaseIn(t, primary)
	db.Exec(t, "CREATE TABLE accounts (id int); INSERT INTO accounts VALUES (1), (2)")
	standby := pgtest.NewStandby(t, primary)
	db.Exec(t, "INSERT INTO accounts VALUES (3)")
	pgtest.WaitReplay(t, standby, primary)

	conn, err := pgx.Connect(t.Context(), standby.SuperuserDSN(db.Name))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if got := scalar[int](t, conn, "SELECT count(*) FROM accounts"); got != 3 {
		t.Errorf("standby has %d accounts, want the primary's 3", got)
	}
	if !standby.IsStandby() || standby.Primary() != primary {
		t.Errorf("NewStandby returned a server that is not a standby of the primary")
	}
}

func TestNoStandbyOfTheSharedServer(t *testing.T) {
	t.Parallel()
	rec := &fatalRecorder{TB: t}
	var wg sync.WaitGroup
	wg.Go(func() { pgtest.NewStandby(rec, pgtest.Shared(t)) })
	wg.Wait()
	if !strings.Contains(rec.msg, "not of the shared one") {
		t.Errorf("NewStandby of the shared cluster did not fail the test (message %q)", rec.msg)
	}
}
