package pgserver

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// serverUserCandidates are the accounts tried, in order, when the harness runs
// as root. PostgreSQL refuses to start as root (and CI runs as root), so the
// server must run as someone else; "postgres" is what the Debian packages
// create, "nobody" exists nearly everywhere.
var serverUserCandidates = []string{"postgres", "nobody"}

// runAs is the identity initdb and postgres run under. A nil *runAs means
// "as this process", which is the case whenever we are not root.
type runAs struct {
	name string
	uid  uint32
	gid  uint32
}

// serverIdentity decides who runs the server. It returns nil when the current
// process may run PostgreSQL itself.
func serverIdentity() (*runAs, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var tried []string
	for _, name := range serverUserCandidates {
		u, err := user.Lookup(name)
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			tried = append(tried, fmt.Sprintf("%s: unusable uid %q gid %q", name, u.Uid, u.Gid))
			continue
		}
		return &runAs{name: name, uid: uint32(uid), gid: uint32(gid)}, nil
	}
	return nil, fmt.Errorf("choose an unprivileged user to run PostgreSQL as (it refuses to run as root): %v", tried)
}

// credential is what exec.Cmd needs to drop to the identity. Groups is empty
// rather than nil so that supplementary groups are cleared: otherwise the
// child would keep root's groups.
func (r *runAs) credential() *syscall.Credential {
	if r == nil {
		return nil
	}
	return &syscall.Credential{Uid: r.uid, Gid: r.gid, Groups: []uint32{}}
}

// chownTree hands every file under root to the identity. A nil identity means
// the files are already ours.
func (r *runAs) chownTree(root string) error {
	if r == nil {
		return nil
	}
	return filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(path, int(r.uid), int(r.gid)); err != nil {
			return fmt.Errorf("hand %s to user %s: %w", path, r.name, err)
		}
		return nil
	})
}

// checkTraversable reports, before initdb fails with a less helpful message,
// whether the identity can reach dir: each ancestor must grant it search (x)
// permission. The usual culprits are TMPDIR, or a checkout holding the
// project's own server builds, under /root; fix says what to do about it.
func (r *runAs) checkTraversable(dir, fix string) error {
	if r == nil {
		return nil
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("check access to %s: %w", p, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if ok {
			mode := fi.Mode().Perm()
			var bit fs.FileMode
			switch {
			case st.Uid == r.uid:
				bit = 0o100
			case st.Gid == r.gid:
				bit = 0o010
			default:
				bit = 0o001
			}
			if mode&bit == 0 {
				return fmt.Errorf("PostgreSQL runs as user %s, which cannot enter %s (mode %v): %s",
					r.name, p, mode, fix)
			}
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}
