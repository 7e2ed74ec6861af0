// Package tables is the table-counter source: it polls pg_stat_user_tables for the
// sensitive tables and reports tuples read that no classified statement explains —
// reads through table_to_xml, query_to_xml, SECURITY DEFINER and PL/pgSQL functions,
// dblink, or statements pg_stat_statements does not track — as "unexplained_reads"
// events (source "tables").
//
// The counters say how many tuples were read, not which columns, by whom, or why; they
// reach the statistics when the reading transaction ends (and at most once a second per
// backend, or up to 10 s later when the backend flushed less than a second before and
// went idle). The heuristic, documented for users in docs/sources.md:
//
//   - reads = Δseq_tup_read + the index fetches beyond LookupRowsPerScan per index scan
//     (Δidx_tup_fetch − LookupRowsPerScan·Δidx_scan, at least 0): ordinary lookups fetch
//     a row or a few per index scan and are never counted; a bulk index read is.
//   - explained = tuples visited by statements about the table (the statements
//     source's events, handed to Observe: the rows they returned, or the tuples their
//     blocks hold — a SELECT count(*), a fold, a listing sorted by an unindexed column
//     visit every tuple), within CreditTTL before or Grace after the reads.
//   - reads not explained after Grace, when at least MinRows, make one event per
//     session seen reading the table while they were made (Config.Readers), or one
//     event without a role when none was seen.
//
// Imprecision it does not hide: a statement's visits are estimated from the blocks it
// touched (an upper bound: index blocks count as table blocks), so a large explained
// read in the same window can cover a smaller unexplained one; index-only scans fetch
// no tuples and are invisible. It is evidence for a warning, not proof.
//
// Who read: the counters do not say. The activity sampler notes every second which
// sessions hold a lock on each sensitive table (source.Readers); a transaction holds
// its tables until it ends, and its counters are published after it ends, within
// PublishDelay. So the reads counted by one poll are attributed to the sessions seen
// holding the table from PublishDelay before the previous poll up to this one: one
// event per reader (role, client address, application), each with all the unexplained
// rows, because the counters cannot split them. A read whose transaction was shorter
// than the sampling interval is seen only by chance: its rows go to whoever else was
// seen (bystanders included), or to nobody.
package tables

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/detector/source/statements"
	"github.com/pgtripwire/pgtripwire/model"
)

// Name is the source's name: its configuration section (sources.tables), health
// component, metrics label, and the source of its events.
const Name = "tables"

// KindUnexplainedReads is the kind of this source's events: Rows tuples of Relation were
// read beyond what classified statements returned. Role, ClientAddr, Application (and
// PID, when it was one session) name a session seen reading the table while they were
// read, one event per such reader, each with all the rows; they are empty when none
// was seen. Columns are unknown.
const KindUnexplainedReads = "unexplained_reads"

// PublishDelay is how long after its transaction ended PostgreSQL may publish the
// counters it moved: at once when its backend goes idle, but PGSTAT_IDLE_INTERVAL
// (10 s) later when that backend published less than a second before; the rest is
// margin. The readers of what one poll counts are sought from PublishDelay before the
// previous poll.
const PublishDelay = 12 * time.Second

// Config says what to poll and how.
type Config struct {
	// Interval between polls: the default Grace and CreditTTL follow it.
	Interval time.Duration
	// Sensitive maps schema-qualified tables to their sensitive columns; their
	// partitions and inheritance children count as the table.
	Sensitive map[string][]string
	// MinRows is the least unexplained reads reported at once; 0 means 1,000.
	MinRows int64
	// LookupRowsPerScan is how many tuples an index scan may fetch and still be an
	// ordinary lookup; 0 means 10.
	LookupRowsPerScan int64
	// Grace is how long reads wait for the statement that explains them (its event
	// usually comes first: pg_stat_statements counts at the statement's end, table
	// statistics are flushed after it); 0 means max(Interval, 1s). CreditTTL is how long
	// a statement's rows explain later reads; 0 means 12 s + Interval + Grace, because a
	// backend that flushed its statistics less than a second before waits
	// PGSTAT_IDLE_INTERVAL (10 s) to flush again when idle.
	Grace, CreditTTL time.Duration
	// WarmUp is how long after the first poll reads still count as baseline: a backend
	// publishes its counters up to PGSTAT_IDLE_INTERVAL (10 s) after its reads, so reads
	// made before the detector started (a migration, a seed, a dump an hour ago) keep
	// arriving for that long and are history, not evidence. 0 means 11 s.
	WarmUp time.Duration
	// Readers are the sessions the activity sampler saw holding each sensitive table:
	// the unexplained reads are attributed to them. nil: every event is role-less.
	Readers *source.Readers
	// SampleReaders makes the source sample the readers itself (source.ReadersQuery),
	// in the round trip of its counters, into Readers: on a server watched with many
	// databases, where the activity sampler does not (source.Env.Server).
	SampleReaders bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Source polls the counters: a source.Poller and a source.Observer, which sees the
// statements source's events through Observe. Create it with New.
type Source struct {
	cfg     Config
	sink    source.Sink
	log     *zap.Logger
	metrics *metrics
	tables  source.SensitiveTables

	mu       sync.Mutex
	observed map[string][]amount // table → rows returned by statements, not yet used

	// State below is owned by the polling goroutine.
	database string          // the connection's, set by Start
	readers  []source.Reader // the last lock sample (Config.SampleReaders), reused
	prev     map[string]counters
	prevAt   time.Time // when prev was read
	// warmUntil ends the warm-up that follows the first poll (Config.WarmUp).
	warmUntil time.Time
	pending   map[string][]amount // table → reads waiting for an explanation
	credits   map[string][]amount
}

type counters struct{ seqRead, idxFetch, idxScan int64 }

// amount is rows of a table: returned by statements (a credit), or read (pending) as
// counted by the poll at at, published after the previous poll, by transactions that
// ended from readFrom on.
type amount struct {
	at       time.Time
	rows     int64
	readFrom time.Time
}

// New returns a source that hands its events to sink.
func New(cfg Config, sink source.Sink, log *zap.Logger, reg prometheus.Registerer) *Source {
	if cfg.MinRows <= 0 {
		cfg.MinRows = 1000
	}
	if cfg.LookupRowsPerScan <= 0 {
		cfg.LookupRowsPerScan = 10
	}
	if cfg.Grace <= 0 {
		cfg.Grace = max(cfg.Interval, time.Second)
	}
	if cfg.WarmUp <= 0 {
		cfg.WarmUp = 11 * time.Second
	}
	if cfg.CreditTTL <= 0 {
		cfg.CreditTTL = 12*time.Second + cfg.Interval + cfg.Grace
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Source{cfg: cfg, sink: sink, log: log.Named(Name), metrics: newMetrics(reg),
		observed: make(map[string][]amount), pending: make(map[string][]amount), credits: make(map[string][]amount)}
	s.tables = source.NewSensitiveTables(cfg.Sensitive)
	return s
}

// Observe lets the source see statement events: the rows they returned from a sensitive
// table explain that many tuples read from it. Call it once per event, after the events
// were handed over successfully (an event offered twice would explain twice). Events of
// other sources are ignored. Safe for concurrent use.
func (s *Source) Observe(events []model.Event) {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ev := range events {
		// A statement explains the tuples it visited, whether it returned them or not:
		// a fold, a count(*), a listing sorted by an unindexed column.
		rows := max(ev.ReadRows(), ev.Visited)
		if ev.Source != statements.Name || ev.Relation == "" || rows <= 0 {
			continue
		}
		if _, ok := s.cfg.Sensitive[ev.Relation]; ok {
			s.observed[ev.Relation] = append(s.observed[ev.Relation], amount{at: now, rows: rows})
		}
	}
}

// Start makes the session plan countersQuery once and reads its database. The session
// runs countersQuery alone, with the same arguments every poll: planned once rather
// than every second (a custom plan of its recursive CTE costs more than running it,
// and PostgreSQL keeps choosing custom plans for array arguments).
func (s *Source) Start(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, `SET plan_cache_mode = force_generic_plan`); err != nil {
		return fmt.Errorf("set plan_cache_mode: %w", err)
	}
	if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&s.database); err != nil {
		return fmt.Errorf("read current database: %w", err)
	}
	return nil
}

// Rebaseline forgets the counters read so far: the Loop found another server behind
// the connection (a failover, source.Rebaseliner), whose counters hold its own history —
// its reads from when it was a standby, judged there or not watched. The next poll is a
// baseline followed by a warm-up, as the first: reads published on the new server until
// it ends are history. Reads of the old server still waiting for a statement to
// explain them stay, and are reported as before.
func (s *Source) Rebaseline() {
	s.prev, s.warmUntil = nil, time.Time{}
	s.metrics.baselineComplete.Set(0)
}

// countersQuery sums the counters of each configured table with its partitions and
// inheritance children (source.SensitiveRelationsCTE), as pg_stat_user_tables shows
// them (seq_tup_read, idx_tup_fetch, idx_scan). It calls the statistics functions
// behind that view for these tables only: the view computes every user table's
// counters before the join, which on a database of thousands of tables costs
// milliseconds a poll instead of a fraction of one.
const countersQuery = `WITH RECURSIVE ` + source.SensitiveRelationsCTE + `
SELECT t.idx, sum(pg_stat_get_tuples_returned(c.oid))::bigint,
  sum(coalesce(pg_stat_get_tuples_fetched(c.oid) + x.fetched, 0))::bigint,
  sum(coalesce(x.scans, 0))::bigint
FROM sensitive t
JOIN pg_class c ON c.oid = t.relid AND c.relkind IN ('r', 't', 'm', 'p')
JOIN pg_namespace n ON n.oid = c.relnamespace
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
CROSS JOIN LATERAL (SELECT sum(pg_stat_get_tuples_fetched(i.indexrelid)) AS fetched,
    sum(pg_stat_get_numscans(i.indexrelid)) AS scans
  FROM pg_index i WHERE i.indrelid = c.oid) x
GROUP BY t.idx`

// Poll reads the counters once and hands over the reads left unexplained.
func (s *Source) Poll(ctx context.Context, conn *pgx.Conn) error {
	database := s.database
	cur := make(map[string]counters, len(s.tables.Tables()))
	batch := &pgx.Batch{}
	batch.Queue(countersQuery, s.tables.Args()...).Query(func(rows pgx.Rows) error {
		var i int32
		var c counters
		_, err := pgx.ForEachRow(rows, []any{&i, &c.seqRead, &c.idxFetch, &c.idxScan}, func() error {
			if t, ok := s.tables.Table(i); ok {
				cur[t] = c
			}
			return nil
		})
		return err
	})
	sampleReaders := s.cfg.SampleReaders && s.cfg.Readers != nil && len(s.tables.Tables()) > 0
	if sampleReaders {
		batch.Queue(source.ReadersQuery, s.tables.Args()...).Query(func(rows pgx.Rows) error {
			var err error
			s.readers, err = source.ScanReaders(rows, s.tables, s.readers)
			return err
		})
	}
	if err := conn.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("poll pg_stat_user_tables: %w", err)
	}
	now := s.cfg.Now()
	if sampleReaders {
		s.cfg.Readers.Note(now, s.readers)
	}
	next, events := s.account(now, database, cur)
	if err := s.sink.HandleEvents(ctx, events); err != nil {
		// Keep the previous state: the next poll counts the same reads again, from the
		// same counters, and reports them then.
		return fmt.Errorf("hand over %d events: %w", len(events), err)
	}
	s.commit(next)
	for _, r := range next.reports {
		s.metrics.unexplained.Add(float64(r.rows))
		s.log.Info("unexplained reads of a sensitive table", zap.String("table", r.table), zap.Int64("rows", r.rows),
			zap.Strings("readers", r.readers))
	}
	return nil
}

// accounting is what one poll leaves behind: the source's state after it, taken up by
// commit only once the poll's events were handed over.
type accounting struct {
	prev      map[string]counters
	prevAt    time.Time
	warmUntil time.Time
	pending   map[string][]amount
	credits   map[string][]amount
	reads     int64 // tuples counted by this poll, for the metric
	counting  bool  // this poll counted reads: the baseline and its warm-up are over
	reports   []report
}

// report is the unexplained reads of one table that one poll reported, for the log and
// the metric (its events are one per reader).
type report struct {
	table   string
	rows    int64
	readers []string // roles, one per event that names one
}

// account turns the counters of one poll into reads, matches them with the rows
// statements returned, and returns the state after the poll with the events for reads
// left unexplained after Grace. It changes nothing of the source's state but moving
// newly observed statement rows into its credits (which only a later poll uses), so
// that a failed hand-over loses nothing: the next poll accounts from the same state.
// The first poll (and a table seen for the first time) is a baseline, and so is every
// poll of the warm-up that follows the first.
func (s *Source) account(now time.Time, database string, cur map[string]counters) (accounting, []model.Event) {
	s.mu.Lock()
	for t, obs := range s.observed {
		s.credits[t] = append(s.credits[t], obs...)
	}
	clear(s.observed)
	s.mu.Unlock()

	next := accounting{
		prev:      make(map[string]counters, len(cur)),
		prevAt:    now,
		warmUntil: s.warmUntil,
		pending:   make(map[string][]amount, len(s.pending)),
		credits:   make(map[string][]amount, len(s.credits)),
	}
	if s.prev == nil {
		next.warmUntil = now.Add(s.cfg.WarmUp)
	}
	next.counting = s.prev != nil && !now.Before(s.warmUntil)
	var events []model.Event
	for _, t := range s.tables.Tables() {
		// settle consumes in place: work on copies.
		pending, credits := slices.Clone(s.pending[t]), slices.Clone(s.credits[t])
		c, ok := cur[t]
		if !ok {
			// Not (yet) created, or no statistics: keep what waits for it.
			next.pending[t], next.credits[t] = pending, credits
			continue
		}
		if p, seen := s.prev[t]; seen && next.counting {
			if reads := readsBetween(p, c, s.cfg.LookupRowsPerScan); reads > 0 {
				pending = append(pending, amount{at: now, rows: reads, readFrom: s.prevAt.Add(-PublishDelay)})
				next.reads += reads
			}
		}
		pending = settle(pending, credits)
		credits = slices.DeleteFunc(credits, func(a amount) bool {
			return a.rows <= 0 || now.Sub(a.at) > s.cfg.CreditTTL
		})
		var unexplained int64
		var readFrom, readTo time.Time // when the unexplained reads were published
		pending = slices.DeleteFunc(pending, func(a amount) bool {
			if a.rows > 0 && now.Sub(a.at) < s.cfg.Grace {
				return false
			}
			if unexplained == 0 || a.readFrom.Before(readFrom) {
				readFrom = a.readFrom
			}
			readTo = a.at // pending is in the order of polls
			unexplained += a.rows
			return true
		})
		next.pending[t], next.credits[t] = pending, credits
		if unexplained >= s.cfg.MinRows {
			evs := s.attribute(model.Event{Time: now, Source: Name, Kind: KindUnexplainedReads,
				Database: database, Relation: t, Rows: unexplained}, readFrom, readTo)
			r := report{table: t, rows: unexplained}
			for _, ev := range evs {
				if ev.Role != "" {
					r.readers = append(r.readers, ev.Role)
				}
			}
			next.reports = append(next.reports, r)
			events = append(events, evs...)
		}
	}
	for t, c := range s.prev {
		next.prev[t] = c
	}
	for t, c := range cur {
		next.prev[t] = c
	}
	return next, events
}

// attribute returns ev, the unexplained reads of a table published from readFrom to
// readTo, as one event per reader seen holding the table then — a role, client address
// and application, with the pid when it was one session — each with all of ev's rows,
// since the counters cannot split them; or ev alone, role-less, when nobody was seen.
func (s *Source) attribute(ev model.Event, readFrom, readTo time.Time) []model.Event {
	readers := s.cfg.Readers.Seen(ev.Relation, readFrom, readTo)
	if len(readers) == 0 {
		return []model.Event{ev}
	}
	var events []model.Event
	for _, r := range readers { // sorted by role, client, application, pid
		if n := len(events); n > 0 {
			last := &events[n-1]
			if last.Role == r.Role && last.ClientAddr == r.ClientAddr && last.Application == r.Application {
				if last.PID != r.PID {
					last.PID = 0 // several sessions: no one pid to name
				}
				continue
			}
		}
		e := ev
		e.Role, e.ClientAddr, e.Application, e.PID = r.Role, r.ClientAddr, r.Application, r.PID
		events = append(events, e)
	}
	return events
}

// commit makes next the source's state, after its events were handed over.
func (s *Source) commit(next accounting) {
	s.prev, s.prevAt, s.warmUntil, s.pending, s.credits = next.prev, next.prevAt, next.warmUntil, next.pending, next.credits
	if next.reads > 0 {
		s.metrics.reads.Add(float64(next.reads))
	}
	if next.counting {
		s.metrics.baselineComplete.Set(1)
	}
}

// readsBetween is the tuples read from p to c: sequential reads, plus index fetches
// beyond perScan per index scan. A counter that went down was reset: what it counts now
// was read since.
func readsBetween(p, c counters, perScan int64) int64 {
	d := func(was, is int64) int64 {
		if is < was {
			return is
		}
		return is - was
	}
	return d(p.seqRead, c.seqRead) + max(0, d(p.idxFetch, c.idxFetch)-perScan*d(p.idxScan, c.idxScan))
}

// settle consumes credits (oldest first) against pending reads (oldest first), in place,
// and returns the reads with what is left of each.
func settle(pending, credits []amount) []amount {
	ci := 0
	for i := range pending {
		for pending[i].rows > 0 && ci < len(credits) {
			used := min(pending[i].rows, credits[ci].rows)
			pending[i].rows -= used
			credits[ci].rows -= used
			if credits[ci].rows == 0 {
				ci++
			}
		}
	}
	return slices.DeleteFunc(pending, func(a amount) bool { return a.rows <= 0 })
}

type metrics struct {
	reads       prometheus.Counter
	unexplained prometheus.Counter
	// baselineComplete is 1 once a poll counted reads: reads published after it are
	// evidence. Tests wait for it instead of sleeping through the warm-up.
	baselineComplete prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		reads: f.NewCounter(prometheus.CounterOpts{
			Name: "pgtripwire_tables_tuples_read_total",
			Help: "Tuples read from sensitive tables as counted (sequential reads and bulk index fetches).",
		}),
		unexplained: f.NewCounter(prometheus.CounterOpts{
			Name: "pgtripwire_tables_unexplained_tuples_total",
			Help: "Tuples read from sensitive tables that no classified statement explained, reported as events.",
		}),
		baselineComplete: f.NewGauge(prometheus.GaugeOpts{
			Name: "pgtripwire_tables_baseline_complete",
			Help: "1 once the first poll and the warm-up after it are over: reads published from then on are counted; 0 before.",
		}),
	}
}

// Definition is the tables source (sources.tables: enabled, default true; interval,
// default 1s), for the registry.
var Definition = source.Definition{Name: Name, Settings: func() source.Settings {
	return &source.PollSettings{Enabled: true, Interval: time.Second, New: func(env source.Env, interval time.Duration) (source.Poller, error) {
		return New(Config{Interval: interval, Sensitive: env.Sensitive, Readers: env.Readers, Now: env.Now,
			SampleReaders: env.Server != nil},
			env.Sink, env.Logger, env.Registerer), nil
	}}
}}
