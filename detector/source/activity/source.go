// Package activity holds the two live sources: "activity" samples pg_stat_activity and
// "copy" samples pg_stat_progress_copy. They report statements that read sensitive
// columns while they still run — a slow dump, a COPY whose client reads slowly — long
// before pg_stat_statements counts them at their end. The activity sampler also records
// which client address and application ran each query id (source.Attribution), for the
// statements source's events, and which sessions hold a lock on a sensitive table
// (source.Readers), for the table counters' events.
//
// They see only statements running at a sample: one shorter than the interval is seen
// by chance, a COPY that ends between two samples not at all (the statements source
// counts both when they end). pg_stat_activity.query is cut at
// track_activity_query_size: a cut text is classified as far as it goes and reported
// incomplete. The query text contains literals: it is classified in memory and never
// logged or emitted. They are not the rule engine.
//
// Both samplers share one connection ("live") and one loop, each at its own interval
// (docs/sources.md: the connection budget); each has its own health component.
package activity

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
	"github.com/pgtripwire/pgtripwire/detector/classify"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/model"
)

// Names of the two sources: their configuration sections, health components, metrics
// labels, and the sources of their events.
const (
	Name     = "activity"
	CopyName = "copy"
)

// Connection is the connection the two samplers share.
const Connection = "live"

// Kinds of the events these sources emit.
const (
	// KindRunning (source "activity"): a statement reading or referencing sensitive
	// columns has been running for Running, at least Config.MinRunning. Emitted when it
	// first crosses MinRunning, then each time its running time doubles, at least once a
	// minute, until it ends: rules can alert on running_seconds while it runs, and an
	// alert stays firing while it does. Rows is 0 (unknown until it ends).
	KindRunning = "running"
	// KindCopyProgress (source "copy"): a COPY … TO of a sensitive relation (or of a
	// query reading one) has processed Rows tuples so far (a running total, reported at
	// each sample in which it grew): the largest Rows of a COPY is all it copied.
	KindCopyProgress = "copy_progress"
)

// Config says how to classify what the samplers see.
type Config struct {
	// MinRunning is how long a statement must have run before the activity sampler
	// reports it (the configuration's default is 2 s); 0 reports every one sampled.
	MinRunning time.Duration
	// CatalogRefresh is how often the catalog snapshot is reloaded; 0 means 1 min.
	CatalogRefresh time.Duration
	// SearchPath resolves unqualified relation names; "$user" is the statement's role.
	SearchPath []string
	// Sensitive maps schema-qualified tables to their sensitive columns.
	Sensitive map[string][]string
	// Attribution, for the activity sampler, receives the client of every statement
	// sampled; nil records nothing.
	Attribution *source.Attribution
	// Readers, for the activity sampler, receives the sessions holding a lock on a
	// sensitive table at each sample; nil samples no locks.
	Readers *source.Readers
	// Now is the clock that stamps events; nil means time.Now.
	Now func() time.Time
	// Server, when set, samples pg_stat_activity and pg_stat_progress_copy once per
	// interval for every database the detector watches on the server
	// (source.Env.Server): each sampler takes its database's rows.
	Server *source.Server
	// Interval is the sampler's interval: a sample of Server younger than half of it
	// is shared.
	Interval time.Duration
}

// live is what both samplers share: the session's facts, and classification against a
// catalog snapshot. Each sampler has its own: they run on one goroutine, one after the
// other, but are separate sources.
type live struct {
	cfg        Config
	name       string
	sink       source.Sink
	log        *zap.Logger
	classifier *classify.Cache

	// State below is owned by the polling goroutine.
	sess      session
	catalog   *catalog.Snapshot
	catalogAt time.Time
	sensitive []string // the snapshot's sensitive tables, sorted
	seen      map[backendStatement]bool
	// sharedErr is why the last shared sample failed (Config.Server), nil otherwise.
	sharedErr error
}

func newLive(name string, cfg Config, sink source.Sink, log *zap.Logger) live {
	if cfg.CatalogRefresh <= 0 {
		cfg.CatalogRefresh = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return live{cfg: cfg, name: name, sink: sink, log: log.Named(name), classifier: classify.NewCache(1000),
		seen: make(map[backendStatement]bool)}
}

// backendStatement identifies one execution: a backend runs one statement at a time.
type backendStatement struct {
	pid   int32
	start time.Time
}

// session is what a connection learned once.
type session struct {
	database  string
	querySize int // track_activity_query_size: texts this long (less one byte) are cut
}

// truncated reports whether a pg_stat_activity text was cut at track_activity_query_size.
func (ss session) truncated(text string) bool {
	return ss.querySize > 0 && len(text) >= ss.querySize-1
}

// Start reads the session's database and track_activity_query_size.
func (l *live) Start(ctx context.Context, conn *pgx.Conn) error {
	if err := conn.QueryRow(ctx, `SELECT current_database(),
		(SELECT setting::int FROM pg_settings WHERE name = 'track_activity_query_size')`).
		Scan(&l.sess.database, &l.sess.querySize); err != nil {
		return fmt.Errorf("read session settings: %w", err)
	}
	return nil
}

// refreshCatalogIfDue reloads the catalog snapshot when it is due, and reports whether
// it changed (classifications made against the old one are stale).
func (l *live) refreshCatalogIfDue(ctx context.Context, conn *pgx.Conn) (changed bool, err error) {
	now := l.cfg.Now()
	if l.catalog != nil && now.Sub(l.catalogAt) < l.cfg.CatalogRefresh {
		return false, nil
	}
	snap, err := catalog.Load(ctx, conn, l.cfg.Sensitive)
	if err != nil {
		if l.catalog == nil || ctx.Err() != nil {
			return false, err
		}
		l.log.Warn("catalog refresh failed; keeping the previous snapshot", zap.Error(err))
		l.catalogAt = now
		return false, nil
	}
	changed = l.catalog == nil || snap.Version() != l.catalog.Version()
	l.catalog, l.catalogAt = snap, now
	l.sensitive = slices.Sorted(maps.Keys(snap.Sensitive()))
	return changed, nil
}

// classify classifies a statement text seen in pg_stat_activity.
func (l *live) classify(text, role string) classify.Result {
	res := l.classifier.Classify(text, l.catalog, l.cfg.SearchPath, role)
	if l.sess.truncated(text) && res.Complete {
		res.Complete = false // what was cut off may read more
	}
	return res
}

// events builds one event per sensitive relation (or one without relation for an
// incomplete statement that names none). The text is never put in an event.
func (l *live) events(now time.Time, b backend, res classify.Result, rels []string, kind string, rows int64) []model.Event {
	base := model.Event{
		Time:        now,
		Source:      model.Source(l.name),
		Database:    l.sess.database,
		Role:        b.role,
		ClientAddr:  b.addr,
		Application: b.app,
		Operation:   res.Operation,
		Complete:    res.Complete,
		Rows:        rows,
		RowsRead:    rows,
		Shapes:      res.Shapes,
		Kind:        kind,
		PID:         b.pid,
		Running:     b.running,
		QueryID:     b.queryID,
	}
	var events []model.Event
	for _, rel := range rels {
		events = append(events, res.About(base, rel))
	}
	if len(rels) == 0 {
		events = append(events, base)
	}
	for _, ev := range events {
		l.log.Debug("running statement on sensitive data", zap.Int32("pid", ev.PID), zap.String("role", ev.Role),
			zap.String("relation", ev.Relation), zap.Duration("running", ev.Running), zap.Int64("queryid", ev.QueryID))
	}
	return events
}
