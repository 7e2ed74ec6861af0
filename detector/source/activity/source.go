// Package activity is the live source: it samples pg_stat_activity and
// pg_stat_progress_copy and reports statements that read sensitive columns while they
// still run — a slow dump, a COPY whose client reads slowly — long before
// pg_stat_statements counts them at their end. It also remembers which client address
// and application ran each query id (Attribution), for the statements source's events.
//
// It sees only statements running at a sample: one shorter than the interval is seen by
// chance, a COPY that ends between two samples not at all (the statements source counts
// both when they end). pg_stat_activity.query is cut at track_activity_query_size: a cut
// text is classified as far as it goes and reported incomplete. The query text contains
// literals: it is classified in memory and never logged or emitted. It is not the rule
// engine.
//
// Both samplers share one connection and one loop (docs/sources.md: the connection
// budget); each has its own health component, "activity" and "copy".
package activity

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/backoff"
	"github.com/pgtripwire/pgtripwire/detector/catalog"
	"github.com/pgtripwire/pgtripwire/detector/classify"
	"github.com/pgtripwire/pgtripwire/model"
)

// Components of this source in health reports, logs and metrics.
const (
	Component     = "activity"
	CopyComponent = "copy"
)

// Kinds of the events this source emits.
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

// Sink receives the events of one sample; an error makes the source reconnect, and the
// sample is taken again (statements still running are reported again).
type Sink interface {
	HandleEvents(ctx context.Context, events []model.Event) error
}

// Health receives the outcome of every connection attempt and sample.
type Health interface {
	Set(component string, err error)
}

// Config says what to sample and how often.
type Config struct {
	// Conn is the parsed connection configuration; the source copies it per connection.
	Conn *pgx.ConnConfig
	// Interval between pg_stat_activity samples; 0 turns them off (and Attribution
	// learns nothing).
	Interval time.Duration
	// MinRunning is how long a statement must have run before it is reported (the
	// configuration's default is 2 s); 0 reports every one sampled.
	MinRunning time.Duration
	// CopyInterval between pg_stat_progress_copy samples; 0 turns them off.
	CopyInterval time.Duration
	// CatalogRefresh is how often the catalog snapshot is reloaded; 0 means 1 min.
	CatalogRefresh time.Duration
	// SearchPath resolves unqualified relation names; "$user" is the statement's role.
	SearchPath []string
	// Sensitive maps schema-qualified tables to their sensitive columns.
	Sensitive map[string][]string
	// AttributionSize bounds the (query id, role) pairs remembered; 0 means 10,000.
	AttributionSize int
	// ReconnectInitial and ReconnectMax bound the reconnect backoff; zero means 500 ms and 30 s.
	ReconnectInitial, ReconnectMax time.Duration
	// Now is the clock that stamps events; nil means time.Now.
	Now func() time.Time
}

// Source samples running statements. Create it with New and start it with Run.
type Source struct {
	cfg         Config
	sink        Sink
	health      Health
	log         *zap.Logger
	metrics     *metrics
	attribution *Attribution
	classifier  *classify.Cache

	// State below is owned by the Run goroutine.
	catalog   *catalog.Snapshot
	catalogAt time.Time
	sensitive []string // the snapshot's sensitive tables, sorted
	running   map[backendStatement]*tracked
	copies    map[backendStatement]int64 // tuples processed at the previous sample
	// Reused from sample to sample, to not allocate them at every one.
	activityRows, copyRows []backend
	seen                   map[backendStatement]bool
}

// backendStatement identifies one execution: a backend runs one statement at a time.
type backendStatement struct {
	pid   int32
	start time.Time
}

// tracked is a long-running statement already classified.
type tracked struct {
	res       classify.Result
	relations []string      // sensitive relations it touches; none: not reported
	nextAt    time.Duration // running time at which it is reported next
}

// New returns a source that reports to sink and health.
func New(cfg Config, sink Sink, health Health, log *zap.Logger, reg prometheus.Registerer) *Source {
	if cfg.CatalogRefresh <= 0 {
		cfg.CatalogRefresh = time.Minute
	}
	if cfg.AttributionSize <= 0 {
		cfg.AttributionSize = 10_000
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
		cfg:         cfg,
		sink:        sink,
		health:      health,
		log:         log.Named(Component),
		metrics:     newMetrics(reg),
		attribution: newAttribution(cfg.AttributionSize, cfg.Now),
		classifier:  classify.NewCache(1000),
		running:     make(map[backendStatement]*tracked),
		copies:      make(map[backendStatement]int64),
		seen:        make(map[backendStatement]bool),
	}
}

// Attribution is what the activity samples taught about clients, for the statements
// source. It stays valid (and empty) when activity sampling is off.
func (s *Source) Attribution() *Attribution { return s.attribution }

// components are the health components this source reports on.
func (s *Source) components() []string {
	var c []string
	if s.cfg.Interval > 0 {
		c = append(c, Component)
	}
	if s.cfg.CopyInterval > 0 {
		c = append(c, CopyComponent)
	}
	return c
}

func (s *Source) setHealth(err error) {
	for _, c := range s.components() {
		s.health.Set(c, err)
	}
}

// Run samples until ctx is done, reconnecting with capped, jittered exponential backoff
// whenever the connection or a sample fails. It returns ctx's error, or an error at once
// when both samplers are off.
func (s *Source) Run(ctx context.Context) error {
	if len(s.components()) == 0 {
		return errors.New("activity source: neither activity nor COPY sampling is enabled")
	}
	bo := backoff.New(s.cfg.ReconnectInitial, s.cfg.ReconnectMax)
	return bo.Reconnect(ctx, func(ctx context.Context) error { return s.session(ctx, bo) }, func(err error) {
		s.setHealth(err)
		s.metrics.errors.Inc()
		s.log.Warn("activity source failed; reconnecting", zap.Error(err))
	})
}

func (s *Source) session(ctx context.Context, bo *backoff.Backoff) error {
	conn, err := pgx.ConnectConfig(ctx, s.cfg.Conn.Copy())
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	var sess session
	if err := conn.QueryRow(ctx, `SELECT current_database(),
		(SELECT setting::int FROM pg_settings WHERE name = 'track_activity_query_size')`).
		Scan(&sess.database, &sess.querySize); err != nil {
		return fmt.Errorf("read session settings: %w", err)
	}

	tick := s.cfg.Interval
	if tick <= 0 || (s.cfg.CopyInterval > 0 && s.cfg.CopyInterval < tick) {
		tick = s.cfg.CopyInterval
	}
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	var lastActivity, lastCopy time.Time
	for {
		// Due with a little slack, so that a 1 s interval on a 1 s tick is every tick.
		slack := tick / 10
		pollCtx, cancel := context.WithTimeout(ctx, max(10*time.Second, 5*tick))
		err := s.refreshCatalogIfDue(pollCtx, conn)
		activityDue := s.cfg.Interval > 0 && time.Since(lastActivity) >= s.cfg.Interval-slack
		copyDue := s.cfg.CopyInterval > 0 && time.Since(lastCopy) >= s.cfg.CopyInterval-slack
		if err == nil && (activityDue || copyDue) {
			if activityDue {
				lastActivity = time.Now()
			}
			if copyDue {
				lastCopy = time.Now()
			}
			err = s.sample(pollCtx, conn, sess, activityDue, copyDue)
		}
		cancel()
		if err != nil {
			return err
		}
		bo.Reset()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
	}
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

func (s *Source) refreshCatalogIfDue(ctx context.Context, conn *pgx.Conn) error {
	now := s.cfg.Now()
	if s.catalog != nil && now.Sub(s.catalogAt) < s.cfg.CatalogRefresh {
		return nil
	}
	snap, err := catalog.Load(ctx, conn, s.cfg.Sensitive)
	if err != nil {
		if s.catalog == nil || ctx.Err() != nil {
			return err
		}
		s.log.Warn("catalog refresh failed; keeping the previous snapshot", zap.Error(err))
		s.catalogAt = now
		return nil
	}
	if s.catalog == nil || snap.Version() != s.catalog.Version() {
		clear(s.running) // classified against the old catalog
	}
	s.catalog, s.catalogAt = snap, now
	s.sensitive = slices.Sorted(maps.Keys(snap.Sensitive()))
	return nil
}

// classify classifies a statement text seen in pg_stat_activity.
func (s *Source) classify(text, role string, truncated bool) classify.Result {
	res := s.classifier.Classify(text, s.catalog, s.cfg.SearchPath, role)
	if truncated && res.Complete {
		res.Complete = false // what was cut off may read more
	}
	return res
}

// sensitiveRelations lists the configured sensitive tables a classification involves:
// those whose sensitive columns it reads or references, and, when the statement could
// not be fully classified, those it mentions at all.
func sensitiveRelations(res classify.Result, sensitive []string) []string {
	var rels []string
	for _, rel := range sensitive {
		if len(columnsOf(rel, res.SensitiveRead)) > 0 || len(columnsOf(rel, res.SensitiveReferenced)) > 0 ||
			(!res.Complete && slices.Contains(res.Relations, rel)) {
			rels = append(rels, rel)
		}
	}
	return rels
}

// columnsOf returns the column names of rel among qualified "schema.table.column" names.
func columnsOf(rel string, qualified []string) []string {
	var cols []string
	prefix := rel + "."
	for _, q := range qualified {
		if col, ok := strings.CutPrefix(q, prefix); ok {
			cols = append(cols, col)
		}
	}
	return cols
}
