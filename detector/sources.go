package detector

import (
	"context"
	"errors"
	"fmt"

	"github.com/pgtripwire/pgtripwire/detector/health"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/model"
)

// buildSources builds every source of set that is on, with env as the base of each
// one's Env, and returns what to run: the Runners of the sources that own their
// connections, and one polling loop per connection (pollers sharing a Connection share
// one). Each source's health component is registered, and the sources that observe the
// others' events (source.Observer) are shown every batch env.Sink accepts.
func buildSources(set source.Set, env source.Env, h *health.Status) ([]source.Runner, error) {
	on := 0
	for _, c := range set.All() {
		if c.Settings.On() {
			on++
			if r, ok := c.Settings.(source.Replicator); ok {
				if slot, publication, ok := r.Replication(); ok {
					env.Replication = source.Replication{Slot: slot, Publication: publication}
				}
			}
		}
	}
	if on == 0 {
		return nil, &ConfigError{Err: errors.New("sources: every source is disabled; the detector would watch nothing")}
	}
	sink := &observing{next: env.Sink}
	env.Sink = sink
	var runners []source.Runner
	shared := map[string]*source.Loop{}
	for _, c := range set.All() {
		if !c.Settings.On() {
			continue
		}
		e := env
		e.Name = c.Name
		part, err := c.Settings.Build(e)
		if err == nil {
			err = part.Validate(c.Name)
		}
		if err != nil {
			return nil, fmt.Errorf("build source %s: %w", c.Name, err)
		}
		h.Register(c.Name)
		for _, p := range []any{part.Runner, part.Poller} {
			if o, ok := p.(source.Observer); ok {
				sink.observers = append(sink.observers, o)
			}
		}
		if part.Runner != nil {
			runners = append(runners, part.Runner)
			continue
		}
		polled := source.Polled{Name: c.Name, Poller: part.Poller, Interval: part.Interval}
		if l := shared[part.Connection]; l != nil && part.Connection != "" {
			l.Pollers = append(l.Pollers, polled)
			continue
		}
		conn := part.Conn
		if conn == nil {
			conn = env.Conn
		}
		l := &source.Loop{Conn: conn, Pollers: []source.Polled{polled}, Health: env.Health, Metrics: env.Metrics,
			Logger: env.Logger}
		if part.Connection != "" {
			shared[part.Connection] = l
		}
		runners = append(runners, l)
	}
	return runners, nil
}

// observing hands events to the pipeline, then shows them to the sources that learn
// from the others' observations. It keeps WaitWritten visible: the WAL source must
// see it, or it would confirm positions whose alerts are not yet written.
type observing struct {
	next      source.Sink
	observers []source.Observer
}

func (o *observing) HandleEvents(ctx context.Context, events []model.Event) error {
	if err := o.next.HandleEvents(ctx, events); err != nil {
		return err
	}
	for _, obs := range o.observers {
		obs.Observe(events)
	}
	return nil
}

func (o *observing) WaitWritten(ctx context.Context) error {
	if w, ok := o.next.(source.WrittenWaiter); ok {
		return w.WaitWritten(ctx)
	}
	return nil
}
