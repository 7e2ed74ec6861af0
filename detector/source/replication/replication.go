// Package replication is the replication source: it polls the server's walsenders —
// the processes serving replication connections: a standby or pg_receivewal streaming
// WAL, pg_basebackup copying the whole cluster, a logical replication client decoding a
// slot — and reports each new one that the configuration's replication.allowed does not
// declare, as an event with Source "replication" and Kind KindUnexpected. A physical
// copy of the cluster holds every table, credentials included: no statement, table
// counter or publication shows it.
//
// The WAL source's own walsender (the detector's role and application_name on the
// detector's slot) is always allowed. A logical stream of another database is left to
// the detector of that database: a logical slot decodes only its own database.
//
// It sees walsenders alive at a poll: one that connects and leaves between two polls
// is missed (docs/sources.md says what else sees it). It is not where replication slots
// are watched (the catalog source reports slots created or read) nor the rule engine.
package replication

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/model"
)

// Name is the source's name: its configuration section (sources.replication), health
// component, metrics label, and the source of its events.
const Name = "replication"

// KindUnexpected is the kind of this source's events: a walsender that no entry of
// replication.allowed matches. Operation is what it does (OpPhysical, OpBackup,
// OpLogical); Role, ClientAddr ("local" for a Unix socket, "" when the detector's role
// cannot see it) and Application who it is; PID its process (for
// pg_terminate_backend); Object the replication slot it holds, if any; Database, for a
// logical stream, the database it decodes. Complete is false when the detector's role
// could not see the walsender's client and state.
const KindUnexpected = "walsender_unexpected"

// Operations: what a walsender does, as Event.Operation.
const (
	// OpPhysical streams WAL: a standby, pg_receivewal, or a physical replication
	// connection that has not started anything yet.
	OpPhysical = "physical"
	// OpBackup copies the data directory (BASE_BACKUP: pg_basebackup), and the WAL
	// stream pg_basebackup opens beside it from the same client.
	OpBackup = "backup"
	// OpLogical decodes a logical slot (pg_recvlogical, a subscription), or is a
	// database replication connection that has not started anything yet.
	OpLogical = "logical"
)

// Config says whose walsenders are expected.
type Config struct {
	// OwnUser and OwnApplication identify the WAL source's walsender: the user and
	// application_name it connects with (the detector's own, as this source's).
	OwnUser, OwnApplication string
	// OwnSlot is the WAL source's slot; "" when the WAL source does not stream.
	OwnSlot string
	// Databases are the databases whose logical streams this source judges (every
	// watched database of the server, source.Env.ServerDatabases); nil means the
	// connection's alone.
	Databases []string
	// Allowed are the expected replication connections (replication.allowed).
	Allowed []source.ReplicationClient
	// Now is the clock that stamps events; nil means time.Now.
	Now func() time.Time
}

// Source polls the walsenders: a source.Poller and a source.BlindSpotter. Create it
// with New.
type Source struct {
	cfg     Config
	sink    source.Sink
	log     *zap.Logger
	metrics *metrics

	// database is the monitored database, read at Start.
	database string
	// judge keeps what was seen of each walsender; it survives reconnects, so that a
	// walsender is reported once however often the detector reconnects.
	judge judge
	// blind is the last poll's blind spot, nil when the role sees every walsender.
	blind error
}

// New returns a source that hands its events to sink.
func New(cfg Config, sink source.Sink, log *zap.Logger, reg prometheus.Registerer) *Source {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Source{cfg: cfg, sink: sink, log: log.Named(Name), metrics: newMetrics(reg),
		judge: judge{cfg: cfg, seen: map[int32]tracked{}}}
}

// Start reads the connection's database: logical streams of other databases are not
// this detector's to judge.
func (s *Source) Start(ctx context.Context, conn *pgx.Conn) error {
	if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&s.database); err != nil {
		return fmt.Errorf("read current database: %w", err)
	}
	s.judge.database = s.database
	s.judge.databases = s.cfg.Databases
	return nil
}

// Poll reads the walsenders once and hands over the unexpected ones seen for the first
// time. What it learnt is kept only once the sink accepted the events, so that refused
// events are offered again at the next poll.
func (s *Source) Poll(ctx context.Context, conn *pgx.Conn) error {
	privileged, senders, err := read(ctx, conn)
	if err != nil {
		return err
	}
	verdicts, next := s.judge.poll(senders)
	now := s.cfg.Now()
	var events []model.Event
	for _, v := range verdicts {
		if v.verdict == verdictUnexpected {
			events = append(events, v.event(now))
		}
	}
	if err := s.sink.HandleEvents(ctx, events); err != nil {
		return fmt.Errorf("hand over %d events: %w", len(events), err)
	}
	s.judge.seen = next
	for _, ev := range events {
		s.metrics.unexpected.WithLabelValues(ev.Operation).Inc()
		s.log.Warn("unexpected replication connection", zap.String("operation", ev.Operation),
			zap.String("role", ev.Role), zap.String("client_addr", ev.ClientAddr),
			zap.String("application", ev.Application), zap.Int32("pid", ev.PID), zap.String("slot", ev.Object))
	}
	s.metrics.observe(next)
	s.blind = blindSpot(privileged, senders)
	return nil
}

// BlindSpot reports, as a health problem, that the detector's role cannot see who is
// replicating: without pg_read_all_stats, the server hides other roles' walsenders'
// client addresses, states and start times.
func (s *Source) BlindSpot() error { return s.blind }

func blindSpot(privileged bool, senders []walsender) error {
	if privileged {
		return nil
	}
	hidden := 0
	for _, w := range senders {
		if !w.visible {
			hidden++
		}
	}
	return fmt.Errorf("the detector's role is not a member of pg_read_all_stats: it cannot see the client address "+
		"or state of other roles' replication connections (%d hidden now), judges them on role and application_name "+
		"alone, and no replication.allowed entry with client_cidr matches them: GRANT pg_monitor TO it", hidden)
}

// Definition is the replication source (sources.replication: enabled, default true;
// interval, default 1s), for the registry. It polls on a connection of its own, so
// that a lock wait or failure of another source's queries never blinds it; on a server
// watched with several databases it shares one with the catalog watch, as the
// connection budget of docs/deployment.md says.
var Definition = source.Definition{Name: Name, Scope: source.EachServer, Settings: func() source.Settings {
	return &source.PollSettings{Enabled: true, Interval: time.Second, New: func(env source.Env, _ time.Duration) (source.Poller, error) {
		cfg := Config{OwnUser: env.Conn.User, OwnApplication: env.Conn.RuntimeParams["application_name"],
			OwnSlot: env.Replication.Slot, Allowed: env.Declared.Replication, Now: env.Now, Databases: env.ServerDatabases}
		return New(cfg, env.Sink, env.Logger, env.Registerer), nil
	}}
}}
