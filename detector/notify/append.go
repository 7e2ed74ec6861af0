package notify

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pgtripwire/pgtripwire/model"
)

// AppendAlertLines appends the alerts' lines to the alert log at path, creating it and
// its directory when missing, and syncs the file before it returns. It is for a process
// other than the detector — `pgtripwire respond` — to record into the alert log of a
// detector that may be running and writing to the same file.
//
// All lines go in one write to a file opened with O_APPEND: Linux positions each such
// write at the file's end atomically, so the lines land together, never interleaved
// with the detector's (which also writes each batch with one write). A file whose last
// line was torn by a crash is first ended with a newline, in the same write, so the
// torn line does not swallow the first new one. On error nothing is cut back: unlike
// the detector's AlertLog this function holds no lock on the file, and truncating could
// remove a line the detector wrote meanwhile.
func AppendAlertLines(path string, alerts ...model.Alert) error {
	if len(alerts) == 0 {
		return nil
	}
	var lines []byte
	for _, a := range alerts {
		line, err := json.Marshal(a)
		if err != nil {
			return fmt.Errorf("append to the alert log: encode alert %s: %w", a.Fingerprint, err)
		}
		lines = append(append(lines, line...), '\n')
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("append to the alert log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("append to the alert log: %w", err)
	}
	if torn, err := endsTorn(f); err != nil {
		f.Close()
		return fmt.Errorf("append to the alert log %s: %w", path, err)
	} else if torn {
		lines = append([]byte{'\n'}, lines...)
	}
	_, err = f.Write(lines)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("append to the alert log: %w", err)
	}
	return nil
}

// endsTorn reports whether f is a non-empty regular file whose last byte is not a
// newline.
func endsTorn(f *os.File) (bool, error) {
	info, err := f.Stat()
	if err != nil {
		return false, err
	}
	if info.Size() == 0 || !info.Mode().IsRegular() {
		return false, nil
	}
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, info.Size()-1); err != nil {
		return false, err
	}
	return last[0] != '\n', nil
}
