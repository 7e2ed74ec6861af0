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

// pipeline hands events to the evaluator and writes the resulting transitions to the
// alert log. A transition that could not be written stays queued and is written before
// anything else at the next call, so a full disk delays alerts but loses none.
type pipeline struct {
	mu      sync.Mutex
	eval    Evaluator
	log     *alert.Log
	now     func() time.Time
	logger  *zap.Logger
	backlog []alert.Alert

	events    *prometheus.CounterVec
	rowsRead  *prometheus.CounterVec
	evalTicks time.Duration
}

func newPipeline(eval Evaluator, log *alert.Log, now func() time.Time, logger *zap.Logger, reg prometheus.Registerer) *pipeline {
	f := promauto.With(reg)
	p := &pipeline{
		eval:   eval,
		log:    log,
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
	return p
}

// HandleEvents evaluates events and writes their transitions before returning.
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
	return p.flushLocked()
}

// Run resolves quiet alerts every second until ctx is done.
func (p *pipeline) Run(ctx context.Context) error {
	t := time.NewTicker(p.evalTicks)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if err := p.tick(); err != nil {
			p.logger.Error("alert transitions not written; retrying", zap.Error(err))
		}
	}
}

func (p *pipeline) tick() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.backlog = append(p.backlog, p.eval.Tick(p.now())...)
	return p.flushLocked()
}

func (p *pipeline) flushLocked() error {
	for len(p.backlog) > 0 {
		if err := p.log.Write(p.backlog[0]); err != nil {
			return fmt.Errorf("write %d alert transition(s): %w", len(p.backlog), err)
		}
		p.backlog = p.backlog[1:]
	}
	return nil
}
