package statements

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/internal/atomicfile"
	"github.com/pgtripwire/pgtripwire/model"
)

// The counters of the last poll are kept in the state directory, so that a restarted
// detector counts from them instead of taking a fresh baseline: a read that ran while
// the detector was down (a crash, kill -9, a rolling restart) is paged after the start,
// not taken for history. They are written after every poll that saw a read of
// sensitive columns (or one it could not classify), every persistEvery at most, after
// any other growth every lazyPersistEvery, and when the source stops: what a crash loses
// since is counted again after the restart, never missed (the rule state and the alert
// log absorb a read evaluated twice: an alert already firing does not fire again).
// Growth that read nothing sensitive (the detector's own polls and catalog probes, an
// application's other tables) changes nothing when it is counted again: writing it
// every second would be a checked file a second for nothing.
//
// They are used only when they are of the same database and the same
// pg_stat_statements (its stats_reset unchanged) and at most maxResumeAge old: after a
// longer outage, what ran meanwhile would land in one poll, inflating the rates the
// rules compare with their baselines; the detector then starts from a fresh baseline and
// says so.

//
// A source that shares its server's reads with many databases' (Config.Server) writes
// them every sharedPersistEvery at most instead: a hundred databases writing a checked
// file every second cost the detector more CPU than everything else it does (make
// bench-fleet), and the price is that a crash counts up to ten seconds of reads again.

const (
	persistEvery       = time.Second
	sharedPersistEvery = 10 * time.Second
	lazyPersistEvery   = time.Minute
	maxResumeAge       = 5 * time.Minute
)

// countersHeader opens the persisted counters: a JSON line, then Entries records of
// recordSize bytes (userid u32, queryid i64, toplevel u8, calls, rows, blocks i64,
// little endian). Binary, because it is written after every poll that saw something:
// 5,000 entries encode in a fraction of a millisecond.
type countersHeader struct {
	Database   string    `json:"database"`
	DatabaseID uint32    `json:"database_id"`
	StatsReset time.Time `json:"stats_reset"`
	SavedAt    time.Time `json:"saved_at"`
	Entries    int       `json:"entries"`
}

const recordSize = 4 + 8 + 1 + 8 + 8 + 8

func (s *Source) countersPath() string {
	// By oid: a database's name may hold any character, a file name may not.
	return filepath.Join(s.cfg.StateDir, "statements", strconv.FormatUint(uint64(s.dbID), 10)+".counters")
}

// resume primes the tracker with the persisted counters when they are usable, once per
// process, before the first poll's deltas.
func (s *Source) resume(now time.Time, statsReset time.Time) {
	if s.resumeTried || s.cfg.StateDir == "" {
		return
	}
	s.resumeTried = true
	data, _, _, err := atomicfile.ReadChecked(s.countersPath())
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	var f countersHeader
	var records []byte
	if err == nil {
		line, rest, ok := bytes.Cut(data, []byte("\n"))
		switch {
		case !ok:
			err = errors.New("no header line")
		default:
			err = json.Unmarshal(line, &f)
			records = rest
		}
		if err == nil && len(records) != f.Entries*recordSize {
			err = fmt.Errorf("%d bytes of records, the header says %d entries", len(records), f.Entries)
		}
	}
	why := ""
	switch {
	case err != nil:
		why = err.Error()
	case f.DatabaseID != s.dbID || f.Database != s.dbName:
		why = "another database's counters"
	case !f.StatsReset.Equal(statsReset):
		why = "pg_stat_statements was reset since"
	case now.Sub(f.SavedAt) > maxResumeAge:
		why = fmt.Sprintf("saved %s ago, more than %s", now.Sub(f.SavedAt).Round(time.Second), maxResumeAge)
	}
	if why != "" {
		s.log.Warn("the counters of the previous run are not used: statements that ran while the detector was down are not counted",
			zap.String("path", s.countersPath()), zap.String("why", why))
		return
	}
	prev := make(map[entryKey]counters, f.Entries)
	le := binary.LittleEndian
	for r := records; len(r) > 0; r = r[recordSize:] {
		prev[entryKey{userID: le.Uint32(r), dbID: s.dbID, queryID: int64(le.Uint64(r[4:])), topLevel: r[12] == 1}] =
			counters{calls: int64(le.Uint64(r[13:])), rows: int64(le.Uint64(r[21:])), blocks: int64(le.Uint64(r[29:]))}
	}
	s.tracker.prime(prev)
	s.log.Info("counting from the counters of the previous run: statements that ran while the detector was down are counted",
		zap.Time("saved_at", f.SavedAt), zap.Int("entries", len(prev)))
}

// persist writes the tracker's previous snapshot when it changed and persistEvery has
// passed since the last write. A failure is logged, not fatal: it costs the counters
// of a restart, not detection.
func (s *Source) persist(now time.Time, changed, sensitive bool) {
	s.countersChanged = s.countersChanged || changed
	s.sensitiveChanged = s.sensitiveChanged || sensitive
	every := persistEvery
	if s.cfg.Server != nil {
		every = sharedPersistEvery
	}
	if !s.sensitiveChanged {
		every = lazyPersistEvery
	}
	if s.cfg.StateDir == "" || !s.countersChanged || now.Sub(s.persistedAt) < every {
		return
	}
	header, err := json.Marshal(countersHeader{Database: s.dbName, DatabaseID: s.dbID, StatsReset: s.statsReset,
		SavedAt: now, Entries: len(s.tracker.prev)})
	if err == nil {
		data := make([]byte, 0, len(header)+1+len(s.tracker.prev)*recordSize)
		data = append(append(data, header...), '\n')
		le := binary.LittleEndian
		for k, c := range s.tracker.prev {
			top := byte(0)
			if k.topLevel {
				top = 1
			}
			data = le.AppendUint32(data, k.userID)
			data = le.AppendUint64(data, uint64(k.queryID))
			data = append(data, top)
			data = le.AppendUint64(data, uint64(c.calls))
			data = le.AppendUint64(data, uint64(c.rows))
			data = le.AppendUint64(data, uint64(c.blocks))
		}
		err = atomicfile.WriteChecked(s.countersPath(), data)
	}
	if err != nil {
		s.log.Warn("save the statements' counters", zap.Error(err))
		return
	}
	s.persistedAt, s.countersChanged, s.sensitiveChanged = now, false, false
}

// readsSensitive reports whether events hold a read of sensitive columns, or of rows by
// a statement that could not be classified: what a restart must not count twice
// sooner than it has to.
func readsSensitive(events []model.Event) bool {
	for i := range events {
		if len(events[i].SensitiveRead) > 0 || !events[i].Complete {
			return true
		}
	}
	return false
}

// Flush writes the counters now if they changed since the last write: the Loop calls it
// when the source stops, so that a clean restart counts exactly from where it stopped.
func (s *Source) Flush() {
	s.persistedAt = time.Time{}
	s.persist(s.now(), false, false)
}
