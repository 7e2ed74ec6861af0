package pgserver

import (
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// process is one run of the postmaster. done is closed once it has exited
// and been reaped; waitErr is valid after that.
type process struct {
	cmd     *exec.Cmd
	pid     int
	done    chan struct{}
	waitErr error
}

// startProcess starts cmd so that the kernel sends SIGQUIT (PostgreSQL's
// immediate shutdown) to it if this process dies, however it dies: a test
// binary killed by a timeout or by SIGKILL must not leave a cluster behind.
//
// Pdeathsig is tied to the OS thread that forked the child, not to the
// process (prctl(2) PR_SET_PDEATHSIG: "the parent" is the creating thread).
// The Go runtime terminates a thread when a goroutine exits while locked to
// it, and any goroutine — ours or a library's — could end up on the thread we
// forked from and do that, killing the server in the middle of a test. So the
// child is started from a goroutine that locks itself to its thread and stays
// there, blocked in Wait, until the child has exited. The goroutine returns
// still locked; the runtime then discards the thread, which nothing else uses.
func startProcess(cmd *exec.Cmd) (*process, error) {
	p := &process{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.pid = cmd.Process.Pid
		started <- nil
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig. Errors are ignored on purpose: the only possible ones
// say the process has already exited, and every caller waits on done next.
func (p *process) signal(sig syscall.Signal) {
	_ = p.cmd.Process.Signal(sig)
}

// How long each shutdown mode gets before the next, harsher one. A fast
// shutdown of an idle test cluster takes well under a second; it stalls only
// when a walsender waits for a client that stopped reading.
const (
	fastShutdownTimeout      = 20 * time.Second
	immediateShutdownTimeout = 10 * time.Second
)

// stop shuts the postmaster down with SIGINT (fast shutdown: roll back open
// transactions, checkpoint), escalating to SIGQUIT (immediate: no
// checkpoint, crash recovery on next start) when ctx ends or the fast
// shutdown takes longer than fastShutdownTimeout, and to SIGKILL after that.
// It returns once the process has exited; escalated reports whether the fast
// shutdown had to be cut short.
func (p *process) stop(ctx context.Context) (escalated bool) {
	p.signal(syscall.SIGINT)
	timer := time.NewTimer(fastShutdownTimeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return false
	case <-ctx.Done():
	case <-timer.C:
	}
	p.kill()
	return true
}

// kill shuts the postmaster down immediately (SIGQUIT), then with SIGKILL if
// it has not exited after immediateShutdownTimeout, and waits for it. The
// postmaster itself waits for its backends to exit before it does, so once
// it is reaped no server process is left.
func (p *process) kill() {
	p.signal(syscall.SIGQUIT)
	timer := time.NewTimer(immediateShutdownTimeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return
	case <-timer.C:
	}
	// SIGKILL on the postmaster orphans its backends; they notice the
	// postmaster is gone and exit on their own.
	p.signal(syscall.SIGKILL)
	<-p.done
}

// exitDescription says how the process ended, for error messages.
func (p *process) exitDescription() string {
	if p.waitErr == nil {
		return "exit status 0"
	}
	return fmt.Sprint(p.waitErr)
}
