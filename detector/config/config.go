// Package config loads and validates pgtripwire's YAML configuration file.
//
// It turns a file into a *Config that the rest of the daemon can trust:
// decoding is strict (unknown keys, wrong types and duplicate keys are
// errors), absent keys get their documented defaults, the values are checked
// (schema-qualified table names, listen address, minimum intervals, a DSN that
// parses), and every problem is reported at once, each as file:line:col, so an
// operator fixes the file in one pass. See docs/config.md for the user
// reference and the field comments of [Config] for every key and default.
//
// It is not for rule files (they have their own format and loader), for
// watching or reloading the file, or for connecting to PostgreSQL: the DSN is
// parsed with pgx's own parser, never dialled.
//
// Rules that hold for every key:
//
//   - A key with no value (`stdout:` or `stdout: null`) is the same as an
//     absent key: the default applies.
//   - Relative paths (alerts.file, state_dir, including their defaults, and
//     the password, token, secret and TLS files of alert delivery) are
//     resolved against the directory of the config file, as Prometheus does,
//     so the daemon finds the same files whatever its working directory.
//     The files of alert delivery must exist and be readable when the config
//     is loaded.
//   - The environment variable PGTRIPWIRE_DSN, when set and non-empty,
//     replaces database.dsn, so that a password can stay out of the file.
//     Since it is not in the file, an error about it has no line:
//     "file: PGTRIPWIRE_DSN (replaces database.dsn): ...".
//   - A password is never printed: errors about the DSN do not quote it, and
//     [Config.RedactedDSN] is the form to log. Neither are the secrets of
//     alert delivery (basic auth passwords, bearer tokens, webhook secrets)
//     or the password of a URL; read them with [BasicAuth.PasswordValue],
//     [Alertmanager.BearerTokenValue] and [Webhook.SecretValue].
//   - The file must be UTF-8 and hold a single YAML document. Anchors and
//     aliases work; merge keys (<<) are rejected rather than half-supported.
package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"time"
)

// EnvDSN is the environment variable that, when set and non-empty, replaces
// database.dsn.
const EnvDSN = "PGTRIPWIRE_DSN"

// Defaults and limits, in one place so that Defaults, validation and the
// documentation cannot drift apart.
const (
	defaultCatalogRefresh      = time.Minute
	minCatalogRefresh          = time.Second
	defaultListen              = "127.0.0.1:9473"
	defaultAlertsFile          = "./alerts.jsonl"
	defaultResolveAfter        = 5 * time.Minute
	defaultStateDir            = "./state"
	defaultStatementsInterval  = time.Second
	minStatementsInterval      = 100 * time.Millisecond
	defaultLiveInterval        = time.Second
	minLiveInterval            = 100 * time.Millisecond
	defaultTablesInterval      = time.Second
	defaultActivityMinRunning  = 2 * time.Second
	defaultBulkReadMinRowsCall = 1000
)

// Config is pgtripwire's configuration. A *Config returned by Load or Parse
// has passed every check in this package: callers need not re-validate it.
type Config struct {
	// Database (database) says how to reach PostgreSQL and how to resolve
	// names in the SQL it runs.
	Database Database `yaml:"database"`
	// Sensitive (sensitive) lists the tables and columns whose bulk reads or
	// mass changes page the on-call engineer. Required: at least one table,
	// because a detector watching nothing is a misconfiguration. A table
	// appears at most once.
	Sensitive []SensitiveTable `yaml:"sensitive"`
	// HTTP (http) is the server for /metrics, /healthz and /readyz.
	HTTP HTTP `yaml:"http"`
	// Alerts (alerts) is when alerts resolve and where their transitions go:
	// the alert log, Alertmanager, webhooks.
	Alerts Alerts `yaml:"alerts"`
	// StateDir (state_dir) is the detector's durable state directory, created
	// at start. It holds the delivery spool (state_dir/spool, see
	// alerts.spool); baselines, first-seen sets and alert state will live
	// here too. Default "./state", relative to the config file's directory.
	StateDir string `yaml:"state_dir"`
	// Sources (sources) turns the evidence sources on and off and sets how
	// often they are polled.
	Sources Sources `yaml:"sources"`
	// Rules (rules) chooses the rules the engine evaluates.
	Rules Rules `yaml:"rules"`
}

// Database is the database section.
type Database struct {
	// DSN (database.dsn) is a libpq connection string, URL
	// (postgres://user@host:5432/db) or keyword/value (host=... dbname=...).
	// Default empty: connect with the libpq PG* environment variables
	// (PGHOST, PGUSER, ...) and libpq's defaults. PGTRIPWIRE_DSN, when set
	// and non-empty, replaces it. Surrounding whitespace is ignored. A key
	// that is present but empty is an error (it is almost always a template
	// variable that was not filled in); remove it to use PG* variables.
	// Never log it: use Config.RedactedDSN.
	DSN string `yaml:"dsn"`
	// SearchPath (database.search_path) is how unqualified names in SQL are
	// resolved to schemas, as PostgreSQL's search_path setting. Default
	// ["$user", "public"]. Entries are identifiers (quote mixed-case ones:
	// '"Sales"'); they are stored as PostgreSQL stores them (unquoted names
	// folded to lower case). An explicit empty list is allowed.
	SearchPath []string `yaml:"search_path"`
	// CatalogRefresh (database.catalog_refresh) is how often the catalog
	// snapshot (tables, views, functions) is reloaded. Default 1m, minimum 1s.
	CatalogRefresh time.Duration `yaml:"catalog_refresh"`
}

// SensitiveTable is one entry of the sensitive list.
type SensitiveTable struct {
	// Table (sensitive[].table) is the schema-qualified table name, written
	// as in SQL: public.users, or with quoted identifiers for names that need
	// them: '"My Schema"."Users"'. Required. After loading it holds the
	// canonical form: unquoted identifiers folded to lower case, and each
	// part double-quoted only when it has to be, as PostgreSQL's quote_ident
	// does (keywords included): public.users, public."user", "My Schema"."Users".
	// Every source names relations this way.
	Table string `yaml:"table"`
	// Columns (sensitive[].columns) are the credential columns of Table
	// (email, username, password hash, ...). Required, non-empty, no
	// duplicates. After loading they hold the names as PostgreSQL stores them
	// in pg_attribute.attname: unquoted names folded to lower case, quotes
	// removed.
	Columns []string `yaml:"columns"`

	// Schema and Name are the two parts of Table as PostgreSQL stores them
	// (pg_namespace.nspname, pg_class.relname), for matching against the
	// catalog. Set by Load, Parse and NewSensitiveTable; not read from the
	// file.
	Schema string `yaml:"-"`
	Name   string `yaml:"-"`
}

// HTTP is the http section.
type HTTP struct {
	// Listen (http.listen) is the host:port the HTTP server listens on; the
	// port is a number from 0 to 65535 (0 picks a free port), and an empty
	// host (":9473") means every interface. Default "127.0.0.1:9473".
	Listen string `yaml:"listen"`
	// WebConfigFile (http.web_config_file) is a Prometheus web configuration
	// file (TLS, client certificates, bcrypt basic auth) protecting every
	// endpoint, read with exporter-toolkit. Default "": plain HTTP, no
	// authentication. Relative to the config file's directory.
	WebConfigFile string `yaml:"web_config_file"`
}

// Alerts is the alerts section.
type Alerts struct {
	// File (alerts.file) is the alert log: one JSON object per line, one line
	// per firing/resolved transition. Default "./alerts.jsonl", relative to
	// the config file's directory. Must not be empty.
	File string `yaml:"file"`
	// Stdout (alerts.stdout) also writes every alert line to standard output.
	// Default true.
	Stdout bool `yaml:"stdout"`
	// ResolveAfter (alerts.resolve_after) is how long an alert's condition
	// must stay quiet before the alert resolves. Default 5m; must be
	// positive.
	ResolveAfter time.Duration `yaml:"resolve_after"`
	// Alertmanager (alerts.alertmanager) sends every transition to
	// Prometheus Alertmanager. Off unless URLs lists at least one.
	Alertmanager Alertmanager `yaml:"alertmanager"`
	// Webhooks (alerts.webhooks) are HTTP endpoints that receive every
	// transition, signed. Default none.
	Webhooks []Webhook `yaml:"webhooks"`
	// Spool (alerts.spool) bounds the transitions kept on disk until every
	// receiver has them.
	Spool Spool `yaml:"spool"`
}

// Sources is the sources section.
type Sources struct {
	// WAL (sources.wal) is the logical replication source: committed changes to
	// the sensitive tables.
	WAL WALSource `yaml:"wal"`
	// Statements (sources.statements) polls pg_stat_statements.
	Statements StatementsSource `yaml:"statements"`
	// Activity (sources.activity) samples pg_stat_activity: sensitive reads
	// seen while they still run.
	Activity ActivitySource `yaml:"activity"`
	// Copy (sources.copy) samples pg_stat_progress_copy: COPY TO of sensitive
	// data seen before it completes.
	Copy PollSource `yaml:"copy"`
	// Tables (sources.tables) compares pg_stat_user_tables' tuples read on
	// sensitive tables with what classified statements explain.
	Tables PollSource `yaml:"tables"`
	// Catalog (sources.catalog) watches replication slots, publications, roles,
	// statistics resets and the settings the detector depends on.
	Catalog PollSource `yaml:"catalog"`
	// Canary (sources.canary) checks the honeytoken rows planted with
	// `pgtripwire canary plant`: a disabled or altered tripwire is reported.
	Canary PollSource `yaml:"canary"`
}

// PollSource is a source that polls a system view: sources.copy,
// sources.tables, sources.catalog and sources.canary.
type PollSource struct {
	// Enabled turns the source on. Default true.
	Enabled bool `yaml:"enabled"`
	// Interval is the time between two polls. Default 1s, minimum 100ms.
	Interval time.Duration `yaml:"interval"`
}

// ActivitySource is the sources.activity section.
type ActivitySource struct {
	// Enabled (sources.activity.enabled) turns the source on. Default true.
	Enabled bool `yaml:"enabled"`
	// Interval (sources.activity.interval) is the time between two samples.
	// Default 1s, minimum 100ms.
	Interval time.Duration `yaml:"interval"`
	// MinRunning (sources.activity.min_running) is how long a statement reading
	// sensitive columns must have run before it is reported. Default 2s; 0
	// reports every one sampled.
	MinRunning time.Duration `yaml:"min_running"`
}

// StatementsSource is the sources.statements section.
type StatementsSource struct {
	// Enabled (sources.statements.enabled) turns the source on. Default true.
	Enabled bool `yaml:"enabled"`
	// Interval (sources.statements.interval) is the time between two polls.
	// Default 1s, minimum 100ms.
	Interval time.Duration `yaml:"interval"`
}

// WALSource is the sources.wal section.
type WALSource struct {
	// Enabled (sources.wal.enabled) turns the source on. Default false: it
	// creates a publication and a permanent replication slot, which retains WAL
	// while the detector is down, so an operator opts in.
	Enabled bool `yaml:"enabled"`
	// Slot (sources.wal.slot) and Publication (sources.wal.publication) name the
	// logical replication slot and the publication of the sensitive tables; both
	// are created when missing and never dropped. Default "pgtripwire".
	Slot        string `yaml:"slot"`
	Publication string `yaml:"publication"`
	// StatusInterval (sources.wal.status_interval) is the longest time between two
	// standby status updates (which confirm the slot's position). Default 10s,
	// from 100ms to 30s; keep it well below the server's wal_sender_timeout.
	StatusInterval time.Duration `yaml:"status_interval"`
}

// Rules is the rules section: which rules the engine evaluates.
type Rules struct {
	// DefaultPack (rules.default_pack) evaluates the pack embedded in the
	// binary (rules/default.yml). Default true.
	DefaultPack bool `yaml:"default_pack"`
	// Files (rules.files) are rule files evaluated besides the pack: paths or
	// glob patterns, relative to the config file's directory. Each pattern
	// must match at least one file. Reloaded on SIGHUP and when a file
	// changes. Default none.
	Files []string `yaml:"files"`
	// Disable (rules.disable) names rules of the default pack not to
	// evaluate, e.g. to replace one with an edited copy in rules.files.
	// Default none.
	Disable []string `yaml:"disable"`
}

// Defaults returns a new Config holding every default, for callers that run
// without a file (the demo). Its Sensitive list is empty, which Load would
// reject: add tables with NewSensitiveTable. Its relative paths are relative
// to the working directory, since there is no config file to anchor them.
func Defaults() *Config {
	return &Config{
		Database: Database{
			SearchPath:     []string{"$user", "public"},
			CatalogRefresh: defaultCatalogRefresh,
		},
		HTTP: HTTP{Listen: defaultListen},
		Alerts: Alerts{
			File:         defaultAlertsFile,
			Stdout:       true,
			ResolveAfter: defaultResolveAfter,
			Alertmanager: Alertmanager{
				ResendInterval:    defaultResendInterval,
				ResolvedResendFor: defaultResolvedResendFor,
				Timeout:           defaultDeliveryTimeout,
			},
			Spool: Spool{MaxEntries: defaultSpoolMaxEntries},
		},
		StateDir: defaultStateDir,
		Sources: Sources{
			Statements: StatementsSource{
				Enabled:  true,
				Interval: defaultStatementsInterval,
			},
			WAL:      WALSource{Slot: "pgtripwire", Publication: "pgtripwire", StatusInterval: 10 * time.Second},
			Activity: ActivitySource{Enabled: true, Interval: defaultLiveInterval, MinRunning: defaultActivityMinRunning},
			Copy:     PollSource{Enabled: true, Interval: defaultLiveInterval},
			Tables:   PollSource{Enabled: true, Interval: defaultTablesInterval},
			Catalog:  PollSource{Enabled: true, Interval: defaultLiveInterval},
			Canary:   PollSource{Enabled: true, Interval: defaultLiveInterval},
		},
		Rules: Rules{DefaultPack: true},
	}
}

// Load reads the config file at path and parses it with Parse. getenv looks
// up environment variables (os.Getenv in production; nil means an empty
// environment). A file that cannot be read is reported as a wrapped
// *fs.PathError; a file that is not valid is reported as Errors.
func Load(path string, getenv func(string) string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data, getenv)
}

// Parse decodes and validates a config file's contents. filename is used in
// error positions, and its directory anchors relative paths. getenv looks up
// environment variables (nil means an empty environment); only
// PGTRIPWIRE_DSN is read, though pgx's DSN parser also consults the PG*
// variables of the process environment. The files that alert delivery names
// are checked on disk: they must exist and be readable.
//
// On success the Config holds defaults for every absent key and normalized
// table and column names. Otherwise Parse returns a nil Config and Errors
// listing every problem found, in file order.
func Parse(filename string, data []byte, getenv func(string) string) (*Config, error) {
	return parseFile(filename, data, getenv, checkFile)
}

// checkFile checks a file that the config names, as Parse does: secret files
// are read (they must not be empty), the others only opened.
func checkFile(path string, secret bool) error {
	if secret {
		_, err := readSecretFile(path)
		return err
	}
	return checkReadable(path)
}

// parseFile is Parse with the file check as a parameter, so that tests of
// examples can name files that do not exist here.
func parseFile(filename string, data []byte, getenv func(string) string, checkFile func(path string, secret bool) error) (*Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	d := newDecoder(filename, data)
	root, ok := d.parse()
	if !ok {
		d.Errs.Sort()
		return nil, d.Errs
	}
	cfg := Defaults()
	if root != nil {
		d.decode("", root, reflect.ValueOf(cfg).Elem())
	}
	v := &validator{decoder: d, cfg: cfg, dir: filepath.Dir(filename), getenv: getenv, checkFile: checkFile}
	v.validate()
	if len(d.Errs) > 0 {
		d.Errs.Sort()
		return nil, d.Errs
	}
	return cfg, nil
}
