package pgserver

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap/zaptest"
)

// backupMethod is one way StartStandby takes its base backup.
type backupMethod struct {
	name string
	sql  bool // Options.sqlBaseBackup
}

// backupMethods are the ways a standby can be made. On a build without
// pg_basebackup both take the SQL base backup; the first skips there, so that
// the same test does not run twice.
var backupMethods = []backupMethod{{name: "pg_basebackup"}, {name: "SQL", sql: true}}

// use sets opts for m, skipping t, before it starts a server, when m is
// pg_basebackup and the build the harness finds lacks it.
func (m backupMethod) use(t *testing.T, opts Options) Options {
	t.Helper()
	if !m.sql {
		dir, err := FindBinDir()
		if err != nil {
			t.Fatal(err)
		}
		if err := hasProgram(filepath.Join(dir, "pg_basebackup")); err != nil {
			t.Skipf("the build's standbys are made through SQL: %v", err)
		}
	}
	opts.sqlBaseBackup = m.sql
	return opts
}

// startStandby starts a standby of primary for t and closes it when t ends.
func startStandby(t *testing.T, primary *Server, opts Options) *Server {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(t)
	}
	started := time.Now()
	sb, err := primary.StartStandby(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("standby of PostgreSQL %d started in %v (SQL base backup: %v)",
		sb.Version(), time.Since(started).Round(time.Millisecond), opts.sqlBaseBackup)
	t.Cleanup(func() {
		if err := sb.Close(); err != nil {
			t.Error(err)
		}
	})
	return sb
}

func stat(t *testing.T, path string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

func count(t *testing.T, conn *pgx.Conn, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(t.Context(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// TestStandbyReplicatesAndPromotes walks a streaming hot standby through what
// the detector's tests need of a read replica: the primary's data, read-only
// sessions, databases made later, pg_stat_statements of its own, promotion,
// and no slot left on the primary once it is closed.
func TestStandbyReplicatesAndPromotes(t *testing.T) {
	t.Parallel()
	for _, m := range backupMethods {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			testStandbyReplicatesAndPromotes(t, m)
		})
	}
}

func testStandbyReplicatesAndPromotes(t *testing.T, m backupMethod) {
	opts := m.use(t, Options{})
	primary := startServer(t, Options{})
	if err := primary.CreateDatabase(t.Context(), "app"); err != nil {
		t.Fatal(err)
	}
	if err := primary.Exec(t.Context(), "app", `
		CREATE TABLE users (email text);
		INSERT INTO users SELECT 'user' || i || '@example.com' FROM generate_series(1, 3) i`); err != nil {
		t.Fatal(err)
	}

	sb := startStandby(t, primary, opts)
	// The standby keeps the label of the backup it was made from.
	label, err := os.ReadFile(filepath.Join(sb.DataDir(), "backup_label.old"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Contains(string(label), "LABEL: "+sqlBackupLabelPrefix+sb.Slot()+"\n"), m.sql; got != want {
		t.Errorf("made by the SQL base backup = %v, want %v; backup_label:\n%s", got, want, label)
	}
	// As initdb leaves it: the server's user's, private (PostgreSQL refuses
	// a data directory of another user, or one others may read).
	sbInfo, pInfo := stat(t, sb.DataDir()), stat(t, primary.DataDir())
	if sbInfo.Mode().Perm() != 0o700 || sbInfo.Sys().(*syscall.Stat_t).Uid != pInfo.Sys().(*syscall.Stat_t).Uid {
		t.Errorf("standby data directory mode %v uid %d, want 0700 and the primary's uid %d", sbInfo.Mode().Perm(),
			sbInfo.Sys().(*syscall.Stat_t).Uid, pInfo.Sys().(*syscall.Stat_t).Uid)
	}
	if !sb.IsStandby() || primary.IsStandby() {
		t.Errorf("IsStandby: standby %v, primary %v; want true, false", sb.IsStandby(), primary.IsStandby())
	}
	if sb.Port() == primary.Port() || sb.DataDir() == primary.DataDir() {
		t.Errorf("standby shares the primary's port %d or data directory %s", sb.Port(), sb.DataDir())
	}
	pconn := connect(t, primary.SuperuserDSN("postgres"))
	if n := count(t, pconn, `SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'`); n != 1 {
		t.Errorf("primary has %d streaming replicas, want 1", n)
	}
	if n := count(t, pconn, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND slot_type = 'physical' AND active`, sb.Slot()); n != 1 {
		t.Errorf("primary has %d active physical slots named %q, want 1", n, sb.Slot())
	}

	app := connect(t, sb.SuperuserDSN("app"))
	if got := queryString(t, app, "SELECT pg_is_in_recovery()::text"); got != "true" {
		t.Errorf("standby pg_is_in_recovery() = %s, want true", got)
	}
	if n := count(t, app, "SELECT count(*) FROM users"); n != 3 {
		t.Errorf("standby has %d users, want the primary's 3", n)
	}
	_, err = app.Exec(t.Context(), "INSERT INTO users VALUES ('intruder@example.com')")
	if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "25006" {
		t.Errorf("write on the standby: %v, want SQLSTATE 25006 (read_only_sql_transaction)", err)
	}

	// The detector reads pg_stat_statements on the replica itself: the
	// library comes with the base backup's configuration, the extension with
	// the primary's catalog, and the counts are the standby's own.
	if got := queryString(t, app, "SELECT current_setting('shared_preload_libraries')"); got != "pg_stat_statements" {
		t.Errorf("standby shared_preload_libraries = %q, want pg_stat_statements", got)
	}
	for range 2 {
		if _, err := app.Exec(t.Context(), "SELECT email FROM users WHERE email LIKE 'user%'"); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(t, app, `SELECT coalesce(sum(calls), 0)::int FROM pg_stat_statements WHERE query LIKE 'SELECT email FROM users WHERE email LIKE%'`); n != 2 {
		t.Errorf("standby's pg_stat_statements counts %d calls of the read run on it, want 2", n)
	}
	if n := count(t, pconn, `SELECT count(*) FROM pg_stat_statements WHERE query LIKE 'SELECT email FROM users WHERE email LIKE%'`); n != 0 {
		t.Errorf("primary's pg_stat_statements has %d entries for the read run on the standby, want 0", n)
	}

	// A database made on the primary after the standby started.
	if err := primary.CreateDatabase(t.Context(), "later"); err != nil {
		t.Fatal(err)
	}
	if err := primary.Exec(t.Context(), "later", "CREATE TABLE t AS SELECT 42 AS answer"); err != nil {
		t.Fatal(err)
	}
	if err := sb.WaitReplay(t.Context(), primary); err != nil {
		t.Fatal(err)
	}
	later := connect(t, sb.SuperuserDSN("later"))
	if n := count(t, later, "SELECT answer FROM t"); n != 42 {
		t.Errorf("standby reads %d from the new database, want 42", n)
	}

	if err := sb.Promote(t.Context()); err != nil {
		t.Fatal(err)
	}
	if sb.IsStandby() {
		t.Error("IsStandby() after Promote = true")
	}
	if _, err := app.Exec(t.Context(), "INSERT INTO users VALUES ('after@example.com')"); err != nil {
		t.Errorf("write after Promote: %v", err)
	}

	if err := sb.Close(); err != nil {
		t.Fatal(err)
	}
	if n := count(t, pconn, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, sb.Slot()); n != 0 {
		t.Errorf("Close left the standby's slot %q on the primary", sb.Slot())
	}
	if _, err := os.Stat(sb.DataDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Close left the standby's data directory: %v", err)
	}
}

// TestStandbyStartFailureLeavesNothing: a standby that does not come up
// leaves neither its directory nor its slot on the primary, and its error
// says why. Not parallel: it counts this process's cluster directories.
func TestStandbyStartFailureLeavesNothing(t *testing.T) {
	for _, m := range backupMethods {
		t.Run(m.name, func(t *testing.T) { testStandbyStartFailureLeavesNothing(t, m) })
	}
}

func testStandbyStartFailureLeavesNothing(t *testing.T, m backupMethod) {
	opts := m.use(t, Options{
		Logger:   zaptest.NewLogger(t),
		Settings: map[string]string{"shared_buffers": "lots"},
	})
	primary := startServer(t, Options{})
	before := ourDirs(t)
	_, err := primary.StartStandby(t.Context(), opts)
	if err == nil {
		t.Fatal("StartStandby with an invalid setting succeeded")
	}
	if !strings.Contains(err.Error(), `invalid value for parameter "shared_buffers"`) {
		t.Errorf("error does not carry the server log's reason:\n%v", err)
	}
	if after := ourDirs(t); len(after) != len(before) {
		t.Errorf("failed StartStandby left directories behind: before %v, after %v", before, after)
	}
	conn := connect(t, primary.SuperuserDSN("postgres"))
	if n := count(t, conn, `SELECT count(*) FROM pg_replication_slots`); n != 0 {
		t.Errorf("failed StartStandby left %d replication slots on the primary", n)
	}
}

func TestStartStandbyRejectsBadOptions(t *testing.T) {
	t.Parallel()
	primary := startServer(t, Options{})
	for _, opts := range []Options{
		{BinDir: t.TempDir()},
		{Settings: map[string]string{"hot_standby": "off"}},
		{Settings: map[string]string{"port": "5432"}},
	} {
		if sb, err := primary.StartStandby(t.Context(), opts); err == nil {
			sb.Close()
			t.Errorf("StartStandby(%+v) succeeded", opts)
		}
	}
}
