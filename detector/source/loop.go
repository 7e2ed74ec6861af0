package source

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/backoff"
)

// Poller is a source that reads the server over one ordinary connection, which a Loop
// owns: the Loop connects, calls Start once per connection, then Poll every interval,
// and on any error reports it, closes the connection, waits a backoff and starts again.
type Poller interface {
	// Start prepares a new connection before its first Poll (reads what the session
	// needs, such as the current database); state that must survive reconnects stays.
	Start(ctx context.Context, conn *pgx.Conn) error
	// Poll reads once and hands its events over. An error ends the connection.
	Poll(ctx context.Context, conn *pgx.Conn) error
}

// BlindSpotter is implemented by a Poller whose polls can succeed while it cannot see
// everything (pg_stat_statements hiding other roles' entries): after each successful
// poll its health is BlindSpot(), which an on-call engineer must know about, rather than
// healthy.
type BlindSpotter interface {
	BlindSpot() error
}

// Flusher is implemented by a Poller that keeps state on disk between polls: the Loop
// calls Flush when it stops, from the polling goroutine, to write it now.
type Flusher interface {
	Flush()
}

// Polled is one Poller of a Loop.
type Polled struct {
	// Name is the source's name: its health component, metrics label and log name.
	Name     string
	Poller   Poller
	Interval time.Duration
}

// Loop runs Pollers over one connection, each at its own interval, under a Supervisor.
// Every field but the reconnect bounds is required.
type Loop struct {
	Conn    *pgx.ConnConfig
	Pollers []Polled
	Health  Health
	Metrics *Metrics
	Logger  *zap.Logger

	ReconnectInitial, ReconnectMax time.Duration
	// Aligned starts the polls on multiples of the shortest interval of the wall
	// clock, so that the loops of many databases poll together: on a server watched
	// with a hundred, their round trips then come in one burst a second, which costs
	// the process (and the server) less than a hundred wake-ups spread over it, and
	// the first of them reads the server's shared views for all (source.Server).
	Aligned bool

	// server is the server the last session reached, zero before the first: owned by
	// the goroutine running the sessions.
	server ServerIdentity
}

// pollTimeout bounds one poll: a poll that hangs (a partitioned network, a server that
// stopped answering) must end in an error, so that the source reports unready and
// reconnects instead of looking healthy while blind.
func pollTimeout(interval time.Duration) time.Duration { return max(10*time.Second, 5*interval) }

// closeBudget bounds the polite close of a connection at the end of a session.
const closeBudget = 2 * time.Second

// Run polls until ctx is done, reconnecting with capped, jittered exponential backoff
// whenever the connection or a poll fails. It returns ctx's error: a source never gives
// up on its own, because a database that is down now is exactly when it must come back
// by itself.
func (l *Loop) Run(ctx context.Context) error {
	if len(l.Pollers) == 0 {
		return errors.New("polling loop without pollers")
	}
	names := make([]string, len(l.Pollers))
	for i, p := range l.Pollers {
		names[i] = p.Name
		l.Metrics.Precreate(p.Name, true)
		if _, ok := p.Poller.(Rebaseliner); ok {
			l.Metrics.serverChanges.WithLabelValues(p.Name)
		}
	}
	return Supervisor{Names: names, Health: l.Health, Metrics: l.Metrics, Logger: l.Logger,
		ReconnectInitial: l.ReconnectInitial, ReconnectMax: l.ReconnectMax}.Run(ctx, l.session)
}

// session connects and polls until an error or cancellation.
func (l *Loop) session(ctx context.Context, bo *backoff.Backoff) error {
	conn, err := pgx.ConnectConfig(ctx, l.Conn.Copy())
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeBudget)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if err := l.follow(ctx, conn); err != nil {
		return err
	}

	tick := l.Pollers[0].Interval
	for _, p := range l.Pollers {
		tick = min(tick, p.Interval)
		startCtx, cancel := context.WithTimeout(ctx, pollTimeout(p.Interval))
		err := p.Poller.Start(startCtx, conn)
		cancel()
		if err != nil {
			return err
		}
	}
	// A poller is due with a little slack, so that a 1 s interval on a 1 s tick is
	// every tick rather than every other one.
	slack := tick / 10
	last := make([]time.Time, len(l.Pollers))
	if l.Aligned {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(time.Now().Truncate(tick).Add(tick))):
		}
	}
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	for {
		for i, p := range l.Pollers {
			if !last[i].IsZero() && time.Since(last[i]) < p.Interval-slack {
				continue
			}
			last[i] = time.Now()
			if err := l.poll(ctx, conn, p); err != nil {
				return err
			}
		}
		bo.Reset()
		select {
		case <-ctx.Done():
			for _, p := range l.Pollers {
				if f, ok := p.Poller.(Flusher); ok {
					f.Flush()
				}
			}
			return ctx.Err()
		case <-ticker.C:
		}
	}
}

// follow identifies the server conn reached and, when it is another than the previous
// session's (a failover behind a multi-host DSN or a moving address), has every poller
// that keeps that server's statistics start from a new baseline (Rebaseliner).
func (l *Loop) follow(ctx context.Context, conn *pgx.Conn) error {
	idCtx, cancel := context.WithTimeout(ctx, pollTimeout(l.Pollers[0].Interval))
	id, err := IdentifyServer(idCtx, conn)
	cancel()
	if err != nil {
		return err
	}
	prev := l.server
	l.server = id
	if prev.SameServer(id) {
		return nil
	}
	var rebased []string
	for _, p := range l.Pollers {
		if r, ok := p.Poller.(Rebaseliner); ok {
			r.Rebaseline()
			rebased = append(rebased, p.Name)
			l.Metrics.serverChanges.WithLabelValues(p.Name).Inc()
		}
	}
	l.Logger.Warn("another server behind the connection (failover?): its statistics are counted from a new baseline; "+
		"reads on it before the first poll, during the switch, may be missed",
		zap.Strings("sources", rebased), zap.String("from", prev.Addr), zap.String("to", id.Addr),
		zap.Int32("from_timeline", prev.Timeline), zap.Int32("to_timeline", id.Timeline),
		zap.Bool("to_standby", id.Standby), zap.Time("to_started", id.Started))
	return nil
}

func (l *Loop) poll(ctx context.Context, conn *pgx.Conn, p Polled) error {
	start := time.Now()
	pollCtx, cancel := context.WithTimeout(ctx, pollTimeout(p.Interval))
	err := p.Poller.Poll(pollCtx, conn)
	cancel()
	if err != nil {
		return err
	}
	l.Metrics.polls.WithLabelValues(p.Name).Inc()
	l.Metrics.duration.WithLabelValues(p.Name).Observe(time.Since(start).Seconds())
	var blind error
	if b, ok := p.Poller.(BlindSpotter); ok {
		blind = b.BlindSpot()
	}
	l.Health.Set(p.Name, blind)
	return nil
}

// ErrOff, returned (wrapped) by a session, says the source decided not to run (the WAL
// source in "auto" mode, whose slot does not exist): its Supervisor logs why, forgets
// its health component and returns nil, leaving the other sources running. Make such
// an error with Off.
var ErrOff = errors.New("source off")

// Off returns an error that is ErrOff and says why, with the fix.
func Off(format string, args ...any) error {
	return offError{fmt.Sprintf(format, args...)}
}

type offError struct{ why string }

func (e offError) Error() string        { return e.why }
func (e offError) Is(target error) bool { return target == ErrOff }

// Supervisor runs the sessions of a source, or of the sources sharing a Loop: when a
// session fails while ctx is live, the failure is reported to health for every name,
// counted and logged, and the next session starts after a capped, jittered backoff.
// Zero reconnect bounds mean 500 ms and 30 s.
type Supervisor struct {
	Names   []string
	Health  Health
	Metrics *Metrics
	Logger  *zap.Logger

	ReconnectInitial, ReconnectMax time.Duration
}

// Run runs session until ctx is done and returns ctx's error; sessions call bo.Reset
// once they work. A session error wrapping ErrOff ends Run with nil.
func (s Supervisor) Run(ctx context.Context, session func(ctx context.Context, bo *backoff.Backoff) error) error {
	initial, maxWait := s.ReconnectInitial, s.ReconnectMax
	if initial <= 0 {
		initial = 500 * time.Millisecond
	}
	if maxWait <= 0 {
		maxWait = 30 * time.Second
	}
	log := s.Logger.With(zap.Strings("sources", s.Names))
	bo := backoff.New(initial, maxWait)
	for {
		err := session(ctx, bo)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrOff) {
			log.Warn("source off", zap.Error(err))
			if f, ok := s.Health.(interface{ Forget(component string) }); ok {
				for _, n := range s.Names {
					f.Forget(n)
				}
			}
			return nil
		}
		for _, n := range s.Names {
			s.Health.Set(n, err)
			if s.Metrics != nil {
				s.Metrics.errors.WithLabelValues(n).Inc()
			}
		}
		log.Warn("source failed; reconnecting", zap.Error(err))
		if err := bo.Wait(ctx); err != nil {
			return err
		}
	}
}
