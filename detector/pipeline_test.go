package detector

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/health"
	"github.com/pgtripwire/pgtripwire/model"
)

// flakySink refuses the first failures writes, then records.
type flakySink struct {
	failures int
	written  []model.Alert
}

func (s *flakySink) Write(a model.Alert) error {
	if s.failures > 0 {
		s.failures--
		return errors.New("no space left on device")
	}
	s.written = append(s.written, a)
	return nil
}

// onePerEvent fires one alert per event, named after its role.
type onePerEvent struct{ evaluated int }

func (o *onePerEvent) Eval(now time.Time, ev model.Event) []model.Alert {
	o.evaluated++
	return []model.Alert{{Time: now, State: model.StateFiring, Rule: "R", Fingerprint: ev.Role}}
}
func (o *onePerEvent) Tick(time.Time) []model.Alert     { return nil }
func (o *onePerEvent) Rules() map[string]model.Severity { return nil }

func TestPipelineQueuesWhatTheLogRefuses(t *testing.T) {
	sink := &flakySink{failures: 2}
	eval := &onePerEvent{}
	reg := prometheus.NewRegistry()
	h := health.New(reg)
	p := newPipeline(eval, []namedSink{{alertLogComponent, sink}}, h, time.Now, zap.NewNop(), reg)
	ctx := context.Background()

	if err := p.HandleEvents(ctx, []model.Event{{Role: "a"}, {Role: "b"}}); err != nil {
		t.Fatalf("HandleEvents: got %v, want nil: the events were evaluated, retrying is the pipeline's job", err)
	}
	if ok, why := h.Ready(); ok || why[alertLogComponent] == "" {
		t.Fatalf("got ready=%v (%v), want the alert log reported unhealthy", ok, why)
	}
	// The second attempt (at the next hand-over) still fails; the third (a tick) succeeds.
	if err := p.HandleEvents(ctx, []model.Event{{Role: "c"}}); err != nil {
		t.Fatal(err)
	}
	if len(sink.written) != 0 {
		t.Fatalf("got %+v written while the log refuses, want none", sink.written)
	}
	p.tick()
	if len(sink.written) != 3 || sink.written[0].Fingerprint != "a" || sink.written[2].Fingerprint != "c" {
		t.Fatalf("got %+v, want a, b, c written once each, in order", sink.written)
	}
	if eval.evaluated != 3 {
		t.Fatalf("evaluated %d events, want 3 (none twice)", eval.evaluated)
	}
	if ok, why := h.Ready(); !ok {
		t.Fatalf("got unready (%v) after the log recovered, want ready", why)
	}
}

func TestPipelineRetriesOnTickAndFlushesAtShutdown(t *testing.T) {
	sink := &flakySink{failures: 1}
	reg := prometheus.NewRegistry()
	p := newPipeline(&onePerEvent{}, []namedSink{{alertLogComponent, sink}}, health.New(reg), time.Now, zap.NewNop(), reg)
	p.evalTicks = time.Hour // only the shutdown flush can write
	if err := p.HandleEvents(context.Background(), []model.Event{{Role: "a"}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: got %v, want context.Canceled", err)
	}
	if len(sink.written) != 1 {
		t.Fatalf("got %d written, want the queued transition written at shutdown", len(sink.written))
	}
}

// A sink that refuses does not hold back the others: the log keeps recording while
// delivery waits, and each sink gets every transition once, in order.
func TestPipelineSinksAreIndependent(t *testing.T) {
	log, spool := &flakySink{}, &flakySink{failures: 1}
	reg := prometheus.NewRegistry()
	h := health.New(reg)
	p := newPipeline(&onePerEvent{}, []namedSink{{alertLogComponent, log}, {alertSpoolComponent, spool}},
		h, time.Now, zap.NewNop(), reg)
	if err := p.HandleEvents(context.Background(), []model.Event{{Role: "a"}, {Role: "b"}}); err != nil {
		t.Fatal(err)
	}
	if len(log.written) != 2 || len(spool.written) != 0 {
		t.Fatalf("got log %d spool %d, want the log written and the spool waiting", len(log.written), len(spool.written))
	}
	if ok, why := h.Ready(); ok || why[alertSpoolComponent] == "" || why[alertLogComponent] != "" {
		t.Fatalf("got ready=%v %v, want only alert_spool unhealthy", ok, why)
	}
	p.tick()
	if len(log.written) != 2 || len(spool.written) != 2 || spool.written[0].Fingerprint != "a" {
		t.Fatalf("got log %v spool %v, want both with a, b once each", log.written, spool.written)
	}
}

// A source that must not move past events whose alerts are not yet durable (the WAL
// source, before confirming a slot position) waits with WaitWritten: it returns only
// once the refused transitions are written.
func TestPipelineWaitWrittenWaitsForTheQueue(t *testing.T) {
	sink := &flakySink{failures: 1}
	reg := prometheus.NewRegistry()
	p := newPipeline(&onePerEvent{}, []namedSink{{alertLogComponent, sink}}, health.New(reg), time.Now, zap.NewNop(), reg)
	if err := p.WaitWritten(context.Background()); err != nil {
		t.Fatalf("WaitWritten with nothing queued: got %v, want nil at once", err)
	}
	if err := p.HandleEvents(context.Background(), []model.Event{{Role: "a"}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.WaitWritten(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitWritten while the log refuses: got %v, want it to wait (deadline exceeded)", err)
	}
	done := make(chan error, 1)
	go func() { done <- p.WaitWritten(context.Background()) }()
	select {
	case err := <-done:
		t.Fatalf("WaitWritten returned %v while the transition is still queued", err)
	case <-time.After(50 * time.Millisecond): // still waiting, as it must
	}
	p.tick() // the log accepts now
	if err := <-done; err != nil {
		t.Fatalf("WaitWritten after the write: got %v, want nil", err)
	}
	if len(sink.written) != 1 {
		t.Fatalf("got %d written, want 1", len(sink.written))
	}
}

// COPY progress events carry a running total, observed while the COPY runs: counting
// each would multiply the COPY's rows in pgtripwire_sensitive_rows_read_total, which
// counts it once from its statement.
func TestPipelineCountsRowsReadOncePerCopy(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := newPipeline(&onePerEvent{}, nil, health.New(reg), time.Now, zap.NewNop(), reg)
	read := func(source model.Source, rows int64, running time.Duration) model.Event {
		return model.Event{Source: source, Database: "app", Relation: "public.users", Role: "r",
			SensitiveRead: []string{"email"}, Rows: rows, Calls: 1, Running: running}
	}
	if err := p.HandleEvents(context.Background(), []model.Event{
		read("copy", 1000, time.Second), read("copy", 2000, 2*time.Second), read("statements", 2000, 0),
	}); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(p.rowsRead.WithLabelValues("statements", "app", "public.users", "r")); got != 2000 {
		t.Errorf("rows read from the statement: got %v, want 2000", got)
	}
	if n := testutil.CollectAndCount(p.rowsRead); n != 1 {
		t.Errorf("got %d rows-read series, want only the statement's (none for COPY progress)", n)
	}
}
