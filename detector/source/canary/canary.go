// Package canary is the canary source: it checks, every interval, that each table with
// honeytoken rows still has its tripwire armed as `pgtripwire canary plant` left it
// (row security on and forced, the canary policy and function unchanged, the registry
// present), and reports each difference as an event with Source "canary". Reads of the
// canary rows themselves arrive through the WAL source as logical decoding messages
// (package detector/canary decodes them).
//
// It sees the tripwire's catalog state, not who changed it. It is not the rule engine.
package canary

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"

	tripwire "github.com/pgtripwire/pgtripwire/detector/canary"
	"github.com/pgtripwire/pgtripwire/detector/pgversion"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/model"
)

// Name is the source's name: its configuration section (sources.canary), health
// component, metrics label, and the source of its events (as of the canary reads the
// WAL source decodes).
const Name = tripwire.Source

// Kinds of the tamper check's events (Source canary).
const (
	// KindTampered: the tripwire of a table with canaries was disarmed or changed.
	// Relation is the table; Object says what ("row_security", "force_row_security",
	// "policy:pgtripwire_canary", "policy:pgtripwire_canary_allow",
	// "function:pgtripwire_canary.tripped", "table") and Operation how ("disabled",
	// "dropped", "altered"). Reported when it is first seen (also at the first check:
	// the baseline is what Plant recorded, not what the detector found at start), and
	// again if it is repaired and happens again.
	KindTampered = "canary_tampered"
	// KindRemoved: a table known to have canaries is no longer in the registry, or the
	// registry is gone (Object "registry"). `pgtripwire canary remove` does this; so
	// does a superuser disarming the tripwire the blunt way: the two look the same.
	KindRemoved = "canary_removed"
)

// Objects and operations of KindTampered events.
const (
	ObjectRowSecurity      = "row_security"
	ObjectForceRowSecurity = "force_row_security"
	ObjectPolicy           = "policy:" + tripwire.PolicyName
	ObjectAllowPolicy      = "policy:" + tripwire.AllowPolicyName
	ObjectFunction         = "function:" + tripwire.Schema + "." + tripwire.FunctionName
	ObjectTable            = "table"
	ObjectRegistry         = "registry"

	OperationDisabled = "disabled"
	OperationDropped  = "dropped"
	OperationAltered  = "altered"
)

// Config says how to check.
type Config struct {
	// Now stamps events; nil means time.Now.
	Now func() time.Time
	// NoFlush turns off the WAL flush that each check makes, on servers before
	// PostgreSQL 17, when WAL is waiting to be flushed (see flushSQL). Without it, on
	// such a server with little write traffic a canary message can wait seconds before
	// the WAL source sees it.
	NoFlush bool
	// AbsentProbeEvery, when positive, is how often a database without the canary
	// registry (nothing planted, nothing known) is probed for it when no flush is due,
	// instead of every poll: on a server watched with many databases, most of which
	// never get canaries, a probe a second each is most of the detector's round trips.
	// Tables with canaries are checked every poll whatever it is; a registry planted
	// meanwhile is seen within it.
	AbsentProbeEvery time.Duration
}

// Source checks periodically that every table with canaries still has its tripwire
// armed as Plant left it: a source.Poller. Its role needs USAGE on schema
// pgtripwire_canary and SELECT on pgtripwire_canary.planted (the catalogs it compares
// with are readable by every role). Create it with New.
type Source struct {
	cfg     Config
	sink    source.Sink
	log     *zap.Logger
	metrics *metrics

	// flush says whether each check flushes pending WAL (flushSQL): on servers before
	// PostgreSQL 17, when cfg.NoFlush is off. Set by Start.
	flush bool

	// The findings and tables of the last check handed over.
	reported map[finding]bool
	known    map[string]bool
	// absentAt is when the last probe found no registry; zero when it found one.
	absentAt time.Time
}

// finding is one way a table's tripwire differs from what Plant recorded.
type finding struct{ relation, object, operation string }

type metrics struct {
	checks   prometheus.Counter
	findings *prometheus.CounterVec
	tables   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		checks: f.NewCounter(prometheus.CounterOpts{
			Name: "pgtripwire_canary_checks_total",
			Help: "Completed checks that the canary tripwires are armed.",
		}),
		findings: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_canary_tamper_events_total",
			Help: "Tripwire changes reported as events, by kind.",
		}, []string{"kind"}),
		tables: f.NewGauge(prometheus.GaugeOpts{
			Name: "pgtripwire_canary_tables",
			Help: "Tables with canaries in the registry at the last check.",
		}),
	}
	m.findings.WithLabelValues(KindTampered)
	m.findings.WithLabelValues(KindRemoved)
	return m
}

// New returns a tamper check that hands its events to sink.
func New(cfg Config, sink source.Sink, log *zap.Logger, reg prometheus.Registerer) *Source {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Source{
		cfg: cfg, sink: sink, log: log.Named(Name), metrics: newMetrics(reg),
		reported: map[finding]bool{}, known: map[string]bool{},
	}
}

// Start sets the session's search_path (pg_get_expr qualifies names by it, and the
// hashes must be computed as Plant computed them) and reads the server's version: from
// PostgreSQL 17 on, the canary function flushes its messages itself, and the checks do
// not need to.
func (s *Source) Start(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, `SET search_path = pg_catalog`); err != nil {
		return fmt.Errorf("set search_path: %w", err)
	}
	var version int
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::integer`).Scan(&version); err != nil {
		return fmt.Errorf("read server version: %w", err)
	}
	s.flush = !s.cfg.NoFlush && !pgversion.EmitMessageFlush.Has(version)
	return nil
}

// flushSQL makes sure the canary messages of the last interval reach the replication
// stream, on servers before PostgreSQL 17 (from 17 on, the canary function and the DDL
// triggers pass pg_logical_emit_message's flush argument, and no check runs it). A
// non-transactional logical decoding message is written to the WAL buffers but not
// flushed (before 17 there is no flush option), nor does the reading
// transaction flush it: a read-only or rolled-back transaction writes no commit
// record. Walsenders only send flushed WAL, and an idle server's WAL writer hibernates
// for up to 25 × wal_writer_delay (5 s). So when WAL is waiting to be flushed, the
// check takes a transaction id: its commit record is flushed, and with it everything
// before it. That costs one xid per check on a busy server, none on an idle one.
//
// The flush is part of the registry probe (probeSQL), to cost no round trip of its own.
const flushSQL = `CASE WHEN pg_current_wal_insert_lsn() > pg_current_wal_flush_lsn()
	THEN pg_current_xact_id() IS NOT NULL END`

// probeSQL looks for the canary registry: a dropped schema is a finding, not an error.
const probeSQL = `SELECT to_regclass('` + tripwire.Schema + `.planted') IS NOT NULL, current_database()`

// checkSQL compares each planted table's catalog state with the registry. The
// registry's existence is checked first: a dropped schema is a finding, not an error.
const checkSQL = `
SELECT p.relation::oid::bigint, coalesce(c.oid::regclass::text, p.relation::text), c.oid IS NOT NULL,
	coalesce(c.relrowsecurity, false), coalesce(c.relforcerowsecurity, false),
	p.policy_hash, ` + policyHashForRowSQL + `,
	p.allow_policy, EXISTS (SELECT 1 FROM pg_policy a WHERE a.polrelid = p.relation AND a.polname = '` + tripwire.AllowPolicyName + `'),
	p.function_hash, ` + tripwire.FunctionHashSQL + `
FROM ` + tripwire.Schema + `.planted p LEFT JOIN pg_class c ON c.oid = p.relation
ORDER BY 2`

// policyHashForRowSQL is policyHashSQL for the row of checkSQL.
const policyHashForRowSQL = `(SELECT md5(concat_ws('|', p2.polcmd, p2.polpermissive, p2.polroles::text,
		pg_get_expr(p2.polqual, p2.polrelid), pg_get_expr(p2.polwithcheck, p2.polrelid)))
	FROM pg_policy p2 WHERE p2.polrelid = p.relation AND p2.polname = '` + tripwire.PolicyName + `')`

// Poll checks the tripwires once and hands over what changed.
func (s *Source) Poll(ctx context.Context, conn *pgx.Conn) error {
	if e := s.cfg.AbsentProbeEvery; e > 0 && !s.flush && len(s.known) == 0 && !s.absentAt.IsZero() &&
		s.cfg.Now().Sub(s.absentAt) < e {
		return nil
	}
	var registry bool
	var database string
	probe, dest := probeSQL, []any{&registry, &database}
	if s.flush {
		probe, dest = probe+", "+flushSQL, append(dest, nil)
	}
	if err := conn.QueryRow(ctx, probe).Scan(dest...); err != nil {
		return fmt.Errorf("look for the canary registry: %w", err)
	}
	cur := map[finding]bool{}
	tables := map[string]bool{}
	if registry {
		rows, err := conn.Query(ctx, checkSQL)
		if err != nil {
			return fmt.Errorf("check the canary tripwires: %w", err)
		}
		for rows.Next() {
			var (
				oid                                  int64
				rel                                  string
				exists, enabled, forced, allowWanted bool
				allowHas                             bool
				policyWant, functionWant             string
				policyHas, functionHas               *string
			)
			if err := rows.Scan(&oid, &rel, &exists, &enabled, &forced, &policyWant, &policyHas,
				&allowWanted, &allowHas, &functionWant, &functionHas); err != nil {
				rows.Close()
				return fmt.Errorf("check the canary tripwires: %w", err)
			}
			tables[rel] = true
			add := func(object, op string) { cur[finding{rel, object, op}] = true }
			if !exists {
				add(ObjectTable, OperationDropped)
				continue
			}
			if !enabled {
				add(ObjectRowSecurity, OperationDisabled)
			}
			if !forced {
				add(ObjectForceRowSecurity, OperationDisabled)
			}
			compare(add, ObjectPolicy, policyWant, policyHas)
			if allowWanted && !allowHas {
				add(ObjectAllowPolicy, OperationDropped)
			}
			compare(add, ObjectFunction, functionWant, functionHas)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("check the canary tripwires: %w", err)
		}
	}

	now := s.cfg.Now()
	var events []model.Event
	for _, f := range slices.SortedFunc(maps.Keys(cur), compareFindings) {
		if !s.reported[f] {
			events = append(events, model.Event{Time: now, Source: Name, Database: database,
				Kind: KindTampered, Relation: f.relation, Object: f.object, Operation: f.operation, Complete: true})
		}
	}
	for _, rel := range slices.Sorted(maps.Keys(s.known)) {
		if !tables[rel] {
			events = append(events, model.Event{Time: now, Source: Name, Database: database,
				Kind: KindRemoved, Relation: rel, Object: ObjectRegistry, Operation: OperationDropped, Complete: true})
		}
	}
	if len(events) > 0 {
		if err := s.sink.HandleEvents(ctx, events); err != nil {
			return fmt.Errorf("hand over %d events: %w", len(events), err)
		}
	}
	for _, ev := range events {
		s.metrics.findings.WithLabelValues(ev.Kind).Inc()
		s.log.Warn("canary tripwire changed", zap.String("kind", ev.Kind), zap.String("table", ev.Relation),
			zap.String("object", ev.Object), zap.String("operation", ev.Operation))
	}
	s.reported, s.known = cur, tables
	s.absentAt = time.Time{}
	if !registry {
		s.absentAt = now
	}
	s.metrics.checks.Inc()
	s.metrics.tables.Set(float64(len(tables)))
	return nil
}

// compare adds the finding for a definition whose hash is gone or differs.
func compare(add func(object, op string), object, want string, has *string) {
	switch {
	case has == nil:
		add(object, OperationDropped)
	case *has != want:
		add(object, OperationAltered)
	}
}

func compareFindings(a, b finding) int {
	for _, c := range [][2]string{{a.relation, b.relation}, {a.object, b.object}, {a.operation, b.operation}} {
		if c[0] != c[1] {
			if c[0] < c[1] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// absentProbeEvery is Config.AbsentProbeEvery on a server watched with many databases.
const absentProbeEvery = 10 * time.Second

// Definition is the canary source (sources.canary: enabled, default true; interval,
// default 1s), for the registry.
var Definition = source.Definition{Name: Name, Scope: source.PrimaryDatabases, Settings: func() source.Settings {
	return &source.PollSettings{Enabled: true, Interval: time.Second, New: func(env source.Env, _ time.Duration) (source.Poller, error) {
		// The flush only matters to canary reads arriving through the WAL source.
		cfg := Config{Now: env.Now, NoFlush: !env.Replication.Streaming()}
		if env.Server != nil {
			cfg.AbsentProbeEvery = absentProbeEvery
		}
		return New(cfg, env.Sink, env.Logger, env.Registerer), nil
	}}
}}
