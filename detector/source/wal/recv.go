package wal

import (
	"bufio"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// The walsender sends each pgoutput message as soon as it is decoded: one send per row
// change. A receiver that keeps up is woken for nearly every one and reads it alone:
// a read, a poll and a wake-up per change, on both sides of the socket (the walsender
// pays for waking the receiver). Once decoding was cheap, those system calls were most
// of the source's CPU time, and on a machine the detector shares with PostgreSQL that
// time is taken from the walsender. So the replication connection reads in large
// chunks and, after a read that found little waiting, lets the stream gather for a
// moment before reading again.
const (
	// recvBufferSize bounds one read: a few hundred row changes.
	recvBufferSize = 64 << 10
	// coalesceBelow is the read size under which the next read waits coalesceDelay
	// first: a few dozen changes, the receiver is clearly ahead. A larger read means
	// it is behind, or about even: no waiting.
	coalesceBelow = 4 << 10
	// coalesceDelay is that wait. It bounds the latency it adds to a change (far
	// below the seconds an alert may take) and is short enough that the socket buffer
	// does not fill meanwhile at any rate a walsender reaches, so the walsender never
	// waits for the receiver's pause, even when the receiver's wake-up is late on a
	// loaded machine: at 200,000 changes a second, 100 µs is 20 changes, a tenth of
	// what a Unix socket's default buffer takes. Go's timers cannot wait less than
	// about a millisecond (too long: the buffer would fill), hence pauseThread.
	coalesceDelay = 100 * time.Microsecond
)

// coalescingReader is the connection's reader as the constants above describe. A read
// that fails (a deadline, a closed connection) does not make the next one wait, and an
// idle stream waits once after its last data, then blocks in the poller as usual.
type coalescingReader struct {
	r     io.Reader
	pause func(time.Duration) // pauseThread; a parameter for the tests
	short bool                // the last read returned data, less than coalesceBelow
}

func (c *coalescingReader) Read(p []byte) (int, error) {
	if c.short {
		c.short = false
		c.pause(coalesceDelay)
	}
	n, err := c.r.Read(p)
	c.short = err == nil && n > 0 && n < coalesceBelow
	return n, err
}

// bufferedFrontend wraps build (a pgconn.Config's BuildFrontend; nil means pgproto3's)
// so that the frontend reads through a recvBufferSize buffer filled by a
// coalescingReader.
func bufferedFrontend(build pgconn.BuildFrontendFunc) pgconn.BuildFrontendFunc {
	if build == nil {
		build = pgproto3.NewFrontend
	}
	return func(r io.Reader, w io.Writer) *pgproto3.Frontend {
		return build(bufio.NewReaderSize(&coalescingReader{r: r, pause: pauseThread}, recvBufferSize), w)
	}
}
