package activity

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/classify"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/model"
)

// Activity samples pg_stat_activity: a source.Poller. Create it with NewActivity.
type Activity struct {
	live
	running map[backendStatement]*tracked
	rows    []backend // reused from sample to sample
	tables  source.SensitiveTables
	readers []source.Reader // reused from sample to sample

	longRunning  prometheus.Gauge
	attributed   prometheus.Gauge
	tableReaders prometheus.Gauge
}

// tracked is a long-running statement already classified.
type tracked struct {
	res       classify.Result
	relations []string      // sensitive relations it touches; none: not reported
	nextAt    time.Duration // running time at which it is reported next
}

// NewActivity returns the activity sampler, handing its events to sink.
func NewActivity(cfg Config, sink source.Sink, log *zap.Logger, reg prometheus.Registerer) *Activity {
	f := promauto.With(reg)
	return &Activity{
		live:    newLive(Name, cfg, sink, log),
		running: make(map[backendStatement]*tracked),
		tables:  source.NewSensitiveTables(cfg.Sensitive),
		longRunning: f.NewGauge(prometheus.GaugeOpts{
			Name: "pgtripwire_activity_long_running_statements",
			Help: "Statements running longer than sources.activity.min_running at the last sample.",
		}),
		attributed: f.NewGauge(prometheus.GaugeOpts{
			Name: "pgtripwire_activity_attributed_queries",
			Help: "(query id, role) pairs whose client address and application are remembered for statement events.",
		}),
		tableReaders: f.NewGauge(prometheus.GaugeOpts{
			Name: "pgtripwire_activity_sensitive_table_readers",
			Help: "Sessions holding a lock on a sensitive table at the last sample (one per session and table), remembered to name who read what only the table counters see.",
		}),
	}
}

// Start prepares the shared connection (live.Start) and makes its session plan
// source.ReadersQuery once: see source.SensitiveRelationsCTE. The other queries of the session
// plan the same either way.
func (a *Activity) Start(ctx context.Context, conn *pgx.Conn) error {
	if err := a.live.Start(ctx, conn); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `SET plan_cache_mode = force_generic_plan`); err != nil {
		return fmt.Errorf("set plan_cache_mode: %w", err)
	}
	return nil
}

// activityQuery lists the statements running in the monitored database, other than the
// detector's own sample. The text (with literals) is read only for statements that have
// run at least $1 seconds: the others are only attributed by query id, which keeps the
// sample small on a busy server.
const activityQuery = `SELECT a.pid, coalesce(a.usename::text, ''), CASE WHEN a.client_port = -1 THEN 'local' ELSE coalesce(host(a.client_addr), '') END,
  coalesce(a.application_name, ''), coalesce(a.query_id, 0), a.query_start,
  extract(epoch FROM clock_timestamp() - a.query_start)::float8,
  CASE WHEN clock_timestamp() - a.query_start >= make_interval(secs => $1) THEN a.query END
FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.state = 'active' AND a.backend_type = 'client backend'
  AND a.pid <> pg_backend_pid() AND a.query_start IS NOT NULL`

type backend struct {
	pid                 int32
	role, addr, app     string
	queryID             int64
	start               time.Time
	running             time.Duration
	text                *string
	relation, operation string // COPY only: the relation of relid, the COPY type
	tuples              int64  // COPY only
}

func secondsToDuration(s float64) time.Duration {
	return time.Duration(math.Max(s, 0) * float64(time.Second))
}

// Poll takes one sample of pg_stat_activity, and of pg_locks when it shares readers, in
// one round trip, and hands its events over.
func (a *Activity) Poll(ctx context.Context, conn *pgx.Conn) error {
	changed, err := a.refreshCatalogIfDue(ctx, conn)
	if err != nil {
		return err
	}
	if changed {
		clear(a.running) // classified against the old catalog
	}
	batch := &pgx.Batch{}
	if a.cfg.Server != nil {
		sample, err := a.sharedActivity(ctx)
		if a.sharedErr = err; err != nil {
			return nil // the sampler's health (BlindSpot); the database's other sources go on
		}
		a.rows = a.rows[:0]
		for _, b := range sample {
			if b.database == a.sess.database {
				a.rows = append(a.rows, b.backend)
			}
		}
	} else {
		batch.Queue(activityQuery, a.cfg.MinRunning.Seconds()).Query(a.scanActivity)
	}
	// On a server shared by many databases the table counters sample the locks, in
	// their own round trip (tables.Config.SampleReaders): this one would cost each
	// database a round trip a second of its own.
	sampleReaders := a.cfg.Readers != nil && len(a.tables.Tables()) > 0 && a.cfg.Server == nil
	if sampleReaders {
		batch.Queue(source.ReadersQuery, a.tables.Args()...).Query(func(rows pgx.Rows) error {
			var err error
			a.readers, err = source.ScanReaders(rows, a.tables, a.readers)
			return err
		})
	}
	if batch.Len() > 0 {
		if err := conn.SendBatch(ctx, batch).Close(); err != nil {
			return fmt.Errorf("sample pg_stat_activity: %w", err)
		}
	}
	now := a.cfg.Now()
	if sampleReaders {
		a.cfg.Readers.Note(now, a.readers)
		a.tableReaders.Set(float64(len(a.readers)))
	}
	return a.handle(ctx, now, a.rows)
}

// scanActivity reads the rows of activityQuery into a.rows.
func (a *Activity) scanActivity(rows pgx.Rows) error {
	var b backend
	var running float64
	a.rows = a.rows[:0]
	_, err := pgx.ForEachRow(rows, []any{&b.pid, &b.role, &b.addr, &b.app, &b.queryID, &b.start, &running, &b.text}, func() error {
		b.running = secondsToDuration(running)
		a.rows = append(a.rows, b)
		return nil
	})
	return err
}

// handle turns one pg_stat_activity sample into events and hands them over.
func (a *Activity) handle(ctx context.Context, now time.Time, sample []backend) error {
	var events []model.Event
	seen := a.seen
	clear(seen)
	for _, b := range sample {
		if b.queryID != 0 && b.role != "" && a.cfg.Attribution != nil {
			a.cfg.Attribution.Note(b.queryID, b.role, b.addr, b.app, now)
		}
		if b.text == nil {
			continue
		}
		key := backendStatement{b.pid, b.start}
		seen[key] = true
		tr, ok := a.running[key]
		if !ok {
			res := a.classify(*b.text, b.role)
			tr = &tracked{res: res, relations: res.SensitiveRelations(a.sensitive), nextAt: a.cfg.MinRunning}
			a.running[key] = tr
		}
		if len(tr.relations) == 0 || b.running < tr.nextAt {
			continue
		}
		// Doubling keeps a day-long dump from flooding the rules; the one-minute cap
		// keeps its alert from resolving while it still runs.
		tr.nextAt = b.running + min(b.running, time.Minute)
		events = append(events, a.events(now, b, tr.res, tr.relations, KindRunning, 0)...)
	}
	for key := range a.running {
		if !seen[key] {
			delete(a.running, key)
		}
	}
	if a.cfg.Attribution != nil {
		a.attributed.Set(float64(a.cfg.Attribution.Len()))
	}
	a.longRunning.Set(float64(len(a.running)))
	if err := a.sink.HandleEvents(ctx, events); err != nil {
		return fmt.Errorf("hand over %d events: %w", len(events), err)
	}
	return nil
}

// Copy samples pg_stat_progress_copy: a source.Poller. Create it with NewCopy.
type Copy struct {
	live
	copies map[backendStatement]int64 // tuples processed at the previous sample
	rows   []backend                  // reused from sample to sample
	relids []uint32                   // with a source.Server: the relation of each of rows
}

// NewCopy returns the COPY sampler, handing its events to sink.
func NewCopy(cfg Config, sink source.Sink, log *zap.Logger) *Copy {
	return &Copy{live: newLive(CopyName, cfg, sink, log), copies: make(map[backendStatement]int64)}
}

// copyQuery lists the COPY … TO commands running in the monitored database, with the
// relation of relid (none for COPY (query) TO) and the backend's statement text.
const copyQuery = `SELECT p.pid, coalesce(a.usename::text, ''), CASE WHEN a.client_port = -1 THEN 'local' ELSE coalesce(host(a.client_addr), '') END,
  coalesce(a.application_name, ''), coalesce(a.query_id, 0), a.query_start,
  extract(epoch FROM clock_timestamp() - a.query_start)::float8, a.query,
  coalesce(n.nspname::text, ''), coalesce(c.relname::text, ''),
  p.type, p.tuples_processed
FROM pg_stat_progress_copy p
JOIN pg_stat_activity a ON a.pid = p.pid
LEFT JOIN pg_class c ON c.oid = p.relid
LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE p.command = 'COPY TO' AND p.datname = current_database() AND a.query_start IS NOT NULL`

// Poll takes one sample of pg_stat_progress_copy and hands its events over. The catalog
// snapshot is loaded only while a COPY runs: on most polls there is nothing to classify.
func (c *Copy) Poll(ctx context.Context, conn *pgx.Conn) error {
	if c.cfg.Server != nil {
		sample, err := c.sharedCopies(ctx)
		if c.sharedErr = err; err != nil {
			return nil // the sampler's health (BlindSpot); the database's other sources go on
		}
		c.rows, c.relids = c.rows[:0], c.relids[:0]
		for _, b := range sample {
			if b.database == c.sess.database {
				c.rows, c.relids = append(c.rows, b.backend), append(c.relids, b.relid)
			}
		}
		if len(c.rows) > 0 {
			if err := c.nameRelations(ctx, conn); err != nil {
				return err
			}
			if _, err := c.refreshCatalogIfDue(ctx, conn); err != nil {
				return err
			}
		}
		return c.handle(ctx, c.rows)
	}
	rows, err := conn.Query(ctx, copyQuery)
	if err != nil {
		return fmt.Errorf("sample pg_stat_progress_copy: %w", err)
	}
	var b backend
	var running float64
	var schema, name string
	c.rows = c.rows[:0]
	_, err = pgx.ForEachRow(rows, []any{&b.pid, &b.role, &b.addr, &b.app, &b.queryID, &b.start, &running, &b.text,
		&schema, &name, &b.operation, &b.tuples}, func() error {
		b.running = secondsToDuration(running)
		b.relation = ""
		if name != "" {
			// Quoted as the configuration quotes sensitive tables (public."user").
			b.relation = model.QualifiedName(schema, name)
		}
		c.rows = append(c.rows, b)
		return nil
	})
	if err != nil {
		return fmt.Errorf("sample pg_stat_progress_copy: %w", err)
	}
	if len(c.rows) > 0 {
		if _, err := c.refreshCatalogIfDue(ctx, conn); err != nil {
			return err
		}
	}
	return c.handle(ctx, c.rows)
}

// handle turns one pg_stat_progress_copy sample into events and hands them over.
func (c *Copy) handle(ctx context.Context, sample []backend) error {
	now := c.cfg.Now()
	var events []model.Event
	seen := c.seen
	clear(seen)
	for _, b := range sample {
		key := backendStatement{b.pid, b.start}
		seen[key] = true
		delta := b.tuples - c.copies[key]
		c.copies[key] = b.tuples
		if delta <= 0 {
			continue
		}
		var res classify.Result
		if b.text != nil {
			res = c.classify(*b.text, b.role)
		}
		rels := res.SensitiveRelations(c.sensitive)
		if _, sensitive := c.cfg.Sensitive[b.relation]; sensitive && !res.Complete && !slices.Contains(rels, b.relation) {
			// The text could not say (cut, unparsable): the relation being copied can.
			rels = append(rels, b.relation)
			res = withAllColumns(res, b.relation, c.catalog.SensitiveColumns(b.relation))
		}
		if len(rels) == 0 && res.Complete {
			continue
		}
		if res.Operation == "" {
			res.Operation = classify.OperationCopy
		}
		// Rows is the COPY's total so far, not this sample's growth: rules take the largest
		// observation of a COPY (its progress, then pg_stat_statements' count when it
		// ends) without adding the two, and a COPY cancelled before it ends still shows
		// all it copied.
		events = append(events, c.events(now, b, res, rels, KindCopyProgress, b.tuples)...)
	}
	for key := range c.copies {
		if !seen[key] {
			delete(c.copies, key)
		}
	}
	if err := c.sink.HandleEvents(ctx, events); err != nil {
		// Offer the same growth again: forget this sample's counts.
		for key := range seen {
			delete(c.copies, key)
		}
		return fmt.Errorf("hand over %d events: %w", len(events), err)
	}
	return nil
}

// withAllColumns returns res with every sensitive column of rel read, for a COPY of rel
// whose text could not be classified.
func withAllColumns(res classify.Result, rel string, cols []string) classify.Result {
	read := append([]string(nil), res.SensitiveRead...)
	for _, c := range cols {
		read = append(read, rel+"."+c)
	}
	res.SensitiveRead = read
	return res
}
