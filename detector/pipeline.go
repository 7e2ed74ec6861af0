package detector

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/alert"
	"github.com/pgtripwire/pgtripwire/detector/event"
	"github.com/pgtripwire/pgtripwire/detector/health"
)

// Evaluator turns events into alert transitions. It is what the rule engine implements;
// the built-in SensitiveBulkRead rule is the first one. The pipeline serialises calls.
type Evaluator interface {
	// Eval returns the transitions ev causes at now.
	Eval(now time.Time, ev event.Event) []alert.Alert
	// Tick returns the transitions due at now without a new event (resolutions).
	Tick(now time.Time) []alert.Alert
	// Rules lists the rules the evaluator may raise, with their severity.
	Rules() map[string]alert.Severity
}

type noRules struct{}

func (noRules) Eval(time.Time, event.Event) []alert.Alert { return nil }
func (noRules) Tick(time.Time) []alert.Alert              { return nil }
func (noRules) Rules() map[string]alert.Severity          { return nil }

// alertSink records alert transitions; *alert.Log is the one in production.
type alertSink interface {
	Write(a alert.Alert) error
	PrecreateRule(rule string, severity alert.Severity)
}

// alertLogComponent is the pipeline's name in health reports: a detector that cannot
// write its alerts is not ready, whatever its sources say.
const alertLogComponent = "alert_log"

// pipeline hands events to the evaluator and writes the resulting transitions to the
// alert log. Evaluation happens once per event: transitions that could not be written
// stay queued and are retried every tick (and before any new one), so a full disk
// delays alerts and makes the detector unready, but loses none and never makes a
// source hand the same events over twice.
type pipeline struct {
	mu      sync.Mutex
	eval    Evaluator
	log     alertSink
	health  *health.Status
	now     func() time.Time
	logger  *zap.Logger
	backlog []alert.Alert
	failing bool // the last write failed; logged once per outage

	events    *prometheus.CounterVec
	rowsRead  *prometheus.CounterVec
	evalTicks time.Duration
}

func newPipeline(eval Evaluator, log alertSink, h *health.Status, now func() time.Time, logger *zap.Logger, reg prometheus.Registerer) *pipeline {
	f := promauto.With(reg)
	p := &pipeline{
		eval:   eval,
		log:    log,
		health: h,
		now:    now,
		logger: logger.Named("pipeline"),
		events: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_events_total",
			Help: "Events about sensitive relations, by source.",
		}, []string{"source"}),
		rowsRead: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_sensitive_rows_read_total",
			Help: "Rows returned by statements that read sensitive columns, by source, table and role.",
		}, []string{"source", "table", "role"}),
		evalTicks: time.Second,
	}
	for rule, severity := range eval.Rules() {
		log.PrecreateRule(rule, severity)
	}
	p.events.WithLabelValues(string(event.SourceStatements))
	h.Register(alertLogComponent)
	h.Set(alertLogComponent, nil)
	return p
}

// HandleEvents evaluates events and queues their transitions, writing them before it
// returns when the alert log accepts them. It returns nil once the events are evaluated:
// an unwritten transition is the pipeline's to retry, not the source's.
func (p *pipeline) HandleEvents(_ context.Context, events []event.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	for _, ev := range events {
		p.events.WithLabelValues(string(ev.Source)).Inc()
		if len(ev.SensitiveRead) > 0 {
			p.rowsRead.WithLabelValues(string(ev.Source), ev.Relation, ev.Role).Add(float64(ev.Rows))
		}
		p.backlog = append(p.backlog, p.eval.Eval(now, ev)...)
	}
	p.flushLocked()
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
			if p.flushLocked(); len(p.backlog) > 0 {
				p.logger.Error("alert transitions lost at shutdown: the alert log did not accept them",
					zap.Int("transitions", len(p.backlog)))
			}
			return ctx.Err()
		case <-t.C:
		}
		p.tick()
	}
}

// tick queues the transitions due without a new event and retries the queue.
func (p *pipeline) tick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.backlog = append(p.backlog, p.eval.Tick(p.now())...)
	p.flushLocked()
}

// flushLocked writes the queued transitions in order and reports the alert log's
// health; a failure leaves the rest queued.
func (p *pipeline) flushLocked() {
	for len(p.backlog) > 0 {
		if err := p.log.Write(p.backlog[0]); err != nil {
			err = fmt.Errorf("%d alert transition(s) not written: %w", len(p.backlog), err)
			p.health.Set(alertLogComponent, err)
			if !p.failing {
				p.logger.Error("alert log write failed; retrying every second", zap.Error(err))
			}
			p.failing = true
			return
		}
		p.backlog = p.backlog[1:]
	}
	if p.failing {
		p.logger.Info("alert log writable again; queued transitions written")
	}
	p.failing = false
	p.health.Set(alertLogComponent, nil)
}
