package log

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/internal/atomicfile"
)

// fileID is a file's identity: what stays the same when it is renamed, and changes
// when a new file takes its name.
type fileID struct{ Dev, Ino uint64 }

func idOf(fi fs.FileInfo) fileID {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fileID{Dev: uint64(st.Dev), Ino: st.Ino} //nolint:unconvert // Dev is int32 on some platforms
	}
	return fileID{}
}

// position is where reading stopped: the file, by identity, and the end of the last
// record whose events the pipeline accepted. It is what the state file keeps.
type position struct {
	Dev     uint64    `json:"dev"`
	Ino     uint64    `json:"ino"`
	Name    string    `json:"name"`
	Offset  int64     `json:"offset"`
	ModTime time.Time `json:"mod_time"`
	// Check is a hash of the (up to) checkLen bytes before Offset: a file truncated and
	// written again past Offset, or another file that got the same inode, does not
	// match. A hash, so that no byte of the log is kept in the state directory.
	Check string `json:"check,omitempty"`
}

// stateFile is the content of <state_dir>/log/position.json.
type stateFile struct {
	Directory string    `json:"directory"`
	Format    string    `json:"format"`
	File      *position `json:"file,omitempty"`
}

const (
	// checkLen is how many bytes before a position identify it: whole lines, with
	// their time stamps and session line numbers (the last bytes of one line alone,
	// `"backend_type":"client backend","query_id":0}`, are those of every other).
	checkLen = 4096
	// readChunk is the most read from a file at once.
	readChunk = 1 << 20
	// maxRecord bounds one record: a longer one (a statement of many megabytes) is
	// skipped, counted as malformed.
	maxRecord = 32 << 20
)

// rawRecord is one framed record of a file: its bytes (without the newline), valid
// until the next call of the tailer, and the offset just after it.
type rawRecord struct {
	data []byte
	end  int64
}

// tailer reads the records of the log files of one directory in the order the server
// wrote them: one file at a time, moving to the next when the server has (a newer file
// appeared), reading a file again from its start when it was truncated (after reading
// what the copy-truncate's copy holds past the position, when the copy is in the
// directory too). It is used by one goroutine.
//
// The caller takes records with next, hands their events over, then calls commit (the
// position moves past them) or rewind (they are returned again). save persists the
// committed position.
type tailer struct {
	dir, suffix string
	statePath   string
	format      string
	frame       func([]byte) int // the length of the first complete record, 0 if none
	log         *zap.Logger
	m           *metrics

	f       *os.File
	id      fileID
	name    string
	offset  int64  // committed: the end of the last record accepted
	readOff int64  // the end of what is in buf
	buf     []byte // the bytes from offset to readOff
	tail    []byte // the checkLen bytes before readOff
	// committedTail are the checkLen bytes before offset, as read: what the saved
	// position is checked against.
	committedTail []byte

	// Handed out by next, not committed yet.
	handed    int   // bytes of buf
	handedEnd int64 // the offset after them
	handedAny bool
	orphans   [][]byte // records of a copy-truncate's copy, to hand out first
	started   bool     // the directory was looked at once
	resume    *position
	// seen are the files of the format met in the directory and not read yet, by
	// identity: one renamed before the tailer reached it (a rename rotation while it
	// lagged) is still found, under its new name.
	seen         map[fileID]candidate
	lastScan     time.Time
	dirty        bool
	lastSaved    time.Time
	noFileLogged bool
}

func newTailer(dir, format, stateDir string, log *zap.Logger, m *metrics) (*tailer, error) {
	t := &tailer{dir: dir, format: format, log: log, m: m, suffix: ".json", frame: jsonRecordEnd}
	if format == FormatCSV {
		t.suffix, t.frame = ".csv", csvRecordEnd
	}
	if stateDir == "" {
		return t, nil
	}
	t.statePath = filepath.Join(stateDir, Name, "position.json")
	b, err := os.ReadFile(t.statePath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return t, nil
	case err != nil:
		return nil, fmt.Errorf("read log position: %w", err)
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("read log position %s: %w", t.statePath, err)
	}
	if st.Directory == dir && st.Format == format && st.File != nil {
		t.resume = st.File
	}
	// A position in another directory or format is not this one's: start afresh.
	return t, nil
}

func jsonRecordEnd(b []byte) int {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return i + 1
	}
	return 0
}

// next returns the records read past the committed position, up to about limit bytes;
// none when there is nothing new. The caller must commit or rewind before calling it
// again.
func (t *tailer) next(limit int) ([]rawRecord, error) {
	t.rewind()
	if len(t.orphans) > 0 {
		recs := make([]rawRecord, len(t.orphans))
		for i, o := range t.orphans {
			recs[i] = rawRecord{data: o, end: 0}
		}
		t.handedAny, t.handedEnd = true, 0
		return recs, nil
	}
	if t.f == nil {
		if err := t.open(); err != nil || t.f == nil {
			return nil, err
		}
	}
	if time.Since(t.lastScan) >= scanEvery {
		if _, err := t.candidates(); err != nil {
			return nil, err
		}
	}
	if err := t.checkTruncated(); err != nil {
		return nil, err
	}
	if len(t.orphans) > 0 {
		return t.next(limit)
	}
	for {
		if recs := t.records(limit); len(recs) > 0 {
			return recs, nil
		}
		n, err := t.read()
		if err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
	}
	// At the end of the file. Has the server moved on to another one?
	next, err := t.nextFile()
	if err != nil || next.name == "" {
		return nil, err
	}
	// It has: whatever it wrote here is here now. Read it to the end, then move.
	for {
		n, err := t.read()
		if err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
	}
	if recs := t.records(limit); len(recs) > 0 {
		return recs, nil
	}
	if len(t.buf) > 0 {
		// A last line without its newline: the server was stopped in the middle.
		t.handed, t.handedEnd, t.handedAny = len(t.buf), t.readOff, true
		return []rawRecord{{data: bytes.TrimRight(t.buf, "\r\n"), end: t.readOff}}, nil
	}
	t.m.rotations.WithLabelValues("new_file").Inc()
	t.log.Info("the server writes another log file; moving to it", zap.String("from", t.name), zap.String("to", next.name))
	t.closeFile()
	if err := t.openAt(filepath.Join(t.dir, next.name), 0); err != nil {
		return nil, err
	}
	if t.id != next.id {
		// Renamed since the listing: the file is the one of that identity.
		if name, ok := t.findID(next.id); ok {
			t.closeFile()
			if err := t.openAt(filepath.Join(t.dir, name), 0); err != nil {
				return nil, err
			}
		}
	}
	t.forgetBefore()
	return t.next(limit)
}

// commit moves the position past the records of the last next.
func (t *tailer) commit() {
	if !t.handedAny {
		return
	}
	if len(t.orphans) > 0 {
		t.orphans = nil
		t.committedTail = t.committedTail[:0]
	} else {
		t.committedTail = lastBytes(t.committedTail, t.buf[:t.handed])
		t.buf = t.buf[t.handed:]
	}
	t.offset = t.handedEnd
	t.handed, t.handedAny = 0, false
	t.dirty = true
}

// rewind makes the records of the last next be returned again.
func (t *tailer) rewind() { t.handed, t.handedAny = 0, false }

// records frames the complete records of buf past what was handed out.
func (t *tailer) records(limit int) []rawRecord {
	var recs []rawRecord
	for t.handed < len(t.buf) && t.handed < limit {
		rest := t.buf[t.handed:]
		n := t.frame(rest)
		if n == 0 {
			if len(rest) > maxRecord {
				// Not a record the source will ever read whole: skip what is there.
				t.m.malformed.WithLabelValues(originFile).Inc()
				t.handed = len(t.buf)
				t.handedEnd, t.handedAny = t.readOff, true
				t.log.Warn("skipped a log record over 32 MiB", zap.String("file", t.name))
			}
			break
		}
		t.handed += n
		t.handedEnd = t.offset + int64(t.handed)
		t.handedAny = true
		recs = append(recs, rawRecord{data: bytes.TrimRight(rest[:n], "\r\n"), end: t.handedEnd})
	}
	return recs
}

// read appends up to readChunk bytes of the file to buf.
func (t *tailer) read() (int, error) {
	if len(t.buf)+readChunk > cap(t.buf) {
		nb := make([]byte, len(t.buf), len(t.buf)+readChunk+readChunk/2)
		copy(nb, t.buf)
		t.buf = nb
	}
	n, err := t.f.ReadAt(t.buf[len(t.buf):len(t.buf)+readChunk], t.readOff)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("read %s: %w", t.name, err)
	}
	if n == 0 {
		return 0, nil
	}
	t.buf = t.buf[:len(t.buf)+n]
	t.readOff += int64(n)
	t.tail = lastBytes(t.tail, t.buf[len(t.buf)-n:])
	t.m.bytes.Add(float64(n))
	if fi, err := t.f.Stat(); err == nil {
		t.m.lag.Set(float64(max(0, fi.Size()-t.readOff)))
	}
	return n, nil
}

func lastBytes(prev, next []byte) []byte {
	if len(next) >= checkLen {
		return append(prev[:0], next[len(next)-checkLen:]...)
	}
	joined := append(prev, next...)
	return append(prev[:0], joined[max(0, len(joined)-checkLen):]...)
}

// checkTruncated notices a copy-truncate: the file is shorter than what was read, or
// the bytes before the read position are no longer those read (truncated and written
// again past it). Reading then starts again at 0, after what the copy, when it is in
// the directory, holds past the position.
func (t *tailer) checkTruncated() error {
	fi, err := t.f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", t.name, err)
	}
	truncated := fi.Size() < t.readOff
	if !truncated && len(t.tail) > 0 {
		got := make([]byte, len(t.tail))
		if _, err := t.f.ReadAt(got, t.readOff-int64(len(t.tail))); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read %s: %w", t.name, err)
		}
		truncated = !bytes.Equal(got, t.tail)
	}
	if !truncated {
		return nil
	}
	t.m.rotations.WithLabelValues("truncated").Inc()
	rest := t.copyAfter(t.readOff, hashOf(t.tail))
	t.log.Info("log file truncated (copy-truncate); reading it again from its start",
		zap.String("file", t.name), zap.Int64("offset", t.readOff), zap.Int("bytes_from_copy", len(rest)))
	t.restartWith(append(t.buf, rest...))
	return nil
}

// restartWith reads the current file again from its start, after the records of
// pending (what was read of it, or of its copy, past the position).
func (t *tailer) restartWith(pending []byte) {
	for len(pending) > 0 {
		n := t.frame(pending)
		if n == 0 {
			n = len(pending) // a last line without its newline
		}
		t.orphans = append(t.orphans, bytes.TrimRight(pending[:n], "\r\n"))
		pending = pending[n:]
	}
	t.buf, t.tail, t.committedTail = nil, nil, nil
	t.offset, t.readOff = 0, 0
	t.dirty = true
}

// copyAfter returns what a copy of the current file, made just before it was
// truncated, holds past offset: the copy is a file of the directory, of any name, whose
// bytes before offset hash to check.
func (t *tailer) copyAfter(offset int64, check string) []byte {
	entries, err := os.ReadDir(t.dir)
	if err != nil || check == "" {
		return nil
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil || idOf(fi) == t.id || fi.Size() < offset {
			continue
		}
		f, err := os.Open(filepath.Join(t.dir, e.Name()))
		if err != nil {
			continue
		}
		if checkAt(f, offset) == check {
			rest := make([]byte, fi.Size()-offset)
			n, _ := f.ReadAt(rest, offset)
			f.Close()
			return rest[:n]
		}
		f.Close()
	}
	return nil
}

// candidate is a log file of the directory.
type candidate struct {
	name string
	id   fileID
	mod  time.Time
	size int64
}

// forgetBefore forgets the files met that are older than the current one: read, or
// never to be read.
func (t *tailer) forgetBefore() {
	delete(t.seen, t.id)
	fi, err := t.f.Stat()
	if err != nil {
		return
	}
	for id, c := range t.seen {
		if !c.after(fi.ModTime(), t.name) {
			delete(t.seen, id)
		}
	}
}

func (c candidate) after(mod time.Time, name string) bool {
	return c.mod.After(mod) || c.mod.Equal(mod) && c.name > name
}

// scanEvery is how often the directory is listed while a file is read, to meet new
// files before anything renames them.
const scanEvery = 200 * time.Millisecond

// candidates lists the directory's files of the format, and those met before under
// another name (seen), oldest first (by modification time, then name: the order in
// which the server writes them, whatever log_filename is).
func (t *tailer) candidates() ([]candidate, error) {
	entries, err := os.ReadDir(t.dir)
	if err != nil {
		return nil, fmt.Errorf("list log directory: %w", err)
	}
	t.lastScan = time.Now()
	if t.seen == nil {
		t.seen = map[fileID]candidate{}
	}
	present := map[fileID]bool{}
	var cs []candidate
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		c := candidate{name: e.Name(), id: idOf(fi), mod: fi.ModTime(), size: fi.Size()}
		_, known := t.seen[c.id]
		if !strings.HasSuffix(e.Name(), t.suffix) && !known {
			continue
		}
		present[c.id] = true
		if c.id != t.id {
			t.seen[c.id] = c
		}
		cs = append(cs, c)
	}
	for id := range t.seen {
		if !present[id] {
			delete(t.seen, id) // deleted
		}
	}
	slices.SortFunc(cs, func(a, b candidate) int {
		if c := a.mod.Compare(b.mod); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	return cs, nil
}

// nextFile returns the file the server wrote after the current one; its name is ""
// when there is none.
func (t *tailer) nextFile() (candidate, error) {
	fi, err := t.f.Stat()
	if err != nil {
		return candidate{}, fmt.Errorf("stat %s: %w", t.name, err)
	}
	cs, err := t.candidates()
	if err != nil {
		return candidate{}, err
	}
	for _, c := range cs {
		if c.id != t.id && c.after(fi.ModTime(), t.name) {
			return c, nil
		}
	}
	return candidate{}, nil
}

// open opens the first file: the saved one at its position, or when it is gone the
// first written after it, or (first start, nothing saved) the newest one at its end:
// what the server logged before the detector first started is not evidence. A file
// that appears later is read from its start.
func (t *tailer) open() error {
	cs, err := t.candidates()
	if err != nil {
		return err
	}
	first := !t.started
	t.started = true
	if p := t.resume; p != nil {
		t.resume = nil
		if name, ok := t.findID(fileID{p.Dev, p.Ino}); ok {
			if err := t.openAt(filepath.Join(t.dir, name), 0); err != nil {
				return err
			}
			if t.matches(p.Offset, p.Check) {
				t.seek(p.Offset)
				t.log.Info("resuming the log at the saved position", zap.String("file", name), zap.Int64("offset", p.Offset))
				return nil
			}
			t.m.rotations.WithLabelValues("truncated").Inc()
			rest := t.copyAfter(p.Offset, p.Check)
			t.log.Warn("the saved log file was truncated or replaced since; reading it from its start",
				zap.String("file", name), zap.Int("bytes_from_copy", len(rest)))
			t.restartWith(rest)
			return nil
		}
		t.m.rotations.WithLabelValues("gone").Inc()
		for _, c := range cs {
			if c.after(p.ModTime, p.Name) {
				t.log.Warn("the saved log file is gone; reading the files written after it", zap.String("saved", p.Name), zap.String("file", c.name))
				return t.openAt(filepath.Join(t.dir, c.name), 0)
			}
		}
		t.log.Warn("the saved log file is gone, and no file was written after it", zap.String("saved", p.Name))
		return nil
	}
	if len(cs) == 0 {
		if !t.noFileLogged {
			t.log.Info("no log file in the directory yet", zap.String("directory", t.dir), zap.String("suffix", t.suffix))
			t.noFileLogged = true
		}
		return nil
	}
	newest := cs[len(cs)-1]
	if !first {
		return t.openAt(filepath.Join(t.dir, cs[0].name), 0)
	}
	if err := t.openAt(filepath.Join(t.dir, newest.name), 0); err != nil {
		return err
	}
	t.forgetBefore()
	end, err := t.recordBoundaryBefore(newest.size)
	if err != nil {
		return err
	}
	t.seek(end)
	t.dirty = true
	t.log.Info("starting at the end of the newest log file", zap.String("file", newest.name), zap.Int64("offset", end))
	return nil
}

// findID returns the name of the directory's file (of any name: a rename rotation
// may have given it another) whose identity is id.
func (t *tailer) findID(id fileID) (string, bool) {
	entries, err := os.ReadDir(t.dir)
	if err != nil {
		return "", false
	}
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && e.Type().IsRegular() && idOf(fi) == id {
			return e.Name(), true
		}
	}
	return "", false
}

func (t *tailer) openAt(path string, offset int64) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat log file: %w", err)
	}
	t.f, t.id, t.name = f, idOf(fi), filepath.Base(path)
	t.seek(offset)
	t.dirty = true
	return nil
}

// seek sets every position to offset, the bytes before it included.
func (t *tailer) seek(offset int64) {
	t.offset, t.readOff, t.buf, t.tail, t.committedTail = offset, offset, t.buf[:0], nil, nil
	if offset > 0 {
		b := make([]byte, min(offset, checkLen))
		if n, _ := t.f.ReadAt(b, offset-int64(len(b))); n == len(b) {
			t.tail, t.committedTail = b, slices.Clone(b)
		}
	}
}

// recordBoundaryBefore returns the end of the last complete line before size.
func (t *tailer) recordBoundaryBefore(size int64) (int64, error) {
	const step = 64 << 10
	b := make([]byte, step)
	for end := size; end > 0; {
		start := max(0, end-step)
		n, err := t.f.ReadAt(b[:end-start], start)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("read %s: %w", t.name, err)
		}
		if i := bytes.LastIndexByte(b[:n], '\n'); i >= 0 {
			return start + int64(i) + 1, nil
		}
		end = start
	}
	return 0, nil
}

// matches reports whether the bytes before offset hash to check.
func (t *tailer) matches(offset int64, check string) bool {
	fi, err := t.f.Stat()
	if err != nil || fi.Size() < offset {
		return false
	}
	return checkAt(t.f, offset) == check
}

// checkAt is the check of the bytes of f before offset.
func checkAt(f *os.File, offset int64) string {
	if offset == 0 {
		return ""
	}
	b := make([]byte, min(offset, checkLen))
	if n, _ := f.ReadAt(b, offset-int64(len(b))); n != len(b) {
		return "unreadable"
	}
	return hashOf(b)
}

func hashOf(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:16])
}

// save writes the committed position to the state file, when it moved.
func (t *tailer) save(now time.Time) error {
	if t.statePath == "" || !t.dirty || t.f == nil {
		return nil
	}
	// The check is of the bytes as read, not as the file holds them now: a truncation
	// not noticed yet must not be saved as the position's truth.
	p := &position{Dev: t.id.Dev, Ino: t.id.Ino, Name: t.name, Offset: t.offset, Check: hashOf(t.committedTail)}
	if fi, err := t.f.Stat(); err == nil {
		p.ModTime = fi.ModTime()
	}
	b, err := json.Marshal(stateFile{Directory: t.dir, Format: t.format, File: p})
	if err != nil {
		return fmt.Errorf("save log position: %w", err)
	}
	if err := atomicfile.Write(t.statePath, b); err != nil {
		return fmt.Errorf("save log position: %w", err)
	}
	t.dirty, t.lastSaved = false, now
	return nil
}

func (t *tailer) closeFile() {
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
	t.buf, t.tail, t.orphans = t.buf[:0], nil, nil
}
