package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesTheWholeFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "state.json")
	for _, want := range []string{`{"a":1,"long":"xxxxxxxxxxxxxxxx"}`, `{"b":2}`} {
		if err := Write(path, []byte(want)); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("got %d files in the directory, want only state.json (no temporary file left)", len(entries))
	}
}

func TestWriteFailureKeepsTheOldContent(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root writes into read-only directories")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if err := Write(path, []byte("old")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
	if err := Write(path, []byte("new")); err == nil {
		t.Fatal("got nil writing into a read-only directory, want an error")
	}
	if got, _ := os.ReadFile(path); string(got) != "old" {
		t.Errorf("got %q after a failed write, want the old content", got)
	}
}

func TestWriteReportsAMissingDirectoryAsAnError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// A path below a regular file: the directory cannot be created.
	if err := Write(filepath.Join(file, "state.json"), []byte("x")); err == nil {
		t.Fatal("got nil, want an error")
	}
}

func TestCheckedFilesFallBackToTheirPreviousGeneration(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.json")
	read := func() (string, Generation, error, error) {
		data, gen, damage, err := ReadChecked(path)
		return string(data), gen, damage, err
	}
	if _, _, _, err := read(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("no file yet: got %v, want fs.ErrNotExist", err)
	}
	for _, v := range []string{`{"v":1}`, `{"v":2}`} {
		if err := WriteChecked(path, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if got, gen, damage, err := read(); err != nil || got != `{"v":2}` || gen != Current || damage != nil {
		t.Fatalf("got %q %v %v %v, want the current generation", got, gen, damage, err)
	}

	for _, tc := range []struct {
		name   string
		damage func()
	}{
		{"truncated", func() { _ = os.Truncate(path, 20) }},
		{"emptied", func() { _ = os.Truncate(path, 0) }},
		{"a byte changed", func() {
			b, _ := os.ReadFile(path)
			b[len(b)-2] ^= 0xff
			_ = os.WriteFile(path, b, 0o600)
		}},
		{"removed", func() { _ = os.Remove(path) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := WriteChecked(path, []byte(`{"v":3}`)); err != nil { // .prev now holds v2
				t.Fatal(err)
			}
			tc.damage()
			got, gen, damage, err := read()
			if err != nil || got != `{"v":2}` || gen != Previous || damage == nil {
				t.Fatalf("got %q %v damage %v err %v, want the previous generation v2 and the damage said", got, gen, damage, err)
			}
		})
	}

	// Both damaged: the state is lost, and said so.
	_ = os.WriteFile(path, []byte("garbage"), 0o600)
	_ = os.WriteFile(path+PrevSuffix, nil, 0o600)
	if _, _, _, err := read(); !errors.Is(err, ErrNoGoodGeneration) {
		t.Fatalf("both damaged: got %v, want ErrNoGoodGeneration", err)
	}

	// A file written before seals existed is read as it is, for its reader to check.
	_ = os.WriteFile(path, []byte(`{"legacy":true}`), 0o600)
	if got, gen, _, err := read(); err != nil || gen != Unsealed || got != `{"legacy":true}` {
		t.Fatalf("legacy file: got %q %v %v", got, gen, err)
	}
}
