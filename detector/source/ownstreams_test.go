package source

import (
	"testing"
	"time"
)

func TestOwnStreamsHeldSince(t *testing.T) {
	clock := time.Unix(1000, 0)
	now := func() time.Time { return clock }
	o := NewOwnStreams()
	poll := clock
	if o.HeldSince("pgtripwire", poll) {
		t.Error("a slot no own session ever held: got held, want not")
	}
	clock = clock.Add(300 * time.Millisecond)
	release := o.Hold("pgtripwire", now)
	clock = clock.Add(200 * time.Millisecond)
	release() // a session that failed between two polls
	clock = clock.Add(500 * time.Millisecond)
	if !o.HeldSince("pgtripwire", poll) {
		t.Error("a session that held the slot after the previous poll: got not held, want held")
	}
	if o.HeldSince("pgtripwire", clock) {
		t.Error("a session that ended before the previous poll: got held, want not")
	}
	if o.HeldSince("other", poll) {
		t.Error("another slot: got held, want not")
	}
	live := o.Hold("pgtripwire", now)
	defer live()
	if !o.HeldSince("pgtripwire", clock.Add(time.Hour)) {
		t.Error("a live session: got not held, want held")
	}
	var none *OwnStreams
	none.Hold("x", now)()
	if none.HeldSince("x", poll) {
		t.Error("nil OwnStreams: got held, want not")
	}
}
