// Package atomicfile writes a file so that a crash at any moment leaves either its old
// content or its new content, never a torn mix: the detector's durable state (the WAL
// replay guard, the rule engine's state, the delivery spool) is written through it.
//
// It is not a database: it replaces a whole file at a time, and it does not lock
// against other writers of the same path.
package atomicfile

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Write replaces path with data durably: it writes a temporary file in path's directory
// (created with mode 0750 when missing), fsyncs it, renames it over path and fsyncs the
// directory, so that once Write returns nil the new content survives a crash. Every
// failure is returned, the directory sync's included (without it the rename may not be
// durable); on failure the temporary file is removed and path keeps its old content.
// The file is created with mode 0640.
func Write(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(0o640); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: sync: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := SyncDir(dir); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// SyncDir fsyncs a directory, making the renames and removals done in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	serr := d.Sync()
	cerr := d.Close()
	if err := errors.Join(serr, cerr); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// Checked state files: Write alone guarantees that a crash leaves the old or the new
// content, but not that the content is good — a disk that lied about a sync, an
// operator's truncation, a bug that wrote garbage. WriteChecked seals the content with
// its length and SHA-256 and keeps the previous good generation beside it
// (path + ".prev"); ReadChecked verifies the seal and falls back to that generation,
// saying so, so that a damaged file is never taken for an empty state nor trusted.

// sealPrefix starts the seal line of a checked file.
const sealPrefix = "pgtripwire-state v1 "

// PrevSuffix names a checked file's previous generation.
const PrevSuffix = ".prev"

// ErrNoGoodGeneration is returned (wrapped) by ReadChecked when neither the file nor its
// previous generation is good: the state is lost, and the caller must say so.
var ErrNoGoodGeneration = errors.New("no good generation of the state file")

// WriteChecked replaces path with data sealed by its length and checksum, after moving
// the current file, when it is good, to path+PrevSuffix. Durable as Write.
func WriteChecked(path string, data []byte) error {
	if cur, err := os.ReadFile(path); err == nil {
		if _, err := unseal(cur); err == nil {
			if err := Write(path+PrevSuffix, cur); err != nil {
				return err
			}
		}
	}
	sum := sha256.Sum256(data)
	sealed := make([]byte, 0, len(data)+128)
	sealed = fmt.Appendf(sealed, "%slen=%d sha256=%s\n", sealPrefix, len(data), hex.EncodeToString(sum[:]))
	sealed = append(sealed, data...)
	return Write(path, sealed)
}

// Generation says where ReadChecked found good content.
type Generation int

// Generations.
const (
	// Current: the file itself.
	Current Generation = iota
	// Previous: the file was damaged (Damage says how); its previous generation was
	// good. What changed since that generation is lost.
	Previous
	// Unsealed: a file written before seals existed (by Write); its content is
	// returned as it is, for the caller to validate by decoding it.
	Unsealed
)

// ReadChecked returns the good content of a checked file and where it came from. When
// the file is damaged it returns the previous generation (Previous) and damage says
// what was wrong with the current one. When neither exists it returns an error for
// which errors.Is(err, fs.ErrNotExist) holds; when none is good, one wrapping
// ErrNoGoodGeneration that says what is wrong with each. A file that exists but
// cannot be read (permissions, I/O) is that error, not damage: an operator can fix it.
func ReadChecked(path string) (data []byte, gen Generation, damage error, err error) {
	cur, cerr := os.ReadFile(path)
	if cerr != nil && !errors.Is(cerr, fs.ErrNotExist) {
		// Permissions, I/O: not damage. Falling back would hide what an operator can fix.
		return nil, Current, nil, cerr
	}
	if cerr == nil {
		if !bytes.HasPrefix(cur, []byte(sealPrefix)) && len(cur) > 0 && cur[0] == '{' {
			// A file of before seals, or a sealed one torn or overwritten by hand: a
			// good sealed previous generation says it is the latter.
			if prev, err := os.ReadFile(path + PrevSuffix); err == nil {
				if data, uerr := unseal(prev); uerr == nil {
					return data, Previous, errors.New("no seal: damaged or written by something else"), nil
				}
			}
			return cur, Unsealed, nil, nil
		}
		if data, uerr := unseal(cur); uerr == nil {
			return data, Current, nil, nil
		} else {
			cerr = uerr
		}
	}
	prev, perr := os.ReadFile(path + PrevSuffix)
	if perr != nil && !errors.Is(perr, fs.ErrNotExist) {
		return nil, Current, nil, perr
	}
	if perr == nil {
		if data, uerr := unseal(prev); uerr == nil {
			if errors.Is(cerr, fs.ErrNotExist) {
				cerr = errors.New("missing")
			}
			return data, Previous, cerr, nil
		} else {
			perr = uerr
		}
	}
	if errors.Is(cerr, fs.ErrNotExist) && errors.Is(perr, fs.ErrNotExist) {
		return nil, Current, nil, cerr
	}
	// Not wrapped: a missing current file must not make the whole say fs.ErrNotExist.
	return nil, Current, nil, fmt.Errorf("%w: %s: %s; %s: %s", ErrNoGoodGeneration, path, cerr.Error(), path+PrevSuffix, perr.Error())
}

// unseal verifies a sealed file and returns its content.
func unseal(b []byte) ([]byte, error) {
	line, rest, ok := bytes.Cut(b, []byte("\n"))
	if !ok || !bytes.HasPrefix(line, []byte(sealPrefix)) {
		if len(b) == 0 {
			return nil, errors.New("empty")
		}
		return nil, errors.New("no seal: damaged or not a state file")
	}
	var n int
	var sum string
	if _, err := fmt.Sscanf(string(line[len(sealPrefix):]), "len=%d sha256=%s", &n, &sum); err != nil {
		return nil, fmt.Errorf("unreadable seal: %w", err)
	}
	if n != len(rest) {
		return nil, fmt.Errorf("truncated or extended: %d bytes, the seal says %d", len(rest), n)
	}
	got := sha256.Sum256(rest)
	if hex.EncodeToString(got[:]) != sum {
		return nil, errors.New("checksum mismatch: the content changed after it was written")
	}
	return rest, nil
}
