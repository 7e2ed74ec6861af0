package notify

import (
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

	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/internal/atomicfile"
	"github.com/pgtripwire/pgtripwire/model"
)

// Entry is one alert transition waiting for the sinks that have not acknowledged it.
type Entry struct {
	Seq      uint64      `json:"seq"`
	Enqueued time.Time   `json:"enqueued"`
	Alert    model.Alert `json:"alert"`
	// StartsAt is when the alert of this transition started firing (for a resolution,
	// its firing's time), fixed when the transition is spooled.
	StartsAt time.Time `json:"starts_at,omitzero"`
	// Pending names the sinks that still have to acknowledge the transition.
	Pending []string `json:"pending"`
}

// spool is the durable queue of undelivered transitions: one JSON file per entry in its
// directory, written (to a temporary file, synced, renamed, directory synced) before any
// delivery is attempted and rewritten or removed as sinks acknowledge it, so a transition
// survives kill -9 and power loss. It holds at most max entries: past that the oldest is
// dropped, and dropped reports it, so that a long outage of a sink costs the oldest
// pages, never the newest, and never silently. A spool is safe for concurrent use.
type spool struct {
	dir     string
	max     int
	dropped func(e *Entry) // called, with the lock held, for each entry dropped at the bound

	mu      sync.Mutex
	entries []*Entry // by Seq
	nextSeq uint64
}

const spoolSuffix = ".json"

// openSpool loads the entries left in dir, keeping only sinks that still exist: a sink
// removed from the configuration cannot acknowledge anything. What cannot be delivered
// any more (an entry only for removed sinks, an unreadable entry) is reported to lost
// with the sinks that will not get it.
func openSpool(dir string, maxEntries int, sinks []string, log *zap.Logger, dropped func(*Entry), lost func(sinks []string)) (*spool, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open alert spool: %w", err)
	}
	s := &spool{dir: dir, max: maxEntries, dropped: dropped, nextSeq: 1}
	names, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open alert spool: %w", err)
	}
	for _, de := range names {
		name := de.Name()
		path := filepath.Join(dir, name)
		switch {
		case strings.HasSuffix(name, ".tmp"):
			// A write interrupted before its rename. A rewrite (an acknowledgement)
			// leaves the previous file in place; a new entry was never reported
			// spooled, and its transition is in the alert log: say so, then clean up.
			log.Warn("removing an incomplete alert spool write left by a crash; "+
				"a transition being spooled at that moment is only in the alert log", zap.String("file", path))
			_ = os.Remove(path)
			continue
		case !strings.HasSuffix(name, spoolSuffix):
			continue
		}
		e, err := readEntry(path)
		if err != nil {
			// Keep the evidence; never crash on one bad file, never drop it silently.
			log.Error("unreadable alert spool entry set aside: a transition may be lost",
				zap.String("file", path), zap.Error(err))
			_ = os.Rename(path, path+".corrupt")
			lost(sinks)
			continue
		}
		var gone []string
		e.Pending = slices.DeleteFunc(e.Pending, func(p string) bool {
			if slices.Contains(sinks, p) {
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
		}
		if len(e.Pending) == 0 {
			_ = os.Remove(path)
			continue
		}
		s.entries = append(s.entries, e)
		s.nextSeq = max(s.nextSeq, e.Seq+1)
	}
	slices.SortFunc(s.entries, func(a, b *Entry) int { return cmpUint(a.Seq, b.Seq) })
	return s, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func readEntry(path string) (*Entry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var e Entry
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, err
	}
	want := fmt.Sprintf("%020d%s", e.Seq, spoolSuffix)
	if filepath.Base(path) != want {
		return nil, fmt.Errorf("entry seq %d does not match its file name", e.Seq)
	}
	return &e, nil
}

// enqueue persists a transition for the given sinks and returns its entry.
func (s *spool) enqueue(a model.Alert, startsAt time.Time, sinks []string, now time.Time) (*Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := &Entry{Seq: s.nextSeq, Enqueued: now, Alert: a, StartsAt: startsAt, Pending: slices.Clone(sinks)}
	if err := s.writeLocked(e); err != nil {
		return nil, err
	}
	s.nextSeq++
	s.entries = append(s.entries, e)
	for len(s.entries) > s.max {
		oldest := s.entries[0]
		s.entries = s.entries[1:]
		_ = os.Remove(s.path(oldest.Seq))
		s.dropped(oldest)
	}
	return e, nil
}

// next returns the oldest entry the sink has not acknowledged (a copy).
func (s *spool) next(sink string) (Entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.entries {
		if slices.Contains(e.Pending, sink) {
			return *e, true
		}
	}
	return Entry{}, false
}

// ack records the sink's acknowledgement of entry seq, removing the entry once every
// sink has acknowledged it. Acknowledging an entry that is gone (dropped at the bound)
// is not an error.
func (s *spool) ack(seq uint64, sink string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.entries, func(e *Entry) bool { return e.Seq == seq })
	if i < 0 {
		return nil
	}
	e := s.entries[i]
	e.Pending = slices.DeleteFunc(e.Pending, func(p string) bool { return p == sink })
	if len(e.Pending) > 0 {
		return s.writeLocked(e)
	}
	// Forgotten in memory whatever happens to the file: every sink has it. A file that
	// cannot be removed is delivered again after a restart, which at-least-once allows.
	s.entries = slices.Delete(s.entries, i, i+1)
	if err := os.Remove(s.path(seq)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove delivered alert from spool: %w", err)
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

func (s *spool) path(seq uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d%s", seq, spoolSuffix))
}

// writeLocked replaces the entry's file atomically and durably.
func (s *spool) writeLocked(e *Entry) error {
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode spool entry: %w", err)
	}
	if err := atomicfile.Write(s.path(e.Seq), data); err != nil {
		return fmt.Errorf("write alert spool: %w", err)
	}
	return nil
}
