// Package wal is the logical replication source: it streams committed changes to the
// sensitive tables from a pgoutput slot, aggregates them per transaction and relation
// (counts, and for updates which sensitive columns changed), turns pgtripwire logical
// decoding messages into events, and confirms a WAL position to PostgreSQL only after
// the events of every transaction up to it were handed over.
//
// It sees committed INSERT/UPDATE/DELETE/TRUNCATE and logical decoding messages; it
// does not see reads, rolled-back work, DDL, or who made a change. It keeps no row
// data. It is not the rule engine: it raises no alert itself.
package wal

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/backoff"
	"github.com/pgtripwire/pgtripwire/detector/event"
)

// Component is the name of this source in health reports, logs and metrics.
const Component = "wal"

// Sink receives the events of one committed transaction. It returns only when they
// have been evaluated and their alerts written; until it returns nil, the transaction's
// position is not confirmed, and an error makes the source reconnect and receive the
// same transaction again.
type Sink interface {
	HandleEvents(ctx context.Context, events []event.Event) error
}

// Health receives the outcome of every connection attempt and session.
type Health interface {
	Set(component string, err error)
}

// Config says what to stream and how.
type Config struct {
	// Conn is the parsed connection configuration; the source copies it per connection
	// and sets replication=database itself.
	Conn *pgconn.Config
	// Slot and Publication name the logical replication slot and publication; both are
	// created when missing, never dropped. Defaults: "pgtripwire".
	Slot, Publication string
	// Tables maps schema-qualified sensitive tables to their sensitive columns.
	Tables map[string][]string
	// StatusInterval bounds the time between two standby status updates; zero means 10 s.
	StatusInterval time.Duration
	// ReconnectInitial and ReconnectMax bound the reconnect backoff; zero means 500 ms and 30 s.
	ReconnectInitial, ReconnectMax time.Duration
	// Now is the clock that stamps non-transactional messages; nil means time.Now.
	// Changes are stamped with their commit time.
	Now func() time.Time
}

// Source streams from a logical replication slot. Create it with New, start it with Run.
type Source struct {
	cfg     Config
	sink    Sink
	health  Health
	log     *zap.Logger
	metrics *metrics
}

// New returns a source that reports to sink and health.
func New(cfg Config, sink Sink, health Health, log *zap.Logger, reg prometheus.Registerer) *Source {
	if cfg.Slot == "" {
		cfg.Slot = "pgtripwire"
	}
	if cfg.Publication == "" {
		cfg.Publication = "pgtripwire"
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = 10 * time.Second
	}
	if cfg.ReconnectInitial <= 0 {
		cfg.ReconnectInitial = 500 * time.Millisecond
	}
	if cfg.ReconnectMax <= 0 {
		cfg.ReconnectMax = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Source{
		cfg:     cfg,
		sink:    sink,
		health:  health,
		log:     log.Named(Component),
		metrics: newMetrics(reg, cfg.Slot),
	}
}

// Run streams until ctx is done, reconnecting with capped, jittered exponential backoff
// whenever the connection, the stream or the sink fails. It returns ctx's error: the
// source never gives up on its own.
func (s *Source) Run(ctx context.Context) error {
	bo := backoff.New(s.cfg.ReconnectInitial, s.cfg.ReconnectMax)
	for {
		err := s.session(ctx, bo)
		s.metrics.slotActive.Set(0)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.health.Set(Component, err)
		s.metrics.reconnects.Inc()
		s.log.Warn("wal source failed; reconnecting", zap.Error(err))
		if err := bo.Wait(ctx); err != nil {
			return err
		}
	}
}

// slotNameRE is what PostgreSQL accepts as a slot name; checking it here lets the name
// go into replication commands unquoted.
var slotNameRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

func (s *Source) session(ctx context.Context, bo *backoff.Backoff) error {
	if !slotNameRE.MatchString(s.cfg.Slot) {
		return fmt.Errorf("slot name %q: only lower-case letters, digits and _ are allowed", s.cfg.Slot)
	}
	cfg := s.cfg.Conn.Copy()
	cfg.RuntimeParams = maps.Clone(cfg.RuntimeParams)
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = make(map[string]string)
	}
	cfg.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()

	version, err := serverVersion(ctx, conn)
	if err != nil {
		return err
	}
	if err := s.ensurePublication(ctx, conn); err != nil {
		return err
	}
	start, err := s.ensureSlot(ctx, conn)
	if err != nil {
		return err
	}
	args := []string{
		"proto_version '1'",
		// The replication grammar knows only plain '' strings; pgoutput splits the
		// value as a list of identifiers, hence the double quotes inside.
		"publication_names '" + strings.ReplaceAll(pgx.Identifier{s.cfg.Publication}.Sanitize(), "'", "''") + "'",
		"messages 'true'",
	}
	if version >= 140000 {
		// Protocol 2 streams large in-progress transactions, so a huge transaction
		// neither spills on the server nor waits for its commit to be seen.
		args[0] = "proto_version '2'"
		args = append(args, "streaming 'true'")
	}
	// Start from the slot's confirmed position, never IDENTIFY_SYSTEM's: changes
	// between the two would be skipped.
	if err := pglogrepl.StartReplication(ctx, conn, s.cfg.Slot, start, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication, PluginArgs: args,
	}); err != nil {
		return fmt.Errorf("start replication from slot %s at %s: %w", s.cfg.Slot, start, err)
	}
	s.log.Info("streaming", zap.String("slot", s.cfg.Slot), zap.Stringer("from", start))
	s.metrics.slotActive.Set(1)
	s.health.Set(Component, nil)
	bo.Reset()
	return s.stream(ctx, conn, start)
}

func serverVersion(ctx context.Context, conn *pgconn.PgConn) (int, error) {
	rows, err := query(ctx, conn, `SHOW server_version_num`)
	if err != nil {
		return 0, fmt.Errorf("read server version: %w", err)
	}
	if len(rows) != 1 {
		return 0, fmt.Errorf("read server version: got %d rows, want 1", len(rows))
	}
	v, err := strconv.Atoi(rows[0][0])
	if err != nil {
		return 0, fmt.Errorf("read server version: %w", err)
	}
	return v, nil
}

// ensurePublication creates the publication for the sensitive tables when it is
// missing. An existing publication is left as it is (the detector never drops or alters
// what someone may depend on); tables it lacks are reported.
func (s *Source) ensurePublication(ctx context.Context, conn *pgconn.PgConn) error {
	tables := slices.Sorted(maps.Keys(s.cfg.Tables))
	if len(tables) == 0 {
		return errors.New("no sensitive tables configured")
	}
	rows, err := query(ctx, conn, `SELECT schemaname || '.' || tablename FROM pg_catalog.pg_publication_tables WHERE pubname = `+
		quoteLiteral(s.cfg.Publication)+` UNION ALL SELECT '' FROM pg_catalog.pg_publication WHERE pubname = `+
		quoteLiteral(s.cfg.Publication))
	if err != nil {
		return fmt.Errorf("read publication %s: %w", s.cfg.Publication, err)
	}
	if len(rows) > 0 {
		var missing []string
		for _, t := range tables {
			if !slices.ContainsFunc(rows, func(r []string) bool { return r[0] == t }) {
				missing = append(missing, t)
			}
		}
		if len(missing) > 0 {
			s.log.Warn("publication exists without some sensitive tables; changes to them go unseen",
				zap.String("publication", s.cfg.Publication), zap.Strings("tables", missing))
		}
		return nil
	}
	idents := make([]string, len(tables))
	for i, t := range tables {
		schema, name, ok := strings.Cut(t, ".")
		if !ok {
			return fmt.Errorf("sensitive table %q is not schema-qualified", t)
		}
		idents[i] = pgx.Identifier{schema, name}.Sanitize()
	}
	sql := fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s",
		pgx.Identifier{s.cfg.Publication}.Sanitize(), strings.Join(idents, ", "))
	if _, err := conn.Exec(ctx, sql).ReadAll(); err != nil {
		return fmt.Errorf("create publication %s: %w", s.cfg.Publication, err)
	}
	s.log.Info("created publication", zap.String("publication", s.cfg.Publication), zap.Strings("tables", tables))
	return nil
}

// ensureSlot creates the logical slot when it is missing (pgoutput, permanent: a
// temporary slot would lose every change made while the detector is down) and returns
// its confirmed position.
func (s *Source) ensureSlot(ctx context.Context, conn *pgconn.PgConn) (pglogrepl.LSN, error) {
	for attempt := 0; ; attempt++ {
		rows, err := query(ctx, conn, `SELECT coalesce(confirmed_flush_lsn::text, ''), coalesce(plugin, ''), coalesce(database, ''), slot_type
FROM pg_catalog.pg_replication_slots WHERE slot_name = `+quoteLiteral(s.cfg.Slot))
		if err != nil {
			return 0, fmt.Errorf("read slot %s: %w", s.cfg.Slot, err)
		}
		if len(rows) == 1 {
			r := rows[0]
			if r[3] != "logical" || r[1] != "pgoutput" || r[2] != s.cfg.Conn.Database {
				return 0, fmt.Errorf("slot %s exists as a %s slot for plugin %q in database %q, want a pgoutput slot in %q",
					s.cfg.Slot, r[3], r[1], r[2], s.cfg.Conn.Database)
			}
			lsn, err := pglogrepl.ParseLSN(r[0])
			if err != nil {
				return 0, fmt.Errorf("slot %s confirmed position %q: %w", s.cfg.Slot, r[0], err)
			}
			return lsn, nil
		}
		if attempt > 0 {
			return 0, fmt.Errorf("slot %s not found after creating it", s.cfg.Slot)
		}
		res, err := pglogrepl.CreateReplicationSlot(ctx, conn, s.cfg.Slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
			Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT",
		})
		if err != nil {
			return 0, fmt.Errorf("create slot %s: %w", s.cfg.Slot, err)
		}
		s.log.Info("created replication slot", zap.String("slot", s.cfg.Slot), zap.String("consistent_point", res.ConsistentPoint))
	}
}

// stream receives until an error. confirmed is the position sent as written, flushed and
// applied: the end of the last transaction whose events the sink accepted, or the
// server's WAL end from a keepalive received while no transaction was in flight.
func (s *Source) stream(ctx context.Context, conn *pgconn.PgConn, start pglogrepl.LSN) error {
	dec := newDecoder(s.cfg.Tables)
	dec.onStreamStart = s.metrics.streamBlocks.Inc
	confirmed, serverEnd := start, start
	var nextStatus time.Time // zero: send one at once
	for {
		if !time.Now().Before(nextStatus) {
			if err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{
				WALWritePosition: confirmed, WALFlushPosition: confirmed, WALApplyPosition: confirmed,
			}); err != nil {
				return fmt.Errorf("send standby status: %w", err)
			}
			nextStatus = time.Now().Add(s.cfg.StatusInterval)
		}
		s.metrics.lag.Set(float64(max(serverEnd, confirmed) - confirmed))

		recvCtx, cancel := context.WithDeadline(ctx, nextStatus)
		raw, err := conn.ReceiveMessage(recvCtx)
		cancel()
		if err != nil {
			if ctx.Err() == nil && pgconn.Timeout(err) {
				continue // time for a status update
			}
			return fmt.Errorf("receive: %w", err)
		}
		var data []byte
		switch msg := raw.(type) {
		case *pgproto3.CopyData:
			data = msg.Data
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(msg))
		default:
			return fmt.Errorf("replication stream: unexpected %T", raw)
		}
		if len(data) == 0 {
			continue
		}
		switch data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
			if err != nil {
				return fmt.Errorf("parse keepalive: %w", err)
			}
			serverEnd = max(serverEnd, ka.ServerWALEnd)
			// With nothing in flight, every transaction committed before the server's
			// position has been received and handled: an idle database (or one
			// writing only to other tables) still moves the slot.
			if !dec.inFlight() {
				confirmed = max(confirmed, ka.ServerWALEnd)
			}
			if ka.ReplyRequested {
				nextStatus = time.Time{}
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(data[1:])
			if err != nil {
				return fmt.Errorf("parse XLogData: %w", err)
			}
			serverEnd = max(serverEnd, xld.ServerWALEnd)
			// xld.WALData aliases the receive buffer: the decoder copies what it keeps.
			done, nonTx, err := dec.handle(xld.WALData)
			if err != nil {
				return err
			}
			if nonTx != nil {
				if err := s.handOver(ctx, events(nonTx, s.cfg.Conn.Database, s.cfg.Now(), 0)); err != nil {
					return err
				}
			}
			if done != nil {
				if err := s.finish(ctx, done); err != nil {
					return err
				}
				confirmed = max(confirmed, done.end)
			}
		}
	}
}

// finish hands a committed transaction's events over and counts it.
func (s *Source) finish(ctx context.Context, done *finished) error {
	evs := events(done.agg, s.cfg.Conn.Database, done.commitTime, uint64(done.end))
	if err := s.handOver(ctx, evs); err != nil {
		return fmt.Errorf("transaction ending at %s: %w", done.end, err)
	}
	s.metrics.transactions.Inc()
	for _, c := range done.agg.rels {
		s.metrics.changes.WithLabelValues(OperationInsert).Add(float64(c.inserts))
		s.metrics.changes.WithLabelValues(OperationUpdate).Add(float64(c.updates))
		s.metrics.changes.WithLabelValues(OperationDelete).Add(float64(c.deletes))
		s.metrics.changes.WithLabelValues(OperationTruncate).Add(float64(c.truncates))
	}
	return nil
}

func (s *Source) handOver(ctx context.Context, evs []event.Event) error {
	if len(evs) == 0 {
		return nil
	}
	if err := s.sink.HandleEvents(ctx, evs); err != nil {
		return fmt.Errorf("hand over %d events: %w", len(evs), err)
	}
	return nil
}

// query runs sql with the simple protocol (the only one a replication connection
// speaks) and returns its rows as text; NULL becomes "".
func query(ctx context.Context, conn *pgconn.PgConn, sql string) ([][]string, error) {
	results, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	var rows [][]string
	for _, res := range results {
		for _, r := range res.Rows {
			row := make([]string, len(r))
			for i, v := range r {
				row[i] = string(v)
			}
			rows = append(rows, row)
		}
	}
	return rows, nil
}

// quoteLiteral quotes s as an SQL escape string literal (E'…'), which reads the same
// whatever standard_conforming_strings says.
func quoteLiteral(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return `E'` + strings.ReplaceAll(s, `'`, `''`) + `'`
}
