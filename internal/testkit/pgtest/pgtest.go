// Package pgtest gives integration tests a real PostgreSQL: one cluster
// shared by a test package (started on first use, closed after the last
// test), a fresh database per test in it, dedicated clusters for tests that
// stop or reconfigure the server, and streaming standbys of those for tests
// of read replicas. Every package that uses it calls Main from TestMain.
//
// It is for tests only; programs (the demo) use package pgserver directly.
// Missing PostgreSQL binaries fail the test binary rather than skip tests:
// an integration test that silently did not run is worse than a red build.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/pgtripwire/pgtripwire/internal/pgserver"
)

const (
	// startTimeout bounds initdb plus startup, on a loaded two-core CI
	// machine running several packages' clusters at once.
	startTimeout = 2 * time.Minute
	// opTimeout bounds one helper's round trip to the server.
	opTimeout = 30 * time.Second
)

// shared is the package-wide cluster. once guards the start, and is also
// spent by Main on its way out, so nothing can start a cluster that would
// never be closed.
var shared struct {
	mainCalled atomic.Bool
	once       sync.Once
	srv        *pgserver.Server
	err        error
}

// Main runs the package's tests, then closes the shared cluster and, if the
// tests passed, checks for leaked goroutines (opts are passed to goleak, to
// ignore a library's known background goroutine). It exits with the tests'
// status, or 1 if the PostgreSQL binaries cannot be found or the cluster
// does not close cleanly. Call it from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// If a test panics or the test binary times out, the process dies without
// returning here; the server then goes down with it (pgserver ties it to
// this process) and the next cluster started on the machine removes its
// directory.
func Main(m *testing.M, opts ...goleak.Option) {
	os.Exit(run(m, opts))
}

// Run is Main without the exit, for a TestMain that has its own clean-up to do
// afterwards: it returns the status to exit with.
func Run(m *testing.M, opts ...goleak.Option) int {
	return run(m, opts)
}

func run(m *testing.M, opts []goleak.Option) int {
	// Fail before any test runs, with the reason, rather than once per test.
	if _, err := pgserver.FindBinDir(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: integration tests need a PostgreSQL server: %v\n", err)
		return 1
	}
	shared.mainCalled.Store(true)
	closed := false
	defer func() {
		// Reached when m.Run panics on this goroutine (TestMain code);
		// a panic in a test's goroutine ends the process instead.
		if !closed {
			_ = closeShared()
		}
	}()

	code := m.Run()

	closed = true
	if err := closeShared(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	// Leaks are only worth reporting when the tests passed: a failed test
	// often leaves goroutines behind, and its own failure says more.
	if code == 0 {
		if err := goleak.Find(opts...); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: goroutines leaked by the tests: %v\n", err)
			code = 1
		}
	}
	return code
}

func closeShared() error {
	shared.once.Do(func() { shared.err = errors.New("pgtest: the tests are over (Main has returned)") })
	if shared.srv == nil {
		return nil
	}
	if err := shared.srv.Close(); err != nil {
		return fmt.Errorf("close shared PostgreSQL: %w", err)
	}
	return nil
}

// Shared returns the package's shared cluster, starting it on first use.
// Tests must not stop or reconfigure it (use NewServer for that); they should
// work in a database of their own (NewDatabase), and should not assume they
// are alone in the cluster: roles, replication slots and cluster-wide
// statistics are seen by every test of the package.
func Shared(t testing.TB) *pgserver.Server {
	t.Helper()
	if !shared.mainCalled.Load() {
		t.Fatal("pgtest: TestMain must call pgtest.Main(m), which closes the shared PostgreSQL after the tests")
	}
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		shared.srv, shared.err = pgserver.Start(ctx, pgserver.Options{})
	})
	if shared.err != nil {
		t.Fatalf("pgtest: %v", shared.err)
	}
	return shared.srv
}

// NewServer starts a cluster for t alone, with settings added to pgserver's
// defaults, and closes it when t ends. Use it for tests that stop, restart
// or reconfigure the server; it costs about a second and a half.
func NewServer(t testing.TB, settings map[string]string) *pgserver.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), startTimeout)
	defer cancel()
	srv, err := pgserver.Start(ctx, pgserver.Options{Settings: settings, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return srv
}

// NewStandby starts a streaming hot standby of primary, a cluster of t's own
// from NewServer, and closes it when t ends (dropping its slot on primary).
// The standby may be promoted, and primary stopped, during the test. It
// fails the test on error; every build can make one (the server-only builds
// through SQL, see pgserver's StartStandby). Use WaitReplay to see on the
// standby what was committed on primary.
func NewStandby(t testing.TB, primary *pgserver.Server) *pgserver.Server {
	t.Helper()
	if primary == shared.srv {
		// Every test of the package would see its slot and pay for its WAL.
		t.Fatalf("pgtest: make a standby of a cluster from NewServer, not of the shared one")
	}
	ctx, cancel := context.WithTimeout(t.Context(), startTimeout)
	defer cancel()
	sb, err := primary.StartStandby(ctx, pgserver.Options{Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := sb.Close(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return sb
}

// WaitReplay waits until standby has replayed what primary had written, a
// CREATE DATABASE included, failing the test if it does not within 30 s.
func WaitReplay(t testing.TB, standby, primary *pgserver.Server) {
	t.Helper()
	if err := standby.WaitReplay(t.Context(), primary); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

// Database is a database made for one test.
type Database struct {
	Name   string
	Server *pgserver.Server
}

// dbSeq makes database names unique within the test binary, which owns its
// clusters, also when a test runs more than once (-count, subtests with the
// same name).
var dbSeq atomic.Int64

// NewDatabase creates a database for t in the shared cluster, with
// pg_stat_statements installed, and drops it (disconnecting its clients and
// its replication streams) when t ends.
func NewDatabase(t testing.TB) *Database {
	t.Helper()
	return NewDatabaseIn(t, Shared(t))
}

// NewDatabaseIn is NewDatabase in a given cluster, such as one from
// NewServer. If the cluster is stopped when t ends, the database is left for
// the cluster's own cleanup.
func NewDatabaseIn(t testing.TB, srv *pgserver.Server) *Database {
	t.Helper()
	name := databaseName(t.Name(), dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	defer cancel()
	if err := srv.CreateDatabase(ctx, name); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if !srv.Running() {
			return
		}
		// t.Context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if err := srv.DropDatabase(ctx, name); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return &Database{Name: name, Server: srv}
}

// maxIdentifierLen is PostgreSQL's NAMEDATALEN - 1; longer names are
// silently truncated by the server, which could make two names collide.
const maxIdentifierLen = 63

// databaseName turns a test name such as "TestAlert/bulk read#01" into a
// lower-case identifier that needs no quoting ("testalert_bulk_read_01_7"),
// so it can be pasted into psql when debugging.
func databaseName(testName string, seq int64) string {
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		switch {
		case 'a' <= r && r <= 'z', '0' <= r && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "_"):
			b.WriteByte('_')
		}
	}
	base := strings.TrimSuffix(b.String(), "_")
	switch {
	case base == "":
		base = "db"
	case '0' <= base[0] && base[0] <= '9':
		base = "db_" + base
	}
	suffix := "_" + strconv.FormatInt(seq, 10)
	if len(base) > maxIdentifierLen-len(suffix) {
		base = strings.TrimSuffix(base[:maxIdentifierLen-len(suffix)], "_")
	}
	return base + suffix
}

// SuperuserDSN is a connection URL for the superuser to this database.
func (d *Database) SuperuserDSN() string { return d.Server.SuperuserDSN(d.Name) }

// DSN is a connection URL for role to this database.
func (d *Database) DSN(role string) string { return d.Server.DSN(role, d.Name) }

// Exec runs sql as the superuser in this database, failing the test on error.
// Without args, sql may hold several statements, run in one transaction.
// Like t.Fatal, it must be called from the test's goroutine.
func (d *Database) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	defer cancel()
	if err := d.Server.Exec(ctx, d.Name, sql, args...); err != nil {
		t.Fatalf("pgtest: %v\nSQL: %s", err, sql)
	}
}

// Conn connects to this database as role and closes the connection when t
// ends. Roles from CreateRole may log in without a password.
func (d *Database) Conn(t testing.TB, role string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, d.DSN(role))
	if err != nil {
		t.Fatalf("pgtest: connect to database %s as %s: %v", d.Name, role, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		_ = conn.Close(ctx) // the test is over; a failed goodbye changes nothing
	})
	return conn
}

// roleMu serialises CreateRole within the test binary, so that parallel
// tests creating the same role do not trip over each other's catalog
// updates ("tuple concurrently updated").
var roleMu sync.Mutex

// CreateRole makes sure role name exists with the given attributes (SQL role
// options such as "REPLICATION", "SUPERUSER", "CONNECTION LIMIT 5"), and
// LOGIN unless attrs include NOLOGIN. Roles belong to the cluster, not the
// database: every test of the package sees them, so they are never dropped,
// and an existing role is altered to the given attributes rather than
// recreated. Tests that need different attributes should use different
// names.
func (d *Database) CreateRole(t testing.TB, name string, attrs ...string) {
	t.Helper()
	options := append([]string{"LOGIN"}, attrs...)
	for _, a := range attrs {
		if strings.EqualFold(strings.TrimSpace(a), "NOLOGIN") {
			options = attrs
		}
	}
	role := pgx.Identifier{name}.Sanitize()
	// The DO block tolerates a role made by another process on the same
	// cluster (a demo, psql), which roleMu cannot see: duplicate_object when
	// it is already committed, unique_violation when it commits under us.
	sql := fmt.Sprintf(`
		DO $pgtest$
		BEGIN
			CREATE ROLE %s;
		EXCEPTION WHEN duplicate_object OR unique_violation THEN
			NULL;
		END
		$pgtest$;
		ALTER ROLE %s WITH %s`, role, role, strings.Join(options, " "))

	roleMu.Lock()
	defer roleMu.Unlock()
	d.Exec(t, sql)
}

// Program returns the path of client program name (pg_dump, pg_basebackup,
// pg_recvlogical, pgbench) of srv's build. It skips the test, saying why, when
// srv runs a server-only build (the npm builds of the compatibility suite's
// other versions ship initdb, pg_ctl and postgres alone), and fails it when a
// full installation lacks the program: there, a test that did not run would
// hide a broken machine.
func Program(t testing.TB, srv *pgserver.Server, name string) string {
	t.Helper()
	path, err := srv.Program(name)
	switch {
	case errors.Is(err, pgserver.ErrServerOnlyBuild):
		t.Skipf("pgtest: needs %s: %v", name, err)
	case err != nil:
		t.Fatalf("pgtest: %v", err)
	}
	return path
}
