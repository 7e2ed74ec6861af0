package log

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
	"github.com/pgtripwire/pgtripwire/detector/classify"
	"github.com/pgtripwire/pgtripwire/detector/redact"
	"github.com/pgtripwire/pgtripwire/model"
)

// Kinds of the events the log source emits (event.kind); event.object is the SQLSTATE.
// docs/sources.md is their contract for rule authors.
const (
	// KindAuthFailed: a connection failed to authenticate (28P01 invalid_password:
	// a wrong password; 28000 invalid_authorization_specification: no pg_hba.conf
	// entry, a role that does not exist or may not log in). Role is the user the
	// client asked for, ClientAddr where it came from. The server logs these whatever
	// log_connections says.
	KindAuthFailed = "auth_failed"
	// KindPermissionDenied: a statement failed for want of a privilege (42501).
	// Relation is the sensitive table the message or the statement names, "" when
	// neither names one.
	KindPermissionDenied = "permission_denied"
	// KindSyntaxError: a statement could not be parsed (42601).
	KindSyntaxError = "syntax_error"
	// KindCastError: a value did not convert to a type (22P02, 22003, 22007, 22008,
	// 22018): the error an error-based extraction makes, quoting the value.
	KindCastError = "cast_error"
	// KindUndefinedObject: a statement named a table, column or function that does not
	// exist (42P01, 42703, 42883): what guessing names through an injection looks like.
	KindUndefinedObject = "undefined_object"
	// KindStatementError: any other failed statement that reads or references
	// sensitive columns (or, unresolved, names a sensitive table).
	KindStatementError = "statement_error"
)

// Kinds lists every kind, for metrics and docs.
var Kinds = []string{KindAuthFailed, KindPermissionDenied, KindSyntaxError, KindCastError, KindUndefinedObject, KindStatementError}

// kindOf returns the kind of an entry's SQLSTATE.
func kindOf(sqlState string) string {
	switch sqlState {
	case "28P01", "28000":
		return KindAuthFailed
	case "42501":
		return KindPermissionDenied
	case "42601":
		return KindSyntaxError
	case "22P02", "22003", "22007", "22008", "22018":
		return KindCastError
	case "42P01", "42703", "42883":
		return KindUndefinedObject
	}
	return KindStatementError
}

// classifier turns entries into events: it classifies failed statements against a
// catalog snapshot of the monitored database, loaded on a short connection of its own
// when a statement needs it and the snapshot is older than refresh. Without a snapshot
// (the database is unreachable) verdicts are incomplete, never safe. It is used by one
// goroutine.
type classifier struct {
	conn       *pgx.ConnConfig // nil: never load a catalog (tests, benchmarks)
	database   string          // the monitored database
	sensitive  map[string][]string
	searchPath []string
	refresh    time.Duration
	now        func() time.Time
	log        *zap.Logger
	m          *metrics

	cache     *classify.Cache
	cat       *catalog.Snapshot
	catAt     time.Time // when cat was loaded, or the last load failed
	catFailed bool
	names     []string // sensitive tables, sorted
	redacted  map[string]string
}

// catalogRetry is the least time between two failed catalog loads.
const catalogRetry = 10 * time.Second

func newClassifier(conn *pgx.ConnConfig, sensitive map[string][]string, searchPath []string, refresh time.Duration,
	now func() time.Time, log *zap.Logger, m *metrics) *classifier {
	c := &classifier{conn: conn, sensitive: sensitive, searchPath: searchPath, refresh: refresh, now: now, log: log, m: m,
		cache: classify.NewCache(2000), names: slices.Sorted(maps.Keys(sensitive)), redacted: map[string]string{}}
	if conn != nil {
		c.database = conn.Database
	}
	if c.refresh <= 0 {
		c.refresh = time.Minute
	}
	return c
}

// catalogFor returns the snapshot to classify a statement of database db against,
// loading it when due; nil when there is none (another database, or it cannot be
// loaded).
func (c *classifier) catalogFor(ctx context.Context, db string) *catalog.Snapshot {
	if c.conn == nil || db != c.database {
		return c.cat
	}
	now := c.now()
	due := c.catAt.IsZero() || now.Sub(c.catAt) >= c.refresh || c.catFailed && now.Sub(c.catAt) >= catalogRetry
	if !due {
		return c.cat
	}
	c.catAt = now
	snap, err := c.load(ctx)
	if err != nil {
		c.m.catalogErrors.Inc()
		if !c.catFailed {
			c.log.Warn("cannot load the catalog; failed statements are classified as incomplete until it loads", zap.Error(err))
		}
		c.catFailed = true
		return c.cat
	}
	if c.catFailed {
		c.log.Info("catalog loaded again")
	}
	c.catFailed = false
	c.cat = snap
	c.names = slices.Sorted(maps.Keys(snap.Sensitive()))
	return c.cat
}

func (c *classifier) load(ctx context.Context) (*catalog.Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, c.conn.Copy())
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	return catalog.Load(ctx, conn, c.sensitive)
}

// unparsable reports whether res is incomplete because the parser refused the text.
func unparsable(res classify.Result) bool {
	return !res.Complete && slices.ContainsFunc(res.Problems, func(p string) bool { return strings.HasPrefix(p, "parse error") })
}

// redactStatement is redact.Statement, remembered for the texts seen recently (a burst
// repeats one text).
func (c *classifier) redactStatement(sql string) string {
	if s, ok := c.redacted[sql]; ok {
		return s
	}
	if len(c.redacted) >= 2000 {
		clear(c.redacted)
	}
	s := redact.Statement(sql)
	c.redacted[sql] = s
	return s
}

// events returns the events of one entry: none for most (successful work, LOG lines,
// errors of statements that touch no sensitive table), one per sensitive table the
// failed statement involves, or one without a table. Nothing of the entry's text is
// put in an event but the statement, redacted.
func (c *classifier) events(ctx context.Context, r *Record, received time.Time) []model.Event {
	switch r.Severity {
	case "ERROR", "FATAL", "PANIC":
	default:
		return nil
	}
	if r.BackendType != "" && r.BackendType != "client backend" && !strings.HasSuffix(r.BackendType, "walsender") {
		return nil // autovacuum, checkpointer, background workers: not a client's doing
	}
	kind := kindOf(r.SQLState)
	base := model.Event{
		Time:        r.Time,
		Source:      Name,
		Database:    r.Database,
		Role:        r.User,
		ClientAddr:  r.clientAddr(),
		Application: r.Application,
		Kind:        kind,
		Object:      r.SQLState,
		PID:         r.PID,
		QueryID:     r.QueryID,
	}
	if base.Time.IsZero() {
		base.Time = received
	}
	if kind == KindAuthFailed {
		base.Complete = true
		return []model.Event{base}
	}
	var res classify.Result
	var rels []string
	names := c.names
	if r.Statement != "" {
		base.Statement = c.redactStatement(r.Statement)
		text := base.Statement
		if strings.HasPrefix(text, "<statement not shown") {
			text = r.Statement // classified in memory only; it cannot be lexed anyway
		}
		cat := c.catalogFor(ctx, r.Database)
		if cat == nil || r.Database != c.database {
			cat = nil
			names = slices.Sorted(maps.Keys(c.sensitive))
		}
		res = c.cache.Classify(text, cat, c.searchPath, r.User)
		if text != r.Statement && unparsable(res) {
			// Redaction can make a statement the parser refuses: a type modifier
			// (CAST(email AS varchar(10000)), as sqlmap's error-based payloads write it)
			// becomes a placeholder. Classified from the text as logged, in memory only.
			res = c.cache.Classify(r.Statement, cat, c.searchPath, r.User)
		}
		if cat == nil {
			res.Complete = false
		}
		rels = res.SensitiveRelations(names)
		base.Operation = res.Operation
		base.Complete = res.Complete
		base.Shapes = res.Shapes
	}
	if kind == KindPermissionDenied && r.Database == c.database {
		c.catalogFor(ctx, r.Database)
		if rel := c.deniedRelation(r.Message, r.User); rel != "" && !slices.Contains(rels, rel) {
			rels = append(rels, rel)
		}
	}
	if len(rels) == 0 {
		if kind == KindStatementError {
			return nil
		}
		return []model.Event{base}
	}
	events := make([]model.Event, 0, len(rels))
	for _, rel := range rels {
		events = append(events, res.About(base, rel))
	}
	return events
}

// deniedRelation returns the sensitive table a permission-denied message names
// ("permission denied for table users", "… for column email of relation users"),
// schema-qualified: the server writes the bare name, resolved here through the search
// path, or, when the search path does not find it, the only sensitive table of that
// name. "" when the message names none, or no sensitive table.
func (c *classifier) deniedRelation(msg, role string) string {
	var name string
	for _, marker := range []string{" of relation ", "permission denied for table ", "permission denied for view ",
		"permission denied for materialized view ", "permission denied for relation "} {
		if i := strings.LastIndex(msg, marker); i >= 0 {
			name = strings.Trim(msg[i+len(marker):], `"`)
			break
		}
	}
	if name == "" || c.cat == nil {
		return ""
	}
	if r, ok := c.cat.Resolve(c.searchPath, role, name); ok {
		if q := r.QualifiedName(); c.cat.HasSensitiveColumns(q) {
			return q
		}
		return ""
	}
	if rs := c.cat.SensitiveRelationsNamed(name); len(rs) == 1 {
		return rs[0].QualifiedName()
	}
	return ""
}
