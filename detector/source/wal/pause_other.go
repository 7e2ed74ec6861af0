//go:build !unix

package wal

import "time"

// pauseThread does not pause where there is no nanosleep: Go's timers would wait a
// millisecond or more, long enough for the walsender to fill the socket and wait.
func pauseThread(time.Duration) {}
