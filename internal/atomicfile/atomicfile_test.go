package atomicfile

import (
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
