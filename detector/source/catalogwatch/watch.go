// Package catalogwatch is the catalog source: it polls the server state an intruder changes to
// read data past the other sources or to blind them — replication slots, publications,
// role attributes and memberships, pg_stat_statements and table statistics resets, and
// the settings the detector depends on — and reports each change as an event with
// Source "catalog" and a Kind.
//
// The first successful poll is a baseline: what existed before the detector started is
// not evidence of anything and raises no event (it is logged once when it is worth a
// look, such as a logical slot that is not ours). State is kept across reconnects, so a
// change made while the detector was disconnected is reported when it comes back.
//
// It sees the state, not who changed it: PostgreSQL does not record who created a slot
// or granted a role. Role therefore names the role a change is about (the one that gained
// an attribute), or the session using a slot; never a guess. It is not the rule engine.
package catalogwatch

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/model"
)

// Name is the source's name: its configuration section (sources.catalog), health
// component, metrics label, and the source of its events.
const Name = "catalog"

// Kinds of the events this source emits (model.Kind). Object and Role say what the change
// is about; docs/sources.md lists them for rule writers.
const (
	// KindSlotCreated: a replication slot appeared that is not one of Config.OwnSlots.
	// Object is the slot, Database its database ("" for a physical slot), Operation
	// "logical" or "physical"; Role the session holding it at that moment, if any.
	KindSlotCreated = "slot_created"
	// KindSlotUsed: a logical slot was consumed or peeked through the SQL interface
	// (pg_logical_slot_get_changes and kin: a client backend holds it, or its position or
	// decoding statistics moved while no walsender held it), or a new walsender attached
	// to it. Object is the slot, Role/ClientAddr/Application the session using it when
	// it was seen holding it.
	KindSlotUsed = "slot_used"
	// KindOwnSlotUsed: one of Config.OwnSlots was used by someone other than the WAL
	// source's own walsender, as KindSlotUsed says. Reading our slot through the SQL
	// interface consumes changes the WAL source then never sees: they are gone, and the
	// slot must not be dropped (that loses what is still in it). Fields as KindSlotUsed.
	KindOwnSlotUsed = "own_slot_used"
	// KindPublicationSensitive: a publication (not one of Config.OwnPublications) now
	// publishes a sensitive table. Object is the publication, Relation the table,
	// SensitiveRead its sensitive columns.
	KindPublicationSensitive = "publication_sensitive"
	// KindRoleAttribute: a role gained SUPERUSER, BYPASSRLS or REPLICATION (or was
	// created with it). Role and Object are the role, Operation the attribute.
	KindRoleAttribute = "role_attribute"
	// KindRoleMembership: a role became a member (directly or through another role) of
	// one of DangerousRoles. Role is the member, Object the predefined role.
	KindRoleMembership = "role_membership"
	// KindStatsReset: statistics the detector counts from were reset. Object is
	// "pg_stat_statements" (pg_stat_statements_reset()) or "pg_stat_database" (the
	// database's table counters: pg_stat_reset(), pg_stat_reset_single_table_counters()).
	KindStatsReset = "stats_reset"
	// KindStatementsEvicted: pg_stat_statements evicted entries since the previous poll
	// (pg_stat_statements_info.dealloc grew by Rows): statements may have run unseen. A
	// burst is what flooding the view with distinct statements to hide one looks like.
	KindStatementsEvicted = "statements_evicted"
	// KindExtensionDropped: the pg_stat_statements extension was dropped from the
	// database. Object is the extension.
	KindExtensionDropped = "extension_dropped"
	// KindSettingChanged: a setting the detector depends on changed (or is pending a
	// restart to change), server-wide or for a role or database (ALTER ROLE … SET).
	// Object is the setting; Role and Database the role and database it was set for, ""
	// for all. The values are not carried.
	KindSettingChanged = "setting_changed"
)

// DangerousRoles are the predefined roles whose new members are reported: each reads or
// writes every table or the server's files, past table privileges and row security.
var DangerousRoles = []string{
	"pg_read_all_data", "pg_write_all_data",
	"pg_read_server_files", "pg_write_server_files", "pg_execute_server_program",
}

// DefaultSettings are the settings watched when Config.Settings is nil: what the
// statements, activity, tables and WAL sources need to see anything.
var DefaultSettings = []string{
	"wal_level", "shared_preload_libraries", "compute_query_id",
	"pg_stat_statements.track", "pg_stat_statements.track_utility", "pg_stat_statements.max",
	"pg_stat_statements.save",
	"track_activities", "track_counts", "track_activity_query_size",
}

// Config says what to watch.
type Config struct {
	// Databases are the databases whose logical slots the source watches (every
	// watched database of the server, source.Env.ServerDatabases); nil means the
	// connection's alone.
	Databases []string
	// OwnUser and OwnApplication identify the WAL source's walsender: the user and
	// application_name it connects with (the detector's own, as this source's).
	OwnUser, OwnApplication string
	// Sensitive maps schema-qualified tables to their sensitive columns: publishing one
	// of them is reported.
	Sensitive map[string][]string
	// OwnSlots and OwnPublications are the detector's own (the WAL source's). Their
	// creation and the WAL source's streaming are never reported; a use of an own slot by
	// anything else (a client backend reading it through the SQL interface, a walsender
	// that is not the WAL source's) is. The WAL source's walsender is recognised by
	// OwnUser and OwnApplication.
	OwnSlots, OwnPublications []string
	// OwnStreams says when the WAL source's sessions held the own slots: a slot that
	// moved between two polls while one did was moved by it, even if no poll saw it
	// attached (a session that failed at once, over and over).
	OwnStreams *source.OwnStreams
	// Allowed are the expected replication clients (replication.allowed): a slot held by
	// one of them (a declared pg_basebackup's temporary slot, a declared subscriber's) is
	// not reported as created or used.
	Allowed []source.ReplicationClient
	// Settings to watch; nil means DefaultSettings.
	Settings []string
	// Now is the clock that stamps events; nil means time.Now.
	Now func() time.Time
}

// Source polls the watched state: a source.Poller. Create it with New.
type Source struct {
	cfg     Config
	sink    source.Sink
	log     *zap.Logger
	metrics *metrics

	// prev is the last state handed over, nil before the baseline.
	prev *state
	// sess is what the current session's polls reuse.
	sess sessionState
	// rebase says the next poll reads another server than prev's (Rebaseline).
	rebase bool
}

// New returns a source that hands its events to sink.
func New(cfg Config, sink source.Sink, log *zap.Logger, reg prometheus.Registerer) *Source {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Settings == nil {
		cfg.Settings = DefaultSettings
	}
	return &Source{cfg: cfg, sink: sink, log: log.Named(Name), metrics: newMetrics(reg)}
}

// Start begins a session: what the previous one reused is forgotten, the state
// handed over is not.
func (s *Source) Start(context.Context, *pgx.Conn) error {
	s.sess = sessionState{}
	return nil
}

// Poll reads the watched state once and hands over what changed.
func (s *Source) Poll(ctx context.Context, conn *pgx.Conn) error {
	readAt := s.cfg.Now()
	cur, err := s.read(ctx, conn)
	if err != nil {
		return err
	}
	cur.readAt = readAt
	now := s.cfg.Now()
	if s.prev == nil {
		s.logBaseline(cur)
		s.prev = cur
		s.sess.remember(cur)
		return nil
	}
	prev := s.prev
	if s.rebase {
		prev = s.rebased(prev, cur)
	}
	events := s.diff(now, prev, cur)
	if err := s.sink.HandleEvents(ctx, events); err != nil {
		return fmt.Errorf("hand over %d events: %w", len(events), err)
	}
	s.rebase = false
	for _, ev := range events {
		s.metrics.changes.WithLabelValues(ev.Kind).Inc()
		s.log.Info("catalog change", zap.String("kind", ev.Kind), zap.String("object", ev.Object),
			zap.String("role", ev.Role), zap.String("database", ev.Database))
	}
	s.prev = cur
	s.sess.remember(cur)
	return nil
}

// Rebaseline makes the next poll take the new server's own state as a baseline: the
// Loop found another server behind the connection (a failover, source.Rebaseliner).
// Its replication slots, statistics resets and evictions, and settings are its own,
// not changes: a promoted standby's pg_stat_statements was never reset, it has its own.
// What the cluster replicates to every server — roles and their attributes,
// memberships, publications, per-role and per-database settings — is still compared
// with what the old server had: a grant made during the switch is reported.
func (s *Source) Rebaseline() { s.rebase = s.prev != nil }

// rebased returns prev with the per-server state of cur, the first poll of another
// server, and logs what an operator should know of that server, as logBaseline does at
// the start.
func (s *Source) rebased(prev, cur *state) *state {
	st := *prev
	st.slots, st.dbReset, st.settings = cur.slots, cur.dbReset, cur.settings
	st.pgssInstalled, st.pgssSchema, st.pgssReset, st.pgssDealloc = cur.pgssInstalled, cur.pgssSchema, cur.pgssReset, cur.pgssDealloc
	for _, name := range slices.Sorted(maps.Keys(cur.slots)) {
		if sl := cur.slots[name]; !slices.Contains(s.cfg.OwnSlots, name) {
			s.log.Info("replication slot not ours present on the new server", zap.String("slot", name),
				zap.String("type", sl.typ), zap.String("database", sl.database))
		}
	}
	var differ []string
	for _, name := range slices.Sorted(maps.Keys(cur.settings)) {
		if was, ok := prev.settings[name]; ok && was != cur.settings[name] {
			differ = append(differ, name)
		}
	}
	if len(differ) > 0 {
		s.log.Warn("watched settings differ on the new server from the old one", zap.Strings("settings", differ))
	}
	if prev.pgssInstalled && !cur.pgssInstalled {
		s.log.Warn("pg_stat_statements is not installed or not loaded on the new server; its resets are not watched")
	}
	return &st
}

// logBaseline reports, once, state that existed before the detector started and that an
// operator should know about, without making it an event: history is not evidence.
func (s *Source) logBaseline(st *state) {
	for _, name := range slices.Sorted(maps.Keys(st.slots)) {
		sl := st.slots[name]
		if !slices.Contains(s.cfg.OwnSlots, name) {
			s.log.Info("replication slot not ours present at start", zap.String("slot", name),
				zap.String("type", sl.typ), zap.String("database", sl.database))
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(st.published), comparePair) {
		if !slices.Contains(s.cfg.OwnPublications, k[0]) {
			s.log.Warn("publication of a sensitive table present at start",
				zap.String("publication", k[0]), zap.String("table", k[1]))
		}
	}
	if !st.pgssInstalled {
		s.log.Warn("pg_stat_statements is not installed in this database; its resets are not watched")
	}
}

func comparePair(a, b [2]string) int {
	if c := strings.Compare(a[0], b[0]); c != 0 {
		return c
	}
	return strings.Compare(a[1], b[1])
}

// sensitiveColumns returns the configured sensitive columns of a qualified table, sorted.
func (s *Source) sensitiveColumns(table string) []string {
	cols := slices.Clone(s.cfg.Sensitive[table])
	slices.Sort(cols)
	return slices.Compact(cols)
}

// isSensitive reports whether schema.name is a configured sensitive table.
func (s *Source) isSensitive(schema, name string) (string, bool) {
	q := model.QualifiedName(schema, name)
	_, ok := s.cfg.Sensitive[q]
	return q, ok
}

// Definition is the catalog source (sources.catalog: enabled, default true; interval,
// default 1s; a change is reported within about two intervals), for the registry.
var Definition = source.Definition{Name: Name, Scope: source.EachServer, Settings: func() source.Settings {
	return &source.PollSettings{Enabled: true, Interval: time.Second, New: func(env source.Env, _ time.Duration) (source.Poller, error) {
		cfg := Config{Sensitive: env.Sensitive, Now: env.Now, Allowed: env.Declared.Replication, OwnStreams: env.OwnStreams,
			Databases: env.ServerDatabases,
			OwnUser:   env.Conn.User, OwnApplication: env.Conn.RuntimeParams["application_name"]}
		if r := env.Replication; r.Streaming() {
			cfg.OwnSlots, cfg.OwnPublications = []string{r.Slot}, []string{r.Publication}
		}
		return New(cfg, env.Sink, env.Logger, env.Registerer), nil
	}}
}}
