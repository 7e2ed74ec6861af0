package log

import (
	"net"
	"path/filepath"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/source"
)

// Name is the source's name: its configuration section (sources.log), health
// component, metrics label and the source of its events.
const Name = "log"

// Formats of sources.log.format.
const (
	FormatJSON = "jsonlog"
	FormatCSV  = "csvlog"
)

// Definition is the log source, for the registry.
var Definition = source.Definition{Name: Name, Scope: source.PrimaryServer, Settings: func() source.Settings {
	return &Settings{Format: FormatJSON}
}}

// Settings is the sources.log section. Its keys are a contract: enabled, directory,
// format, syslog.listen.
type Settings struct {
	// Enabled (sources.log.enabled) turns the source on. Default false: it needs the
	// server's log files, or a syslog feed.
	Enabled bool `yaml:"enabled"`
	// Directory (sources.log.directory) is the server's log_directory as the detector
	// sees it (the same host, a shared volume, a sidecar): the source tails the newest
	// file of Format in it, following rotation. "" reads no files (syslog only).
	Directory string `yaml:"directory"`
	// Format (sources.log.format) is jsonlog (default; PostgreSQL 15+) or csvlog:
	// which files of Directory are read (*.json, *.csv), and how a forwarded syslog
	// line in that format is read.
	Format string `yaml:"format"`
	// Syslog is the sources.log.syslog section.
	Syslog SyslogSettings `yaml:"syslog"`
}

// SyslogSettings is the sources.log.syslog section.
type SyslogSettings struct {
	// Listen (sources.log.syslog.listen) is the address ("127.0.0.1:5514") on which
	// the source receives RFC 5424 syslog over UDP and TCP (octet-counted or newline
	// framing); "" receives none. Syslog has no authentication: bind it to loopback
	// or a private network.
	Listen string `yaml:"listen"`
}

// On reports whether the source runs.
func (s *Settings) On() bool { return s.Enabled }

// Check reports an unknown format, a relative directory, an address that is not
// host:port, and a source with nothing to read.
func (s *Settings) Check(c source.Checker) {
	switch s.Format {
	case FormatJSON, FormatCSV:
	default:
		c.Errorf("format", "%q is not jsonlog or csvlog", s.Format)
	}
	if s.Directory != "" && !filepath.IsAbs(s.Directory) {
		c.Errorf("directory", "%q is not an absolute path: name the server's log_directory as the detector sees it", s.Directory)
	}
	if s.Syslog.Listen != "" {
		if _, _, err := net.SplitHostPort(s.Syslog.Listen); err != nil {
			c.Errorf("syslog.listen", "%q is not host:port: %v", s.Syslog.Listen, err)
		}
	}
	if s.Enabled && s.Directory == "" && s.Syslog.Listen == "" {
		c.Errorf("enabled", "the log source has nothing to read: set sources.log.directory, sources.log.syslog.listen, or both")
	}
}

// Build returns the source as a Runner.
func (s *Settings) Build(env source.Env) (source.Part, error) {
	return source.Part{Runner: New(Config{
		Directory:      s.Directory,
		Format:         s.Format,
		SyslogListen:   s.Syslog.Listen,
		Conn:           env.Conn,
		Sensitive:      env.Sensitive,
		SearchPath:     env.SearchPath,
		CatalogRefresh: env.CatalogRefresh,
		StateDir:       env.StateDir,
		Now:            env.Now,
		Metrics:        env.Metrics,
	}, env.Sink, env.Health, env.Logger, env.Registerer)}, nil
}

// defaultPoll is how often the directory is looked at when the last read found nothing.
const defaultPoll = 250 * time.Millisecond
