//go:build unix

package wal

import (
	"syscall"
	"time"
)

// pauseThread blocks the calling thread for about d with nanosleep, which, unlike
// Go's timers, keeps to tens of microseconds. Go hands the thread's processor to
// other goroutines while it sleeps, as for any blocking system call.
func pauseThread(d time.Duration) {
	ts := syscall.NsecToTimespec(d.Nanoseconds())
	_ = syscall.Nanosleep(&ts, nil) // interrupted early: the next read comes sooner, no harm
}
