package notify

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/pgtripwire/pgtripwire/detector/backoff"
	"github.com/pgtripwire/pgtripwire/internal/atomicfile"
)

// entry is one spooled transition with the sinks that have not acknowledged it. Its
// JSON is the spool's file format: Transition's fields sit beside seq and pending.
type entry struct {
	Seq      uint64    `json:"seq"`
	Enqueued time.Time `json:"enqueued"`
	Transition
	// Pending names the sinks that still have to acknowledge the transition.
	Pending []string `json:"pending"`
}

// spool is the stage in front of the remote sinks (every Alertmanager URL, every
// webhook). Exec persists each transition for every sink before it returns; one
// worker per sink then delivers the sink's transitions in order, retrying the oldest
// with capped backoff until the sink acknowledges it, and a transition leaves the spool
// once every sink has. A failing sink holds back its own queue, never the others'.
//
// On disk it is a journal of entries by sequence number (see journal): each batch of
// transitions appended and synced before any delivery is attempted, each
// acknowledgement appended (not synced: a lost one costs a delivery again, which
// at-least-once allows), compacted into a sealed snapshot, so a transition survives
// kill -9 and power loss at a cost per transition that does not grow with the spool. It
// holds at most max entries: past that the oldest is dropped, counted and logged, so
// that a long outage of a sink costs the oldest pages, never the newest, and never
// silently. A spool is safe for concurrent use.
type spool struct {
	dir                    string
	max                    int
	sinks                  []Sink
	names                  []string
	retryInitial, retryMax time.Duration
	now                    func() time.Time
	log                    *zap.Logger
	metrics                *metrics

	wake map[string]chan struct{} // a transition was spooled for the sink
	// recovered: the sink answered a re-send; retry now instead of after the backoff.
	recovered map[string]chan struct{}
	gaugeMu   sync.Mutex

	mu      sync.Mutex
	entries []*entry // by Seq
	nextSeq uint64
	journal *journal[entry]
	set     map[string]*entry // entries by key (seqKey), as the journal records them
	// unreadable counts the entries found damaged beyond their previous generation at
	// start, set aside as .corrupt: transitions some sink may never get.
	unreadable int
}

// spoolSuffix ends the files of entries spooled one per file by earlier versions
// (%020d.json): they are moved into the journal at start.
const spoolSuffix = ".json"

// seqKey is an entry's key in the journal.
func seqKey(seq uint64) string { return fmt.Sprintf("%020d", seq) }

// openSpool opens the spool in cfg.StateDir/spool for sinks, with the delivery metrics,
// loading the entries a previous run left and keeping only sinks that still exist: a
// sink removed from the configuration cannot acknowledge anything. What cannot be
// delivered any more (an entry only for removed sinks, an unreadable entry) is counted
// as dropped for the sinks that will not get it, and logged.
func openSpool(cfg Config, sinks []Sink, reg prometheus.Registerer, log *zap.Logger) (*spool, error) {
	dir := filepath.Join(cfg.StateDir, "spool")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open alert spool: %w", err)
	}
	s := &spool{dir: dir, max: cfg.SpoolMax, sinks: sinks, retryInitial: cfg.RetryInitial, retryMax: cfg.RetryMax,
		now: cfg.Now, log: log, nextSeq: 1,
		wake: make(map[string]chan struct{}), recovered: make(map[string]chan struct{})}
	for _, sk := range sinks {
		s.names = append(s.names, sk.Name())
		s.wake[sk.Name()] = make(chan struct{}, 1)
		s.recovered[sk.Name()] = make(chan struct{}, 1)
	}
	s.metrics = newMetrics(reg, s.names)
	lost := func(sinks []string) {
		for _, name := range sinks {
			s.metrics.dropped.WithLabelValues(name).Inc()
		}
	}
	j, set, lostSet, err := openJournal[entry](filepath.Join(dir, "entries"), "alert spool")
	if err != nil {
		return nil, err
	}
	s.journal, s.set = j, set
	if lostSet != nil {
		log.Error("alert spool damaged beyond its previous generation: undelivered transitions may be lost",
			zap.String("dir", dir), zap.Error(lostSet))
		lost(s.names)
		s.unreadable++
	}
	legacy, legacyKeys, err := s.readLegacy(lost)
	if err != nil {
		_ = j.close()
		return nil, err
	}
	var changed []string
	for key, e := range set {
		if key != seqKey(e.Seq) {
			log.Error("alert spool entry under the wrong key set aside: a transition may be lost",
				zap.String("key", key), zap.Uint64("seq", e.Seq))
			lost(s.names)
			s.unreadable++
			delete(set, key)
			changed = append(changed, key)
			continue
		}
		var gone []string
		e.Pending = slices.DeleteFunc(e.Pending, func(p string) bool {
			if slices.Contains(s.names, p) {
				return false
			}
			gone = append(gone, p)
			return true
		})
		if len(gone) > 0 {
			log.Error("undelivered alert transition for sinks no longer configured: they will not get it",
				zap.String("rule", e.Alert.Rule), zap.String("fingerprint", e.Alert.Fingerprint),
				zap.Strings("sinks", gone))
			lost(gone)
			changed = append(changed, key)
		}
		if len(e.Pending) == 0 {
			delete(set, key)
			continue
		}
		s.entries = append(s.entries, e)
		s.nextSeq = max(s.nextSeq, e.Seq+1)
	}
	if len(changed)+len(legacyKeys) > 0 {
		changed = append(changed, legacyKeys...)
		slices.Sort(changed)
		changed = slices.Compact(changed)
		if err := j.append(set, true, changed...); err != nil {
			_ = j.close()
			return nil, fmt.Errorf("open alert spool: %w", err)
		}
	}
	for _, path := range legacy { // in the journal now
		_ = removeEntry(path)
	}
	slices.SortFunc(s.entries, func(a, b *entry) int { return cmp.Compare(a.Seq, b.Seq) })
	if left := len(s.entries); left > 0 {
		log.Info("resuming delivery of alert transitions left in the spool", zap.Int("transitions", left))
	}
	s.updateQueued()
	return s, nil
}

// readEntry reads a spooled entry: sealed (or of a version before seals), falling back
// to its previous generation when damaged — an acknowledgement the crash tore is then
// delivered again, which at-least-once allows.
// readLegacy reads the entries earlier versions spooled one per file into the set,
// each recorded in the journal under its key, and returns their paths, to be removed
// once the journal holds them. What a crash left half-written is removed; an
// unreadable entry is set aside and counted with lost.
func (s *spool) readLegacy(lost func(sinks []string)) (paths, keys []string, err error) {
	names, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("open alert spool: %w", err)
	}
	for _, de := range names {
		name := de.Name()
		path := filepath.Join(s.dir, name)
		switch {
		case strings.HasSuffix(name, ".tmp"):
			// A write interrupted before its rename. A rewrite (an acknowledgement)
			// leaves the previous file in place; a new entry was never reported
			// spooled, and its transition is in the alert log: say so, then clean up.
			s.log.Warn("removing an incomplete alert spool write left by a crash; "+
				"a transition being spooled at that moment is only in the alert log", zap.String("file", path))
			_ = os.Remove(path)
			continue
		case strings.HasSuffix(name, spoolSuffix+atomicfile.PrevSuffix):
			if _, err := os.Stat(strings.TrimSuffix(path, atomicfile.PrevSuffix)); errors.Is(err, fs.ErrNotExist) {
				_ = os.Remove(path)
			}
			continue
		case !strings.HasSuffix(name, spoolSuffix) || len(name) != 20+len(spoolSuffix):
			continue
		}
		e, err := readEntry(path)
		if err != nil {
			// Keep the evidence; never crash on one bad file, never drop it silently.
			s.log.Error("unreadable alert spool entry set aside: a transition may be lost",
				zap.String("file", path), zap.Error(err))
			_ = os.Rename(path, path+".corrupt")
			lost(s.names)
			s.unreadable++
			continue
		}
		if _, ok := s.set[seqKey(e.Seq)]; !ok {
			s.set[seqKey(e.Seq)] = e
			keys = append(keys, seqKey(e.Seq))
		}
		paths = append(paths, path)
	}
	return paths, keys, nil
}

func readEntry(path string) (*entry, error) {
	data, _, _, err := atomicfile.ReadChecked(path)
	if err != nil {
		return nil, err
	}
	var e entry
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, err
	}
	want := fmt.Sprintf("%020d%s", e.Seq, spoolSuffix)
	if filepath.Base(path) != want {
		return nil, fmt.Errorf("entry seq %d does not match its file name", e.Seq)
	}
	return &e, nil
}

// Exec spools the transitions for every sink, together, and wakes the sinks' workers.
// When it returns nil the transitions survive a crash; on error none of them is
// spooled, and a retry spools each once.
func (s *spool) Exec(_ context.Context, ts ...Transition) ([]Transition, error) {
	err := s.enqueue(ts)
	s.updateQueued()
	for _, ch := range s.wake {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	if err != nil {
		return nil, err
	}
	return ts, nil
}

// enqueue persists transitions for every sink with one journal write and sync,
// dropping the oldest entries past the bound.
func (s *spool) enqueue(ts []Transition) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	all := slices.Clone(s.entries)
	keys := make([]string, 0, len(ts))
	for i, t := range ts {
		e := &entry{Seq: s.nextSeq + uint64(i), Enqueued: now, Transition: t, Pending: slices.Clone(s.names)}
		all = append(all, e)
		keys = append(keys, seqKey(e.Seq))
		s.set[seqKey(e.Seq)] = e
	}
	dropped := all[:max(0, len(all)-s.max)]
	for _, e := range dropped {
		delete(s.set, seqKey(e.Seq))
		keys = append(keys, seqKey(e.Seq))
	}
	if err := s.journal.append(s.set, true, keys...); err != nil {
		for _, k := range keys[:len(ts)] {
			delete(s.set, k)
		}
		for _, e := range dropped {
			if e.Seq < s.nextSeq {
				s.set[seqKey(e.Seq)] = e
			}
		}
		return fmt.Errorf("write alert spool: %w", err)
	}
	s.nextSeq += uint64(len(ts))
	s.entries = all[len(dropped):]
	for _, e := range dropped {
		s.droppedLocked(e)
	}
	return nil
}

// droppedLocked counts and logs an entry dropped at the bound: pages lost.
func (s *spool) droppedLocked(e *entry) {
	for _, sink := range e.Pending {
		s.metrics.dropped.WithLabelValues(sink).Inc()
	}
	s.log.Error("alert spool full: oldest undelivered transition dropped",
		zap.String("rule", e.Alert.Rule), zap.String("fingerprint", e.Alert.Fingerprint),
		zap.String("state", string(e.Alert.State)), zap.Strings("undelivered_to", e.Pending),
		zap.Int("spool_max", s.max))
}

// Run delivers until ctx is done: one worker per sink.
func (s *spool) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, sk := range s.sinks {
		g.Go(func() error { return s.deliver(ctx, sk) })
	}
	return g.Wait()
}

// retryNow makes the sink's worker retry at once instead of after its backoff: the
// sink answers again (an Alertmanager took a re-send).
func (s *spool) retryNow(sink string) {
	select {
	case s.recovered[sink] <- struct{}{}:
	default:
	}
}

// deliver is the sink's worker. It sends the sink's spooled transitions in order,
// retrying the oldest with backoff until it is acknowledged: order matters (a
// resolved must not overtake its firing), so a failing head blocks the sink's queue,
// not the other sinks'.
func (s *spool) deliver(ctx context.Context, sk Sink) error {
	name := sk.Name()
	bo := backoff.New(s.retryInitial, s.retryMax)
	failing := false
	for {
		e, ok := s.next(name)
		if !ok {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-s.wake[name]:
				continue
			}
		}
		start := time.Now()
		err := sk.Send(ctx, e.Transition)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rejected := err != nil && permanent(err)
		if rejected {
			// The receiver understood and refused this transition: retrying cannot
			// help, and holding it would block every later one. A lost page: counted
			// as dropped, logged as an error.
			s.metrics.failed.WithLabelValues(name).Inc()
			s.metrics.dropped.WithLabelValues(name).Inc()
			s.log.Error("alert transition rejected by the sink; dropped", zap.String("sink", name),
				zap.String("rule", e.Alert.Rule), zap.String("fingerprint", e.Alert.Fingerprint), zap.Error(err))
		} else if err != nil {
			s.metrics.failed.WithLabelValues(name).Inc()
			if !failing {
				s.log.Warn("alert delivery failed; retrying with backoff", zap.String("sink", name),
					zap.String("rule", e.Alert.Rule), zap.String("fingerprint", e.Alert.Fingerprint), zap.Error(err))
			}
			failing = true
			t := time.NewTimer(bo.Next())
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			case <-s.recovered[name]:
				t.Stop()
			}
			continue
		}
		if failing {
			s.log.Info("alert delivery recovered", zap.String("sink", name))
		}
		failing = false
		bo.Reset()
		if err := s.ack(e.Seq, name); err != nil {
			// The sink has it; at worst it is delivered again after a restart.
			s.log.Error("alert delivered but not removed from the spool", zap.String("sink", name), zap.Error(err))
		}
		if !rejected {
			s.metrics.sent.WithLabelValues(name).Inc()
			s.metrics.requestSeconds.WithLabelValues(name).Observe(time.Since(start).Seconds())
			s.metrics.latency.WithLabelValues(name).Observe(s.now().Sub(e.Enqueued).Seconds())
		}
		s.updateQueued()
	}
}

// updateQueued refreshes the queue gauges. Callers race (Exec, each worker), so the
// gauges are set under one lock from one consistent view.
func (s *spool) updateQueued() {
	s.gaugeMu.Lock()
	defer s.gaugeMu.Unlock()
	pending, total := s.counts()
	for _, name := range s.names {
		s.metrics.queued.WithLabelValues(name).Set(float64(pending[name]))
	}
	s.metrics.spoolEntries.Set(float64(total))
}

// next returns the oldest entry the sink has not acknowledged (a copy).
func (s *spool) next(sink string) (entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.entries {
		if slices.Contains(e.Pending, sink) {
			return *e, true
		}
	}
	return entry{}, false
}

// ack records the sink's acknowledgement of entry seq, removing the entry once every
// sink has acknowledged it. Acknowledging an entry that is gone (dropped at the bound)
// is not an error.
func (s *spool) ack(seq uint64, sink string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.entries, func(e *entry) bool { return e.Seq == seq })
	if i < 0 {
		return nil
	}
	e := s.entries[i]
	e.Pending = slices.DeleteFunc(e.Pending, func(p string) bool { return p == sink })
	if len(e.Pending) == 0 {
		// Forgotten in memory whatever happens to the journal: every sink has it. An
		// acknowledgement not recorded is a delivery again after a restart, which
		// at-least-once allows; so it is not synced.
		s.entries = slices.Delete(s.entries, i, i+1)
		delete(s.set, seqKey(seq))
	}
	if err := s.journal.append(s.set, false, seqKey(seq)); err != nil {
		return fmt.Errorf("record an acknowledgement in the alert spool: %w", err)
	}
	return nil
}

// close closes the spool's journal.
func (s *spool) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.journal.close()
}

// removeEntry removes an entry's file and its previous generation.
func removeEntry(path string) error {
	_ = os.Remove(path + atomicfile.PrevSuffix)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// counts returns, in one consistent view, the entries each sink has not acknowledged
// and the number of entries.
func (s *spool) counts() (pending map[string]int, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pending = make(map[string]int)
	for _, e := range s.entries {
		for _, p := range e.Pending {
			pending[p]++
		}
	}
	return pending, len(s.entries)
}

func (s *spool) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}
