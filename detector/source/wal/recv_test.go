package wal

import (
	"errors"
	"io"
	"os"
	"slices"
	"testing"
	"time"
)

// chunks is a reader that returns its chunks one per read, then its error.
type chunks struct {
	sizes []int
	err   error
}

func (c *chunks) Read(p []byte) (int, error) {
	if len(c.sizes) == 0 {
		return 0, c.err
	}
	n := min(c.sizes[0], len(p))
	c.sizes = c.sizes[1:]
	return n, nil
}

// TestCoalescingReaderPausesOnlyAfterShortReads: the pause that lets a trickling stream
// gather must come after a read that brought little, and never after a large read (the
// receiver is behind: pausing would slow it down), a failed one (a deadline or a
// closed connection must be seen at once) or on an idle stream.
func TestCoalescingReaderPausesOnlyAfterShortReads(t *testing.T) {
	for _, tc := range []struct {
		name       string
		sizes      []int
		err        error
		wantPauses []int // the reads (0-based) that came after a pause
	}{
		{"short reads pause the next read", []int{100, 200, 300}, io.EOF, []int{1, 2, 3}},
		{"large reads do not", []int{coalesceBelow, recvBufferSize, coalesceBelow}, io.EOF, nil},
		{"a large read after a short one", []int{100, recvBufferSize, 100}, io.EOF, []int{1, 3}},
		{"a failed read does not", nil, os.ErrDeadlineExceeded, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var pauses []int
			reads := 0
			c := &coalescingReader{r: &chunks{sizes: tc.sizes, err: tc.err}, pause: func(d time.Duration) {
				if d != coalesceDelay {
					t.Errorf("paused %v, want %v", d, coalesceDelay)
				}
				pauses = append(pauses, reads)
			}}
			buf := make([]byte, recvBufferSize)
			for range len(tc.sizes) + 2 {
				_, err := c.Read(buf)
				reads++
				if err != nil && !errors.Is(err, tc.err) {
					t.Fatalf("read: %v", err)
				}
			}
			if !slices.Equal(pauses, tc.wantPauses) {
				t.Errorf("paused before reads %v, want %v", pauses, tc.wantPauses)
			}
		})
	}
}

// BenchmarkPauseThread reports how long pauseThread(coalesceDelay) really takes: it
// must stay well below a millisecond, or the walsender could fill the socket meanwhile
// (Go's timers cannot do that, hence nanosleep). A figure, not a test: on a loaded
// machine a wake-up can be late.
func BenchmarkPauseThread(b *testing.B) {
	for b.Loop() {
		pauseThread(coalesceDelay)
	}
}
