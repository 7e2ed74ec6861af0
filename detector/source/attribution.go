package source

import (
	"slices"
	"sync"
	"time"
)

// Attribution remembers, per (query id, role), the client address and application that
// last ran the statement while a sample was taken, so that the statements source can
// label statement deltas with them (pg_stat_statements does not know the client).
//
// It is a sample, not a record: a statement shorter than the sampling interval is seen
// only by chance, and the client that last ran a query id may not be the one whose calls
// a later delta counts. To not invent a label, Lookup answers false when two different
// clients ran the same query id as the same role within ambiguityWindow.
type Attribution struct {
	mu      sync.Mutex
	max     int
	now     func() time.Time
	entries map[attributionKey]*attributionEntry
}

// ambiguityWindow is how long a query id seen from two clients stays unattributable.
const ambiguityWindow = 10 * time.Minute

type attributionKey struct {
	queryID int64
	role    string
}

type attributionEntry struct {
	addr, application string
	seen              time.Time
	ambiguousUntil    time.Time
}

// NewAttribution returns an empty Attribution remembering at most size pairs (0 means
// 10,000), timed by now (nil means time.Now).
func NewAttribution(size int, now func() time.Time) *Attribution {
	if size <= 0 {
		size = 10_000
	}
	if now == nil {
		now = time.Now
	}
	return &Attribution{max: max(size, 1), now: now, entries: make(map[attributionKey]*attributionEntry)}
}

// Lookup returns the client address and application that ran queryID as role when the
// activity source last saw it, and false when it never saw it, or saw it from more than
// one client recently; a nil Attribution knows nothing. clientAddr is "local" for a
// Unix-socket connection. Safe for concurrent use.
func (a *Attribution) Lookup(queryID int64, role string) (clientAddr, application string, ok bool) {
	if a == nil {
		return "", "", false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	e, found := a.entries[attributionKey{queryID, role}]
	if !found || a.now().Before(e.ambiguousUntil) {
		return "", "", false
	}
	return e.addr, e.application, true
}

// Note records that role ran queryID from addr with application at now. Safe for
// concurrent use.
func (a *Attribution) Note(queryID int64, role, addr, application string, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := attributionKey{queryID, role}
	e, found := a.entries[k]
	if !found {
		a.entries[k] = &attributionEntry{addr: addr, application: application, seen: now}
		a.evictLocked()
		return
	}
	if e.addr != addr || e.application != application {
		e.ambiguousUntil = now.Add(ambiguityWindow)
	}
	e.addr, e.application, e.seen = addr, application, now
}

// evictLocked forgets the least recently seen tenth of the entries when over the bound.
func (a *Attribution) evictLocked() {
	evictOldest(a.entries, a.max, func(e *attributionEntry) time.Time { return e.seen })
}

// evictOldest forgets the least recently seen entries of m when it holds more than max:
// down to 90 % of max at once, so that the cost of a scan is spread over many
// insertions.
func evictOldest[K comparable, V any](m map[K]V, max int, seen func(V) time.Time) {
	if len(m) <= max {
		return
	}
	times := make([]time.Time, 0, len(m))
	for _, v := range m {
		times = append(times, seen(v))
	}
	slices.SortFunc(times, func(x, y time.Time) int { return x.Compare(y) })
	cutoff := times[len(times)-max+max/10]
	for k, v := range m {
		if seen(v).Before(cutoff) {
			delete(m, k)
		}
	}
	// Entries all seen at the same instant: drop arbitrary ones to honour the bound.
	for k := range m {
		if len(m) <= max {
			break
		}
		delete(m, k)
	}
}

// Len is the number of remembered (query id, role) pairs.
func (a *Attribution) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.entries)
}
