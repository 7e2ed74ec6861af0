package backoff

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestNextGrowsWithJitterAndCaps(t *testing.T) {
	b := New(100*time.Millisecond, time.Second)
	wantCeil := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, ceil := range wantCeil {
		ceil *= time.Millisecond
		got := b.Next()
		if got < ceil/2 || got > ceil {
			t.Fatalf("attempt %d: got %v, want within [%v, %v]", i, got, ceil/2, ceil)
		}
	}
	b.Reset()
	if got := b.Next(); got > 100*time.Millisecond {
		t.Fatalf("after Reset: got %v, want <= 100ms", got)
	}
}

func TestJitterSpreads(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 50 {
		b := New(time.Second, time.Second)
		seen[b.Next()] = true
	}
	if len(seen) < 10 {
		t.Fatalf("got %d distinct delays of 50, want jitter to spread them", len(seen))
	}
}

func TestWaitStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := New(time.Hour, time.Hour).Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

// Reconnect reports each failed session, waits between them, and stops with ctx's error
// once ctx ends, without reporting the session that ctx's end interrupted.
func TestReconnect(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	sessions, failures := 0, 0
	err := New(time.Millisecond, time.Millisecond).Reconnect(ctx, func(context.Context) error {
		sessions++
		if sessions == 3 {
			cancel()
			return errors.New("interrupted by the cancellation")
		}
		return errors.New("connection refused")
	}, func(error) { failures++ })
	if !errors.Is(err, context.Canceled) || sessions != 3 || failures != 2 {
		t.Errorf("got err %v after %d sessions and %d failures reported, want context.Canceled, 3, 2", err, sessions, failures)
	}
}
