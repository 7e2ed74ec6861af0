package pgserver

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"
)

const (
	// dirPrefix names every cluster's temporary directory, so leftovers can
	// be found again.
	dirPrefix = "pgtripwire-pg-"
	// ownerFile holds the pid of the process that made the directory.
	ownerFile = "owner.pid"
	// ownerlessGrace protects a directory that another process has just
	// created and not yet written its owner file into.
	ownerlessGrace = time.Minute
)

// removeStaleDirs deletes cluster directories under root that were left by
// processes that died without cleaning up (a test binary killed by a timeout,
// a panic, SIGKILL). `go test ./...` runs packages in parallel, each with its
// own cluster, so a directory is only removed when both its owner and its
// postmaster are dead: a live owner means another test binary is using it,
// and a live postmaster means a server is still running from it (we never
// kill a process we did not start). Errors are logged, not returned: a
// leftover directory must not stop a new cluster from starting.
func removeStaleDirs(root string, log *zap.Logger) {
	dirs, err := filepath.Glob(filepath.Join(root, dirPrefix+"*"))
	if err != nil {
		return // only ErrBadPattern, and the pattern is constant
	}
	for _, dir := range dirs {
		if !isStale(dir) {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			log.Warn("cannot remove stale cluster directory", zap.String("dir", dir), zap.Error(err))
			continue
		}
		log.Info("removed stale cluster directory", zap.String("dir", dir))
	}
}

func isStale(dir string) bool {
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() {
		return false
	}
	owner, err := readPid(filepath.Join(dir, ownerFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		if time.Since(fi.ModTime()) < ownerlessGrace {
			return false
		}
	case err != nil:
		return false // unreadable or garbled: not ours to judge
	case processAlive(owner):
		return false
	}
	// postmaster.pid's first line is the postmaster's pid. A missing file
	// means the server shut down cleanly (or never started).
	postmaster, err := readPid(filepath.Join(dir, "data", "postmaster.pid"))
	if err == nil && processAlive(postmaster) {
		return false
	}
	return true
}

// readPid reads the decimal pid on the first line of path.
func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	pid, err := strconv.Atoi(string(bytes.TrimSpace(line)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s: no pid on the first line", path)
	}
	return pid, nil
}

// processAlive reports whether pid names a running process. A zombie counts
// as dead: a postmaster orphaned by its owner's death is reparented to pid 1,
// which in a container often never reaps it.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false // ESRCH
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // no /proc: trust kill(2)
	}
	// The state follows the parenthesised command name, which may itself
	// contain spaces and parentheses.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}
