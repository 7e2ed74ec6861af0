package notify

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/model"
)

// flakySink refuses the first failures transitions, as a log on a full disk does, then
// records them.
type flakySink struct {
	mu       sync.Mutex
	failures int
	written  []string // fingerprints
}

func (s *flakySink) Name() string { return "flaky" }

func (s *flakySink) Send(_ context.Context, t Transition) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failures > 0 {
		s.failures--
		return errors.New("no space left on device")
	}
	s.written = append(s.written, t.Alert.Fingerprint)
	return nil
}

func (s *flakySink) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.written)
}

func firing(fingerprint string) Transition {
	return Transition{Alert: model.Alert{State: model.StateFiring, Rule: "R", Fingerprint: fingerprint}}
}

// runQueues runs the queues until the test ends, as Notifier.Run does.
func runQueues(t *testing.T, qs ...*queue) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, q := range qs {
		wg.Go(func() { _ = q.Run(ctx) })
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func TestQueueKeepsWhatTheSinkRefuses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := &flakySink{failures: 2}
		h := newHealthRecorder()
		q := newQueue(alertLogComponent, Direct(sink), h.Status, zap.NewNop())
		runQueues(t, q)

		if _, err := q.Exec(t.Context(), firing("a"), firing("b")); err != nil {
			t.Fatalf("Exec: got %v, want nil: the transitions are queued, retrying is the queue's job", err)
		}
		if h.problems()[alertLogComponent] == "" {
			t.Fatalf("got problems %v, want alert_log reported unhealthy", h.problems())
		}
		// The second attempt (at the next Exec) still fails; the third (a second later)
		// succeeds.
		if _, err := q.Exec(t.Context(), firing("c")); err != nil {
			t.Fatal(err)
		}
		if got := sink.got(); len(got) != 0 {
			t.Fatalf("got %v written while the sink refuses, want none", got)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if got, want := sink.got(), []string{"a", "b", "c"}; !slices.Equal(got, want) {
			t.Fatalf("got %v, want %v: each once, in order", got, want)
		}
		if p := h.problems(); len(p) != 0 {
			t.Fatalf("got problems %v after the sink recovered, want none", p)
		}
	})
}

func TestQueueWritesWhatWaitsAtShutdown(t *testing.T) {
	sink := &flakySink{failures: 1}
	q := newQueue(alertLogComponent, Direct(sink), newHealthRecorder().Status, zap.NewNop())
	q.interval = time.Hour // only the last attempt at shutdown can write
	if _, err := q.Exec(t.Context(), firing("a")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := q.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: got %v, want context.Canceled", err)
	}
	if got := sink.got(); len(got) != 1 {
		t.Fatalf("got %v written, want the queued transition written at shutdown", got)
	}
}

// A sink that refuses does not hold back the others: the log keeps recording while
// delivery waits, and each sink gets every transition once, in order.
func TestQueuesBehindAFanoutAreIndependent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, spooled := &flakySink{}, &flakySink{failures: 1}
		h := newHealthRecorder()
		logQueue := newQueue(alertLogComponent, Direct(log), h.Status, zap.NewNop())
		spoolQueue := newQueue(alertSpoolComponent, Direct(spooled), h.Status, zap.NewNop())
		runQueues(t, logQueue, spoolQueue)
		if _, err := (Fanout{logQueue, spoolQueue}).Exec(t.Context(), firing("a"), firing("b")); err != nil {
			t.Fatal(err)
		}
		if len(log.got()) != 2 || len(spooled.got()) != 0 {
			t.Fatalf("got log %v spool %v, want the log written and the spool waiting", log.got(), spooled.got())
		}
		if p := h.problems(); p[alertSpoolComponent] == "" || p[alertLogComponent] != "" {
			t.Fatalf("got problems %v, want only alert_spool", p)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if want := []string{"a", "b"}; !slices.Equal(log.got(), want) || !slices.Equal(spooled.got(), want) {
			t.Fatalf("got log %v spool %v, want both with a, b once each", log.got(), spooled.got())
		}
	})
}

// A source that must not move past events whose alerts are not yet durable (the WAL
// source, before confirming a slot position) waits with WaitWritten: it returns only
// once the refused transitions are written.
func TestQueueWaitWrittenWaitsForTheBacklog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := &flakySink{failures: 1}
		q := newQueue(alertLogComponent, Direct(sink), newHealthRecorder().Status, zap.NewNop())
		runQueues(t, q)
		if err := q.WaitWritten(t.Context()); err != nil {
			t.Fatalf("WaitWritten with nothing queued: got %v, want nil at once", err)
		}
		if _, err := q.Exec(t.Context(), firing("a")); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		if err := q.WaitWritten(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitWritten while the sink refuses: got %v, want it to wait (deadline exceeded)", err)
		}
		done := make(chan error, 1)
		go func() { done <- q.WaitWritten(t.Context()) }()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("WaitWritten returned %v while the transition is still queued", err)
		default:
		}
		time.Sleep(time.Second) // the retry: the sink accepts now
		if err := <-done; err != nil {
			t.Fatalf("WaitWritten after the write: got %v, want nil", err)
		}
		if got := sink.got(); len(got) != 1 {
			t.Fatalf("got %v written, want a once", got)
		}
	})
}
