// Package sourcetest runs the detector's sources in tests as the detector runs them,
// and records what they hand over: a Recorder sink and Start, which runs pollers on one
// source.Loop until the test ends.
//
// It is a test kit: production code never imports it.
package sourcetest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/health"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/model"
)

// Recorder is a source.Sink that keeps every event handed over. Set Refuse to make it
// refuse that many non-empty hand-overs (as a full alert log makes the pipeline do),
// and Stall to make each hand-over take that long (a slow sink). Safe for concurrent
// use; set the fields before the source starts.
type Recorder struct {
	Refuse int
	Stall  time.Duration

	mu      sync.Mutex
	events  []model.Event
	calls   int
	refused int
}

// ErrRefused is what a Recorder returns for a refused hand-over.
var ErrRefused = errors.New("sink refused the events (a full alert log, say)")

// HandleEvents records events, or refuses them.
func (r *Recorder) HandleEvents(ctx context.Context, events []model.Event) error {
	if r.Stall > 0 {
		select {
		case <-time.After(r.Stall):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if len(events) > 0 && r.refused < r.Refuse {
		r.refused++
		return ErrRefused
	}
	r.events = append(r.events, events...)
	return nil
}

// Events returns a copy of every event recorded, in order.
func (r *Recorder) Events() []model.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// Find returns the recorded events that match.
func (r *Recorder) Find(match func(model.Event) bool) []model.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []model.Event
	for _, e := range r.events {
		if match(e) {
			out = append(out, e)
		}
	}
	return out
}

// Calls is the number of hand-overs so far (one a poll), refused ones included.
func (r *Recorder) Calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// Refused is the number of hand-overs refused so far.
func (r *Recorder) Refused() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refused
}

// WaitCalls waits until n more hand-overs happened than when it was called: after it,
// every change made before the call is in what the source read.
func (r *Recorder) WaitCalls(t testing.TB, n int) {
	t.Helper()
	want := r.Calls() + n
	Eventually(t, 30*time.Second, "source polls", func() bool { return r.Calls() >= want })
}

// Eventually polls cond until it holds, failing the test after timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Start runs pollers on one connection to conn, as one source.Loop of the detector
// does (50 ms to 200 ms reconnect backoff), until the test ends, and returns the health
// their names are registered with. reg receives the loop's metrics (nil: a fresh
// registry). Cleanup checks that the loop stopped cleanly.
func Start(t testing.TB, conn *pgx.ConnConfig, reg prometheus.Registerer, pollers ...source.Polled) *health.Status {
	t.Helper()
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	h := health.New(reg)
	for _, p := range pollers {
		h.Register(p.Name)
	}
	loop := &source.Loop{Conn: conn, Pollers: pollers, Health: h, Metrics: source.NewMetrics(reg), Logger: zap.NewNop(),
		ReconnectInitial: 50 * time.Millisecond, ReconnectMax: 200 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- loop.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("source loop: got %v, want context.Canceled", err)
		}
	})
	return h
}

// WaitReady waits until every component of h reports healthy.
func WaitReady(t testing.TB, h *health.Status) {
	t.Helper()
	Eventually(t, 30*time.Second, "healthy sources", func() bool { ok, _ := h.Ready(); return ok })
}
