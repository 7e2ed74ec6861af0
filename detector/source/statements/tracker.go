package statements

// entryKey identifies one pg_stat_statements entry. The same queryid may appear for
// several roles and as a top-level and a nested statement: each is its own counter.
type entryKey struct {
	userID   uint32
	dbID     uint32
	queryID  int64
	topLevel bool
}

type counters struct {
	calls int64
	rows  int64
	// blocks are the shared buffer blocks the statement touched (hit or read): what a
	// statement that folds many rows into one read, when its rows do not say.
	blocks int64
}

type entry struct {
	entryKey
	counters
}

// delta is what one entry did between two polls.
type delta struct {
	entryKey
	counters
}

// tracker turns successive pg_stat_statements snapshots into per-entry deltas.
//
// pg_stat_statements evicts entries when it is full and can be reset; a counter that
// went down, or an entry that was absent from the previous snapshot, is therefore a new
// entry whose whole value is the delta, never a negative one. An entry that was
// evicted and re-created between two polls with counters above the old ones is
// undercounted: pg_stat_statements (before PostgreSQL 17's stats_since) gives no way to
// tell, and the eviction itself is reported through pg_stat_statements_info.dealloc.
//
// The first snapshot is a baseline: what the counters held before the detector started
// is history, not evidence of something happening now.
type tracker struct {
	prev   map[entryKey]counters
	primed bool
	// spare is the map the next snapshot is read into: the two maps take turns, so that
	// a poll of thousands of entries does not allocate a new one every second.
	spare map[entryKey]counters
}

func newTracker() *tracker {
	return &tracker{prev: make(map[entryKey]counters), spare: make(map[entryKey]counters)}
}

// observe returns the deltas of snapshot against the previous one. The snapshot
// becomes the previous one only when commit is called, so a caller that fails to act
// on the deltas sees them again at the next poll instead of losing them. commit must be
// called, if at all, before the next observe.
func (t *tracker) observe(snapshot []entry) (deltas []delta, commit func()) {
	next := t.spare
	clear(next)
	for _, e := range snapshot {
		next[e.entryKey] = e.counters
		if !t.primed {
			continue
		}
		d := e.counters
		if p, ok := t.prev[e.entryKey]; ok && e.calls >= p.calls && e.rows >= p.rows && e.blocks >= p.blocks {
			d = counters{calls: e.calls - p.calls, rows: e.rows - p.rows, blocks: e.blocks - p.blocks}
		}
		if d.calls > 0 || d.rows > 0 {
			deltas = append(deltas, delta{entryKey: e.entryKey, counters: d})
		}
	}
	committed := false
	return deltas, func() {
		if committed {
			return
		}
		committed = true
		t.prev, t.spare = next, t.prev
		t.primed = true
	}
}

// prime makes prev the previous snapshot, as if it had been observed and committed: the
// counters a previous run left (see resume.go).
func (t *tracker) prime(prev map[entryKey]counters) {
	t.prev, t.primed = prev, true
}

// forget drops every previous counter, so that each entry of the next snapshot counts
// in full; used after pg_stat_statements_reset(), when all entries started again at zero.
func (t *tracker) forget() {
	clear(t.prev)
}

// rebase drops every previous counter and makes the next snapshot a baseline again, as
// the first: the counters of another server follow (a failover), whose growth since
// the previous poll cannot be told from their history.
func (t *tracker) rebase() {
	clear(t.prev)
	t.primed = false
}

// live reports whether any entry of the previous snapshot has the queryid.
func (t *tracker) liveQueryIDs() map[int64]bool {
	live := make(map[int64]bool, len(t.prev))
	for k := range t.prev {
		live[k.queryID] = true
	}
	return live
}
