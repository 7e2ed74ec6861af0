package activity

import (
	"time"

	"github.com/pgtripwire/pgtripwire/detector/source"
)

// Definition is the activity source, for the registry.
var Definition = source.Definition{Name: Name, Settings: func() source.Settings {
	return &Settings{Enabled: true, Interval: time.Second, MinRunning: 2 * time.Second}
}}

// CopyDefinition is the COPY source (sources.copy: enabled, default true; interval,
// default 1s), for the registry.
var CopyDefinition = source.Definition{Name: CopyName, Settings: func() source.Settings {
	return &source.PollSettings{Enabled: true, Interval: time.Second, Connection: Connection,
		New: func(env source.Env, interval time.Duration) (source.Poller, error) {
			cfg := config(env)
			cfg.Interval = interval
			return NewCopy(cfg, env.Sink, env.Logger), nil
		}}
}}

// Settings is the sources.activity section.
type Settings struct {
	// Enabled (sources.activity.enabled) turns the source on. Default true.
	Enabled bool `yaml:"enabled"`
	// Interval (sources.activity.interval) is the time between two samples. Default
	// 1s, minimum 100ms.
	Interval time.Duration `yaml:"interval"`
	// MinRunning (sources.activity.min_running) is how long a statement reading
	// sensitive columns must have run before it is reported. Default 2s; 0 reports
	// every one sampled.
	MinRunning time.Duration `yaml:"min_running"`
}

// On reports whether the source runs.
func (s *Settings) On() bool { return s.Enabled }

// Check reports an interval below the minimum and a negative min_running.
func (s *Settings) Check(c source.Checker) {
	source.CheckInterval(c, "interval", s.Interval)
	if s.MinRunning < 0 {
		c.Errorf("min_running", "%s is negative; it is how long a sensitive read must have run before it is reported (0: at once)", s.MinRunning)
	}
}

// Build returns the activity sampler, on the connection it shares with the COPY sampler.
func (s *Settings) Build(env source.Env) (source.Part, error) {
	cfg := config(env)
	cfg.MinRunning = s.MinRunning
	cfg.Interval = s.Interval
	cfg.Attribution = env.Attribution
	cfg.Readers = env.Readers
	return source.Part{Poller: NewActivity(cfg, env.Sink, env.Logger, env.Registerer), Interval: s.Interval,
		Connection: Connection}, nil
}

func config(env source.Env) Config {
	return Config{CatalogRefresh: env.CatalogRefresh, SearchPath: env.SearchPath, Sensitive: env.Sensitive, Now: env.Now,
		Server: env.Server}
}
