package notify

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/pgtripwire/pgtripwire/internal/atomicfile"
)

// journal keeps a set of records by key (the Alertmanager active set by fingerprint,
// the spool's entries by sequence number) durable at a cost per change that does not
// grow with the set: a sealed snapshot (path, written by atomicfile.WriteChecked with
// its previous generation) and a journal beside it (path + ".journal") to which each
// change is appended as one JSON line. Opening reads the snapshot and replays the
// journal; a torn tail (a crash mid-append) is cut. When the journal has grown past the
// set by compactAfter records, the set is written as a new snapshot and the journal
// emptied.
//
// Rewriting and syncing the whole set at every transition cost 16.9 s of CPU for 1,000
// alerts firing at once, growing with the square of the set; one file per spooled
// transition cost an open, two syncs and a rename each.
type journal[T any] struct {
	path    string
	what    string // what the set is, for errors
	file    *os.File
	size    int64 // bytes of good records in the journal
	records int   // journal records since the snapshot
}

// journalRecord is one change: the record's new value, or its removal when Value is nil.
type journalRecord[T any] struct {
	Key   string `json:"k"`
	Value *T     `json:"v,omitempty"`
}

// compactAfter is how many journal records, beyond the set's size, trigger a snapshot.
const compactAfter = 1000

// openJournal loads the set kept at path and opens its journal for appending. A
// snapshot damaged beyond its previous generation, or a journal damaged before its end,
// is reported through lost (the set keeps what could be read); unreadable files are
// errors. what names the set
// in errors ("Alertmanager active alerts").
func openJournal[T any](path, what string) (j *journal[T], set map[string]*T, lost error, err error) {
	set = make(map[string]*T)
	data, gen, _, err := atomicfile.ReadChecked(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case errors.Is(err, atomicfile.ErrNoGoodGeneration):
		lost = err
	case err != nil:
		return nil, nil, nil, fmt.Errorf("read %s: %w", what, err)
	default:
		if uerr := json.Unmarshal(data, &set); uerr != nil {
			if gen != atomicfile.Unsealed {
				return nil, nil, nil, fmt.Errorf("read %s: sealed but not decodable: %w", what, uerr)
			}
			lost = fmt.Errorf("%s: %w", path, uerr) // a damaged file of the previous format
			set = make(map[string]*T)
		}
	}
	j = &journal[T]{path: path, what: what}
	damaged, err := j.replay(set)
	if err != nil {
		return nil, nil, nil, err
	}
	lost = errors.Join(lost, damaged)
	j.file, err = os.OpenFile(path+".journal", os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("open %s journal: %w", what, err)
	}
	// Cut a torn tail, or the records appended after it would never be replayed.
	if err := j.file.Truncate(j.size); err != nil {
		j.file.Close()
		return nil, nil, nil, fmt.Errorf("cut the torn tail of the %s journal: %w", what, err)
	}
	return j, set, lost, nil
}

// replay applies the journal's records to set, in order, up to its first bad line. A
// bad last line is the tear of a crash mid-append, never acknowledged; a bad line with
// records after it is damage, and what follows it is lost: damaged says so.
func (j *journal[T]) replay(set map[string]*T) (damaged, err error) {
	data, err := os.ReadFile(j.path + ".journal")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s journal: %w", j.what, err)
	}
	for len(data) > 0 {
		line, rest, complete := bytes.Cut(data, []byte("\n"))
		var r journalRecord[T]
		if !complete || json.Unmarshal(line, &r) != nil || r.Key == "" {
			if complete && len(bytes.TrimSpace(rest)) > 0 {
				return fmt.Errorf("%s.journal damaged at byte %d: the %d bytes after it are ignored",
					j.path, j.size, len(data)), nil
			}
			break // torn by a crash: never acknowledged
		}
		if r.Value == nil {
			delete(set, r.Key)
		} else {
			set[r.Key] = r.Value
		}
		j.records++
		j.size += int64(len(line)) + 1
		data = rest
	}
	return nil, nil
}

// append records the current values in set of keys (absent: removed) and, when sync,
// makes them durable before returning; then compacts when the journal has grown past
// the set. On error the journal is cut back to what it held: none of keys is
// recorded, and a retry records each once.
func (j *journal[T]) append(set map[string]*T, sync bool, keys ...string) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, k := range keys {
		if err := enc.Encode(journalRecord[T]{Key: k, Value: set[k]}); err != nil {
			return fmt.Errorf("encode %s: %w", j.what, err)
		}
	}
	_, err := j.file.Write(b.Bytes())
	if err == nil && sync {
		err = j.file.Sync()
	}
	if err != nil {
		_ = j.file.Truncate(j.size) // best effort: on a full disk it frees what the write took
		return fmt.Errorf("append to the %s journal: %w", j.what, err)
	}
	j.size += int64(b.Len())
	j.records += len(keys)
	if j.records > len(set)+compactAfter {
		return j.compact(set)
	}
	return nil
}

// compact writes the set as a new snapshot and empties the journal. A crash between the
// two leaves a snapshot and a journal whose records it already holds: replaying them
// again gives the same set.
func (j *journal[T]) compact(set map[string]*T) error {
	data, err := json.Marshal(set)
	if err != nil {
		return fmt.Errorf("encode %s: %w", j.what, err)
	}
	if err := atomicfile.WriteChecked(j.path, data); err != nil {
		return fmt.Errorf("save %s: %w", j.what, err)
	}
	if err := j.file.Truncate(0); err != nil {
		return fmt.Errorf("empty the %s journal: %w", j.what, err)
	}
	j.size, j.records = 0, 0
	return nil
}

// close closes the journal's file.
func (j *journal[T]) close() error { return j.file.Close() }
