package pgserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
)

// helperEnv makes the test binary act as a process that owns a cluster and
// is then killed; see TestServerDiesWithOwner.
const helperEnv = "PGSERVER_TEST_OWNER_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(runOwnerHelper())
	}
	goleak.VerifyTestMain(m)
}

// runOwnerHelper starts a cluster, reports its postmaster and directory on
// stdout, and holds it until stdin closes or it is killed.
func runOwnerHelper() int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Close()
	s.mu.Lock()
	pid := s.proc.pid
	s.mu.Unlock()
	fmt.Printf("%d %s\n", pid, s.dir)
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

func startServer(t *testing.T, opts Options) *Server {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(t)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func queryString(t *testing.T, conn *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	var got string
	if err := conn.QueryRow(t.Context(), sql, args...).Scan(&got); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return got
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("gave up after %v waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
}

func (s *Server) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.pid
}

func TestStartConfiguresCluster(t *testing.T) {
	t.Parallel()
	s := startServer(t, Options{Settings: map[string]string{
		"track_activity_query_size": "4096", // a new setting
		"max_connections":           "150",  // overrides a default
	}})
	conn := connect(t, s.SuperuserDSN("postgres"))

	for _, tc := range []struct{ setting, want string }{
		{"wal_level", "logical"},
		{"compute_query_id", "on"},
		{"shared_preload_libraries", "pg_stat_statements"},
		{"pg_stat_statements.track", "all"},
		{"listen_addresses", "127.0.0.1"},
		{"port", strconv.Itoa(s.Port())},
		{"unix_socket_directories", s.sockDir},
		{"data_directory", s.DataDir()},
		{"fsync", "off"},
		{"server_encoding", "UTF8"},
		{"track_activity_query_size", "4kB"},
		{"max_connections", "150"},
		{"max_replication_slots", "20"},
	} {
		if got := queryString(t, conn, "SELECT current_setting($1)", tc.setting); got != tc.want {
			t.Errorf("%s = %q, want %q", tc.setting, got, tc.want)
		}
	}
	// The lc_collate setting is gone from 16 on; the database's own column is on every version.
	if got := queryString(t, conn, "SELECT datcollate::text FROM pg_database WHERE datname = current_database()"); got != "C" {
		t.Errorf("datcollate = %q, want C", got)
	}
	if got, want := queryString(t, conn, "SELECT current_setting('server_version_num')::int / 10000"), strconv.Itoa(s.Version()); got != want {
		t.Errorf("server major version %s, Version() = %s", got, want)
	}
	if s.Version() < MinVersion {
		t.Errorf("Version() = %d, want >= %d", s.Version(), MinVersion)
	}
	if _, err := os.Stat(filepath.Join(s.sockDir, ".s.PGSQL."+strconv.Itoa(s.Port()))); err != nil {
		t.Errorf("no socket in the private socket directory: %v", err)
	}

	// The detector reads pg_stat_statements in the database it watches.
	if err := s.CreateDatabase(t.Context(), "app"); err != nil {
		t.Fatal(err)
	}
	app := connect(t, s.SuperuserDSN("app"))
	if _, err := app.Exec(t.Context(), "CREATE TABLE users (email text); SELECT email FROM users"); err != nil {
		t.Fatal(err)
	}
	var calls, nonzeroIDs int
	err := app.QueryRow(t.Context(), `
		SELECT count(*), count(*) FILTER (WHERE queryid <> 0)
		FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'app') AND query LIKE '%users%'`).Scan(&calls, &nonzeroIDs)
	if err != nil {
		t.Fatal(err)
	}
	if calls == 0 || nonzeroIDs != calls {
		t.Errorf("pg_stat_statements has %d entries for the users table, %d with a query id; want some, all with one", calls, nonzeroIDs)
	}
}

func TestRunsAsUnprivilegedUserWhenRoot(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root needs another user; CI runs as root")
	}
	s := startServer(t, Options{})
	want, err := serverIdentity()
	if err != nil {
		t.Fatal(err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid()))
	if err != nil {
		t.Fatal(err)
	}
	// "Uid:\treal\teffective\tsaved\tfs"
	var uidLine, groupsLine string
	for _, line := range strings.Split(string(status), "\n") {
		switch {
		case strings.HasPrefix(line, "Uid:"):
			uidLine = line
		case strings.HasPrefix(line, "Groups:"):
			groupsLine = line
		}
	}
	for _, uid := range strings.Fields(uidLine)[1:] {
		if uid != strconv.Itoa(int(want.uid)) {
			t.Errorf("postmaster %s, want every uid %d (%s)", uidLine, want.uid, want.name)
		}
	}
	if got := strings.TrimSpace(strings.TrimPrefix(groupsLine, "Groups:")); got != "" {
		t.Errorf("postmaster keeps supplementary groups %q, want none", got)
	}
	for _, path := range []string{s.dir, s.DataDir(), s.sockDir, s.LogPath()} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != want.uid {
			t.Errorf("%s is owned by uid %d, want %d", path, st.Uid, want.uid)
		}
	}
	if fi, err := os.Stat(s.dir); err == nil && fi.Mode().Perm() != 0o700 {
		t.Errorf("cluster directory mode %v, want 0700", fi.Mode().Perm())
	}
}

// TestLifecycle walks a cluster through Stop, StartAgain, Restart and Close.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	s := startServer(t, Options{})
	dsn := s.SuperuserDSN("postgres")
	if err := s.Exec(t.Context(), "postgres", "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	held := connect(t, dsn) // a client connected across the restart

	if err := s.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if s.Running() {
		t.Error("Running() after Stop")
	}
	if conn, err := pgx.Connect(t.Context(), dsn); err == nil {
		conn.Close(t.Context())
		t.Fatal("connected to a stopped server")
	}
	if err := held.Ping(t.Context()); err == nil {
		t.Error("a connection from before Stop still works")
	}
	if err := s.Stop(t.Context()); err != nil {
		t.Errorf("second Stop: %v", err)
	}

	port := s.Port()
	if err := s.StartAgain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !s.Running() {
		t.Error("not Running() after StartAgain")
	}
	if s.Port() != port || s.SuperuserDSN("postgres") != dsn {
		t.Errorf("address changed across StartAgain: port %d, want %d", s.Port(), port)
	}
	conn := connect(t, dsn)
	if got := queryString(t, conn, "SELECT v::text FROM kept"); got != "42" {
		t.Errorf("row after restart = %s, want 42", got)
	}
	if err := s.StartAgain(t.Context()); err == nil {
		t.Error("StartAgain on a running server succeeded")
	}

	if err := s.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	connect(t, dsn)

	pid := s.pid()
	if pid == 0 || !processAlive(pid) {
		t.Fatalf("postmaster pid %d not running", pid)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s.Running() {
		t.Error("Running() after Close")
	}
	if _, err := os.Stat(s.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster directory after Close: %v, want it gone", err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("postmaster %d still exists after Close", pid)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.StartAgain(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("StartAgain after Close: %v, want ErrClosed", err)
	}
}

// TestServerDiesWithOwner kills a process that owns a cluster with SIGKILL,
// as `go test -timeout` or an OOM kill would, and checks that the server goes
// down with it and that the next Start's sweep removes what it left.
func TestServerDiesWithOwner(t *testing.T) {
	t.Parallel()
	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), helperEnv+"=1")
	helper.Stderr = os.Stderr
	stdin, err := helper.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	var postmaster int
	var dir string
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if _, serr := fmt.Sscanf(line, "%d %s", &postmaster, &dir); err != nil || serr != nil {
		_ = helper.Process.Kill()
		_ = helper.Wait()
		t.Fatalf("helper said %q (%v, %v)", line, err, serr)
	}
	if !processAlive(postmaster) {
		t.Fatalf("postmaster %d not running", postmaster)
	}

	if err := helper.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait() // "signal: killed"

	// Should the server outlive its owner, do not leave it running.
	t.Cleanup(func() {
		if processAlive(postmaster) {
			_ = syscall.Kill(postmaster, syscall.SIGQUIT)
		}
	})
	waitFor(t, 15*time.Second, "postmaster to die with its owner", func() bool { return !processAlive(postmaster) })

	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("killed owner's directory: %v, want it left behind", err)
	}
	removeStaleDirs(filepath.Dir(dir), zaptest.NewLogger(t))
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale directory of a killed owner survived the sweep: %v", err)
	}
}

func TestRemoveStaleDirs(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	dead := deadPid(t)
	old := time.Now().Add(-2 * ownerlessGrace)

	type dir struct {
		owner, postmaster string // file contents; "" = no file
		old               bool   // modified before ownerlessGrace
		wantKept          bool
	}
	live := strconv.Itoa(os.Getpid())
	cases := map[string]dir{
		"dead-owner":                      {owner: strconv.Itoa(dead), wantKept: false},
		"dead-owner-dead-postmaster":      {owner: strconv.Itoa(dead), postmaster: strconv.Itoa(dead) + "\n/data\n", wantKept: false},
		"live-owner":                      {owner: live, wantKept: true},
		"dead-owner-live-postmaster":      {owner: strconv.Itoa(dead), postmaster: live + "\n/data\n", wantKept: true},
		"no-owner-file-yet":               {wantKept: true},
		"no-owner-file-old":               {old: true, wantKept: false},
		"garbled-owner":                   {owner: "not a pid", wantKept: true},
		"../unrelated-" + dirPrefix + "x": {owner: strconv.Itoa(dead), wantKept: true}, // not matched by the prefix
	}
	for name, d := range cases {
		path := filepath.Join(root, dirPrefix+name)
		if strings.HasPrefix(name, "../") {
			path = filepath.Join(root, "unrelated")
		}
		if err := os.MkdirAll(filepath.Join(path, "data"), 0o700); err != nil {
			t.Fatal(err)
		}
		if d.owner != "" {
			writeFile(t, filepath.Join(path, ownerFile), d.owner+"\n")
		}
		if d.postmaster != "" {
			writeFile(t, filepath.Join(path, "data", "postmaster.pid"), d.postmaster)
		}
		if d.old {
			if err := os.Chtimes(path, old, old); err != nil {
				t.Fatal(err)
			}
		}
	}

	removeStaleDirs(root, zaptest.NewLogger(t))

	for name, d := range cases {
		path := filepath.Join(root, dirPrefix+name)
		if strings.HasPrefix(name, "../") {
			path = filepath.Join(root, "unrelated")
		}
		_, err := os.Stat(path)
		if kept := err == nil; kept != d.wantKept {
			t.Errorf("%s: kept = %v, want %v", name, kept, d.wantKept)
		}
	}
}

// deadPid returns the pid of a process that has exited and been reaped.
func deadPid(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestDropDatabaseWithActiveSlot drops a database while a client streams
// from one of its logical replication slots, which plain DROP DATABASE ...
// WITH (FORCE) refuses; WAL-source tests leave exactly that behind.
func TestDropDatabaseWithActiveSlot(t *testing.T) {
	t.Parallel()
	s := startServer(t, Options{})
	ctx := t.Context()
	if err := s.CreateDatabase(ctx, "streamed"); err != nil {
		t.Fatal(err)
	}
	if err := s.Exec(ctx, "streamed", `
		SELECT pg_create_logical_replication_slot('active_slot', 'test_decoding');
		SELECT pg_create_logical_replication_slot('idle_slot', 'test_decoding')`); err != nil {
		t.Fatal(err)
	}
	recvlogical, err := s.Program("pg_recvlogical")
	if errors.Is(err, ErrServerOnlyBuild) {
		t.Skip(err)
	} else if err != nil {
		t.Fatal(err)
	}
	recv := exec.Command(recvlogical,
		"-d", s.SuperuserDSN("streamed"), "--slot", "active_slot", "--start", "--no-loop", "-f", os.DevNull)
	if err := recv.Start(); err != nil {
		t.Fatal(err)
	}
	recvDone := make(chan error, 1)
	go func() { recvDone <- recv.Wait() }()
	defer func() {
		_ = recv.Process.Kill()
		<-recvDone
	}()

	conn := connect(t, s.SuperuserDSN("postgres"))
	waitFor(t, 15*time.Second, "pg_recvlogical to stream from its slot", func() bool {
		return queryString(t, conn, "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = 'active_slot' AND active") == "1"
	})

	if err := s.DropDatabase(ctx, "streamed"); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, conn, "SELECT count(*)::text FROM pg_database WHERE datname = 'streamed'"); got != "0" {
		t.Errorf("database still exists")
	}
	if got := queryString(t, conn, "SELECT count(*)::text FROM pg_replication_slots"); got != "0" {
		t.Errorf("%s replication slots left, want 0", got)
	}
	if err := s.DropDatabase(ctx, "streamed"); err != nil {
		t.Errorf("dropping a dropped database: %v", err)
	}
	select {
	case err := <-recvDone:
		recvDone <- err // for the deferred wait
	case <-time.After(15 * time.Second):
		t.Error("pg_recvlogical still streaming from a dropped database")
	}
}

// The tests below change the environment, so they cannot run in parallel;
// Go runs them before any parallel test resumes, so no other cluster of this
// package is being made while they look at os.TempDir.

func TestStartFailureReportsLogAndLeavesNothing(t *testing.T) {
	before := ourDirs(t)
	_, err := Start(t.Context(), Options{
		Logger:   zaptest.NewLogger(t),
		Settings: map[string]string{"shared_buffers": "lots"},
	})
	if err == nil {
		t.Fatal("Start with an invalid setting succeeded")
	}
	// The reason is only in the server's log.
	if !strings.Contains(err.Error(), `invalid value for parameter "shared_buffers"`) {
		t.Errorf("error does not carry the server log's reason:\n%v", err)
	}
	if after := ourDirs(t); len(after) != len(before) {
		t.Errorf("failed Start left directories behind: before %v, after %v", before, after)
	}
}

// ourDirs lists the cluster directories owned by this process.
func ourDirs(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	var ours []string
	for _, d := range dirs {
		if pid, err := readPid(filepath.Join(d, ownerFile)); err == nil && pid == os.Getpid() {
			ours = append(ours, d)
		}
	}
	return ours
}

// TestStartRetriesWhenPortIsTaken covers the race between choosing a free
// port and the postmaster binding it, which parallel test packages lose now
// and then: once to a plain listener (the postmaster cannot bind), once to
// another cluster (the postmaster cannot bind, and the readiness probe
// reaches the wrong server).
func TestStartRetriesWhenPortIsTaken(t *testing.T) {
	t.Parallel()
	other := startServer(t, Options{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := []int{l.Addr().(*net.TCPAddr).Port, other.Port()}
	var offered []int
	s := startServer(t, Options{pickPort: func() (int, error) {
		if len(offered) < len(taken) {
			offered = append(offered, taken[len(offered)])
			return offered[len(offered)-1], nil
		}
		p, err := freePort()
		offered = append(offered, p)
		return p, err
	}})
	if len(offered) != portAttempts || s.Port() != offered[len(offered)-1] {
		t.Errorf("offered ports %v, server on %d; want it on the third", offered, s.Port())
	}
	conn := connect(t, s.SuperuserDSN("postgres"))
	if got := queryString(t, conn, "SHOW data_directory"); got != s.DataDir() {
		t.Errorf("connected to the cluster in %s, want %s", got, s.DataDir())
	}
	log, err := os.ReadFile(s.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	// The plain listener's clash always shows in the log. The other
	// cluster's may not: the probe can reach that cluster and stop ours
	// before it tries to bind.
	if !strings.Contains(string(log), "Address already in use") {
		t.Errorf("server log shows no failed bind:\n%s", log)
	}
}

func TestStartRejectsBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"managed setting", Options{Settings: map[string]string{"port": "5432"}}, `"port": chosen by the harness`},
		{"not a parameter", Options{Settings: map[string]string{"x = 1\nfsync": "on"}}, "not a parameter name"},
		{"bin dir without server", Options{BinDir: t.TempDir()}, "no executable initdb or postgres"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Start(t.Context(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Start: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestStartAsRootNeedsSearchableTempDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only matters when the server runs as another user")
	}
	private := t.TempDir() // mode 0700, owned by root
	t.Setenv("TMPDIR", private)
	_, err := Start(t.Context(), Options{})
	if err == nil || !strings.Contains(err.Error(), "cannot enter") {
		t.Errorf("Start with TMPDIR=%s: %v, want an error saying the server user cannot enter it", private, err)
	}
}

func TestFindBinDir(t *testing.T) {
	t.Setenv(BinDirEnv, "")
	t.Setenv(VersionEnv, "")
	found, err := FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	if err := hasServerBinaries(found); err != nil {
		t.Errorf("FindBinDir() = %s: %v", found, err)
	}

	t.Setenv(BinDirEnv, found)
	if got, err := FindBinDir(); err != nil || got != found {
		t.Errorf("with $%s=%s: FindBinDir() = %q, %v", BinDirEnv, found, got, err)
	}

	// A wrong explicit choice is an error, not a reason to pick another
	// version behind the caller's back.
	empty := t.TempDir()
	t.Setenv(BinDirEnv, empty)
	if _, err := FindBinDir(); err == nil || !strings.Contains(err.Error(), BinDirEnv) || !strings.Contains(err.Error(), empty) {
		t.Errorf("with $%s=%s: FindBinDir() error = %v, want one naming both", BinDirEnv, empty, err)
	}
}

// TestFindBinDirByVersion selects a build by major version, as `make test` does for the
// compatibility suite, and refuses what it cannot honour.
func TestFindBinDirByVersion(t *testing.T) {
	t.Setenv(BinDirEnv, "")
	t.Setenv(VersionEnv, "")
	dir, err := FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	v, err := serverVersion(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}

	t.Setenv(VersionEnv, strconv.Itoa(v))
	got, err := FindBinDir()
	if err != nil {
		t.Fatalf("with $%s=%d: %v", VersionEnv, v, err)
	}
	if gotV, err := serverVersion(t.Context(), got); err != nil || gotV != v {
		t.Errorf("with $%s=%d: FindBinDir() = %s, version %d, %v", VersionEnv, v, got, gotV, err)
	}

	// A version that is not installed says how to install it; nonsense is refused.
	t.Setenv(VersionEnv, "99")
	if _, err := FindBinDir(); err == nil || !strings.Contains(err.Error(), "install-postgres.sh 99") {
		t.Errorf("with $%s=99: FindBinDir() error = %v, want one naming the install script", VersionEnv, err)
	}
	for _, bad := range []string{"seventeen", "13", "9.6"} {
		t.Setenv(VersionEnv, bad)
		if _, err := FindBinDir(); err == nil || !strings.Contains(err.Error(), VersionEnv) {
			t.Errorf("with $%s=%s: FindBinDir() error = %v, want one naming the variable", VersionEnv, bad, err)
		}
	}

	// With both variables, the directory must hold the version asked for.
	t.Setenv(BinDirEnv, dir)
	t.Setenv(VersionEnv, strconv.Itoa(v+1))
	if _, err := Start(t.Context(), Options{}); err == nil || !strings.Contains(err.Error(), "is version "+strconv.Itoa(v)) {
		t.Errorf("with $%s=%s and $%s=%d: Start error = %v, want a version mismatch", BinDirEnv, dir, VersionEnv, v+1, err)
	}
}

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int
		wantErr bool
	}{
		{"postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n", 15, false},
		{"postgres (PostgreSQL) 17beta1\n", 17, false},
		{"postgres (PostgreSQL) 14.0", 14, false},
		{"postgres (PostgreSQL) 9.6.24", 9, false},
		{"postgres (EnterpriseDB) 15", 0, true},
		{"", 0, true},
	} {
		got, err := parseVersion(tc.in)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("parseVersion(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestConfigLines(t *testing.T) {
	got, err := configLines(map[string]string{
		"fsync":                    "on",
		"application_name":         `it's a \ test`,
		"pg_stat_statements.track": "top",
	})
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(got, "\n")
	for _, want := range []string{
		"fsync = 'on'",
		`application_name = 'it''s a \\ test'`,
		"pg_stat_statements.track = 'top'",
		"wal_level = 'logical'",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("config lacks %q:\n%s", want, joined)
		}
	}
	if strings.Contains(joined, "fsync = 'off'") || strings.Contains(joined, "track = 'all'") {
		t.Errorf("a default survived its override:\n%s", joined)
	}
}

func TestServerIdentity(t *testing.T) {
	got, err := serverIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		if got != nil {
			t.Errorf("not root, but the server would run as %s", got.name)
		}
		return
	}
	want, err := user.Lookup(serverUserCandidates[0])
	if err != nil {
		t.Skipf("no %s user here: %v", serverUserCandidates[0], err)
	}
	if got == nil || strconv.Itoa(int(got.uid)) != want.Uid {
		t.Errorf("serverIdentity() = %+v, want user %s (uid %s)", got, want.Username, want.Uid)
	}
}
