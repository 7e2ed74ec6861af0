package evidence

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStoreKeepsTheNewestWithinItsBounds(t *testing.T) {
	dir := t.TempDir()
	s := NewStore(dir, 24*time.Hour, 3)
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	fps := []string{"000000000000000a", "000000000000000b", "000000000000000c", "000000000000000d", "000000000000000e"}
	for i, fp := range fps {
		if err := s.Save(&Evidence{Fingerprint: fp, Rule: "R"}); err != nil {
			t.Fatal(err)
		}
		// a is two days old: expired; b..e are i hours old, newest last.
		age := time.Duration(len(fps)-i) * time.Hour
		if i == 0 {
			age = 48 * time.Hour
		}
		if err := os.Chtimes(s.Path(fp), now.Add(-age), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	// A temporary file a crash left behind, and a file that is not evidence.
	if err := os.WriteFile(filepath.Join(dir, ".000000000000000f.json.123.tmp"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	removed, err := s.Prune(now)
	if err != nil {
		t.Fatal(err)
	}
	if removed != 2 {
		t.Errorf("removed %d, want 2 (the expired one and the oldest beyond 3)", removed)
	}
	for fp, want := range map[string]bool{fps[0]: false, fps[1]: false, fps[2]: true, fps[3]: true, fps[4]: true} {
		_, err := s.Load(fp)
		if got := err == nil; got != want {
			t.Errorf("%s kept: got %v (%v), want %v", fp, got, err, want)
		}
		if !want && !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: got %v, want ErrNotFound", fp, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "README")); err != nil {
		t.Errorf("a file that is not evidence was removed: %v", err)
	}
}

func TestStoreRefusesWhatIsNotAFingerprint(t *testing.T) {
	s := NewStore(t.TempDir(), time.Hour, 10)
	for _, fp := range []string{"", "../../etc/passwd", "0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0"} {
		if _, err := s.Load(fp); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Load(%q): got %v, want a refusal", fp, err)
		}
		if err := s.Save(&Evidence{Fingerprint: fp}); err == nil {
			t.Errorf("Save(%q): got nil, want a refusal", fp)
		}
	}
}

func TestStoreNamesADamagedFile(t *testing.T) {
	s := NewStore(t.TempDir(), time.Hour, 10)
	const fp = "0123456789abcdef"
	if err := os.WriteFile(s.Path(fp), []byte(`{"fingerprint": "01`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(fp); err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), s.Path(fp)) {
		t.Errorf("got %v, want an error naming %s", err, s.Path(fp))
	}
}
