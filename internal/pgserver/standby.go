package pgserver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

const (
	// slotPrefix names the physical replication slot a standby holds on its
	// primary; the rest is the standby directory's random suffix, so the slot
	// can be traced back to the directory (and the log) of its standby.
	slotPrefix = "pgtripwire_standby_"
	// replayTimeout bounds WaitReplay and the slot's removal when ctx has no
	// deadline.
	replayTimeout = 30 * time.Second
	// pollInterval is how often the standby helpers look again.
	pollInterval = 50 * time.Millisecond
)

// standbySettings are chosen by the harness for a standby: without hot
// standby it accepts no connection, so nothing could tell that it is ready.
var standbySettings = []string{"hot_standby"}

// StartStandby makes a streaming hot standby of s, which must be running: a
// base backup of s into a new temporary directory, holding a physical
// replication slot of its own on s so that s keeps the WAL it has not
// received, started on a free port of its own. It returns once the standby
// accepts read-only connections and streams from s. The backup is taken by
// the build's pg_basebackup (-X stream, -R) when it has one, and otherwise
// (the server-only builds) through SQL and a copy of s's files, which needs
// nothing but the server.
//
// The standby runs s's build (opts.BinDir must be empty or s's) with the
// harness's defaults, then s's own Options.Settings, then opts.Settings: a
// standby needs max_connections, max_wal_senders and the like at least as
// high as its primary's. Everything else is as for Start: the same user, the
// same tie to this process's life, nothing left behind on error (the slot
// included), the server log's tail in a startup error.
//
// Close removes the standby's directory and drops its slot on s if s still
// runs. Promote makes it a primary.
func (s *Server) StartStandby(ctx context.Context, opts Options) (_ *Server, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("start standby of PostgreSQL on port %d: %w", s.port, err)
		}
	}()
	if opts.BinDir != "" && filepath.Clean(opts.BinDir) != filepath.Clean(s.binDir) {
		return nil, fmt.Errorf("BinDir %s: a standby runs its primary's build, %s", opts.BinDir, s.binDir)
	}
	for k := range opts.Settings {
		if slices.Contains(standbySettings, strings.ToLower(k)) {
			return nil, fmt.Errorf("setting %q: chosen by the harness for a standby, cannot be overridden", k)
		}
	}
	settings := maps.Clone(s.settings)
	if settings == nil {
		settings = map[string]string{}
	}
	maps.Copy(settings, opts.Settings)
	conf, err := configLines(settings)
	if err != nil {
		return nil, err
	}
	conf = append(conf, "hot_standby = 'on'")
	// Without pg_basebackup (or when a test asks for it), the SQL base backup.
	basebackup, err := s.Program("pg_basebackup")
	if err != nil || opts.sqlBaseBackup {
		basebackup = ""
	}
	if !s.Running() {
		return nil, errors.New("the primary is not running")
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	log = log.Named("pgserver")

	started := time.Now()
	sb, err := newServer(log, s.binDir, s.version, s.as, settings)
	if err != nil {
		return nil, err
	}
	sb.primary = s
	defer func() {
		if err != nil {
			_ = sb.Close() // the startup error is the one worth reporting
		}
	}()
	// Set before the backup creates the slot, so that Close drops it
	// whatever goes wrong from here on.
	sb.slot = slotPrefix + strings.TrimPrefix(filepath.Base(sb.dir), dirPrefix)
	if basebackup != "" {
		err = sb.baseBackup(ctx, basebackup)
	} else {
		err = sb.sqlBaseBackup(ctx)
	}
	if err != nil {
		return nil, err
	}
	if err := sb.startOnFreePort(ctx, conf, opts.pickPort); err != nil {
		return nil, err
	}
	if err := sb.waitStreaming(ctx); err != nil {
		return nil, err
	}
	log.Info("PostgreSQL standby started",
		zap.Int("port", sb.port), zap.Int("primary_port", s.port), zap.String("slot", sb.slot),
		zap.Int("version", sb.version), zap.String("dir", sb.dir), zap.String("user", sb.userName()),
		zap.Bool("pg_basebackup", basebackup != ""), zap.Duration("took", time.Since(started)))
	return sb, nil
}

// baseBackup fills the empty data directory with a base backup of the
// primary, streaming the WAL written meanwhile through a new slot, and with
// the standby's configuration (-R: standby.signal, and primary_conninfo and
// primary_slot_name in postgresql.auto.conf). The primary's pgtripwire.conf
// comes along; startOnFreePort rewrites it for the standby.
func (sb *Server) baseBackup(ctx context.Context, program string) error {
	p := sb.primary
	cmd := exec.CommandContext(ctx, program,
		"--pgdata", sb.dataDir,
		"--host", p.Host(),
		"--port", strconv.Itoa(p.Port()),
		"--username", superuser,
		"--no-password",
		"--wal-method", "stream",
		"--create-slot", "--slot", sb.slot,
		"--write-recovery-conf",
		"--checkpoint", "fast",
		"--no-sync",
	)
	cmd.Dir = sb.dir
	cmd.Env = sb.childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: sb.as.credential()}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pg_basebackup as user %s: %w\n%s", sb.userName(), err, lastLines(string(out), logTailLines))
	}
	return nil
}

// waitStreaming polls until the standby's WAL receiver streams from the
// primary.
func (sb *Server) waitStreaming(ctx context.Context) error {
	var status string
	err := sb.poll(ctx, readyTimeout, func(ctx context.Context, conn *pgx.Conn) (bool, error) {
		err := conn.QueryRow(ctx, `SELECT coalesce((SELECT status FROM pg_stat_wal_receiver), 'not running')`).Scan(&status)
		return status == "streaming", err
	})
	if err != nil {
		return fmt.Errorf("wait for the standby to stream (WAL receiver %s): %w; server log:\n%s", status, err, sb.logTail(0))
	}
	return nil
}

// poll runs check on a connection to database postgres every pollInterval
// until it reports done, fails, or timeout (unless ctx ends first) passes.
func (s *Server) poll(ctx context.Context, timeout time.Duration, check func(context.Context, *pgx.Conn) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.SuperuserDSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		done, err := check(ctx, conn)
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// IsStandby reports whether s was made by StartStandby and has not been
// promoted by Promote since.
func (s *Server) IsStandby() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.primary != nil && !s.promoted
}

// Primary is the server a standby was made from (also after Promote), nil
// for a server made by Start.
func (s *Server) Primary() *Server { return s.primary }

// Slot is the name of the physical replication slot a standby holds on its
// primary, "" for a server made by Start.
func (s *Server) Slot() string { return s.slot }

// Promote makes a standby a primary and returns once it accepts writes
// (pg_is_in_recovery() is false). Its slot stays on the old primary until
// Close. It fails on a server that is not in recovery.
func (s *Server) Promote(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, s.SuperuserDSN("postgres"))
	if err != nil {
		return fmt.Errorf("promote standby on port %d: %w", s.port, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// With wait, pg_promote returns true only once recovery has ended, that
	// is once pg_is_in_recovery() is false; ctx cuts its wait short.
	var promoted, inRecovery bool
	err = conn.QueryRow(ctx, `SELECT pg_promote(wait => true, wait_seconds => 60)`).Scan(&promoted)
	if err == nil {
		err = conn.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery)
	}
	switch {
	case err != nil:
		return fmt.Errorf("promote standby on port %d: %w", s.port, err)
	case !promoted || inRecovery:
		return fmt.Errorf("promote standby on port %d: still in recovery after 60 s; server log:\n%s", s.port, s.logTail(0))
	}
	s.mu.Lock()
	s.promoted = true
	s.mu.Unlock()
	s.log.Info("PostgreSQL standby promoted", zap.Int("port", s.port))
	return nil
}

// WaitReplay returns once standby s has replayed the WAL primary had
// inserted when it was called, so that what was committed on primary before
// the call, a CREATE DATABASE included, is visible on s. It gives up when ctx
// ends or after 30 s.
//
// The target is pg_current_wal_insert_lsn(), not pg_current_wal_lsn(): the
// harness runs with synchronous_commit off, so a commit that has returned may
// still be in the WAL buffers, behind the write position; the WAL writer
// sends it on within wal_writer_delay.
func (s *Server) WaitReplay(ctx context.Context, primary *Server) error {
	ctx, cancel := context.WithTimeout(ctx, replayTimeout)
	defer cancel()
	var target, replayed string
	if err := primary.poll(ctx, replayTimeout, func(ctx context.Context, conn *pgx.Conn) (bool, error) {
		return true, conn.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&target)
	}); err != nil {
		return fmt.Errorf("wait for replay on port %d: read the WAL position of port %d: %w", s.port, primary.port, err)
	}
	err := s.poll(ctx, replayTimeout, func(ctx context.Context, conn *pgx.Conn) (bool, error) {
		var done bool
		err := conn.QueryRow(ctx, `
			SELECT coalesce(pg_last_wal_replay_lsn()::text, 'nothing'),
			       coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)`, target).Scan(&replayed, &done)
		return done, err
	})
	if err != nil {
		return fmt.Errorf("wait for replay on port %d up to %s (replayed up to %s): %w", s.port, target, replayed, err)
	}
	return nil
}

// dropSlot drops the standby's slot on its primary, after its walsender (or
// pg_basebackup's) has let go of it, unless the primary is not running. A
// slot left behind would keep WAL on the primary for as long as it runs.
func (s *Server) dropSlot() error {
	p := s.primary
	if !p.Running() {
		return nil
	}
	err := p.poll(context.Background(), replayTimeout, func(ctx context.Context, conn *pgx.Conn) (bool, error) {
		// The walsender of a standby that is gone usually exits on its own;
		// terminating it covers one still waiting on a dead connection.
		_, err := conn.Exec(ctx, `
			SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
			WHERE slot_name = $1 AND active_pid IS NOT NULL`, s.slot)
		if err == nil {
			_, err = conn.Exec(ctx, `
				SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
				WHERE slot_name = $1`, s.slot)
		}
		// 55006 object_in_use: the terminated walsender has not exited yet.
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55006" {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil && p.Running() {
		return fmt.Errorf("drop replication slot %s on the primary on port %d: %w", s.slot, p.port, err)
	}
	return nil
}
