// Package faultfs gives tests a small filesystem that fills up for real: a tmpfs of a
// chosen size, mounted in a temporary directory, so that a write gets ENOSPC from the
// kernel as it would on a full production disk. Mounting needs root (CI runs as root);
// elsewhere the tests that need it skip, saying why.
//
// It is a test kit: production code never imports it.
package faultfs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Tmpfs mounts a tmpfs of size bytes (rounded up to pages) on a new temporary directory
// and returns it; the mount is removed when the test ends. The directory is writable
// by everyone, as /tmp is, for processes the test starts as other users. It skips the
// test when the process cannot mount (not root, no mount(8)).
func Tmpfs(t testing.TB, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("faultfs: mounting a tmpfs needs root (CI runs as root)")
	}
	mount, err := exec.LookPath("mount")
	if err != nil {
		t.Skip("faultfs: no mount(8) on this machine")
	}
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mount, "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=1777", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("faultfs: cannot mount a tmpfs here (%v: %s)", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("faultfs: umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// Fill writes a file in dir until the filesystem is full and returns a function that
// removes it, freeing the space.
func Fill(t testing.TB, dir string) (free func()) {
	t.Helper()
	path := filepath.Join(dir, ".faultfs-filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	block := make([]byte, 4096)
	for {
		if _, err := f.Write(block); err != nil {
			break // ENOSPC: full
		}
	}
	// Small writes may still fit in the last partial page: fill it byte by byte.
	for {
		if _, err := f.Write(block[:1]); err != nil {
			break
		}
	}
	_ = f.Close()
	return func() {
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			t.Errorf("faultfs: free %s: %v", dir, err)
		}
	}
}
