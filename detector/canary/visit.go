package canary

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/backoff"
	"github.com/pgtripwire/pgtripwire/detector/catalog"
	"github.com/pgtripwire/pgtripwire/detector/classify"
	"github.com/pgtripwire/pgtripwire/detector/redact"
	"github.com/pgtripwire/pgtripwire/model"
)

// ClassifierConfig says where a Classifier reads the catalog and what is sensitive.
type ClassifierConfig struct {
	// Conn is an ordinary connection's configuration (the WAL source's replication
	// connection cannot query while it streams); the Classifier copies it.
	Conn *pgx.ConnConfig
	// Sensitive maps schema-qualified tables, in their canonical form, to their
	// sensitive columns.
	Sensitive map[string][]string
	// SearchPath resolves unqualified relation names; "$user" is the visiting role.
	SearchPath []string
	// Refresh is the age past which a snapshot is loaded again even though the probe
	// saw no change; 0 means 1 min.
	Refresh time.Duration
	// Wait bounds how long a visit waits for a catalog check made after it; 0 means
	// 5 s. Past it, the visit is reported unclassified (Complete false).
	Wait time.Duration
	// ReconnectInitial and ReconnectMax bound the reconnect backoff; 0 means 500 ms
	// and 30 s.
	ReconnectInitial, ReconnectMax time.Duration
	Logger                         *zap.Logger
}

// Classifier judges the statements that visit canary rows: it decodes the canary
// function's messages (Decode) and classifies each visiting statement (package
// classify) against a catalog snapshot it keeps over an ordinary connection (Run).
// Create it with NewClassifier; it is safe for concurrent use.
//
// Its verdicts fail closed: a visit is classified only against a snapshot that a
// catalog check made after the visit found current, so that a view or function
// redefined just before the read is judged by its new definition. When no such
// check succeeds within ClassifierConfig.Wait (the catalog cannot be loaded, the
// connection is down or hangs), or the message does not carry the whole statement, the
// visit is reported with Complete false, which the default rules page on, never
// dropped; after one visit waited in vain, the next ones do not wait until that check
// ends.
//
// The statement text (current_query(), literals included) is classified in memory
// only: it is never logged, and an event carries it only as redact.Statement returns
// it.
type Classifier struct {
	cfg   ClassifierConfig
	log   *zap.Logger
	cache *classify.Cache

	// checks counts the catalog checks started: a visit decoded when it read n is
	// judged on a check numbered above n, one that started after the visit.
	checks atomic.Uint64
	// wake asks Run for a check (capacity 1: one pending request serves every visit).
	wake chan struct{}

	mu      sync.Mutex
	state   catalogState
	settled chan struct{} // closed, and replaced, when a check ends
	// late is the settled channel a visit waited on in vain: until that check ends,
	// the next visits do not wait for it (a hung catalog connection must not hold
	// every visit, and the stream behind them, for Wait each).
	late chan struct{}
}

// catalogState is the outcome of the latest catalog check.
type catalogState struct {
	snap     *catalog.Snapshot // nil until a load succeeded
	probe    int64             // catalog.Probe read before snap was loaded
	loadedAt time.Time
	verified uint64 // the last check that found snap current
	err      error  // why the last check failed; nil when it succeeded
}

// NewClassifier returns a Classifier; it loads nothing until Run sees the first
// canary message.
func NewClassifier(cfg ClassifierConfig) *Classifier {
	if cfg.Refresh <= 0 {
		cfg.Refresh = time.Minute
	}
	if cfg.Wait <= 0 {
		cfg.Wait = 5 * time.Second
	}
	if cfg.ReconnectInitial <= 0 {
		cfg.ReconnectInitial = 500 * time.Millisecond
	}
	if cfg.ReconnectMax <= 0 {
		cfg.ReconnectMax = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &Classifier{
		cfg:     cfg,
		log:     cfg.Logger.Named("canary"),
		cache:   classify.NewCache(256),
		wake:    make(chan struct{}, 1),
		settled: make(chan struct{}),
	}
}

// Decode turns a canary message into a canary_read event. It runs on the WAL source's
// receive loop and never waits: it only decodes, and returns finish, which classifies
// the visiting statement and may wait up to ClassifierConfig.Wait for the catalog, for
// the goroutine that hands the event over to call. finish is nil when there is nothing
// to classify: a message that cannot be decoded, one without the statement (planted by
// an earlier version), with a cut statement, made by a trigger, or transactional (the
// canary function emits none: it was forged). Those events are unclassified
// (Complete false). ok is false for another prefix.
func (c *Classifier) Decode(prefix string, content []byte, transactional bool) (ev model.Event, finish func(context.Context, model.Event) model.Event, ok bool) {
	v, ok, err := Decode(prefix, content)
	if !ok {
		return model.Event{}, nil, false
	}
	if err != nil {
		c.log.Warn("undecodable canary message; reported as an unclassified canary read", zap.Int("bytes", len(content)), zap.Error(err))
		return unreadable(prefix), nil, true
	}
	ev = v.Event
	ev.MessagePrefix = prefix
	statement := v.Statement
	switch {
	case !v.HasStatement:
		return ev, nil, true
	case transactional || v.Truncated || v.TriggerDepth > 0:
		// Whatever the statement's text says, it is not all that read the row: shown
		// as far as the snapshot at hand tells, unclassified.
		return ev, func(_ context.Context, ev model.Event) model.Event {
			st, _, _ := c.current()
			return c.unclassified(ev, statement, st.snap)
		}, true
	}
	after := c.checks.Load()
	c.ask() // the check starts while the event waits in the queue
	return ev, func(ctx context.Context, ev model.Event) model.Event {
		return c.judge(ctx, ev, statement, after)
	}, true
}

// judge classifies statement, the text of the statement that made visit, on a snapshot
// confirmed by a check numbered above after; when none comes within the wait, or ctx
// ends, the visit is unclassified.
func (c *Classifier) judge(ctx context.Context, visit model.Event, statement string, after uint64) model.Event {
	timer := time.NewTimer(c.cfg.Wait)
	defer timer.Stop()
	for {
		st, settled, late := c.current()
		if st.err == nil && st.snap != nil && st.verified > after {
			return c.verdict(visit, statement, st.snap)
		}
		if st.err != nil || late {
			return c.unclassified(visit, statement, st.snap)
		}
		c.ask()
		select {
		case <-settled:
		case <-timer.C:
			if c.markLate(settled) {
				c.log.Warn("no catalog check in time; canary visits are reported unclassified until one ends",
					zap.Duration("waited", c.cfg.Wait), zap.String("relation", visit.Relation), zap.String("role", visit.Role))
			}
			return c.unclassified(visit, statement, st.snap)
		case <-ctx.Done():
			return c.unclassified(visit, statement, st.snap)
		}
	}
}

// verdict is visit with the classification of statement for the canary's table: the
// operation, the table's sensitive columns read and referenced, how the statement
// reaches its rows, its shapes, and the redacted text. The verdict is Complete only when
// the classifier resolved the whole statement and the canary's table is configured as
// sensitive: a table that is not would make every visit look harmless.
func (c *Classifier) verdict(visit model.Event, statement string, snap *catalog.Snapshot) model.Event {
	res := c.cache.Classify(statement, snap, c.cfg.SearchPath, visit.Role)
	ev := res.About(visit, visit.Relation)
	ev.Operation = res.Operation
	ev.Shapes = slices.Clone(res.Shapes)
	ev.Complete = res.Complete && snap.HasSensitive(ev.Relation)
	ev.Statement = redact.Statement(statement)
	return ev
}

// unclassified is visit with what an unconfirmed snapshot says, if there is one, but
// Complete false.
func (c *Classifier) unclassified(visit model.Event, statement string, snap *catalog.Snapshot) model.Event {
	ev := visit
	if snap != nil {
		ev = c.verdict(visit, statement, snap)
	} else {
		ev.Statement = redact.Statement(statement)
	}
	ev.Complete = false
	return ev
}

// current returns the latest check's outcome, the channel closed when the next one
// ends, and whether a visit already waited for that in vain.
func (c *Classifier) current() (st catalogState, settled <-chan struct{}, late bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state, c.settled, c.late == c.settled
}

// markLate records that a visit waited for the check after settled in vain, and
// reports whether it is the first to.
func (c *Classifier) markLate(settled <-chan struct{}) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.settled != settled || c.late == c.settled {
		return false
	}
	c.late = c.settled
	return true
}

// publish records the outcome of a check and wakes the visits waiting for one.
func (c *Classifier) publish(st catalogState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state = st
	close(c.settled)
	c.settled = make(chan struct{})
}

func (c *Classifier) ask() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Run keeps the catalog snapshot until ctx is done, and returns ctx's error. It
// connects at the first canary message (a database without canaries costs no
// connection), then checks the catalog whenever a visit asks and at least every
// Refresh, reconnecting with backoff after a failure; while it fails, visits are
// unclassified.
func (c *Classifier) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-c.wake:
	}
	bo := backoff.New(c.cfg.ReconnectInitial, c.cfg.ReconnectMax)
	return bo.Reconnect(ctx, func(ctx context.Context) error { return c.session(ctx, bo) }, func(err error) {
		st, _, _ := c.current()
		st.err = err
		c.publish(st)
		c.log.Warn("catalog for canary visits unavailable; visits are reported unclassified until it loads", zap.Error(err))
	})
}

// checkTimeout bounds one catalog check (a probe, and a load when the probe changed).
const checkTimeout = 30 * time.Second

func (c *Classifier) session(ctx context.Context, bo *backoff.Backoff) error {
	conn, err := pgx.ConnectConfig(ctx, c.cfg.Conn.Copy())
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	refresh := time.NewTimer(c.cfg.Refresh)
	defer refresh.Stop()
	for {
		// First thing in a session: visits asked while the previous one failed.
		if err := c.check(ctx, conn); err != nil {
			return err
		}
		bo.Reset()
		refresh.Reset(c.cfg.Refresh)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.wake:
		case <-refresh.C:
		}
	}
}

// check probes the catalog and loads it again when the probe changed or the snapshot is
// older than Refresh; on success every visit received before it started may be judged.
func (c *Classifier) check(ctx context.Context, conn *pgx.Conn) error {
	n := c.checks.Add(1)
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	probe, err := catalog.Probe(ctx, conn)
	if err != nil {
		return err
	}
	st, _, _ := c.current()
	if st.snap == nil || probe != st.probe || time.Since(st.loadedAt) >= c.cfg.Refresh {
		snap, err := catalog.Load(ctx, conn, c.cfg.Sensitive)
		if err != nil {
			return err
		}
		if missing := snap.Missing(); len(missing) > 0 && (st.snap == nil || !slices.Equal(missing, st.snap.Missing())) {
			c.log.Warn("sensitive tables or columns not found; canary visits of them are reported unclassified",
				zap.Strings("missing", missing))
		}
		st.snap, st.probe, st.loadedAt = snap, probe, time.Now()
	}
	st.verified, st.err = n, nil
	c.publish(st)
	return nil
}
