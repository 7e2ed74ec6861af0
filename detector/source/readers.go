package source

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// Readers remembers which sessions the activity sampler saw holding a lock on a
// sensitive table, sample by sample, so that the table counters — which say how many
// tuples were read, not by whom — can name the sessions that were reading a table when
// its counters moved.
//
// It rests on two facts of PostgreSQL. A transaction that reads a table holds a lock on
// it (AccessShareLock for a read; on the table and on each partition it reads) from
// its first access until it ends, whatever SQL did the reading: dynamic SQL in a DO
// block, a SECURITY DEFINER function, table_to_xml, a cursor. And the counters a
// transaction moved are published only after it ends: at once when its backend goes
// idle, or up to PGSTAT_IDLE_INTERVAL (10 s) later when that backend published less
// than a second before. So the reads published between two polls of the counters were
// made by transactions that held a lock on the table and ended shortly before.
//
// It is a sample, and says so: a transaction that held the table for less than the
// sampling interval is seen only by chance; every session seen holding the table in
// the window counts as a reader, bystanders included (an application's lookups caught
// by a sample); and the counters cannot split the reads between readers. A nil Readers
// knows nothing. Safe for concurrent use.
type Readers struct {
	mu  sync.Mutex
	max int
	// samples are the times of the samples remembered, ascending: a session last seen
	// by a sample that a later one did not see has released the table between the two.
	samples   []time.Time
	sightings map[readerKey]Reader
	prunedAt  time.Time
}

// Reader is one transaction of one session seen holding a lock on a sensitive table.
type Reader struct {
	// Relation is the configured sensitive table, schema-qualified as in Env.Sensitive:
	// a lock on one of its partitions or inheritance children is a lock on it.
	Relation string
	PID      int32
	// Role is the session's login role; ClientAddr its client's address ("local" for a
	// Unix socket, "" when unknown); Application its application_name.
	Role, ClientAddr, Application string
	// Since is when the transaction began (when the backend started, if the server does
	// not say): with PID, it tells one transaction from the next of the same session.
	Since time.Time
	// FirstSeen and LastSeen are the times of the first and last samples that saw it
	// holding the table; Note sets them.
	FirstSeen, LastSeen time.Time
}

type readerKey struct {
	relation string
	pid      int32
	since    int64 // Unix nanoseconds: time.Time's == compares locations too
}

// ReadersRetention is how long a sample, and a session last seen by it, are
// remembered: far longer than the windows the table counters ask about (the 12 s a
// transaction's counters may take to be published, a grace period, a refused hand-over
// retried after a reconnect).
const ReadersRetention = 2 * time.Minute

// readersPruneEvery is how often Note forgets sightings older than ReadersRetention: a
// scan of every sighting, which once a sample would cost more than the sample.
const readersPruneEvery = 10 * time.Second

// NewReaders returns an empty Readers remembering at most size sightings (0 means
// 20,000), the least recently seen forgotten first.
func NewReaders(size int) *Readers {
	if size <= 0 {
		size = 20_000
	}
	return &Readers{max: size, sightings: make(map[readerKey]Reader)}
}

// Note records one sample, taken at at: the sessions seen holding a lock on a
// sensitive table then. A sample that saw nobody is noted too: it says that the
// sessions seen before had released their tables. Samples are noted in the order they
// were taken; a time earlier than the previous sample's counts as the previous one's.
func (r *Readers) Note(at time.Time, seen []Reader) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.samples); n > 0 && at.Before(r.samples[n-1]) {
		at = r.samples[n-1]
	}
	r.samples = append(r.samples, at)
	for _, s := range seen {
		k := readerKey{s.Relation, s.PID, s.Since.UnixNano()}
		if e, ok := r.sightings[k]; ok {
			e.LastSeen = at
			r.sightings[k] = e
			continue
		}
		s.FirstSeen, s.LastSeen = at, at
		r.sightings[k] = s
	}
	r.pruneLocked(at)
	evictOldest(r.sightings, r.max, func(e Reader) time.Time { return e.LastSeen })
}

// pruneLocked forgets the samples, and every readersPruneEvery the sightings, older
// than ReadersRetention before now.
func (r *Readers) pruneLocked(now time.Time) {
	cutoff := now.Add(-ReadersRetention)
	old, _ := slices.BinarySearchFunc(r.samples, cutoff, time.Time.Compare)
	r.samples = r.samples[old:]
	if now.Sub(r.prunedAt) < readersPruneEvery {
		return
	}
	r.prunedAt = now
	for k, e := range r.sightings {
		if e.LastSeen.Before(cutoff) {
			delete(r.sightings, k)
		}
	}
}

// Seen returns the sessions that may have published reads of relation between from
// and to: those seen holding it by a sample taken at or before to, and not known to
// have released it before from — last seen by the last sample taken at or before from,
// or later (the next sample did not see them, so they ended in between, perhaps after
// from). The result is sorted by role, client, application and pid.
func (r *Readers) Seen(relation string, from, to time.Time) []Reader {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var bound time.Time // no sample at or before from: every sighting is later
	if i, found := slices.BinarySearchFunc(r.samples, from, time.Time.Compare); found {
		bound = r.samples[i]
	} else if i > 0 {
		bound = r.samples[i-1]
	}
	var out []Reader
	for _, e := range r.sightings {
		if e.Relation == relation && !e.FirstSeen.After(to) && !e.LastSeen.Before(bound) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(x, y Reader) int {
		return cmp.Or(cmp.Compare(x.Role, y.Role), cmp.Compare(x.ClientAddr, y.ClientAddr),
			cmp.Compare(x.Application, y.Application), cmp.Compare(x.PID, y.PID), x.Since.Compare(y.Since))
	})
	return out
}

// Len is the number of sightings remembered: one per transaction and table.
func (r *Readers) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sightings)
}
