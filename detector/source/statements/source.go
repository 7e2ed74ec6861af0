// Package statements is the pg_stat_statements source: it polls the statement counters
// of the monitored database, turns their growth into events about the sensitive
// relations each statement reads, and hands them to the detector.
//
// It sees rows returned per (role, database, queryid) with the normalized text; it does
// not see failed statements, rows read but not returned, or who the client was (the
// activity source adds that). It is not the rule engine: it raises no alert itself.
package statements

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
	"github.com/pgtripwire/pgtripwire/detector/classify"
	"github.com/pgtripwire/pgtripwire/detector/redact"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/model"
)

// Name is the source's name: its configuration section (sources.statements), health
// component, metrics label, and the source of its events.
const Name = "statements"

// Config says how to classify and report what the polls read.
type Config struct {
	// CatalogRefresh is how often the catalog snapshot is reloaded.
	CatalogRefresh time.Duration
	// SearchPath resolves unqualified relation names; "$user" is the statement's role.
	SearchPath []string
	// Sensitive maps schema-qualified tables to their sensitive columns.
	Sensitive map[string][]string
	// Now is the clock that stamps events; nil means time.Now.
	Now func() time.Time
	// Attribution, when set, labels each event with the client address and application
	// that ran its statement, as the activity samples saw them (pg_stat_statements does
	// not know the client); nil leaves them empty.
	Attribution *source.Attribution
	// StateDir, when set, keeps the last counters (statements/DBOID.counters) so that a
	// restart counts what ran while the detector was down (see resume.go).
	StateDir string
	// Server, when set, reads pg_stat_statements once per interval for every database
	// the detector watches on the server (source.Env.Server): the source takes its
	// database's entries, and fetches texts over the server's connection, so that
	// only the server's own database needs the extension installed.
	Server *source.Server
	// Interval is the source's polling interval: a read of Server younger than half
	// of it is shared.
	Interval time.Duration
}

// Source polls pg_stat_statements: a source.Poller. Create it with New.
type Source struct {
	cfg     Config
	sink    source.Sink
	log     *zap.Logger
	metrics *metrics
	now     func() time.Time

	// The current connection's database; set by Start.
	dbID   uint32
	dbName string

	// State below is owned by the polling goroutine.
	tracker          *tracker
	texts            map[int64]*string // queryid → normalized text; nil when the server had none
	shown            map[int64]string  // queryid → its text redacted for events (redact.Statement)
	textAttempts     map[int64]int     // queryid → fetches that found no text
	named            *namedStatements  // cursors by role and name
	results          map[int64]classify.Result
	roles            map[uint32]string
	catalog          *catalog.Snapshot
	catalogAt        time.Time
	schemaProbe      int64 // last value of catalog.ProbeQuery
	schemaProbedAt   time.Time
	sensitive        []string // the snapshot's sensitive tables, sorted
	entries          []entry  // the last poll's, reused by the next one
	statsReset       time.Time
	dealloc          int64
	infoKnown        bool
	pollsSincePrune  int
	hidden           int                  // entries whose queryid the server hides from the detector's role
	sizes            map[string]tableSize // the sensitive tables' sizes, for estimates
	sizesAt          time.Time
	resumeTried      bool      // the persisted counters were considered
	persistedAt      time.Time // when the counters were last written
	countersChanged  bool      // deltas since then
	sensitiveChanged bool      // of which reads of sensitive columns (readsSensitive)
	// sharedErr is why the last shared read of the server's entries failed (nil when
	// it worked, or without Config.Server): the source's health until one works.
	sharedErr error
	// fetchesCounted is pg_stat_statements.track_utility = on at Start: the rows read
	// through a cursor are counted under its FETCHes.
	fetchesCounted bool
	// sharedServer is the server the last shared read came from (Config.Server).
	sharedServer source.ServerIdentity
}

// New returns a source that hands its events to sink.
func New(cfg Config, sink source.Sink, log *zap.Logger, reg prometheus.Registerer) *Source {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Source{
		cfg:          cfg,
		sink:         sink,
		log:          log.Named(Name),
		metrics:      newMetrics(reg),
		now:          cfg.Now,
		tracker:      newTracker(),
		texts:        make(map[int64]*string),
		shown:        make(map[int64]string),
		named:        newNamedStatements(),
		textAttempts: make(map[int64]int),
		results:      make(map[int64]classify.Result),
		roles:        make(map[uint32]string),
	}
}

// Start reads the connection's database, and whether FETCHes are counted.
func (s *Source) Start(ctx context.Context, conn *pgx.Conn) error {
	if err := conn.QueryRow(ctx,
		`SELECT oid, datname, coalesce(current_setting('pg_stat_statements.track_utility', true), '') = 'on'
FROM pg_database WHERE datname = current_database()`).Scan(&s.dbID, &s.dbName, &s.fetchesCounted); err != nil {
		return fmt.Errorf("read current database: %w", err)
	}
	s.log.Info("connected", zap.String("database", s.dbName))
	return nil
}

// Poll reads the counters once, classifies what grew and hands the events over.
func (s *Source) Poll(ctx context.Context, conn *pgx.Conn) error {
	return s.poll(ctx, conn, s.dbID, s.dbName)
}

// pollQuery reads counters without texts: at 5,000 entries it costs the server a fifth
// of what reading the texts does, and texts are fetched only for new queryids.
//
// pg_stat_statements shows a NULL queryid for other roles' entries when the detector's
// role lacks pg_read_all_stats: those rows are read too, to report the blind spot.
const pollQuery = `SELECT userid, dbid, toplevel, queryid, calls, rows, shared_blks_hit + shared_blks_read
FROM pg_stat_statements(false)
WHERE dbid = $1`

const infoQuery = `SELECT dealloc, stats_reset FROM pg_stat_statements_info`

const textQuery = `SELECT DISTINCT ON (queryid) queryid, query
FROM pg_stat_statements(true)
WHERE dbid = $1 AND queryid = ANY($2)`

func (s *Source) poll(ctx context.Context, conn *pgx.Conn, dbID uint32, dbName string) error {
	now := s.now()
	// When only the schema probe is due, it rides in the poll's round trip.
	probeInBatch := s.catalog != nil && now.Sub(s.catalogAt) < s.cfg.CatalogRefresh && s.probeDue(now) &&
		s.cfg.Server == nil
	if !probeInBatch {
		if err := s.refreshCatalogIfDue(ctx, conn, now); err != nil {
			return err
		}
	}
	if s.cfg.Server != nil {
		read, _, err := source.Shared(ctx, s.cfg.Server, Name, s.cfg.Interval/2, readServer(s.cfg.Server))
		// Reported as the source's health (BlindSpot), not as a failed poll: the poll's
		// session is its database's other sources' too.
		if s.sharedErr = err; err != nil {
			return nil
		}
		if !s.sharedServer.SameServer(read.server) {
			s.log.Warn("another server behind the statistics connection (failover?): its counters are counted from a new "+
				"baseline; statements that ran on it before this poll, during the switch, may be missed",
				zap.String("from", s.sharedServer.Addr), zap.String("to", read.server.Addr),
				zap.Int32("from_timeline", s.sharedServer.Timeline), zap.Int32("to_timeline", read.server.Timeline))
			s.rebase()
		}
		s.sharedServer = read.server
		s.entries = s.entries[:0]
		hidden := 0
		for _, e := range read.entries {
			switch {
			case e.dbID != dbID:
			case e.hidden:
				hidden++
			default:
				s.entries = append(s.entries, e.entry)
			}
		}
		return s.handle(ctx, conn, now, dbID, dbName, s.entries, hidden, read.dealloc, read.statsReset)
	}

	batch := &pgx.Batch{}
	batch.Queue(infoQuery)
	batch.Queue(pollQuery, dbID)
	var probe int64
	if probeInBatch {
		batch.Queue(catalog.ProbeQuery).QueryRow(func(row pgx.Row) error { return row.Scan(&probe) })
	}
	results := conn.SendBatch(ctx, batch)
	var dealloc int64
	var statsReset time.Time
	if err := results.QueryRow().Scan(&dealloc, &statsReset); err != nil {
		_ = results.Close()
		return fmt.Errorf("read pg_stat_statements_info: %w", explainMissingExtension(err))
	}
	rows, err := results.Query()
	if err != nil {
		_ = results.Close()
		return fmt.Errorf("poll pg_stat_statements: %w", err)
	}
	snapshot := s.entries[:0]
	var e entry
	var queryID pgtype.Int8
	hidden := 0
	_, err = pgx.ForEachRow(rows, []any{&e.userID, &e.dbID, &e.topLevel, &queryID, &e.calls, &e.rows, &e.blocks}, func() error {
		if !queryID.Valid {
			hidden++
			return nil
		}
		e.queryID = queryID.Int64
		snapshot = append(snapshot, e)
		return nil
	})
	s.entries = snapshot
	if cerr := results.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("poll pg_stat_statements: %w", err)
	}
	if probeInBatch && s.noteProbe(probe, now) {
		if err := s.loadCatalog(ctx, conn, now); err != nil {
			return err
		}
	}
	return s.handle(ctx, conn, now, dbID, dbName, snapshot, hidden, dealloc, statsReset)
}

// handle turns one poll's entries of the database into events and hands them over.
func (s *Source) handle(ctx context.Context, conn *pgx.Conn, now time.Time, dbID uint32, dbName string,
	snapshot []entry, hidden int, dealloc int64, statsReset time.Time) error {
	s.metrics.entries.Set(float64(len(snapshot)))
	s.metrics.hidden.Set(float64(hidden))
	s.hidden = hidden
	s.noteInfo(dealloc, statsReset)

	s.resume(now, statsReset)
	deltas, commit := s.tracker.observe(snapshot)
	if err := s.fetchTexts(ctx, conn, dbID, deltas); err != nil {
		if s.cfg.Server != nil {
			s.sharedErr = err // over the server's connection: as a failed shared read
			return nil
		}
		return err
	}
	if err := s.resolveRoles(ctx, conn, deltas); err != nil {
		return err
	}
	// A statement we cannot resolve may name a relation created since the catalog was
	// loaded: probe for schema changes at once rather than classify it as unknown until
	// the next scheduled probe. Only newly seen statements trigger it, so a workload of
	// unresolvable statements costs one cheap probe per poll at most.
	if s.classifyNew(deltas) {
		s.schemaProbedAt = time.Time{}
		if err := s.refreshCatalogIfDue(ctx, conn, now); err != nil {
			return err
		}
		if err := s.resolveRoles(ctx, conn, deltas); err != nil { // a reload forgets them
			return err
		}
	}
	events, estimates := s.events(now, dbName, deltas)
	if len(estimates) > 0 {
		if err := s.estimate(ctx, conn, now, events, estimates); err != nil {
			return err
		}
	}
	if err := s.sink.HandleEvents(ctx, events); err != nil {
		return fmt.Errorf("hand over %d events: %w", len(events), err)
	}
	commit()
	s.persist(now, len(deltas) > 0, readsSensitive(events))
	s.prune()
	return nil
}

// serverRead is one read of pg_stat_statements for every database the detector
// watches on a server.
type serverRead struct {
	entries    []serverEntry
	dealloc    int64
	statsReset time.Time
	server     source.ServerIdentity // the server read
}

type serverEntry struct {
	entry
	hidden bool // the queryid is hidden from the detector's role
}

// serverQuery is pollQuery for the databases of a source.Server.
const serverQuery = `SELECT userid, dbid, toplevel, queryid, calls, rows, shared_blks_hit + shared_blks_read
FROM pg_stat_statements(false)
WHERE dbid IN (SELECT oid FROM pg_database WHERE datname = ANY($1))`

// readServer reads pg_stat_statements_info and the entries of the server's watched
// databases in one round trip.
func readServer(server *source.Server) func(context.Context, *pgx.Conn) (*serverRead, error) {
	return func(ctx context.Context, conn *pgx.Conn) (*serverRead, error) {
		r := &serverRead{server: server.Identity()}
		batch := &pgx.Batch{}
		batch.Queue(infoQuery).QueryRow(func(row pgx.Row) error { return row.Scan(&r.dealloc, &r.statsReset) })
		batch.Queue(serverQuery, server.Databases()).Query(func(rows pgx.Rows) error {
			var e serverEntry
			var queryID pgtype.Int8
			_, err := pgx.ForEachRow(rows, []any{&e.userID, &e.dbID, &e.topLevel, &queryID, &e.calls, &e.rows, &e.blocks}, func() error {
				e.queryID, e.hidden = queryID.Int64, !queryID.Valid
				r.entries = append(r.entries, e)
				return nil
			})
			return err
		})
		if err := conn.SendBatch(ctx, batch).Close(); err != nil {
			return nil, fmt.Errorf("poll pg_stat_statements of the server through database %s: %w",
				conn.Config().Database, explainMissingExtension(err))
		}
		return r, nil
	}
}

// Rebaseline forgets the counters read so far: the Loop found another server behind
// the connection (a failover, source.Rebaseliner), whose counters hold its own history —
// its reads from when it was a standby, judged there or not watched. The next poll is
// a baseline, as the first, and the persisted counters, the old server's, are removed.
// With Config.Server the counters come from the server's connection, whose reads say
// which server they come from: the switch is seen there instead.
func (s *Source) Rebaseline() {
	if s.cfg.Server != nil {
		return
	}
	s.rebase()
}

// rebase makes the next poll a baseline. Texts and classifications stay: query ids
// are the same on every server of a cluster.
func (s *Source) rebase() {
	s.tracker.rebase()
	s.infoKnown = false // the new server's stats_reset and evictions are not news
	s.named = newNamedStatements()
	s.resumeTried = true
	s.countersChanged, s.sensitiveChanged, s.persistedAt = false, false, time.Time{}
	if s.cfg.StateDir != "" && s.dbID != 0 {
		if err := os.Remove(s.countersPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("remove the previous server's counters", zap.Error(err))
		}
	}
}

// BlindSpot reports, as a health problem, statements the detector's role may not see:
// polling works, but reads by other roles go unnoticed, and on-call must know.
func (s *Source) BlindSpot() error {
	if s.sharedErr != nil {
		return s.sharedErr
	}
	if s.hidden == 0 {
		return nil
	}
	return fmt.Errorf("%d pg_stat_statements entries of other roles are hidden from the detector's role: "+
		"GRANT pg_read_all_stats (or pg_monitor) TO it", s.hidden)
}

// noteInfo reacts to pg_stat_statements_info: a reset means every entry starts again at
// zero; a rise of dealloc means entries were evicted, so reads may go unseen.
func (s *Source) noteInfo(dealloc int64, statsReset time.Time) {
	defer func() { s.dealloc, s.statsReset, s.infoKnown = dealloc, statsReset, true }()
	if !s.infoKnown {
		return
	}
	if !statsReset.Equal(s.statsReset) {
		s.metrics.resets.Inc()
		s.log.Warn("pg_stat_statements was reset; counting every entry from zero",
			zap.Time("stats_reset", statsReset))
		s.tracker.forget()
	}
	if dealloc > s.dealloc {
		s.metrics.evictions.Add(float64(dealloc - s.dealloc))
		s.log.Warn("pg_stat_statements evicted entries; reads between two polls may be missed "+
			"(raise pg_stat_statements.max)", zap.Int64("evictions", dealloc-s.dealloc))
	}
}

// maxTextAttempts bounds how often a queryid whose text the server did not return (the
// entry was evicted between the two queries, or the text file was garbage-collected) is
// asked for again before its statements are classified without text.
const maxTextAttempts = 5

func (s *Source) fetchTexts(ctx context.Context, conn *pgx.Conn, dbID uint32, deltas []delta) error {
	var missing []int64
	for _, d := range deltas {
		text, known := s.texts[d.queryID]
		retry := known && text == nil && s.textAttempts[d.queryID] < maxTextAttempts
		if (!known || retry) && !slices.Contains(missing, d.queryID) {
			missing = append(missing, d.queryID)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	fetch := func(ctx context.Context, conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, textQuery, dbID, missing)
		if err != nil {
			return err
		}
		var id int64
		var text *string
		_, err = pgx.ForEachRow(rows, []any{&id, &text}, func() error {
			if text != nil {
				s.texts[id] = text
				delete(s.shown, id)
				delete(s.textAttempts, id)
				delete(s.results, id) // classified without its text before
			}
			return nil
		})
		return err
	}
	var err error
	if s.cfg.Server != nil {
		err = s.cfg.Server.Use(ctx, fetch)
	} else {
		err = fetch(ctx, conn)
	}
	if err != nil {
		return fmt.Errorf("fetch statement texts: %w", err)
	}
	for _, id := range missing {
		if s.texts[id] == nil {
			s.texts[id] = nil
			s.textAttempts[id]++
			if s.textAttempts[id] == maxTextAttempts {
				s.metrics.textsMissing.Inc()
				s.log.Warn("statement text unavailable; classifying it as incomplete",
					zap.Int64("queryid", id))
			}
		}
	}
	s.metrics.textsFetched.Add(float64(len(missing)))
	return nil
}

func (s *Source) resolveRoles(ctx context.Context, conn *pgx.Conn, deltas []delta) error {
	unknown := false
	for _, d := range deltas {
		if _, ok := s.roles[d.userID]; !ok {
			unknown = true
			break
		}
	}
	if !unknown {
		return nil
	}
	rows, err := conn.Query(ctx, `SELECT oid, rolname FROM pg_roles`)
	if err != nil {
		return fmt.Errorf("read role names: %w", err)
	}
	var oid uint32
	var name string
	_, err = pgx.ForEachRow(rows, []any{&oid, &name}, func() error {
		s.roles[oid] = name
		return nil
	})
	if err != nil {
		return fmt.Errorf("read role names: %w", err)
	}
	for _, d := range deltas {
		if _, ok := s.roles[d.userID]; !ok {
			s.roles[d.userID] = "" // dropped since: unknown, and not asked again
		}
	}
	return nil
}

// schemaProbeEvery is how often the schema probe runs: a table, view or function
// created or changed is seen within seconds, not at the next full refresh.
const schemaProbeEvery = 5 * time.Second

func (s *Source) refreshCatalogIfDue(ctx context.Context, conn *pgx.Conn, now time.Time) error {
	due := s.catalog == nil || now.Sub(s.catalogAt) >= s.cfg.CatalogRefresh
	if due || s.probeDue(now) {
		// Probed before loading: a change made during the load shows at the next probe.
		var probe int64
		if err := conn.QueryRow(ctx, catalog.ProbeQuery).Scan(&probe); err != nil {
			return fmt.Errorf("probe schema changes: %w", err)
		}
		due = s.noteProbe(probe, now) || due
	}
	if !due {
		return nil
	}
	return s.loadCatalog(ctx, conn, now)
}

func (s *Source) probeDue(now time.Time) bool { return now.Sub(s.schemaProbedAt) >= schemaProbeEvery }

// noteProbe records a value of catalog.ProbeQuery read at now and reports whether the
// schema changed since the previous one.
func (s *Source) noteProbe(probe int64, now time.Time) (changed bool) {
	changed = probe != s.schemaProbe
	s.schemaProbe, s.schemaProbedAt = probe, now
	return changed
}

// loadCatalog loads the catalog snapshot; a failure keeps the previous one, if any.
func (s *Source) loadCatalog(ctx context.Context, conn *pgx.Conn, now time.Time) error {
	snap, err := catalog.Load(ctx, conn, s.cfg.Sensitive)
	if err != nil {
		if s.catalog == nil || ctx.Err() != nil {
			return err
		}
		// A view dropped while pg_get_viewdef runs fails one load; the previous
		// snapshot is still good, and the next refresh will succeed.
		s.metrics.catalogErrors.Inc()
		s.log.Warn("catalog refresh failed; keeping the previous snapshot", zap.Error(err))
		s.catalogAt = now
		return nil
	}
	if s.catalog == nil || snap.Version() != s.catalog.Version() {
		clear(s.results) // classifications depend on the catalog
		if missing := snap.Missing(); len(missing) > 0 {
			s.log.Warn("sensitive tables or columns not found in the database; watching for them",
				zap.Strings("missing", missing))
		}
	}
	s.catalog, s.catalogAt = snap, now
	s.sensitive = slices.Sorted(maps.Keys(snap.Sensitive()))
	clear(s.roles) // renamed roles: reloaded on first use
	s.metrics.catalogRelations.Set(float64(len(snap.Relations())))
	return nil
}

// events classifies each delta's statement (cached per queryid: a queryid identifies
// the statement's structure and the relations it resolved to) and returns one event per
// sensitive relation it touches. A FETCH is classified as the cursor it reads, and its
// events carry the DECLARE's statement. A statement that returned rows but could not be
// classified, and touches no sensitive table we can name, still yields one event,
// with no relation: an unreadable statement is never evidence of safety. So does a
// statement of a shape rules look for whatever table it reads (a server-side file,
// catalog enumeration, dynamic SQL).
//
// Events of statements nested in another (pg_stat_statements.track = all: the query
// of a COPY (…) TO, the statements of a function) are dropped when a top-level
// statement of the same role made an event about the same relation in the same poll:
// one read by one session is one read, whatever its nesting. A nested statement whose
// caller made no such event (dynamic SQL in a DO block, whose text names no table) is
// how the read gets a role.
//
// RowsRead is Rows, except for statements that fold sensitive values of many rows into
// few: their events are returned in folded (indexes into events, with the blocks each
// call touched), for estimateFolded.
func (s *Source) events(now time.Time, dbName string, deltas []delta) (events []model.Event, estimates []estimate) {
	s.classifyNew(deltas)
	results := make([]classify.Result, len(deltas))
	for i, d := range deltas {
		res := s.results[d.queryID]
		results[i] = res
		if isDeclaration(res) {
			s.named.declare(d.userID, res, s.statement(d.queryID), d.calls, now)
		}
	}

	type read struct {
		role     uint32
		relation string
	}
	topLevel := map[read]bool{}
	nested := map[int]read{} // index in events of nested statements' events
	for i, d := range deltas {
		res, calls, statement := results[i], d.calls, ""
		switch {
		case res.Operation == classify.OperationMove:
			continue // skips rows without returning them
		case isDeclaration(res) && d.rows > 0 && s.fetchesCounted:
			// PostgreSQL 18 also counts the rows a cursor returned under its DECLARE, once
			// the cursor is closed: the rows of its FETCHes, counted under them already
			// (and sooner). Without track_utility they are the only count left.
			continue
		case usesDeclaration(res):
			decl, ok := s.named.lookup(d.userID, res)
			if !ok {
				break // declared before we started, or forgotten: stays unclassified
			}
			res, statement = decl.res, decl.statement
			res.Operation = classify.OperationFetch
			// The statement is the DECLARE; FETCHes are its pages. Rows per call means
			// rows per declared query, or the rows of this poll when the declaration
			// is older.
			calls = 1
			if decl.declaredAt.Equal(now) && decl.calls > 0 {
				calls = decl.calls
			}
		}
		base := model.Event{
			Time:      now,
			Source:    Name,
			Database:  dbName,
			Role:      s.roles[d.userID],
			Operation: res.Operation,
			Complete:  res.Complete,
			Rows:      d.rows,
			RowsRead:  d.rows,
			Calls:     calls,
			Shapes:    res.Shapes,
			QueryID:   d.queryID,
		}
		if addr, app, ok := s.cfg.Attribution.Lookup(d.queryID, base.Role); ok {
			base.ClientAddr, base.Application = addr, app
		}
		rels := res.SensitiveRelations(s.sensitive)
		touched := s.touchedOnly(res, rels)
		unnamed := len(rels) == 0 && (!res.Complete && d.rows > 0 || shapedForRules(res))
		if len(rels) == 0 && len(touched) == 0 && !unnamed {
			continue
		}
		// Redacted only now, for the few statements that make events.
		base.Statement = statement
		if statement == "" {
			base.Statement = s.statement(d.queryID)
		}
		isFolded := slices.Contains(res.Shapes, classify.ShapeFolded)
		for _, rel := range append(rels, touched...) {
			ev := res.About(base, rel)
			ev.Visited = d.rows
			key := read{d.userID, rel}
			if d.topLevel {
				topLevel[key] = true
			} else {
				nested[len(events)] = key
			}
			if ev.Access != classify.AccessPoint && d.calls > 0 {
				// What left is what was visited when the statement folded the rows, and
				// when pg_stat_statements counted none: a query a PL/pgSQL loop runs
				// through a cursor (FOR r IN EXECUTE …, FOR r IN SELECT …) reports 0 rows
				// however many the loop read and raised.
				uncounted := !d.topLevel && d.rows == 0
				estimates = append(estimates, estimate{index: len(events), blocksPerCall: d.blocks / d.calls,
					readsVisited: (isFolded || uncounted) && len(ev.SensitiveRead) > 0})
			}
			events = append(events, ev)
		}
		if unnamed {
			events = append(events, base)
		}
	}
	if len(nested) == 0 {
		return events, estimates
	}
	// Drop the nested events a top-level one covers, keeping estimates' indexes right.
	kept, renumber := events[:0], make(map[int]int, len(events))
	for i, ev := range events {
		if key, ok := nested[i]; ok && topLevel[key] {
			continue
		}
		renumber[i] = len(kept)
		kept = append(kept, ev)
	}
	out := estimates[:0]
	for _, e := range estimates {
		if j, ok := renumber[e.index]; ok {
			e.index = j
			out = append(out, e)
		}
	}
	return kept, out
}

// touchedOnly lists the sensitive tables a complete statement reaches without using
// their sensitive columns (SELECT count(*) FROM users, a listing of ids sorted by an
// unindexed column): their events carry no columns and page nothing, but say how many
// tuples the statement visited, which explains the table counters' reads.
func (s *Source) touchedOnly(res classify.Result, used []string) []string {
	if !res.Complete {
		return nil // SensitiveRelations already lists every table it mentions
	}
	var touched []string
	for _, rel := range res.Relations {
		if _, sensitive := slices.BinarySearch(s.sensitive, rel); sensitive && !slices.Contains(used, rel) {
			touched = append(touched, rel)
		}
	}
	return touched
}

// shapedForRules reports whether a statement that touches no sensitive table still
// makes an event: rules page on these shapes whatever table they read. An injection
// shape is among them: a time-blind probe (pg_sleep in a predicate) or stacked
// statements through an application's query are the injection itself before any
// sensitive value is read.
func shapedForRules(res classify.Result) bool {
	for _, sh := range res.Shapes {
		switch {
		case sh == classify.ShapeServerFile, sh == classify.ShapeCatalogColumns, sh == classify.ShapeCatalogRoles,
			sh == classify.ShapeDynamicSQL, classify.InjectionShape(sh):
			return true
		}
	}
	return false
}

// classifyNew classifies the statements of deltas not classified yet and reports
// whether any of them could not be fully classified.
func (s *Source) classifyNew(deltas []delta) (incomplete bool) {
	for _, d := range deltas {
		if _, ok := s.results[d.queryID]; ok {
			continue
		}
		res := s.classify(d.queryID, s.roles[d.userID])
		s.results[d.queryID] = res
		incomplete = incomplete || !res.Complete
	}
	return incomplete
}

func (s *Source) classify(queryID int64, role string) classify.Result {
	text := s.texts[queryID]
	if text == nil {
		s.metrics.incomplete.Inc()
		return classify.Result{Complete: false, Problems: []string{"statement text unavailable"}}
	}
	res := classify.Classify(*text, s.catalog, s.cfg.SearchPath, role)
	if !res.Complete {
		s.metrics.incomplete.Inc()
		// Not the problems themselves: the classifier reads the SQL inside literals
		// (query_to_xml('SELECT … FROM alice@…'), dblink) and names what it could not
		// resolve there, so a problem can quote a literal's content.
		if ce := s.log.Check(zap.DebugLevel, "statement not fully classified"); ce != nil {
			ce.Write(zap.Int64("queryid", queryID), zap.String("statement", s.statement(queryID)),
				zap.Int("problems", len(res.Problems)))
		}
	}
	return res
}

// statement returns queryID's text as events carry it: redacted, because
// pg_stat_statements keeps the literals of utility statements (ALTER ROLE … PASSWORD,
// DECLARE, CALL, DO on PostgreSQL 14 and 15) and of texts it could not normalize. It is
// "" when the server had no text.
func (s *Source) statement(queryID int64) string {
	if shown, ok := s.shown[queryID]; ok {
		return shown
	}
	text := s.texts[queryID]
	if text == nil {
		return ""
	}
	shown := redact.Statement(*text)
	s.shown[queryID] = shown
	return shown
}

// prune forgets texts and classifications of queryids no longer in pg_stat_statements,
// so that memory follows the size of pg_stat_statements, not the history of all
// statements ever seen. It runs every minute or so of polls; the work is O(entries).
func (s *Source) prune() {
	s.pollsSincePrune++
	if s.pollsSincePrune < 60 {
		return
	}
	s.pollsSincePrune = 0
	s.named.prune(s.now())
	live := s.tracker.liveQueryIDs()
	for id := range s.texts {
		if !live[id] {
			delete(s.texts, id)
			delete(s.shown, id)
			delete(s.results, id)
			delete(s.textAttempts, id)
		}
	}
}

// explainMissingExtension adds the fix to the server's error when pg_stat_statements is
// not installed in the database or not preloaded, the two usual set-up mistakes.
func explainMissingExtension(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	switch pgErr.Code {
	case "42P01", "42883": // undefined_table, undefined_function
		return fmt.Errorf("pg_stat_statements is not installed in this database "+
			"(run CREATE EXTENSION pg_stat_statements as a superuser): %w", err)
	case "55000": // object_not_in_prerequisite_state
		return fmt.Errorf("pg_stat_statements is not loaded "+
			"(add it to shared_preload_libraries and restart PostgreSQL): %w", err)
	}
	return err
}
