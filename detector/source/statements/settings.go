package statements

import (
	"time"

	"github.com/pgtripwire/pgtripwire/detector/source"
)

// Definition is the statements source (sources.statements: enabled, default true;
// interval, default 1s), for the registry.
var Definition = source.Definition{Name: Name, Settings: func() source.Settings {
	return &source.PollSettings{Enabled: true, Interval: time.Second, New: build}
}}

func build(env source.Env, interval time.Duration) (source.Poller, error) {
	return New(Config{
		CatalogRefresh: env.CatalogRefresh,
		SearchPath:     env.SearchPath,
		Sensitive:      env.Sensitive,
		Now:            env.Now,
		Attribution:    env.Attribution,
		StateDir:       env.StateDir,
		Server:         env.Server,
		Interval:       interval,
	}, env.Sink, env.Logger, env.Registerer), nil
}
