package detector

import (
	"context"
	"fmt"
	"slices"

	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/model"
)

// registrar is where a built source's health component is registered.
type registrar interface {
	source.Health
	Register(component string)
}

// buildSources builds every source of set that is on and of one of scopes, with env
// (whose Health is h) as the base of each one's Env, and returns what to run: the
// Runners of the sources that own their connections, and one polling loop per
// connection (pollers sharing a Connection share one). When connection is not "",
// every poller shares that one connection instead of the one it names: a database of
// a server watched with many (the connection budget of docs/deployment.md). Each
// source's health component is registered, and the sources that observe the others'
// events (source.Observer) are shown every batch env.Sink (an *observing) accepts.
// skip names sources not to build here, with why, for the log.
func buildSources(set source.Set, env source.Env, h registrar, scopes []source.Scope, connection string,
	skip func(c source.Configured) bool) ([]source.Runner, error) {
	env.Health = h
	for _, c := range set.All() {
		// Only where the streaming source runs are its slot and publication ours: the
		// catalog watch of a standby, or of a server whose WAL source is skipped, must
		// page on a slot of that name like on any other.
		if c.Settings.On() && slices.Contains(scopes, c.Scope) && !skip(c) {
			if r, ok := c.Settings.(source.Replicator); ok {
				if slot, publication, ok := r.Replication(); ok && !skip(c) {
					env.Replication = source.Replication{Slot: slot, Publication: publication}
				}
			}
		}
	}
	sink, _ := env.Sink.(*observing)
	var runners []source.Runner
	shared := map[string]*source.Loop{}
	for _, c := range set.All() {
		if !c.Settings.On() || !slices.Contains(scopes, c.Scope) || skip(c) {
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
			if o, ok := p.(source.Observer); ok && sink != nil {
				sink.observers = append(sink.observers, o)
			}
		}
		if part.Runner != nil {
			runners = append(runners, part.Runner)
			continue
		}
		polled := source.Polled{Name: c.Name, Poller: part.Poller, Interval: part.Interval}
		if connection != "" {
			part.Connection = connection
		}
		if l := shared[part.Connection]; l != nil && part.Connection != "" {
			l.Pollers = append(l.Pollers, polled)
			continue
		}
		conn := part.Conn
		if conn == nil {
			conn = env.Conn
		}
		l := &source.Loop{Conn: conn, Pollers: []source.Polled{polled}, Health: h, Metrics: env.Metrics,
			Logger: env.Logger, Aligned: connection != ""}
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
