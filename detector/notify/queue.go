package notify

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/health"
	"go.uber.org/zap"
)

// queue is the stage in front of a stage that may refuse transitions for a while (the
// alert log or the spool on a full disk). Exec takes every transition at once and hands
// them to next in order, one at a time; what next refuses stays in memory and is
// retried, oldest first, at each Exec and every second. So a refusal delays
// transitions and makes the detector unready, but loses none, never reorders them and
// never makes the caller evaluate its events again. WaitWritten says when next has
// taken everything.
type queue struct {
	component string // its name in health reports and logs
	next      Stage
	health    *health.Status // each queue's state: nil while its stage takes every transition
	log       *zap.Logger
	interval  time.Duration // between retries

	mu      sync.Mutex
	backlog []Transition
	failing bool // the last attempt failed; logged once per outage
	// drained is closed when the backlog empties; nil while it is empty.
	drained chan struct{}
}

func newQueue(component string, next Stage, h *health.Status, log *zap.Logger) *queue {
	h.Set(component, nil)
	return &queue{component: component, next: next, health: h, log: log, interval: time.Second}
}

// Exec queues ts behind any transitions still waiting and hands the queue to next. It
// never fails: what next refuses waits here, and the queue's health says so.
func (q *queue) Exec(ctx context.Context, ts ...Transition) ([]Transition, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.backlog = append(q.backlog, ts...)
	q.flushLocked(ctx)
	return ts, nil
}

// Run retries what is queued every second until ctx is done, then makes a last
// attempt and logs what it could not hand over.
func (q *queue) Run(ctx context.Context) error {
	t := time.NewTicker(q.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			q.mu.Lock()
			defer q.mu.Unlock()
			q.flushLocked(context.WithoutCancel(ctx))
			if len(q.backlog) > 0 {
				q.log.Error("alert transitions lost at shutdown: a sink did not accept them",
					zap.String("sink", q.component), zap.Int("transitions", len(q.backlog)))
			}
			return ctx.Err()
		case <-t.C:
		}
		q.mu.Lock()
		q.flushLocked(ctx)
		q.mu.Unlock()
	}
}

// WaitWritten returns once next has taken every transition queued so far (at once when
// nothing waits), or with ctx's error.
func (q *queue) WaitWritten(ctx context.Context) error {
	q.mu.Lock()
	ch := q.drained
	q.mu.Unlock()
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

// flushLocked hands the queued transitions to next in order and reports the queue's
// health; a failure leaves the rest for the next attempt.
func (q *queue) flushLocked(ctx context.Context) {
	for len(q.backlog) > 0 {
		// One at a time: a stage that fails part-way through a batch would have the
		// transitions before the failure again at the retry.
		if _, err := q.next.Exec(ctx, q.backlog[0]); err != nil {
			err = fmt.Errorf("%d alert transition(s) not written: %w", len(q.backlog), err)
			q.health.Set(q.component, err)
			if !q.failing {
				q.log.Error("alert sink write failed; retrying every second",
					zap.String("sink", q.component), zap.Error(err))
			}
			q.failing = true
			if q.drained == nil {
				q.drained = make(chan struct{})
			}
			return
		}
		q.backlog = q.backlog[1:]
	}
	if q.failing {
		q.log.Info("alert sink writable again; queued transitions written", zap.String("sink", q.component))
	}
	q.failing = false
	q.health.Set(q.component, nil)
	if q.drained != nil {
		close(q.drained)
		q.drained = nil
	}
}
