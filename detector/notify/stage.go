package notify

import (
	"context"
	"errors"
	"time"

	"github.com/pgtripwire/pgtripwire/model"
)

// Transition is one alert transition (firing or resolved) on its way to the sinks.
type Transition struct {
	// Alert is the transition as the alert line has it.
	Alert model.Alert `json:"alert"`
	// StartsAt is when the alert of this transition started firing (for a resolution,
	// its firing's time). The caller leaves it zero; the Alertmanager stage fixes it
	// before the transition is spooled, so that a late delivery still says which firing
	// it resolves after the alert has fired again.
	StartsAt time.Time `json:"starts_at,omitzero"`
}

// Sink is one place transitions go: the alert log, one Alertmanager, one webhook. A
// sink takes one transition at a time, in the order given; what happens when it fails
// — kept in memory and retried, kept in the spool and retried with backoff — is the
// business of the stages in front of it.
type Sink interface {
	// Name identifies the sink in logs, metrics and the spool ("alert_log",
	// "alertmanager:HOST[:PORT][/PATH]", "webhook:NAME"); it never changes.
	Name() string
	// Send returns nil once the sink has the transition: written and synced, or
	// acknowledged by the receiver. An error means it may not have it. A receiver's
	// refusal of this transition's content (HTTP 400, 413, 422) is an error that no
	// retry changes; every other error may pass.
	Send(ctx context.Context, t Transition) error
}

// A Stage processes transitions on their way to the sinks, as Alertmanager's notify
// stages do. Exec returns nil once the stage has done its part — a sink has the
// transitions, the spool holds them, or a queue has taken them in memory — together
// with the transitions for the next stage, which a stage may amend. An error means it
// did not take them all: the caller may give the same transitions again, so a stage
// must bear a repeat of those it had taken.
//
// Unlike Alertmanager's, Exec takes no logger (each stage is built with its own named
// *zap.Logger) and returns no context: no stage passes values down the chain through
// it, and what one stage adds for a later one must survive in the spool, so it travels
// in the Transition.
type Stage interface {
	Exec(ctx context.Context, ts ...Transition) ([]Transition, error)
}

// StageFunc adapts a function to a Stage.
type StageFunc func(ctx context.Context, ts ...Transition) ([]Transition, error)

// Exec calls f.
func (f StageFunc) Exec(ctx context.Context, ts ...Transition) ([]Transition, error) {
	return f(ctx, ts...)
}

// MultiStage runs its stages in sequence, each on what the previous one returned. It
// stops at the first error, returning it, or when no transition is left.
type MultiStage []Stage

// Exec implements Stage.
func (ms MultiStage) Exec(ctx context.Context, ts ...Transition) ([]Transition, error) {
	var err error
	for _, s := range ms {
		if len(ts) == 0 {
			return nil, nil
		}
		if ts, err = s.Exec(ctx, ts...); err != nil {
			return nil, err
		}
	}
	return ts, nil
}

// Fanout gives the same transitions to each of its stages, whatever the others
// return, and returns them with every stage's error joined.
//
// Unlike Alertmanager's FanoutStage it runs its stages one after the other, not
// concurrently: each one here returns after at most a file sync, and the order is
// part of the contract — the alert log is written before the spool, so that a
// transition being spooled when the process dies is at least in the alert log.
type Fanout []Stage

// Exec implements Stage.
func (fs Fanout) Exec(ctx context.Context, ts ...Transition) ([]Transition, error) {
	var errs []error
	for _, s := range fs {
		if _, err := s.Exec(ctx, ts...); err != nil {
			errs = append(errs, err)
		}
	}
	return ts, errors.Join(errs...)
}

// Direct is the stage that sends each transition to s before it returns: the alert
// log, whose line must be on disk by then. It stops at the first failure, when the
// transitions before it have been sent: put it behind a queue, which hands over one
// transition at a time, so that a retry repeats none.
func Direct(s Sink) Stage {
	return StageFunc(func(ctx context.Context, ts ...Transition) ([]Transition, error) {
		for _, t := range ts {
			if err := s.Send(ctx, t); err != nil {
				return nil, err // the sink's errors say what failed
			}
		}
		return ts, nil
	})
}
