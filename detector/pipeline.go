package detector

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/notify"
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

// alertStage is where the pipeline hands its transitions: one notify stage with every
// sink behind it (*notify.Notifier), which can say when what it accepted is written.
type alertStage interface {
	notify.Stage
	WaitWritten(ctx context.Context) error
}

// pipeline hands events to the evaluator and the resulting transitions, in order, to
// the notify stage. Evaluation happens once per event: keeping transitions a sink
// cannot take yet (a full disk) and retrying them is the stage's job, so a source
// never hands the same events over twice.
type pipeline struct {
	mu     sync.Mutex
	eval   Evaluator
	stage  alertStage
	now    func() time.Time
	logger *zap.Logger

	// applicationRoles are the configuration's roles.application: events of these
	// roles are marked before evaluation.
	applicationRoles map[string]bool
	// links, when evidence is on, annotate every transition with its evidence_url and
	// queue the capture of each firing alert's evidence.
	links *evidenceLinks
	// onTransitions, when set, is told of every transition handed to the stage (high
	// availability writes the rule state after each). It must not block.
	onTransitions func([]model.Alert)

	events     *prometheus.CounterVec
	rowsRead   *prometheus.CounterVec
	columnRows *prometheus.CounterVec
	evalTicks  time.Duration
}

func newPipeline(eval Evaluator, stage alertStage, now func() time.Time, logger *zap.Logger, reg prometheus.Registerer) *pipeline {
	f := promauto.With(reg)
	p := &pipeline{
		eval:   eval,
		stage:  stage,
		now:    now,
		logger: logger.Named("pipeline"),
		events: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_events_total",
			Help: "Events about sensitive relations, by source.",
		}, []string{"source"}),
		rowsRead: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_sensitive_rows_read_total",
			Help: "Rows returned by statements that read sensitive columns, by source, cluster, server, database, table and role.",
		}, []string{"source", "cluster", "server", "database", "table", "role"}),
		columnRows: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_sensitive_column_rows_read_total",
			Help: "Rows returned by statements that read each sensitive column, by source, cluster, server, database, table and column.",
		}, []string{"source", "cluster", "server", "database", "table", "column"}),
		evalTicks: time.Second,
	}
	return p
}

// HandleEvents evaluates events and hands their transitions to the notify stage, which
// writes them before it returns when the sinks accept them. It returns nil once the
// events are evaluated: an unwritten transition is the stage's to retry, not the
// source's.
func (p *pipeline) HandleEvents(ctx context.Context, events []model.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	var transitions []model.Alert
	for _, ev := range events {
		ev.ApplicationRole = p.applicationRoles[ev.Role]
		p.events.WithLabelValues(string(ev.Source)).Inc()
		// An event observed while its statement runs (activity, COPY progress) carries
		// no rows or a running total: the statements source counts the rows once the
		// statement ends.
		if len(ev.SensitiveRead) > 0 && ev.Running == 0 {
			rows := ev.ReadRows() // what a folding statement read, not the one row it returned
			p.rowsRead.WithLabelValues(string(ev.Source), ev.Cluster, ev.Instance, ev.Database, ev.Relation, ev.Role).Add(float64(rows))
			for _, c := range ev.SensitiveRead {
				p.columnRows.WithLabelValues(string(ev.Source), ev.Cluster, ev.Instance, ev.Database, ev.Relation, c).Add(float64(rows))
			}
		}
		ts := p.eval.Eval(now, ev)
		for i := range ts {
			p.links.link(&ts[i], &ev)
		}
		transitions = append(transitions, ts...)
	}
	p.notifyLocked(ctx, transitions)
	return nil
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
		p.tick(ctx)
	}
}

// tick hands over the transitions due without a new event.
func (p *pipeline) tick(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ts := p.eval.Tick(p.now())
	for i := range ts {
		p.links.link(&ts[i], nil)
	}
	p.notifyLocked(ctx, ts)
}

// notifyLocked hands transitions to the notify stage. The lock keeps them in the order
// they were evaluated in, whichever source's events caused them.
func (p *pipeline) notifyLocked(ctx context.Context, alerts []model.Alert) {
	if len(alerts) == 0 {
		return
	}
	ts := make([]notify.Transition, len(alerts))
	for i, a := range alerts {
		ts[i] = notify.Transition{Alert: a}
	}
	if _, err := p.stage.Exec(ctx, ts...); err != nil {
		p.logger.Error("alert transitions not taken by the sinks", zap.Int("transitions", len(ts)), zap.Error(err))
	}
	if p.onTransitions != nil {
		p.onTransitions(alerts)
	}
}

// WaitWritten returns once every transition handed over so far is in the alert log and
// the spool (at once when nothing waits), or with ctx's error. A source whose position
// must not advance before its alerts are durable (the WAL source confirming a slot
// position) calls it after HandleEvents: HandleEvents returns once events are
// evaluated, while a full disk may keep their alerts queued in memory.
func (p *pipeline) WaitWritten(ctx context.Context) error {
	return p.stage.WaitWritten(ctx)
}

// record hands alert lines that no rule evaluated (the ResponseTaken lines of an
// automatic response) to the notify stage, in order with the evaluated ones.
func (p *pipeline) record(ctx context.Context, alerts []model.Alert) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.notifyLocked(ctx, alerts)
}

// setResponding replaces the rules whose firing alerts are followed by an automatic
// response (after a reload of the rule files).
func (p *pipeline) setResponding(rules map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.links != nil {
		p.links.urgent = rules
	}
}
