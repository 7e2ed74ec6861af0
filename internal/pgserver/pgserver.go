// Package pgserver starts and owns throwaway PostgreSQL clusters: a fresh
// data directory made by initdb in a temporary directory, a postmaster run as
// a child process on a free loopback port, configured the way pgtripwire
// needs its database (logical WAL, pg_stat_statements, query ids), and
// streaming hot standbys of them (StartStandby) for tests of read replicas
// and failover. The integration tests use it through package pgtest, and
// `make demo` uses it directly.
//
// It is not a way to manage a real database: clusters trust every local
// connection, run with fsync off, and are deleted by Close. It does not use
// package testing, so it can live in a binary.
//
// When the process runs as root (as CI does), the server runs as the
// unprivileged "postgres" user (or "nobody"), because PostgreSQL refuses to
// run as root. The server is tied to this process: if the process dies, even
// by SIGKILL, the kernel shuts the server down, and the next Start in any
// process removes the directory left behind.
package pgserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// Options configures Start. The zero value is ready to use.
type Options struct {
	// BinDir holds initdb and postgres. Empty means FindBinDir.
	BinDir string
	// Settings are postgresql.conf parameters applied after the harness's
	// defaults, so they override them (e.g. "track_activity_query_size":
	// "4096"). port, listen_addresses and unix_socket_directories belong to
	// the harness and are rejected.
	Settings map[string]string
	// Logger receives lifecycle messages; nil discards them.
	Logger *zap.Logger

	// pickPort replaces freePort in tests that force a port clash.
	pickPort func() (int, error)
	// sqlBaseBackup makes StartStandby take its base backup through SQL
	// even when the build has pg_basebackup, so that a build with it tests
	// both ways.
	sqlBaseBackup bool
}

// defaultSettings is what every cluster runs with. The first group is what
// the detector reads (logical replication for the WAL source,
// pg_stat_statements with query ids, statements inside functions counted
// too); the capacity limits leave room for many tests in parallel; the last
// group trades durability, which a throwaway cluster does not need, for
// speed.
var defaultSettings = map[string]string{
	"wal_level":                "logical",
	"shared_preload_libraries": "pg_stat_statements",
	"compute_query_id":         "on",
	"pg_stat_statements.track": "all",

	"max_replication_slots": "20",
	"max_wal_senders":       "20",
	"max_connections":       "200",
	// The tests sharing a cluster run thousands of distinct statements (sqlmap's
	// payloads alone); at the default 5,000 entries pg_stat_statements evicts the
	// one-call entry of a test's read before the detector polls it.
	"pg_stat_statements.max": "20000",

	"fsync":              "off",
	"synchronous_commit": "off",
	"full_page_writes":   "off",
}

// managedSettings are chosen by the harness because Host, Port and the
// private socket directory depend on them.
var managedSettings = []string{"port", "listen_addresses", "unix_socket_directories"}

const (
	host = "127.0.0.1"
	// superuser is the bootstrap role initdb creates (-U).
	superuser = "postgres"
	// confFile is the harness's own configuration file, included from
	// postgresql.conf so that it can be rewritten (a new port after a clash)
	// without editing the file initdb wrote.
	confFile = "pgtripwire.conf"
	logFile  = "postgres.log"
	// portAttempts bounds retries when another process takes the free port
	// between our probe and the postmaster's bind.
	portAttempts = 3
	// readyTimeout bounds the wait for a started postmaster to accept
	// connections (crash recovery after an immediate shutdown included).
	readyTimeout = 30 * time.Second
	// logTailLines is how much of the server log a startup error carries.
	logTailLines = 20
)

// ErrClosed is returned by methods that need the cluster after Close.
var ErrClosed = errors.New("pgserver: server is closed")

// errPortInUse marks a startup that failed only because the port was taken.
var errPortInUse = errors.New("port already in use")

// Server is a running (or stopped) throwaway cluster. Its address never
// changes: StartAgain reuses the port, so clients can reconnect to the same
// DSN. Methods are safe for concurrent use.
type Server struct {
	log     *zap.Logger
	binDir  string
	version int
	as      *runAs // nil: the server runs as this process's user
	dir     string // the temporary directory holding everything below
	dataDir string
	sockDir string
	logPath string
	port    int
	// settings are the caller's Options.Settings, which a standby inherits.
	settings map[string]string

	// primary and slot are set on a standby (StartStandby): the server it
	// streams from and its physical replication slot there.
	primary *Server
	slot    string

	mu       sync.Mutex
	proc     *process // nil while stopped
	closed   bool
	promoted bool // a standby made a primary by Promote
}

// Start creates a cluster in a new temporary directory and starts it. ctx
// bounds the startup only; the server runs until Stop or Close, or until
// this process exits. On error nothing is left behind, and an error from the
// server's own startup carries the last lines of its log.
func Start(ctx context.Context, opts Options) (_ *Server, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("start PostgreSQL: %w", err)
		}
	}()
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	log = log.Named("pgserver")

	conf, err := configLines(opts.Settings)
	if err != nil {
		return nil, err
	}
	binDir := opts.BinDir
	if binDir == "" {
		if binDir, err = FindBinDir(); err != nil {
			return nil, err
		}
	} else if err := hasServerBinaries(binDir); err != nil {
		return nil, fmt.Errorf("%s: %w", binDir, err)
	}
	version, err := serverVersion(ctx, binDir)
	if err != nil {
		return nil, err
	}
	// A run that asked for a version never silently gets another one.
	if want, err := RequestedVersion(); err != nil {
		return nil, err
	} else if want != 0 && opts.BinDir == "" && version != want {
		return nil, fmt.Errorf("$%s=%d, but the postgres in %s is version %d", VersionEnv, want, binDir, version)
	}
	as, err := serverIdentity()
	if err != nil {
		return nil, err
	}
	// The server's user runs the binaries too: a build unpacked in a checkout
	// under /root is out of its reach.
	if err := as.checkTraversable(filepath.Join(binDir, "postgres"), "make the directories above it world-searchable (chmod o+x), or install the build elsewhere and set "+BinDirEnv); err != nil {
		return nil, err
	}

	s, err := newServer(log, binDir, version, as, opts.Settings)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = s.Close() // the startup error is the one worth reporting
		}
	}()
	if err := s.initdb(ctx); err != nil {
		return nil, err
	}
	if err := s.startOnFreePort(ctx, conf, opts.pickPort); err != nil {
		return nil, err
	}

	// The detector reads pg_stat_statements from the database it connects
	// to, and demos connect to "postgres". template1 is left alone, so a
	// plain CREATE DATABASE still gives a database without the extension,
	// as on a real server.
	if err := s.Exec(ctx, "postgres", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		return nil, err
	}
	log.Info("PostgreSQL started",
		zap.Int("port", s.port), zap.Int("version", version),
		zap.String("dir", s.dir), zap.String("user", s.userName()))
	return s, nil
}

// newServer creates a cluster directory, laid out for the server's user,
// with an empty data directory. On error nothing is left behind; once it has
// returned a server, the caller closes it on error.
func newServer(log *zap.Logger, binDir string, version int, as *runAs, settings map[string]string) (*Server, error) {
	removeStaleDirs(os.TempDir(), log)
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("create cluster directory: %w", err)
	}
	s := &Server{
		log:      log,
		binDir:   binDir,
		version:  version,
		as:       as,
		settings: maps.Clone(settings),
		dir:      dir,
		dataDir:  filepath.Join(dir, "data"),
		sockDir:  filepath.Join(dir, "socket"),
		logPath:  filepath.Join(dir, logFile),
	}
	if err := s.layOut(); err != nil {
		_ = s.Close() // the layout error is the one worth reporting
		return nil, err
	}
	return s, nil
}

// startOnFreePort writes the configuration (conf plus the managed settings)
// for a free port and starts the postmaster there, trying another port when
// another process takes it first. pickPort nil means freePort.
func (s *Server) startOnFreePort(ctx context.Context, conf []string, pickPort func() (int, error)) error {
	if pickPort == nil {
		pickPort = freePort
	}
	for attempt := 1; ; attempt++ {
		var err error
		if s.port, err = pickPort(); err != nil {
			return err
		}
		if err := s.writeConf(conf); err != nil {
			return err
		}
		s.mu.Lock()
		err = s.startLocked(ctx)
		s.mu.Unlock()
		if err == nil {
			return nil
		}
		if !errors.Is(err, errPortInUse) || attempt == portAttempts {
			return err
		}
		s.log.Debug("port taken during startup, trying another", zap.Int("port", s.port))
	}
}

// layOut writes the owner file and creates the socket directory, then hands
// the whole tree to the server's user. Everything stays mode 0700: the
// cluster trusts every connection that reaches it, including on its socket.
func (s *Server) layOut() error {
	pid := strconv.Itoa(os.Getpid()) + "\n"
	if err := os.WriteFile(filepath.Join(s.dir, ownerFile), []byte(pid), 0o600); err != nil {
		return fmt.Errorf("write owner file: %w", err)
	}
	for _, d := range []string{s.dataDir, s.sockDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	f, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create server log: %w", err)
	}
	f.Close()
	if err := s.as.checkTraversable(s.dir, "set TMPDIR to a world-searchable directory such as /tmp"); err != nil {
		return err
	}
	return s.as.chownTree(s.dir)
}

func (s *Server) initdb(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, filepath.Join(s.binDir, "initdb"),
		"-D", s.dataDir,
		"-U", superuser,
		"--auth=trust",
		"-E", "UTF8",
		"--locale=C",
		"--no-sync",
		"--no-instructions",
	)
	cmd.Dir = s.dir
	cmd.Env = s.childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.as.credential()}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb as user %s: %w\n%s", s.userName(), err, lastLines(string(out), logTailLines))
	}
	// initdb wrote postgresql.conf; our settings go in a file of their own.
	f, err := os.OpenFile(filepath.Join(s.dataDir, "postgresql.conf"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("include %s from postgresql.conf: %w", confFile, err)
	}
	_, err = fmt.Fprintf(f, "\n# Written by pgtripwire's test harness.\ninclude '%s'\n", confFile)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("include %s from postgresql.conf: %w", confFile, err)
	}
	return nil
}

// settingKey is what a postgresql.conf parameter name looks like, including
// extension parameters such as pg_stat_statements.track.
var settingKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)

// configLines merges the defaults with the caller's settings into
// postgresql.conf lines, sorted so the file is the same on every run.
func configLines(settings map[string]string) ([]string, error) {
	merged := make(map[string]string, len(defaultSettings)+len(settings))
	for k, v := range defaultSettings {
		merged[k] = v
	}
	for k, v := range settings {
		if !settingKey.MatchString(k) {
			return nil, fmt.Errorf("setting %q: not a parameter name", k)
		}
		if slices.Contains(managedSettings, strings.ToLower(k)) {
			return nil, fmt.Errorf("setting %q: chosen by the harness, cannot be overridden", k)
		}
		merged[k] = v
	}
	lines := make([]string, 0, len(merged))
	for k, v := range merged {
		lines = append(lines, k+" = "+quoteConf(v))
	}
	slices.Sort(lines)
	return lines, nil
}

// quoteConf quotes a value for postgresql.conf, where any parameter may be
// given as a quoted string and backslash escapes are honoured.
func quoteConf(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	v = strings.ReplaceAll(v, `'`, `''`)
	return "'" + v + "'"
}

func (s *Server) writeConf(lines []string) error {
	all := append([]string{
		"listen_addresses = " + quoteConf(host),
		"port = " + strconv.Itoa(s.port),
		"unix_socket_directories = " + quoteConf(s.sockDir),
	}, lines...)
	path := filepath.Join(s.dataDir, confFile)
	if err := os.WriteFile(path, []byte(strings.Join(all, "\n")+"\n"), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", confFile, err)
	}
	return s.as.chownTree(path)
}

// freePort asks the kernel for a free loopback port. Another process may take
// it before the postmaster binds it; Start retries when that happens.
func freePort() (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// childEnv is this process's environment without the libpq and locale
// variables that would change what initdb and postgres do (PGPORT, PGDATA,
// LC_*), with a C locale so server messages are in English, and with HOME in
// the cluster directory so the server never touches the caller's home
// (root's, in CI). A self-contained build (scripts/install-postgres.sh's)
// finds its own shared libraries through LD_LIBRARY_PATH.
func (s *Server) childEnv() []string {
	return ChildEnv(s.binDir, "HOME="+s.dir)
}

// ChildEnv is the environment to run a program of the build in binDir with
// (the server, or a client program such as pg_dump): this process's, less
// the libpq and locale variables, with a C locale, LD_LIBRARY_PATH set to the
// build's own libraries when it ships them, and extra added.
func ChildEnv(binDir string, extra ...string) []string {
	var env []string
	lib := libDir(binDir)
	for _, kv := range os.Environ() {
		name, value, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "PG") || strings.HasPrefix(name, "LC_") || name == "LANG" || name == "LANGUAGE":
			continue
		case name == "HOME" && slices.ContainsFunc(extra, func(e string) bool { return strings.HasPrefix(e, "HOME=") }):
			continue
		case name == "LD_LIBRARY_PATH" && lib != "":
			if value != "" {
				lib += ":" + value
			}
			continue
		}
		env = append(env, kv)
	}
	if lib != "" {
		env = append(env, "LD_LIBRARY_PATH="+lib)
	}
	return append(append(env, "LC_ALL=C", "LANG=C"), extra...)
}

// startLocked starts the postmaster and waits until it accepts connections.
// s.mu must be held.
func (s *Server) startLocked(ctx context.Context) error {
	logf, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("open server log: %w", err)
	}
	// Only what this start writes belongs in its error message.
	offset, err := logf.Seek(0, io.SeekEnd)
	if err != nil {
		logf.Close()
		return fmt.Errorf("open server log: %w", err)
	}
	cmd := exec.Command(filepath.Join(s.binDir, "postgres"), "-D", s.dataDir)
	cmd.Dir = s.dir
	cmd.Env = s.childEnv()
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: s.as.credential(),
		// Immediate shutdown if this process dies; see startProcess.
		Pdeathsig: syscall.SIGQUIT,
		// Its own process group, so a Ctrl-C at the terminal reaches only
		// the test binary; the server then goes down through Pdeathsig
		// rather than racing the harness with a shutdown of its own.
		Setpgid: true,
	}
	p, err := startProcess(cmd)
	logf.Close() // the child holds its own descriptor
	if err != nil {
		return fmt.Errorf("run postgres as user %s: %w", s.userName(), err)
	}
	if err := s.waitReady(ctx, p, offset); err != nil {
		p.kill()
		return err
	}
	s.proc = p
	return nil
}

// waitReady polls until the postmaster p accepts connections. It gives up
// early if p exits, and fails if whatever answers on the port is not this
// cluster (another test's server that won a race for the port).
func (s *Server) waitReady(ctx context.Context, p *process, logOffset int64) error {
	deadline := time.NewTimer(readyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		dataDir, err := s.probe(ctx)
		switch {
		case err == nil && dataDir == s.dataDir:
			return nil
		case err == nil:
			return fmt.Errorf("port %d answered by another cluster (%s): %w", s.port, dataDir, errPortInUse)
		}
		lastErr = err
		select {
		case <-p.done:
			tail := s.logTail(logOffset)
			if strings.Contains(tail, "Address already in use") {
				return fmt.Errorf("port %d: %w", s.port, errPortInUse)
			}
			return fmt.Errorf("postgres exited during startup (%s); server log:\n%s",
				p.exitDescription(), tail)
		case <-ctx.Done():
			return fmt.Errorf("wait for postgres to accept connections: %w; server log:\n%s",
				ctx.Err(), s.logTail(logOffset))
		case <-deadline.C:
			return fmt.Errorf("postgres did not accept connections within %v (last error: %w); server log:\n%s",
				readyTimeout, lastErr, s.logTail(logOffset))
		case <-tick.C:
		}
	}
}

// probe connects once and returns the data directory of the server that
// answered.
func (s *Server) probe(ctx context.Context) (string, error) {
	cfg, err := pgx.ParseConfig(s.SuperuserDSN("postgres"))
	if err != nil {
		return "", err
	}
	cfg.ConnectTimeout = time.Second
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var dataDir string
	err = conn.QueryRow(ctx, "SHOW data_directory").Scan(&dataDir)
	return dataDir, err
}

// logTail returns the last lines the server logged after offset.
func (s *Server) logTail(offset int64) string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read server log: %v)", err)
	}
	if offset > int64(len(b)) {
		offset = 0
	}
	return lastLines(string(b[offset:]), logTailLines)
}

func lastLines(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (s *Server) userName() string {
	if s.as == nil {
		return "(current user)"
	}
	return s.as.name
}

// Stop shuts the server down, keeping its data directory, and returns once
// it has exited. It asks for a fast shutdown (open transactions roll back,
// clients are disconnected) and, if ctx ends or that takes longer than 20 s,
// shuts down immediately (the next start then runs crash recovery). Stopping
// a stopped server does nothing.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.proc == nil {
		return nil
	}
	if s.proc.stop(ctx) {
		s.log.Warn("fast shutdown did not finish in time; shut down immediately", zap.Int("port", s.port))
	}
	s.proc = nil
	s.log.Info("PostgreSQL stopped", zap.Int("port", s.port))
	return nil
}

// StartAgain starts a stopped server on the same port and data directory, so
// clients can reconnect to the same DSN. It fails if the server is running
// or closed, or if another process took the port meanwhile. ctx bounds the
// startup only.
func (s *Server) StartAgain(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.proc != nil && !s.proc.exited() {
		return fmt.Errorf("start PostgreSQL again on port %d: it is running", s.port)
	}
	s.proc = nil
	if err := s.startLocked(ctx); err != nil {
		return fmt.Errorf("start PostgreSQL again on port %d: %w", s.port, err)
	}
	s.log.Info("PostgreSQL started again", zap.Int("port", s.port))
	return nil
}

// Restart is Stop followed by StartAgain.
func (s *Server) Restart(ctx context.Context) error {
	if err := s.Stop(ctx); err != nil {
		return err
	}
	return s.StartAgain(ctx)
}

// Close shuts the server down immediately and deletes its directory. A
// standby (StartStandby) then drops its replication slot on its primary, if
// the primary runs. It is safe to call more than once; later calls return
// nil. The server cannot be started again.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	if s.proc != nil {
		s.proc.kill()
		s.proc = nil
	}
	err := os.RemoveAll(s.dir)
	s.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("remove cluster directory: %w", err)
	}
	if s.slot != "" {
		err = errors.Join(err, s.dropSlot())
	}
	if err == nil {
		s.log.Debug("PostgreSQL closed", zap.String("dir", s.dir))
	}
	return err
}

// Running reports whether the server is started and has not exited.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil && !s.proc.exited()
}

// Host is the address the server listens on.
func (s *Server) Host() string { return host }

// Port is the server's TCP port; it stays the same across StartAgain.
func (s *Server) Port() int { return s.port }

// BinDir is the directory of the PostgreSQL binaries the server runs from.
func (s *Server) BinDir() string { return s.binDir }

// Version is the server's major version, e.g. 15.
func (s *Server) Version() int { return s.version }

// DataDir is the cluster's data directory. It is deleted by Close.
func (s *Server) DataDir() string { return s.dataDir }

// LogPath is the file the server's stderr goes to, for a test that wants to
// show it. It is deleted by Close.
func (s *Server) LogPath() string { return s.logPath }

// SuperuserDSN is a connection URL for the superuser "postgres" to database
// db. No password is needed: the cluster trusts local connections.
func (s *Server) SuperuserDSN(db string) string { return s.DSN(superuser, db) }

// DSN is a connection URL for role user to database db, without TLS.
func (s *Server) DSN(user, db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(user),
		Host:     net.JoinHostPort(host, strconv.Itoa(s.port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}
