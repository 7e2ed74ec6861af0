package evidence

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/pgtripwire/pgtripwire/internal/atomicfile"
)

// Dir is the evidence directory under the state directory.
const Dir = "evidence"

// ErrNotFound is returned by Load for a fingerprint with no evidence: none was captured,
// or it expired.
var ErrNotFound = errors.New("no evidence for this fingerprint (never captured, or expired)")

// fingerprintRE is the form of model.Fingerprint: it is also what keeps a path out of
// the file name.
var fingerprintRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// CheckFingerprint reports whether fp has the form of an alert fingerprint.
func CheckFingerprint(fp string) error {
	if !fingerprintRE.MatchString(fp) {
		return fmt.Errorf("%q is not an alert fingerprint (16 lower-case hex digits, the alert line's \"fingerprint\")", fp)
	}
	return nil
}

// Store keeps one evidence file per alert fingerprint, the newest episode's, in a
// directory: at most Max files, none older than Retain. It is safe for one writer and
// any number of readers (files are replaced whole).
type Store struct {
	dir    string
	retain time.Duration
	max    int
}

// NewStore returns the store in dir, keeping at most max files for at most retain.
func NewStore(dir string, retain time.Duration, max int) *Store {
	return &Store{dir: dir, retain: retain, max: max}
}

// Path is the file of fp's evidence.
func (s *Store) Path(fp string) string { return filepath.Join(s.dir, fp+".json") }

// Save writes e, replacing the evidence of an earlier episode of the same alert.
func (s *Store) Save(e *Evidence) error {
	if err := CheckFingerprint(e.Fingerprint); err != nil {
		return fmt.Errorf("save evidence: %w", err)
	}
	data, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return fmt.Errorf("save evidence %s: %w", e.Fingerprint, err)
	}
	if err := atomicfile.Write(s.Path(e.Fingerprint), append(data, '\n')); err != nil {
		return fmt.Errorf("save evidence: %w", err)
	}
	return nil
}

// Load reads fp's evidence. It returns ErrNotFound when there is none, and an error
// naming the file when it cannot be read or decoded.
func (s *Store) Load(fp string) (*Evidence, error) {
	if err := CheckFingerprint(fp); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(s.Path(fp))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read evidence: %w", err)
	}
	var e Evidence
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("read evidence %s: %w", s.Path(fp), err)
	}
	if e.Fingerprint != fp {
		return nil, fmt.Errorf("read evidence %s: it holds the evidence of %q", s.Path(fp), e.Fingerprint)
	}
	return &e, nil
}

// Prune removes the files older than Retain and, beyond Max, the oldest; it also
// removes temporary files a crash left behind. It returns how many evidence files it
// removed.
func (s *Store) Prune(now time.Time) (int, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("prune evidence: %w", err)
	}
	type file struct {
		name string
		mod  time.Time
	}
	var files []file
	var errs []error
	removed := 0
	for _, en := range entries {
		name := en.Name()
		info, err := en.Info()
		if err != nil {
			continue // removed meanwhile
		}
		switch {
		case strings.HasPrefix(name, ".") && strings.HasSuffix(name, ".tmp"):
			if now.Sub(info.ModTime()) > time.Minute {
				_ = os.Remove(filepath.Join(s.dir, name))
			}
		case strings.HasSuffix(name, ".json") && fingerprintRE.MatchString(strings.TrimSuffix(name, ".json")):
			files = append(files, file{name, info.ModTime()})
		}
	}
	slices.SortFunc(files, func(a, b file) int { return b.mod.Compare(a.mod) }) // newest first
	for i, f := range files {
		if i < s.max && now.Sub(f.mod) <= s.retain {
			continue
		}
		if err := os.Remove(filepath.Join(s.dir, f.name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		removed++
	}
	if len(errs) > 0 {
		return removed, fmt.Errorf("prune evidence: %w", errors.Join(errs...))
	}
	return removed, nil
}

// Handler serves the evidence of the fingerprint in the request's path value
// "fingerprint" as JSON, or as text with ?format=text: 400 for what is not a
// fingerprint, 404 when there is no evidence.
func Handler(s *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e, err := s.Load(r.PathValue("fingerprint"))
		switch {
		case errors.Is(err, ErrNotFound):
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		case err != nil && CheckFingerprint(r.PathValue("fingerprint")) != nil:
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		case err != nil:
			http.Error(w, "evidence unreadable: "+err.Error(), http.StatusInternalServerError)
			return
		}
		if r.URL.Query().Get("format") == "text" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_ = WriteText(w, e)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(e)
	})
}
