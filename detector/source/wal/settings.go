package wal

import (
	"context"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/canary"
	"github.com/pgtripwire/pgtripwire/detector/source"
)

// Definition is the WAL source, for the registry.
var Definition = source.Definition{Name: Name, Scope: source.PrimaryDatabases, Settings: func() source.Settings {
	return &Settings{Enabled: Auto, Slot: "pgtripwire", Publication: "pgtripwire", StatusInterval: 10 * time.Second}
}}

// Switch is the value of sources.wal.enabled.
type Switch string

// Values of Switch.
const (
	// Auto streams when the slot and the publication exist (`pgtripwire setup` creates
	// them) and is off, with one warning and a `doctor` line, otherwise.
	Auto Switch = "auto"
	// On streams, creating the slot and the publication when they are missing.
	On Switch = "true"
	// Off never streams.
	Off Switch = "false"
)

// Settings is the sources.wal section.
type Settings struct {
	// Enabled (sources.wal.enabled) is auto, true or false. Default auto: the source
	// runs when `pgtripwire setup` created its slot and publication, and is off with a
	// warning otherwise. true also creates them when missing (a permanent slot retains
	// WAL while the detector is down: an operator opts in); false never runs it.
	Enabled Switch `yaml:"enabled"`
	// Slot (sources.wal.slot) and Publication (sources.wal.publication) name the
	// logical replication slot and the publication of the sensitive tables; never
	// dropped. Default "pgtripwire". Lower-case letters, digits and underscores, at
	// most 63.
	Slot        string `yaml:"slot"`
	Publication string `yaml:"publication"`
	// StatusInterval (sources.wal.status_interval) is the longest time between two
	// standby status updates (which confirm the slot's position). Default 10s, from
	// 100ms to 30s; keep it well below the server's wal_sender_timeout.
	StatusInterval time.Duration `yaml:"status_interval"`
}

// On reports whether the source may run: true and auto (which Run decides).
func (s *Settings) On() bool { return s.Enabled != Off }

// Insisted reports enabled: true: the operator wants the stream wherever the detector
// watches a primary, and a place where it cannot run is a configuration error.
func (s *Settings) Insisted() bool { return s.Enabled == On }

// Replication returns the slot and the publication the source streams from.
func (s *Settings) Replication() (slot, publication string, ok bool) {
	return s.Slot, s.Publication, s.On()
}

// Check reports an unknown enabled value, invalid names and a status interval out of
// range.
func (s *Settings) Check(c source.Checker) {
	switch s.Enabled {
	case Auto, On, Off:
	default:
		c.Errorf("enabled", "%q is not one of true, false or auto", string(s.Enabled))
	}
	// The publication is held to the slot's rule, so that it needs no quoting either.
	for _, n := range []struct{ key, name string }{{"slot", s.Slot}, {"publication", s.Publication}} {
		if !slotNameRE.MatchString(n.name) {
			c.Errorf(n.key, "%q is not a valid name: use lower-case letters, digits and underscores, at most 63", n.name)
		}
	}
	if d := s.StatusInterval; d < source.MinInterval || d > 30*time.Second {
		c.Errorf("status_interval", "%s is outside 100ms to 30s; the server drops a replication connection silent for wal_sender_timeout (default 60s)", d)
	}
}

// Build returns the source as a Runner, with the classifier of canary visits: the
// statement a canary message reports is classified against a catalog snapshot, which
// needs an ordinary connection (the stream's cannot query) and is kept by the
// classifier beside the stream (withVisits).
func (s *Settings) Build(env source.Env) (source.Part, error) {
	visits := canary.NewClassifier(canary.ClassifierConfig{
		Conn:       env.Conn,
		Sensitive:  env.Sensitive,
		SearchPath: env.SearchPath,
		Refresh:    env.CatalogRefresh,
		Logger:     env.Logger.Named(Name),
	})
	return source.Part{Runner: withVisits{visits: visits, Source: New(Config{
		Conn:           &env.Conn.Config,
		Slot:           s.Slot,
		Publication:    s.Publication,
		Tables:         env.Sensitive,
		Now:            env.Now,
		StateDir:       env.StateDir,
		Messages:       pgtripwireMessages(env.Logger, visits),
		StatusInterval: s.StatusInterval,
		Auto:           s.Enabled == Auto,
		Metrics:        env.Metrics,
		OwnStreams:     env.OwnStreams,
		Guard:          env.ReplayGuards,
	}, env.Sink, env.Health, env.Logger, env.Registerer)}}, nil
}

// withVisits runs the source and the classifier of its canary messages, which stops
// when the source does (in auto mode, without a slot, it does at once). The classifier
// connects only once a canary message arrives.
type withVisits struct {
	*Source
	visits *canary.Classifier
}

func (w withVisits) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = w.visits.Run(ctx) // returns ctx's error: the source's is the one that counts
	}()
	defer func() {
		cancel()
		<-done
	}()
	return w.Source.Run(ctx)
}

// SettingsOf returns the WAL source's settings in set (its defaults when set does not
// hold it), for the tools that prepare and check what the source needs.
func SettingsOf(set source.Set) *Settings {
	if w, ok := source.Lookup[*Settings](set, Name); ok {
		return w
	}
	return Definition.Settings().(*Settings)
}
