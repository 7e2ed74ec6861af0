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

	// whole: next takes a batch whole or not at all, and bears a repeat, so the queue
	// hands it batches (up to maxBatch) instead of one transition at a time.
	whole bool
	// async queues hand over from Run alone, never in the caller of Exec (see
	// newAsyncQueue); kick wakes Run when Exec queued something.
	async bool
	kick  chan struct{}

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

// newAsyncQueue is a queue whose Exec only queues: Run hands the transitions to next,
// in batches, without holding the queue while next works; next must take a batch whole
// or not at all, and bear a repeat (the Alertmanager active set and the spool do). The remote sinks' queue
// is one, so that the spool's and Alertmanager's bookkeeping (a file sync or more per
// transition) never delays the alert log's lines nor the pipeline: an alert storm is
// in the alert log as fast without Alertmanager as with it. WaitWritten still says
// when next has taken everything, which the WAL source waits for before confirming.
func newAsyncQueue(component string, next Stage, h *health.Status, log *zap.Logger) *queue {
	q := newQueue(component, next, h, log)
	q.whole, q.async, q.kick = true, true, make(chan struct{}, 1)
	return q
}

// Exec queues ts behind any transitions still waiting and hands the queue to next (an
// async queue leaves that to Run). It never fails: what next refuses waits here, and
// the queue's health says so.
func (q *queue) Exec(ctx context.Context, ts ...Transition) ([]Transition, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.backlog = append(q.backlog, ts...)
	if q.async {
		if len(q.backlog) > 0 && q.drained == nil {
			q.drained = make(chan struct{})
		}
		select {
		case q.kick <- struct{}{}:
		default:
		}
		return ts, nil
	}
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
			q.flush(context.WithoutCancel(ctx))
			q.mu.Lock()
			defer q.mu.Unlock()
			if len(q.backlog) > 0 {
				q.log.Error("alert transitions lost at shutdown: a sink did not accept them",
					zap.String("sink", q.component), zap.Int("transitions", len(q.backlog)))
			}
			return ctx.Err()
		case <-t.C:
		case <-q.kick: // nil, never ready, for a queue that is not async
		}
		q.flush(ctx)
	}
}

// flush hands the queued transitions to next: with the queue held throughout, or, for
// an async queue, held only between transitions, so that Exec never waits for next.
// Only Run flushes an async queue: one transition is never handed over twice at once.
func (q *queue) flush(ctx context.Context) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.async {
		q.flushLocked(ctx)
		return
	}
	for len(q.backlog) > 0 {
		batch := q.backlog[:q.batchLen()]
		q.mu.Unlock()
		_, err := q.next.Exec(ctx, batch...)
		q.mu.Lock()
		if err != nil {
			q.failedLocked(err)
			return
		}
		q.backlog = q.backlog[len(batch):]
	}
	q.writtenLocked()
}

// maxBatch bounds what an async queue hands over at once: one journal write.
const maxBatch = 512

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
		batch := q.backlog[:q.batchLen()]
		if _, err := q.next.Exec(ctx, batch...); err != nil {
			q.failedLocked(err)
			return
		}
		q.backlog = q.backlog[len(batch):]
	}
	q.writtenLocked()
}

// batchLen is how much of the backlog to hand over at once: one transition, since a
// stage that fails part-way through a batch would have the transitions before the
// failure again at the retry; a batch when next takes it whole or not at all.
func (q *queue) batchLen() int {
	if !q.whole {
		return 1
	}
	return min(len(q.backlog), maxBatch)
}

// failedLocked records that next refused the head of the backlog.
func (q *queue) failedLocked(err error) {
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
}

// writtenLocked records that next has taken the whole backlog.
func (q *queue) writtenLocked() {
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
