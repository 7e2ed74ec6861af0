package ha

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/backoff"
)

// Lease is the lease of one target. Its zero durations take the defaults below.
type Lease struct {
	// Target names the target: its cluster ("" for the minimal configuration's one).
	Target string
	// Conn reaches where the lock and the state live: the target's primary (through
	// its DSN, multi-host or not) or the state database.
	Conn *pgx.ConnConfig
	// Holder says who holds the lease, in the rows it writes (host name and HTTP
	// address): never a secret.
	Holder string
	// TryEvery is about how long a detector waits between two attempts while
	// another holds the lease (jittered by up to a half); default 1s.
	TryEvery time.Duration
	// Detector, when set, is shared by the leases of one detector: before an
	// attempt, a detector that already holds n leases waits n × Spread more (at
	// most 4 × Spread), so that the free targets go to the detectors that watch
	// fewer. Its attempts are made one at a time.
	Detector *Detector
	// CheckEvery is how often the holder makes sure its lease connection is alive;
	// default 1s. A check that does not answer within CheckTimeout (default 3s)
	// loses the lease: the work stops at once (fencing).
	CheckEvery, CheckTimeout time.Duration
	Logger                   *zap.Logger
	Metrics                  *Metrics
}

// ErrDamaged marks state that was read but cannot be decoded.
var ErrDamaged = errors.New("damaged")

// ErrLost ends the work's context when the lease connection fails.
var ErrLost = errors.New("lease lost: its connection failed")

// Run acquires the lease whenever it is free and, while it holds it, runs work with
// a Held whose context ends as soon as the lease is lost (its connection fails or a
// check times out) or ctx is done; then it tries again. It returns ctx's error, or
// the first error work returns that its context's end did not cause.
func (l *Lease) Run(ctx context.Context, work func(ctx context.Context, h *Held) error) error {
	l.defaults()
	// The target's series exist at zero before the first takeover.
	l.Metrics.held.WithLabelValues(l.Target).Set(0)
	l.Metrics.acquired.WithLabelValues(l.Target)
	l.Metrics.lost.WithLabelValues(l.Target)
	log := l.Logger.With(zap.String("target", l.Target))
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			closeConn(ctx, conn)
		}
	}()
	backedOff := false
	failing := false // said once per run of failures, not at every attempt
	warn := func(msg string, err error) {
		if !failing {
			log.Warn(msg, zap.Error(err))
		} else {
			log.Debug(msg, zap.Error(err))
		}
		failing = true
	}
	for {
		if conn == nil {
			c, err := pgx.ConnectConfig(ctx, l.Conn)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				warn("lease: cannot connect; trying again", err)
				if err := backoff.Sleep(ctx, l.jittered()); err != nil {
					return err
				}
				continue
			}
			conn = c
		}
		got, spread, err := l.try(ctx, conn, backedOff)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case spread > 0:
			// Leave the target a moment to a detector that watches fewer.
			backedOff = true
			if err := backoff.Sleep(ctx, spread); err != nil {
				return err
			}
			continue
		case errors.Is(err, errStandby):
			warn("lease: the server is a standby; set target_session_attrs=read-write in the DSN", err)
			closeConn(ctx, conn)
			conn = nil
		case err != nil:
			warn("lease: cannot ask for the lock; reconnecting", err)
			closeConn(ctx, conn)
			conn = nil
		case got:
			failing = false
			h := &Held{conn: conn, target: l.Target, holder: l.Holder, m: l.Metrics, timeout: l.CheckTimeout}
			conn = nil // the Held owns it now, and closes it
			if err := l.hold(ctx, h, work, log); err != nil {
				return err
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		default:
			failing = false
		}
		backedOff = false
		if err := backoff.Sleep(ctx, l.jittered()); err != nil {
			return err
		}
	}
}

// errStandby is a lease asked for on a standby: a lock there says nothing about the
// primary, where another detector may hold it.
var errStandby = errors.New("the lease's server is in recovery (a standby)")

// try asks for the lock, one attempt of the detector at a time, within the check
// timeout: the detector's count of leases held is up to date for its next attempt.
// When the detector already holds some and has not backed off yet, it asks nothing
// and returns how long to wait first.
func (l *Lease) try(ctx context.Context, conn *pgx.Conn, backedOff bool) (got bool, spread time.Duration, err error) {
	l.Detector.mu.Lock()
	defer l.Detector.mu.Unlock()
	if n := l.Detector.held; n > 0 && !backedOff && l.Detector.Spread > 0 {
		return false, time.Duration(min(n, 4)) * l.Detector.Spread, nil
	}
	ctx, cancel := context.WithTimeout(ctx, l.CheckTimeout)
	defer cancel()
	var locked *bool
	err = conn.QueryRow(ctx, `SELECT CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL
	ELSE pg_catalog.pg_try_advisory_lock($1, $2) END`, int32(lockClass), LockKey(l.Target)).Scan(&locked)
	switch {
	case err != nil:
		return false, 0, err
	case locked == nil:
		return false, 0, errStandby
	case *locked:
		l.Detector.held++
	}
	return *locked, 0, nil
}

// LockKey is the second key of the target's advisory lock: the FNV-1a hash of its
// name. The detector refuses targets whose keys collide.
func LockKey(target string) int32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(target)) // a hash does not fail
	return int32(h.Sum32())
}

func (l *Lease) jittered() time.Duration {
	return l.TryEvery/2 + rand.N(l.TryEvery/2+1)
}

// Detector is what the leases of one detector share.
type Detector struct {
	// Spread is what a detector waits more per lease it holds before trying for
	// another; zero does not spread.
	Spread time.Duration
	mu     sync.Mutex
	held   int
}

func (d *Detector) released() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.held--
}

func (l *Lease) defaults() {
	if l.TryEvery <= 0 {
		l.TryEvery = time.Second
	}
	if l.Detector == nil {
		l.Detector = &Detector{}
	}
	if l.CheckEvery <= 0 {
		l.CheckEvery = time.Second
	}
	if l.CheckTimeout <= 0 {
		l.CheckTimeout = 3 * time.Second
	}
	if l.Logger == nil {
		l.Logger = zap.NewNop()
	}
	if l.Metrics == nil {
		l.Metrics = NewMetrics(prometheus.NewRegistry())
	}
}

// hold runs work while the lease is held, then lets the lease go by closing its
// connection (which ends the session, and with it the lock).
func (l *Lease) hold(ctx context.Context, h *Held, work func(context.Context, *Held) error, log *zap.Logger) error {
	workCtx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	h.lost = func(err error) {
		if workCtx.Err() == nil {
			log.Error("lease lost: its connection failed; the target's sources stop now", zap.Error(err))
			cancel(ErrLost)
		}
	}
	go func() {
		defer wg.Done()
		// Every closedEvery, a look at the socket without a round trip: a server that
		// ends the session (it stops, the backend is terminated) is noticed at once,
		// before the target's sources, reconnecting, act on another server. Every
		// CheckEvery, a round trip: a path that died silently is noticed within
		// CheckTimeout.
		t := time.NewTicker(closedEvery)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-workCtx.Done():
				return
			case <-t.C:
			}
			var err error
			if time.Since(last) >= l.CheckEvery {
				err, last = h.check(workCtx), time.Now()
			} else {
				err = h.checkClosed()
			}
			if err != nil {
				h.lost(err)
				return
			}
		}
	}()
	l.Metrics.held.WithLabelValues(l.Target).Set(1)
	l.Metrics.acquired.WithLabelValues(l.Target).Inc()
	log.Info("lease acquired: watching the target")
	err := work(workCtx, h)
	ended := workCtx.Err() // before this function ends it
	lost := errors.Is(context.Cause(workCtx), ErrLost)
	cancel(nil)
	wg.Wait()
	h.close(ctx)
	l.Detector.released()
	l.Metrics.held.WithLabelValues(l.Target).Set(0)
	if lost {
		l.Metrics.lost.WithLabelValues(l.Target).Inc()
	}
	if err != nil && ended == nil {
		return fmt.Errorf("target %q: %w", l.Target, err)
	}
	if !lost && ctx.Err() == nil {
		log.Info("lease released")
	}
	return nil
}

// Held is a lease being held: the state of its target is read and written through
// the lease's own connection, one statement at a time.
type Held struct {
	mu      sync.Mutex
	conn    *pgx.Conn
	target  string
	holder  string
	m       *Metrics
	timeout time.Duration
	// lost fences the work at once; a statement through the lease that fails for any
	// reason but the server's refusal of it (a connection error) calls it.
	lost func(error)
}

// writeTimeout bounds a read or write of the state through the lease: longer than a
// check's, so that a large state on a loaded server is not taken for a lost lease.
const writeTimeout = 15 * time.Second

// closedEvery is how often the holder looks at its lease connection's socket.
const closedEvery = 100 * time.Millisecond

// checkClosed reports whether the server closed the lease connection, without a
// round trip.
func (h *Held) checkClosed() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conn == nil {
		return ErrLost
	}
	// Deprecated for Ping, which cannot do this: look without a round trip, ten times
	// a second. A silently broken path is check's (a round trip every CheckEvery).
	return h.conn.PgConn().CheckConn() //nolint:staticcheck // SA1019: see above

}

// check makes sure the lease connection still answers.
func (h *Held) check(ctx context.Context) error {
	return h.do(ctx, h.timeout, func(ctx context.Context, conn *pgx.Conn) error {
		var standby bool
		if err := conn.QueryRow(ctx, `SELECT pg_catalog.pg_is_in_recovery()`).Scan(&standby); err != nil {
			return err
		}
		if standby {
			return errStandby
		}
		return nil
	})
}

// do runs f on the lease connection within timeout. The statement is not cancelled
// with ctx (pgx closes a connection whose statement is cancelled, which would end the
// lease under a clean stop's last write): it ends within timeout. A failure of the
// connection itself fences the work at once.
func (h *Held) do(ctx context.Context, timeout time.Duration, f func(context.Context, *pgx.Conn) error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conn == nil {
		return ErrLost
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	err := f(ctx, h.conn)
	var pgErr *pgconn.PgError
	if err != nil && (h.conn.IsClosed() || !errors.As(err, &pgErr) && !errors.Is(err, pgx.ErrNoRows)) && h.lost != nil {
		h.lost(err)
	}
	return err
}

func (h *Held) close(ctx context.Context) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conn != nil {
		closeConn(ctx, h.conn)
		h.conn = nil
	}
}

// LoadRuleState returns the rule state saved for the target, and false when none
// was.
func (h *Held) LoadRuleState(ctx context.Context) (state []byte, savedBy string, savedAt time.Time, ok bool, err error) {
	var packed []byte
	err = h.do(ctx, writeTimeout, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT state, saved_by, saved_at FROM `+RuleStateTable+` WHERE target = $1`, h.target).
			Scan(&packed, &savedBy, &savedAt)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, "", time.Time{}, false, nil
	}
	if err != nil {
		return nil, "", time.Time{}, false, fmt.Errorf("read %s: %w", RuleStateTable, err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(packed))
	if err == nil {
		state, err = io.ReadAll(zr)
	}
	if err != nil {
		return nil, savedBy, savedAt, false, fmt.Errorf("read %s: the state saved by %s is %w: %w", RuleStateTable, savedBy, ErrDamaged, err)
	}
	return state, savedBy, savedAt, true, nil
}

// SaveRuleState writes the target's rule state, compressed, in one statement.
func (h *Held) SaveRuleState(ctx context.Context, now time.Time, state []byte) error {
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestSpeed) // a valid level: no error
	_, _ = zw.Write(state)                           // writes to a buffer do not fail
	_ = zw.Close()
	err := h.do(ctx, writeTimeout, func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, `INSERT INTO `+RuleStateTable+` AS s (target, saved_at, saved_by, state) VALUES ($1, $2, $3, $4)
ON CONFLICT (target) DO UPDATE SET saved_at = excluded.saved_at, saved_by = excluded.saved_by, state = excluded.state`,
			h.target, now, h.holder, b.Bytes())
		return err
	})
	if err != nil {
		h.m.writes.WithLabelValues(h.target, "rule_state", "error").Inc()
		return fmt.Errorf("write %s: %w", RuleStateTable, err)
	}
	h.m.writes.WithLabelValues(h.target, "rule_state", "ok").Inc()
	h.m.bytes.WithLabelValues(h.target).Set(float64(b.Len()))
	return nil
}

// ReplayGuard is the WAL source's replay guard: the position of the last
// transaction handed over to the rules, on which WAL history, and its commit time
// (zero when unknown).
type ReplayGuard struct {
	SystemID  string
	Timeline  int32
	Handled   pglogrepl.LSN
	HandledAt time.Time
}

// LoadReplayGuard returns the replay guard saved for the target's slot, and false
// when none was.
func (h *Held) LoadReplayGuard(ctx context.Context, slot string) (ReplayGuard, bool, error) {
	var (
		g       ReplayGuard
		handled string
		at      *time.Time
	)
	err := h.do(ctx, writeTimeout, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT system_id, timeline, handled::text, handled_at FROM `+ReplayGuardTable+
			` WHERE target = $1 AND slot = $2`, h.target, slot).Scan(&g.SystemID, &g.Timeline, &handled, &at)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return ReplayGuard{}, false, nil
	}
	if err == nil {
		g.Handled, err = pglogrepl.ParseLSN(handled)
	}
	if err != nil {
		return ReplayGuard{}, false, fmt.Errorf("read %s: %w", ReplayGuardTable, err)
	}
	if at != nil {
		g.HandledAt = *at
	}
	return g, true, nil
}

// SaveReplayGuard writes the replay guard of the target's slot.
func (h *Held) SaveReplayGuard(ctx context.Context, now time.Time, slot string, g ReplayGuard) error {
	var at *time.Time
	if !g.HandledAt.IsZero() {
		at = &g.HandledAt
	}
	err := h.do(ctx, writeTimeout, func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, `INSERT INTO `+ReplayGuardTable+
			` (target, slot, system_id, timeline, handled, handled_at, saved_at, saved_by) VALUES ($1, $2, $3, $4, $5::pg_lsn, $6, $7, $8)
ON CONFLICT (target, slot) DO UPDATE SET system_id = excluded.system_id, timeline = excluded.timeline, handled = excluded.handled,
	handled_at = excluded.handled_at, saved_at = excluded.saved_at, saved_by = excluded.saved_by`,
			h.target, slot, g.SystemID, g.Timeline, g.Handled.String(), at, now, h.holder)
		return err
	})
	if err != nil {
		h.m.writes.WithLabelValues(h.target, "replay_guard", "error").Inc()
		return fmt.Errorf("write %s: %w", ReplayGuardTable, err)
	}
	h.m.writes.WithLabelValues(h.target, "replay_guard", "ok").Inc()
	return nil
}

// Metrics are the leases' and the state writes' metrics.
type Metrics struct {
	held           *prometheus.GaugeVec
	acquired, lost *prometheus.CounterVec
	writes         *prometheus.CounterVec
	bytes          *prometheus.GaugeVec
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		held: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pgtripwire_lease_held",
			Help: "1 while this detector holds the target's lease and watches it (high_availability), else 0.",
		}, []string{"cluster"}),
		acquired: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_lease_acquisitions_total",
			Help: "Times this detector took the target's lease (at start, or over from another detector).",
		}, []string{"cluster"}),
		lost: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_lease_losses_total",
			Help: "Times the target's lease connection failed while held: the target's sources stopped at once.",
		}, []string{"cluster"}),
		writes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_state_writes_total",
			Help: "Writes of a watched target's state to the pgtripwire schema, by table (rule_state, replay_guard) and result.",
		}, []string{"cluster", "table", "result"}),
		bytes: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pgtripwire_state_bytes",
			Help: "Size of the target's rule state as last written to pgtripwire.rule_state (compressed).",
		}, []string{"cluster"}),
	}
}

func closeConn(ctx context.Context, conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}
