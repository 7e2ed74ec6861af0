package detector

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/health"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/model"
)

// Evaluator turns events into alert transitions. It is what the rule engine implements;
// the built-in SensitiveBulkRead rule is the first one. The pipeline serialises calls.
type Evaluator interface {
	// Eval returns the transitions ev causes at now.
	Eval(now time.Time, ev model.Event) []model.Alert
	// Tick returns the transitions due at now without a new event (resolutions).
	Tick(now time.Time) []model.Alert
	// Rules lists the rules the evaluator may raise, with their severity.
	Rules() map[string]model.Severity
}

// The WAL source waits for the pipeline before confirming a position: a wrapper that
// hid WaitWritten would silently let it confirm transactions whose alerts are unwritten.
var _ source.WrittenWaiter = (*pipeline)(nil)

// alertSink records alert transitions: the alert log, the delivery spool.
type alertSink interface {
	Write(a model.Alert) error
}

// sinkQueue is one sink with the transitions it has not yet accepted.
type sinkQueue struct {
	component string // its name in health reports
	sink      alertSink
	backlog   []model.Alert
	failing   bool // the last write failed; logged once per outage
}

// Health components of the pipeline's sinks: a detector that cannot record or deliver
// its alerts is not ready, whatever its sources say.
const (
	alertLogComponent   = "alert_log"
	alertSpoolComponent = "alert_spool"
)

// pipeline hands events to the evaluator and gives the resulting transitions to each
// sink in order (the alert log, then the delivery spool). Evaluation happens once per
// event: transitions a sink could not take stay queued for that sink and are retried
// every tick (and before any new one), so a full disk delays alerts and makes the
// detector unready, but loses none and never makes a source hand the same events over
// twice.
type pipeline struct {
	mu     sync.Mutex
	eval   Evaluator
	sinks  []*sinkQueue
	health *health.Status
	now    func() time.Time
	logger *zap.Logger

	// drained is closed when every sink's queue becomes empty; nil while they are.
	drained chan struct{}

	events     *prometheus.CounterVec
	rowsRead   *prometheus.CounterVec
	columnRows *prometheus.CounterVec
	evalTicks  time.Duration
}

// namedSink pairs a sink with its health component name.
type namedSink struct {
	component string
	sink      alertSink
}

func newPipeline(eval Evaluator, sinks []namedSink, h *health.Status, now func() time.Time, logger *zap.Logger, reg prometheus.Registerer) *pipeline {
	f := promauto.With(reg)
	p := &pipeline{
		eval:   eval,
		health: h,
		now:    now,
		logger: logger.Named("pipeline"),
		events: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_events_total",
			Help: "Events about sensitive relations, by source.",
		}, []string{"source"}),
		rowsRead: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_sensitive_rows_read_total",
			Help: "Rows returned by statements that read sensitive columns, by source, database, table and role.",
		}, []string{"source", "database", "table", "role"}),
		columnRows: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_sensitive_column_rows_read_total",
			Help: "Rows returned by statements that read each sensitive column, by source, database, table and column.",
		}, []string{"source", "database", "table", "column"}),
		evalTicks: time.Second,
	}
	for _, s := range sinks {
		p.sinks = append(p.sinks, &sinkQueue{component: s.component, sink: s.sink})
		h.Register(s.component)
		h.Set(s.component, nil)
	}
	return p
}

// HandleEvents evaluates events and queues their transitions for every sink, writing
// them before it returns when the sinks accept them. It returns nil once the events are
// evaluated: an unwritten transition is the pipeline's to retry, not the source's.
func (p *pipeline) HandleEvents(_ context.Context, events []model.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	var transitions []model.Alert
	for _, ev := range events {
		p.events.WithLabelValues(string(ev.Source)).Inc()
		// An event observed while its statement runs (activity, COPY progress) carries
		// no rows or a running total: the statements source counts the rows once the
		// statement ends.
		if len(ev.SensitiveRead) > 0 && ev.Running == 0 {
			p.rowsRead.WithLabelValues(string(ev.Source), ev.Database, ev.Relation, ev.Role).Add(float64(ev.Rows))
			for _, c := range ev.SensitiveRead {
				p.columnRows.WithLabelValues(string(ev.Source), ev.Database, ev.Relation, c).Add(float64(ev.Rows))
			}
		}
		transitions = append(transitions, p.eval.Eval(now, ev)...)
	}
	p.queueLocked(transitions)
	return nil
}

// Run resolves quiet alerts and retries unwritten transitions every second until ctx
// is done; then it makes a last attempt to write what is queued.
func (p *pipeline) Run(ctx context.Context) error {
	t := time.NewTicker(p.evalTicks)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.mu.Lock()
			defer p.mu.Unlock()
			p.flushLocked()
			for _, q := range p.sinks {
				if len(q.backlog) > 0 {
					p.logger.Error("alert transitions lost at shutdown: a sink did not accept them",
						zap.String("sink", q.component), zap.Int("transitions", len(q.backlog)))
				}
			}
			return ctx.Err()
		case <-t.C:
		}
		p.tick()
	}
}

// tick queues the transitions due without a new event and retries the queues.
func (p *pipeline) tick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queueLocked(p.eval.Tick(p.now()))
}

func (p *pipeline) queueLocked(transitions []model.Alert) {
	for _, q := range p.sinks {
		q.backlog = append(q.backlog, transitions...)
	}
	p.flushLocked()
}

// flushLocked writes each sink's queued transitions in order and reports its health; a
// failure leaves the rest of that sink's queue for the next attempt.
func (p *pipeline) flushLocked() {
	queued := false
	for _, q := range p.sinks {
		p.flushQueue(q)
		queued = queued || len(q.backlog) > 0
	}
	switch {
	case queued && p.drained == nil:
		p.drained = make(chan struct{})
	case !queued && p.drained != nil:
		close(p.drained)
		p.drained = nil
	}
}

// WaitWritten returns once every transition queued so far has been written by every
// sink (at once when nothing waits), or with ctx's error. A source whose position
// must not advance before its alerts are durable (the WAL source confirming a slot
// position) calls it after HandleEvents: HandleEvents returns once events are
// evaluated, while a full disk may keep their alerts queued in memory.
func (p *pipeline) WaitWritten(ctx context.Context) error {
	p.mu.Lock()
	ch := p.drained
	p.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pipeline) flushQueue(q *sinkQueue) {
	for len(q.backlog) > 0 {
		if err := q.sink.Write(q.backlog[0]); err != nil {
			err = fmt.Errorf("%d alert transition(s) not written: %w", len(q.backlog), err)
			p.health.Set(q.component, err)
			if !q.failing {
				p.logger.Error("alert sink write failed; retrying every second",
					zap.String("sink", q.component), zap.Error(err))
			}
			q.failing = true
			return
		}
		q.backlog = q.backlog[1:]
	}
	if q.failing {
		p.logger.Info("alert sink writable again; queued transitions written", zap.String("sink", q.component))
	}
	q.failing = false
	p.health.Set(q.component, nil)
}
