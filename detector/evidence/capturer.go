package evidence

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/model"
)

// Bounds of the capturer.
const (
	// queueSize is how many firing alerts may wait for their capture: an alert storm
	// beyond it keeps the alerts (they are delivered regardless) and counts the
	// evidence it could not capture.
	queueSize = 1024
	// relatedWindow is how far back the other alerts of a role are looked for.
	relatedWindow = time.Hour
	// maxRoles bounds the roles whose recent alerts are remembered.
	maxRoles = 10_000
	// maxRelated bounds the related alerts one piece of evidence lists.
	maxRelated = 20
	// captureTimeout bounds the server's part of one capture.
	captureTimeout = 15 * time.Second
	// pingTimeout bounds the check of an idle connection before an urgent capture.
	pingTimeout = 2 * time.Second
	// pruneEvery is how often expired evidence is removed.
	pruneEvery = 10 * time.Minute
)

// Options configure a Capturer.
type Options struct {
	// Connect opens the capturer's own connection to the server and database of an
	// alert (where, as Where names them), kept open between captures of the same
	// place and opened again after a failure or for another place.
	Connect func(ctx context.Context, where string) (*pgx.Conn, error)
	// Where names the server and database an alert's evidence is captured on (its
	// sessions are that server's, its privileges that database's); nil captures every
	// alert's on one connection (where "").
	Where  func(a model.Alert) string
	Store  *Store
	Now    func() time.Time
	Logger *zap.Logger
	// Registerer receives the capturer's metrics.
	Registerer prometheus.Registerer
	// After, when set, is called in the capturer's goroutine once an urgent alert's
	// evidence is saved (or could not be): the automatic response acts on it.
	After func(ctx context.Context, e *Evidence, in Input)
}

type request struct {
	in     Input
	urgent bool
	// again: a new event in an episode whose evidence is saved already; it is captured
	// for the response only, and the saved evidence (the firing's) is kept.
	again bool
}

// Capturer captures the evidence of firing alerts in its own goroutine (Run), so that
// asking the server never delays evaluation or delivery. Fired is safe for concurrent
// use and never blocks.
type Capturer struct {
	opts            Options
	log             *zap.Logger
	urgent, pending chan request

	mu sync.Mutex
	// recent holds each role's last alerts (at most maxRelated+1, oldest first) of the
	// last relatedWindow, for the related alerts of its next one.
	recent map[string][]Related

	captured *prometheus.CounterVec
	dropped  prometheus.Counter
	// pruneEvery is the package's pruneEvery; tests shorten it.
	pruneEvery time.Duration
}

// NewCapturer returns a capturer; Run starts it.
func NewCapturer(o Options) *Capturer {
	f := promauto.With(o.Registerer)
	c := &Capturer{
		opts:       o,
		pruneEvery: pruneEvery,
		recent:     map[string][]Related{},
		log:        o.Logger.Named("evidence"),
		urgent:     make(chan request, queueSize),
		pending:    make(chan request, queueSize),
		captured: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_evidence_captured_total",
			Help: "Evidence captured for firing alerts, by result: complete, partial (some part could not be read; the file says why), unsaved.",
		}, []string{"result"}),
		dropped: f.NewCounter(prometheus.CounterOpts{
			Name: "pgtripwire_evidence_dropped_total",
			Help: "Firing alerts whose evidence was not captured because too many were waiting (an alert storm).",
		}),
	}
	for _, r := range []string{"complete", "partial", "unsaved"} {
		c.captured.WithLabelValues(r)
	}
	return c
}

// Fired records a firing alert and queues its capture; trigger is the event that made
// it fire, nil when none did. An urgent capture (a rule with an automatic response)
// goes before the others.
func (c *Capturer) Fired(a model.Alert, trigger *model.Event, urgent bool) {
	in := Input{Alert: a, Trigger: trigger, Related: c.remember(a)}
	q := c.pending
	if urgent {
		q = c.urgent
	}
	select {
	case q <- request{in: in, urgent: urgent}:
	default:
		c.dropped.Inc()
		if urgent {
			c.log.Warn("alert not captured, so not responded to: too many captures waiting",
				zap.String("rule", a.Rule), zap.String("fingerprint", a.Fingerprint))
		}
	}
}

// Again queues the capture, for the automatic response only, of a new triggering event
// in the episode of a, which fired earlier: a second session reading canary rows while
// the alert still fires. The evidence saved when a fired is kept.
func (c *Capturer) Again(a model.Alert, trigger *model.Event) {
	select {
	case c.urgent <- request{in: Input{Alert: a, Trigger: trigger}, urgent: true, again: true}:
	default:
		c.dropped.Inc()
		c.log.Warn("new reading session not captured, so not responded to: too many captures waiting",
			zap.String("rule", a.Rule), zap.String("fingerprint", a.Fingerprint))
	}
}

// remember adds a to its role's recent alerts and returns the role's other alerts of
// the hour before it, newest first.
func (c *Capturer) remember(a model.Alert) []Related {
	role := a.Labels[model.LabelRole]
	if role == "" {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	recent := c.recent[role]
	for len(recent) > 0 && a.Time.Sub(recent[0].Time) > relatedWindow {
		recent = recent[1:]
	}
	var related []Related
	for i := len(recent) - 1; i >= 0 && len(related) < maxRelated; i-- {
		if recent[i].Fingerprint != a.Fingerprint {
			related = append(related, recent[i])
		}
	}
	recent = append(recent, Related{Fingerprint: a.Fingerprint, Rule: a.Rule, Severity: a.Severity,
		Time: a.Time, Summary: a.Annotations[model.AnnotationSummary]})
	if len(recent) > maxRelated+1 {
		recent = slices.Clone(recent[len(recent)-maxRelated-1:])
	}
	c.recent[role] = recent
	if len(c.recent) > maxRoles {
		// Forget the roles without an alert in the hour; if that is not enough (an
		// alert storm across more roles), forget them all rather than grow.
		maps.DeleteFunc(c.recent, func(_ string, rs []Related) bool { return a.Time.Sub(rs[len(rs)-1].Time) > relatedWindow })
		if len(c.recent) > maxRoles {
			clear(c.recent)
		}
	}
	return related
}

// Run captures queued evidence until ctx is done, and removes expired evidence every
// pruneEvery. It returns ctx's error.
func (c *Capturer) Run(ctx context.Context) error {
	conn := &placed{}
	defer conn.close(ctx)
	c.prune()
	prune := time.NewTicker(c.pruneEvery)
	defer prune.Stop()
	// rest, while the server rests after a capture (see capturePace), fires when the
	// rest is over; nil when there is none. Pending captures wait for it, urgent ones
	// never do.
	var rest <-chan time.Time
	for {
		if ctx.Err() != nil {
			return ctx.Err() // not another capture, urgent or not, with a cancelled context
		}
		pending := c.pending
		if rest != nil {
			pending = nil // a nil channel is never ready: no pending capture while resting
		}
		var r request
		select {
		case r = <-c.urgent:
		default:
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-prune.C:
				c.prune()
				continue
			case <-rest:
				rest = nil
				continue
			case r = <-c.urgent:
			case r = <-pending:
			}
		}
		start := time.Now()
		e := c.capture(ctx, conn, r)
		rest = time.After(capturePace * time.Since(start))
		if r.urgent && c.opts.After != nil {
			c.opts.After(ctx, e, r.in)
		}
	}
}

// capturePace is how long the capturer lets the server rest after a capture, as a
// multiple of the capture's duration, before the next pending one: the captures of an
// alert storm (thousands of roles) then take at most a fifth of the evidence
// connection's time, and the server's CPU goes to its clients and to detection rather
// than to evidence. Urgent captures (an automatic response waits on them) do not wait.
const capturePace = 4

// capture captures and, unless it is one again, saves one alert's evidence on conn
// (opened when nil), and returns the connection to use next (nil after it broke) and
// the evidence. Before an urgent capture an open connection is pinged: one that died
// while idle (a server restart, a failover, idle_session_timeout) would otherwise cost
// the response its sessions.
func (c *Capturer) capture(ctx context.Context, pc *placed, r request) *Evidence {
	e := New(r.in, c.opts.Now())
	cctx, cancel := context.WithTimeout(ctx, captureTimeout)
	defer cancel()
	where := ""
	if c.opts.Where != nil {
		where = c.opts.Where(r.in.Alert)
	}
	if pc.conn != nil && pc.where != where {
		pc.close(cctx)
	}
	conn := pc.conn
	if conn != nil && r.urgent {
		pctx, pcancel := context.WithTimeout(cctx, pingTimeout)
		if err := conn.Ping(pctx); err != nil {
			_ = conn.Close(pctx)
			conn = nil
		}
		pcancel()
	}
	if conn == nil {
		var err error
		if conn, err = c.opts.Connect(cctx, where); err != nil {
			conn = nil
			// The evidence is served and shown: its problem says what, the log says why
			// (hosts, users and addresses stay in the log).
			e.Problems = append(e.Problems, "connect: the evidence connection could not be opened (the detector's log says why)")
			c.log.Warn("evidence connection not opened", zap.String("fingerprint", e.Fingerprint), zap.Error(err))
		}
	}
	if conn != nil {
		Capture(cctx, conn, e)
		if conn.IsClosed() {
			conn = nil
		}
	}
	if !r.again {
		c.save(e)
	}
	pc.conn, pc.where = conn, where
	return e
}

// placed is the capturer's connection and the place it is connected to.
type placed struct {
	conn  *pgx.Conn
	where string
}

func (p *placed) close(ctx context.Context) {
	if p.conn == nil {
		return
	}
	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	_ = p.conn.Close(closeCtx)
	cancel()
	p.conn = nil
}

// save stores e and counts it.
func (c *Capturer) save(e *Evidence) {
	result := "complete"
	if len(e.Problems) > 0 {
		result = "partial"
	}
	if err := c.opts.Store.Save(e); err != nil {
		result = "unsaved"
		c.log.Error("evidence not saved", zap.String("fingerprint", e.Fingerprint), zap.Error(err))
	}
	c.captured.WithLabelValues(result).Inc()
}

func (c *Capturer) prune() {
	if n, err := c.opts.Store.Prune(c.opts.Now()); err != nil {
		c.log.Warn("expired evidence not removed", zap.Error(err))
	} else if n > 0 {
		c.log.Info("expired evidence removed", zap.Int("alerts", n))
	}
}
