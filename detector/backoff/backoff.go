// Package backoff computes reconnect delays: capped exponential growth with jitter, so
// that many detectors losing the same database do not reconnect in lock-step.
//
// Reconnect is the one loop every source runs around its database session; what a
// session does, and what counts as success (Reset), stays the caller's.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff yields delays Initial, 2·Initial, 4·Initial … capped at Max, each drawn
// uniformly from [d/2, d] ("equal jitter"). The zero value is not usable; use New.
// A Backoff is not safe for concurrent use: each loop owns its own.
type Backoff struct {
	initial, max time.Duration
	next         time.Duration
}

// New returns a Backoff starting at initial and never exceeding max.
func New(initial, max time.Duration) *Backoff {
	if initial <= 0 {
		initial = time.Millisecond
	}
	if max < initial {
		max = initial
	}
	return &Backoff{initial: initial, max: max, next: initial}
}

// Next returns the delay before the next attempt and grows the following one.
func (b *Backoff) Next() time.Duration {
	d := b.next
	if b.next < b.max {
		b.next = min(2*b.next, b.max)
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// Reset makes the next delay Initial again; call it after a success.
func (b *Backoff) Reset() { b.next = b.initial }

// Wait sleeps for Next() or until ctx is done, returning ctx.Err() in that case.
func (b *Backoff) Wait(ctx context.Context) error { return Sleep(ctx, b.Next()) }

// Sleep sleeps for d or until ctx is done, returning ctx.Err() in that case.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Reconnect runs session until ctx is done. When a session returns while ctx is still
// live, Reconnect hands its error to failed (to report health, count, log) and waits
// Next before the next session. Sessions call Reset once they work, so that the next
// failure waits Initial again. Reconnect returns ctx's error.
func (b *Backoff) Reconnect(ctx context.Context, session func(context.Context) error, failed func(error)) error {
	for {
		err := session(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		failed(err)
		if err := b.Wait(ctx); err != nil {
			return err
		}
	}
}
