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
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/backoff"
	"github.com/pgtripwire/pgtripwire/detector/catalog"
	"github.com/pgtripwire/pgtripwire/detector/pgversion"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/model"
)

// Name is the source's name: its configuration section (sources.wal), health
// component, metrics label, and the source of its events.
const Name = "wal"

// Config says what to stream and how.
type Config struct {
	// Conn is the parsed connection configuration; the source copies it per connection
	// and sets replication=database itself.
	Conn *pgconn.Config
	// Slot and Publication name the logical replication slot and publication; both are
	// created when missing, never dropped. Defaults: "pgtripwire".
	Slot, Publication string
	// Tables maps schema-qualified sensitive tables, in the configuration's canonical
	// form (config.SensitiveTable.Table: public."user"), to their sensitive columns.
	Tables map[string][]string
	// StatusInterval bounds the time between two standby status updates; zero means 10 s.
	StatusInterval time.Duration
	// ReconnectInitial and ReconnectMax bound the reconnect backoff; zero means 500 ms and 30 s.
	ReconnectInitial, ReconnectMax time.Duration
	// Now is the clock that stamps non-transactional messages; nil means time.Now.
	// Changes are stamped with their commit time.
	Now func() time.Time
	// StateDir is the detector's state directory. The source keeps in
	// <StateDir>/wal/<slot>.json the position of the last transaction it handed over,
	// so that a transaction received again after a restart (PostgreSQL persists a
	// slot's confirmed position only at checkpoints, and a crash can come between a
	// hand-over and its confirmation) is skipped rather than evaluated twice. ""
	// keeps that position in memory only: replays after a restart of the detector are
	// then handed over again. Guard, when set, keeps it instead.
	StateDir string
	// Guard keeps the replay guard; nil keeps it in <StateDir>/wal/<slot>.json (or in
	// memory only without a StateDir).
	Guard GuardStore
	// Messages, when not nil, turns a pgtripwire logical decoding message into an
	// event (e.g. source=ddl or canary); when it returns false, or is nil, the message
	// is a source=wal MESSAGE event carrying its prefix only.
	Messages MessageDecoder
	// Auto makes the source use the slot and publication only when both exist (it never
	// creates them), and stop at the first session that finds either missing or cannot
	// use them: sources.wal.enabled "auto", for a detector that runs the WAL source
	// whenever `pgtripwire setup` prepared it. One exception: after a failover (the
	// server is on a later timeline of the cluster the source streamed from, in this
	// process or as its replay guard says), a missing slot is created: the publication
	// came over with the catalog, the slot did not (before PostgreSQL 17's failover
	// slots, or on a standby that does not synchronise them).
	Auto bool
	// Metrics, when set, count the source's failed sessions with every other source's.
	Metrics *source.Metrics
	// OwnStreams, when set, records when the source's sessions hold the slot, for the
	// catalog watch to tell the detector's own use of it from anyone else's.
	OwnStreams *source.OwnStreams
	// QueueLength bounds the transactions decoded but not yet handed over to the sink;
	// zero means 64. While the queue is full the source stops reading the stream but
	// keeps sending status updates.
	QueueLength int
}

// MessageDecoder turns a logical decoding message whose prefix starts with
// MessagePrefix into an event, or returns false to leave it to the default. content
// aliases the receive buffer: it is valid only during the call. It is called on the
// source's receive loop as the message is received, so it must not wait: for a
// transactional message that is before its transaction commits, and the event is handed
// over only if it does; a non-transactional one is handed over at once. The source sets
// the event's LSN, and its Time, Database and Source (wal) when they are left empty.
//
// Work on the event that may take time or wait (the canary's classification of the
// statement a message reports) goes into finish, which may be nil.
type MessageDecoder func(prefix string, content []byte, transactional bool) (ev model.Event, finish Finish, ok bool)

// Finish completes the event of a message on the goroutine that hands events over to the
// sink, just before it does, in stream order: the receive loop meanwhile goes on reading
// the stream and answering the server, and decoded transactions queue up behind it
// (Config.QueueLength). It returns the finished event; once ctx is done it must return
// at once, with the event as complete as it could make it. It is called again, on a new
// event, when the message is received again after a reconnect.
type Finish func(ctx context.Context, ev model.Event) model.Event

// Source streams from a logical replication slot: a source.Runner. Create it with New.
//
// Its sink receives the events of one committed transaction and returns once they have
// been evaluated; until it returns nil, the transaction's position is not confirmed, and
// an error makes the source reconnect and receive the same transaction again. A sink
// that may evaluate events before their alerts are durable (the detector's pipeline
// queues alerts in memory while the alert log refuses writes) also implements
// source.WrittenWaiter: the source then waits for it before recording the transactions
// as handled and before confirming their position, so that a crash meanwhile replays
// them rather than losing their alerts.
type Source struct {
	cfg     Config
	sink    source.Sink
	health  source.Health
	log     *zap.Logger
	metrics *metrics

	// The replay guard: handled is the key (see handoff) of the last transaction or
	// message handed over and handledAt its commit time, persisted what the store
	// holds, origin the history they belong to (nil until the first session loaded the
	// guard). Sessions run one at a time, and within one only the deliverer changes
	// them.
	guards             GuardStore // nil: in memory only
	handled, persisted pglogrepl.LSN
	handledAt          time.Time
	origin             *origin
	// reached is the furthest position this process confirmed to the server on origin
	// (zero: none yet), with the server's time of it; set when a session ends.
	reached mark
	// prior is what the source dealt with on an earlier timeline of the cluster, until
	// a session on the later one resolves it (follow, judgeGap).
	prior *known
	// streamedOn is the history the source last streamed on, in this process or as
	// its restored guard says; nil when it never did.
	streamedOn *origin
	// guardLost is the event that says the replay guard was lost, and gap the one that
	// says changes were not decoded (decodingGap), until handed over.
	guardLost, gap *model.Event
}

// New returns a source that reports to sink and health.
func New(cfg Config, sink source.Sink, health source.Health, log *zap.Logger, reg prometheus.Registerer) *Source {
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
	if cfg.QueueLength <= 0 {
		cfg.QueueLength = 64
	}
	s := &Source{
		cfg:     cfg,
		sink:    sink,
		health:  health,
		log:     log.Named(Name),
		metrics: newMetrics(reg, cfg.Slot),
		guards:  cfg.Guard,
	}
	if s.guards == nil && cfg.StateDir != "" {
		s.guards = fileGuards{dir: cfg.StateDir, log: s.log}
	}
	return s
}

// Run streams until ctx is done, reconnecting with capped, jittered exponential backoff
// whenever the connection, the stream or the sink fails. It returns ctx's error: the
// source never gives up on its own, except in Auto mode when the slot or publication
// is missing (it returns nil then, having logged why).
func (s *Source) Run(ctx context.Context) error {
	sup := source.Supervisor{Names: []string{Name}, Health: s.health, Metrics: s.cfg.Metrics, Logger: s.log,
		ReconnectInitial: s.cfg.ReconnectInitial, ReconnectMax: s.cfg.ReconnectMax}
	return sup.Run(ctx, func(ctx context.Context, bo *backoff.Backoff) error {
		err := s.session(ctx, bo)
		s.metrics.slotActive.Set(0)
		if err != nil && !errors.Is(err, source.ErrOff) && ctx.Err() == nil {
			s.metrics.reconnects.Inc()
		}
		return err
	})
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
	cfg.BuildFrontend = bufferedFrontend(cfg.BuildFrontend)
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		var pgErr *pgconn.PgError
		if s.cfg.Auto && errors.As(err, &pgErr) && (pgErr.Code == "42501" || pgErr.Code == "28000") {
			// insufficient_privilege (no REPLICATION), invalid_authorization_specification
			// (no replication line in pg_hba.conf): setup was not run for this role.
			return source.Off("sources.wal.enabled is auto and the detector's role may not open a "+
				"replication connection (%s); run pgtripwire setup --apply, or set sources.wal.enabled: false",
				pgErr.Message)
		}
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
	ident, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return fmt.Errorf("identify system: %w", err)
	}
	o := origin{SystemID: ident.SystemID, Timeline: ident.Timeline}
	if lost := s.restore(ctx, o, ident.XLogPos); lost != nil {
		s.guardLost = lost
	}
	if s.guardLost != nil { // reported until the pipeline takes it, a failed session or not
		if err := s.sink.HandleEvents(ctx, []model.Event{*s.guardLost}); err != nil {
			return fmt.Errorf("report the lost replay guard: %w", err)
		}
		s.guardLost = nil
	}
	if s.cfg.Auto {
		if err := s.present(ctx, conn, o); err != nil {
			return err
		}
	}
	if err := s.ensurePublication(ctx, conn); err != nil {
		return err
	}
	fork, err := s.follow(ctx, conn, o)
	if err != nil {
		return err
	}
	sl, err := s.ensureSlot(ctx, conn, version)
	if err != nil {
		return err
	}
	if err := s.judgeGap(ctx, o, sl, fork); err != nil {
		return err
	}
	start := sl.confirmed
	args := []string{
		"proto_version '1'",
		// The replication grammar knows only plain '' strings; pgoutput splits the
		// value as a list of identifiers, hence the double quotes inside.
		"publication_names '" + strings.ReplaceAll(pgx.Identifier{s.cfg.Publication}.Sanitize(), "'", "''") + "'",
		"messages 'true'",
	}
	if version >= 140000 {
		// Protocol 2 streams large in-progress transactions, so a huge transaction
		// neither spills on the server nor waits for its commit to be seen. It stays 2 on
		// newer servers, on purpose: 3 (15) adds two-phase commit messages and 4 (16, the
		// newest in 18) parallel apply's abort positions, neither of which the detector,
		// which aggregates a transaction at its commit, has a use for.
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
	defer s.cfg.OwnStreams.Hold(s.cfg.Slot, s.cfg.Now)()
	s.streamedOn = &o
	s.log.Info("streaming", zap.String("slot", s.cfg.Slot), zap.Stringer("from", start), zap.Int32("timeline", o.Timeline))
	s.metrics.slotActive.Set(1)
	s.health.Set(Name, nil)
	bo.Reset()
	return s.stream(ctx, conn, start)
}

// present checks, in Auto mode, that the slot and the publication exist; when either is
// missing the source is off (source.ErrOff), with the fix in the error. A slot missing
// on a later timeline of the cluster the source streamed from (a promoted standby) is
// not: the session creates it (Config.Auto).
func (s *Source) present(ctx context.Context, conn *pgconn.PgConn, o origin) error {
	// A slot of the same name for another database is someone else's: as missing.
	rows, err := query(ctx, conn, `SELECT (SELECT count(*) FROM pg_catalog.pg_replication_slots WHERE slot_name = `+
		quoteLiteral(s.cfg.Slot)+` AND database = current_database()), (SELECT count(*) FROM pg_catalog.pg_publication WHERE pubname = `+
		quoteLiteral(s.cfg.Publication)+`)`)
	if err != nil {
		return fmt.Errorf("look for slot %s and publication %s: %w", s.cfg.Slot, s.cfg.Publication, err)
	}
	var missing []string
	if rows[0][0] == "0" {
		if p := s.streamedOn; p != nil && p.SystemID == o.SystemID && p.Timeline < o.Timeline && rows[0][1] != "0" {
			s.log.Warn("the slot is missing on a later timeline of the cluster (failover?): creating it, although "+
				"sources.wal.enabled is auto, since the source streamed from it before",
				zap.String("slot", s.cfg.Slot), zap.Int32("streamed_on_timeline", p.Timeline), zap.Int32("timeline", o.Timeline))
			return nil
		}
		missing = append(missing, "slot "+s.cfg.Slot)
	}
	if rows[0][1] == "0" {
		missing = append(missing, "publication "+s.cfg.Publication)
	}
	switch len(missing) {
	case 1:
		return source.Off("sources.wal.enabled is auto and the %s does not exist in this database: committed "+
			"changes to the sensitive tables, DDL reports and canary reads go unseen; run pgtripwire setup --apply "+
			"to create it (or set sources.wal.enabled: false)", missing[0])
	case 2:
		return source.Off("sources.wal.enabled is auto and neither the %s nor the %s exists in this database: "+
			"committed changes to the sensitive tables, DDL reports and canary reads go unseen; run pgtripwire "+
			"setup --apply to create them (or set sources.wal.enabled: false)", missing[0], missing[1])
	}
	return nil
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
	rows, err := query(ctx, conn, `SELECT schemaname, tablename FROM pg_catalog.pg_publication_tables WHERE pubname = `+
		quoteLiteral(s.cfg.Publication)+` UNION ALL SELECT '', '' FROM pg_catalog.pg_publication WHERE pubname = `+
		quoteLiteral(s.cfg.Publication))
	if err != nil {
		return fmt.Errorf("read publication %s: %w", s.cfg.Publication, err)
	}
	if len(rows) > 0 {
		var missing []string
		for _, t := range tables {
			if !slices.ContainsFunc(rows, func(r []string) bool {
				return r[0] != "" && model.QuoteIdent(r[0])+"."+model.QuoteIdent(r[1]) == t
			}) {
				missing = append(missing, t)
			}
		}
		if len(missing) > 0 {
			s.log.Warn("publication exists without some sensitive tables; changes to them go unseen",
				zap.String("publication", s.cfg.Publication), zap.Strings("tables", missing))
		}
		return nil
	}
	// The configuration gives canonical names (public."user"); each is parsed back and
	// quoted again rather than trusted as SQL, and one that is not canonical is refused:
	// the decoder would never match its changes.
	idents := make([]string, len(tables))
	for i, t := range tables {
		schema, name, err := catalog.ParseQualifiedName(t)
		if err != nil || model.QualifiedName(schema, name) != t {
			return fmt.Errorf("sensitive table %q is not a canonical schema-qualified name (as the configuration writes it)", t)
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

// slotState is what a session found of its slot.
type slotState struct {
	// confirmed is the slot's confirmed position: where the stream starts.
	confirmed pglogrepl.LSN
	// created says the session created the slot (its consistent point is confirmed).
	created bool
	// at is the server's clock when the session read the slot, after creating it.
	at time.Time
}

// ensureSlot creates the logical slot when it is missing (pgoutput, permanent: a
// temporary slot would lose every change made while the detector is down; a failover
// slot where the server has them, as setup makes it) and returns its confirmed position.
func (s *Source) ensureSlot(ctx context.Context, conn *pgconn.PgConn, version int) (slotState, error) {
	var st slotState
	for attempt := 0; ; attempt++ {
		rows, err := query(ctx, conn, `SELECT coalesce(confirmed_flush_lsn::text, ''), coalesce(plugin, ''), coalesce(database, ''), slot_type,
  (extract(epoch FROM now()) * 1000000)::bigint
FROM pg_catalog.pg_replication_slots WHERE slot_name = `+quoteLiteral(s.cfg.Slot)+`
UNION ALL SELECT NULL, NULL, NULL, NULL, (extract(epoch FROM now()) * 1000000)::bigint`)
		if err != nil {
			return st, fmt.Errorf("read slot %s: %w", s.cfg.Slot, err)
		}
		// The last row is the server's clock alone.
		us, err := strconv.ParseInt(rows[len(rows)-1][4], 10, 64)
		if err != nil {
			return st, fmt.Errorf("read the server's clock: %w", err)
		}
		st.at = time.UnixMicro(us)
		if rows = rows[:len(rows)-1]; len(rows) == 1 {
			r := rows[0]
			if r[3] != "logical" || r[1] != "pgoutput" || r[2] != s.cfg.Conn.Database {
				return st, fmt.Errorf("slot %s exists as a %s slot for plugin %q in database %q, want a pgoutput slot in %q",
					s.cfg.Slot, r[3], r[1], r[2], s.cfg.Conn.Database)
			}
			st.confirmed, err = pglogrepl.ParseLSN(r[0])
			if err != nil {
				return st, fmt.Errorf("slot %s confirmed position %q: %w", s.cfg.Slot, r[0], err)
			}
			return st, nil
		}
		if attempt > 0 {
			return st, fmt.Errorf("slot %s not found after creating it", s.cfg.Slot)
		}
		res, err := createSlot(ctx, conn, s.cfg.Slot, version)
		if err != nil {
			return st, fmt.Errorf("create slot %s: %w", s.cfg.Slot, err)
		}
		st.created = true
		s.log.Info("created replication slot", zap.String("slot", s.cfg.Slot), zap.String("consistent_point", res.ConsistentPoint))
	}
}

// createSlot creates a permanent pgoutput slot without exporting a snapshot. From
// PostgreSQL 17 on it is a failover slot (pgversion.FailoverSlots): standbys that
// synchronise slots keep it, and the detector resumes from it on a promoted standby.
// pglogrepl knows only the grammar of 14, hence the command written out.
func createSlot(ctx context.Context, conn *pgconn.PgConn, slot string, version int) (pglogrepl.CreateReplicationSlotResult, error) {
	if !pgversion.FailoverSlots.Has(version) {
		return pglogrepl.CreateReplicationSlot(ctx, conn, slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
			Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT",
		})
	}
	return pglogrepl.ParseCreateReplicationSlot(conn.Exec(ctx, "CREATE_REPLICATION_SLOT "+pgx.Identifier{slot}.Sanitize()+
		" LOGICAL pgoutput (SNAPSHOT 'nothing', FAILOVER)"))
}

// handoff is what the receive loop passes to the deliverer: the events of one committed
// transaction or of one non-transactional message, in stream order.
type handoff struct {
	// key orders handoffs for the replay guard: a transaction's end LSN, or a
	// non-transactional message's LSN + 1. What the stream sends before a message ends
	// at or before the message's record starts; what it sends after ends after the
	// record's end, which is at least one byte further.
	key pglogrepl.LSN
	// end is what may be confirmed once this is dealt with: the transaction's end, or
	// 0 for a message (the next keepalive or transaction moves the slot past it).
	end pglogrepl.LSN
	// at is the transaction's commit time, or the message's time: the time of key.
	at     time.Time
	events []model.Event
	// finish holds, at the index of an event, what is left to do before it is handed
	// over (Finish); nil when nothing is.
	finish []Finish
	agg    *txn // the transaction's aggregate, for the change metrics; nil for a message
	seq    uint64
}

// progress is what the deliverer publishes to the receive loop.
type progress struct {
	seq atomic.Uint64 // the last handoff dealt with (handed over or skipped)
	end atomic.Uint64 // the greatest confirmable end among those dealt with
	// endAt is the commit time of end's transaction (UnixNano), stored after end and
	// loaded before it: a reader may pair an end with an older time, never a newer one.
	endAt atomic.Int64
}

// errSessionOver ends a session's deliverer when the receive loop returns.
var errSessionOver = errors.New("replication session over")

// stream receives until an error. A deliverer goroutine hands the decoded transactions
// over to the sink, so that a slow sink neither stops the status updates (the walsender
// would end a silent session after wal_sender_timeout) nor the decoding of what follows;
// the queue between the two is bounded. confirmed, the position sent as written,
// flushed and applied, is the end of the last transaction dealt with, or the server's
// WAL end from a keepalive received while no transaction was in flight once everything
// received before it was dealt with.
func (s *Source) stream(ctx context.Context, conn *pgconn.PgConn, start pglogrepl.LSN) error {
	ctx, cancel := context.WithCancelCause(ctx)
	queue := make(chan handoff, s.cfg.QueueLength)
	r := &receiver{s: s, conn: conn, queue: queue, confirmed: start, serverEnd: start}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.deliver(ctx, queue, &r.done); err != nil {
			cancel(err)
		}
	}()
	defer func() {
		cancel(errSessionOver)
		wg.Wait()
		if r.sent > s.reached.LSN {
			s.reached = mark{origin: *s.origin, LSN: r.sent, At: r.sentAt}
		}
	}()
	return r.run(ctx)
}

// receiver is the receive loop's state. It is the only user of the connection.
type receiver struct {
	s     *Source
	conn  *pgconn.PgConn
	queue chan<- handoff
	done  progress

	confirmed, serverEnd pglogrepl.LSN
	// confirmedAt is the server's time of confirmed: the commit time of the
	// transaction ending there, or the keepalive's that reported it (zero: unknown).
	confirmedAt time.Time
	nextStatus  time.Time // zero: send one at once
	// asked says the last status update asked the server for a keepalive (a busy
	// walsender sends none otherwise); answer that one made confirmable moves
	// confirmed, and is sent without waiting for the interval.
	asked, answer bool
	sent          pglogrepl.LSN // the position last sent
	sentAt        time.Time     // its confirmedAt
	seq           uint64        // the last handoff queued
	// idleEnd is a keepalive's WAL end received with nothing in flight: it may be
	// confirmed once handoff idleSeq (the last one queued before it) is dealt with.
	idleEnd pglogrepl.LSN
	idleSeq uint64
	idleAt  time.Time // the keepalive's server time
	// unchecked counts the messages received since the loop last called statusIfDue,
	// which reads the clock.
	unchecked int
}

// statusCheckEvery is how many messages the receive loop may take between two looks at
// the clock for a status update: reading it for each one was a few percent of the
// loop, and at the rates where that matters 64 messages take well under a
// millisecond. A server's request for a reply, an answer to send and a receive that
// timed out (an idle stream) do not wait for the count.
const statusCheckEvery = 64

func (r *receiver) run(ctx context.Context) error {
	dec := newDecoder(r.s.cfg.Tables, r.s.cfg.Messages)
	dec.onStreamStart = r.s.metrics.streamBlocks.Inc
	// pgconn watches the context of every ReceiveMessage that can be cancelled (a
	// context.AfterFunc and a channel per message: at hundreds of thousands of
	// messages a second, a fifth of the loop's work). The loop receives with
	// context.Background, which pgconn does not watch, and sets the read deadline
	// itself: the time of the next status update, or now once ctx is done. A read
	// deadline leaves a partly read message to the next receive, as pgconn's own
	// deadline handling does.
	nc := r.conn.Conn()
	stop := context.AfterFunc(ctx, func() { _ = nc.SetReadDeadline(time.Now()) })
	defer stop()
	var deadline time.Time
	for {
		if r.unchecked++; r.unchecked >= statusCheckEvery || r.nextStatus.IsZero() || r.answer {
			r.unchecked = 0
			if err := r.statusIfDue(ctx); err != nil {
				return err
			}
		}
		if !r.nextStatus.Equal(deadline) {
			deadline = r.nextStatus
			if err := nc.SetReadDeadline(deadline); err != nil {
				return fmt.Errorf("set receive deadline: %w", err)
			}
			// Checked after setting it: a cancellation that came before could
			// have had its deadline overwritten, one after sets its own.
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
		}
		raw, err := r.conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			if pgconn.Timeout(err) {
				r.unchecked = statusCheckEvery // time for a status update
				continue
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
			r.serverEnd = max(r.serverEnd, ka.ServerWALEnd)
			r.reportLag()
			// With nothing in flight, every transaction committed before the server's
			// position has been received: once those are dealt with, an idle database
			// (or one writing only to other tables) still moves the slot.
			if !dec.inFlight() && ka.ServerWALEnd > r.idleEnd {
				r.idleEnd, r.idleSeq, r.idleAt = ka.ServerWALEnd, r.seq, ka.ServerTime
			}
			if ka.ReplyRequested {
				r.nextStatus = time.Time{}
			} else if r.asked {
				r.asked = false
				r.advance()
				r.answer = r.confirmed > r.sent
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(data[1:])
			if err != nil {
				return fmt.Errorf("parse XLogData: %w", err)
			}
			r.serverEnd = max(r.serverEnd, xld.ServerWALEnd)
			r.reportLag()
			// xld.WALData aliases the receive buffer: the decoder copies what it keeps.
			done, nonTx, err := dec.handle(xld.WALData)
			if err != nil {
				return fmt.Errorf("at %s: %w", xld.WALStart, err)
			}
			if nonTx != nil {
				ev := stamp(nonTx.msg.ev, r.s.cfg.Conn.Database, r.s.cfg.Now(), uint64(nonTx.lsn))
				h := handoff{key: nonTx.lsn + 1, at: ev.Time, events: []model.Event{ev}}
				if nonTx.msg.finish != nil {
					h.finish = []Finish{nonTx.msg.finish}
				}
				if err := r.enqueue(ctx, h); err != nil {
					return err
				}
			}
			if done != nil {
				evs, finish := events(done.agg, r.s.cfg.Conn.Database, done.commitTime, uint64(done.end))
				if err := r.enqueue(ctx, handoff{key: done.end, end: done.end, at: done.commitTime, events: evs, finish: finish, agg: done.agg}); err != nil {
					return err
				}
			}
		}
	}
}

// advance moves confirmed to what the deliverer has dealt with.
func (r *receiver) advance() {
	at := r.done.endAt.Load()
	if end := pglogrepl.LSN(r.done.end.Load()); end > r.confirmed {
		r.confirmed, r.confirmedAt = end, timeOfUnixNano(at)
	}
	if r.idleEnd > r.confirmed && r.done.seq.Load() >= r.idleSeq {
		r.confirmed, r.confirmedAt = r.idleEnd, r.idleAt
	}
}

// reportLag sets the lag gauge when the server reports its position: what it had
// written that the detector had not confirmed when it said so. Taken at the report,
// before the report itself lets the slot advance (an idle slot is confirmed to the
// reported position at once), the gauge shows the WAL the slot held for the detector
// over the last status interval, not the zero of the instant after.
func (r *receiver) reportLag() {
	r.s.metrics.lag.Set(float64(max(r.serverEnd, r.confirmed) - r.confirmed))
}

// statusIfDue sends a standby status update when the interval has passed or the server
// asked for one, asking the server for its position in return; and one with the
// position that answer made confirmable. A walsender busy decoding WAL of other tables
// sends keepalives only when asked (it pings on its own only when it waits for WAL, or
// after half of wal_sender_timeout without a reply), so without asking the slot would
// advance only as fast as those.
func (r *receiver) statusIfDue(ctx context.Context) error {
	r.advance()
	due := !time.Now().Before(r.nextStatus)
	if !due && !r.answer {
		return nil
	}
	if err := pglogrepl.SendStandbyStatusUpdate(ctx, r.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: r.confirmed, WALFlushPosition: r.confirmed, WALApplyPosition: r.confirmed,
		ReplyRequested: due,
	}); err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	r.sent, r.sentAt, r.answer = r.confirmed, r.confirmedAt, false
	if due {
		r.asked = true
		r.nextStatus = time.Now().Add(r.s.cfg.StatusInterval)
	}
	return nil
}

// enqueue passes h to the deliverer. While the queue is full it stops reading the
// stream (the walsender then waits on its socket) but keeps sending status updates, so
// that the walsender does not time the session out.
func (r *receiver) enqueue(ctx context.Context, h handoff) error {
	r.seq++
	h.seq = r.seq
	for {
		select {
		case r.queue <- h:
			return nil
		default:
		}
		if err := r.statusIfDue(ctx); err != nil {
			return err
		}
		t := time.NewTimer(time.Until(r.nextStatus))
		select {
		case r.queue <- h:
			t.Stop()
			return nil
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		}
	}
}

// maxBatch bounds the handoffs dealt with between two writes of the replay guard.
const maxBatch = 256

// deliver hands the queued handoffs over to the sink until ctx ends or the sink fails,
// skipping those the replay guard says were handed over already. It persists the guard
// before it publishes progress, so nothing is confirmed that a restart could not skip.
func (s *Source) deliver(ctx context.Context, queue <-chan handoff, done *progress) error {
	batch := make([]handoff, 0, maxBatch)
	for {
		batch = batch[:0]
		select {
		case h := <-queue:
			batch = append(batch, h)
		case <-ctx.Done():
			return nil
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case h := <-queue:
				batch = append(batch, h)
			default:
				break fill
			}
		}
		if err := s.deliverBatch(ctx, batch, done); err != nil {
			return err
		}
	}
}

func (s *Source) deliverBatch(ctx context.Context, batch []handoff, done *progress) error {
	var end pglogrepl.LSN
	var endAt time.Time
	var sinkErr error
	for _, h := range batch {
		if h.key <= s.handled {
			s.metrics.replayed.Inc()
		} else {
			for i, f := range h.finish {
				if f != nil {
					h.events[i] = f(ctx, h.events[i])
				}
			}
			if len(h.events) > 0 {
				if err := s.sink.HandleEvents(ctx, h.events); err != nil {
					sinkErr = fmt.Errorf("hand over %d events up to %s: %w", len(h.events), h.key, err)
					break
				}
				s.handled, s.handledAt = h.key, h.at
			}
			s.count(h)
		}
		if h.end > end {
			end, endAt = h.end, h.at
		}
	}
	// Persist what the sink accepted, also when it then refused something: those
	// events must not be handed over again. But first their alerts must be written:
	// a transaction recorded as handled is never evaluated again.
	if w, ok := s.sink.(source.WrittenWaiter); ok && s.handled > s.persisted {
		if err := w.WaitWritten(ctx); err != nil {
			return errors.Join(sinkErr, fmt.Errorf("wait for the alerts of the events up to %s to be written: %w", s.handled, err))
		}
	}
	if s.handled > s.persisted {
		if err := s.persist(ctx); err != nil {
			return errors.Join(sinkErr, err)
		}
	}
	if sinkErr != nil {
		return sinkErr
	}
	if end > pglogrepl.LSN(done.end.Load()) {
		done.end.Store(uint64(end))
		var at int64 // unknown
		if !endAt.IsZero() {
			at = endAt.UnixNano()
		}
		done.endAt.Store(at)
	}
	done.seq.Store(batch[len(batch)-1].seq)
	return nil
}

// count updates the metrics of a handoff that was handed over.
func (s *Source) count(h handoff) {
	if h.agg == nil {
		return
	}
	s.metrics.transactions.Inc()
	for _, c := range h.agg.rels {
		s.metrics.changes.WithLabelValues(OperationInsert).Add(float64(c.inserts))
		s.metrics.changes.WithLabelValues(OperationUpdate).Add(float64(c.updates))
		s.metrics.changes.WithLabelValues(OperationDelete).Add(float64(c.deletes))
		s.metrics.changes.WithLabelValues(OperationTruncate).Add(float64(c.truncates))
	}
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
