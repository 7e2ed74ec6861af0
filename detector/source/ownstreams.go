package source

import (
	"sync"
	"time"
)

// OwnStreams records when the detector's own replication sessions held each of its
// slots, so that the catalog watch can tell the detector's own use of its slot from
// anyone else's even when a session came and went between two polls (a WAL source that
// reconnects in a loop because its state directory is full decodes, fails, and
// releases the slot, over and over). A nil *OwnStreams records nothing and knows of
// no session. Safe for concurrent use.
type OwnStreams struct {
	mu sync.Mutex
	// held maps a slot to when its last own session began and ended (end zero while
	// it is live).
	held map[string]span
}

type span struct{ begin, end time.Time }

// NewOwnStreams returns an empty record.
func NewOwnStreams() *OwnStreams { return &OwnStreams{held: make(map[string]span)} }

// Hold records that an own session holds slot from now until release is called.
func (o *OwnStreams) Hold(slot string, now func() time.Time) (release func()) {
	if o == nil {
		return func() {}
	}
	o.mu.Lock()
	o.held[slot] = span{begin: now()}
	o.mu.Unlock()
	return func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		sp := o.held[slot]
		sp.end = now()
		o.held[slot] = sp
	}
}

// HeldSince reports whether an own session held slot at some moment after t.
func (o *OwnStreams) HeldSince(slot string, t time.Time) bool {
	if o == nil {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	sp, ok := o.held[slot]
	return ok && (sp.end.IsZero() || sp.end.After(t))
}
