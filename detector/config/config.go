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
//     "file: PGTRIPWIRE_DSN (replaces database.dsn): ...". With targets it
//     is an error: it would be ignored.
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

	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/detector/source/registry"
)

// EnvDSN is the environment variable that, when set and non-empty, replaces
// database.dsn.
const EnvDSN = "PGTRIPWIRE_DSN"

// EnvResponseDSN is the environment variable that, when set and non-empty,
// replaces response.dsn.
const EnvResponseDSN = "PGTRIPWIRE_RESPONSE_DSN"

// EnvStateDSN is the environment variable that, when set and non-empty,
// replaces high_availability.state_dsn.
const EnvStateDSN = "PGTRIPWIRE_STATE_DSN"

// Defaults and limits, in one place so that Defaults, validation and the
// documentation cannot drift apart.
const (
	defaultCatalogRefresh      = time.Minute
	minCatalogRefresh          = time.Second
	defaultListen              = "127.0.0.1:9473"
	defaultAlertsFile          = "./alerts.jsonl"
	defaultResolveAfter        = 5 * time.Minute
	defaultStateDir            = "./state"
	defaultBulkReadMinRowsCall = 1000
	defaultEvidenceRetain      = 7 * 24 * time.Hour
	defaultStateSaveInterval   = 2 * time.Second
	minStateSaveInterval       = 500 * time.Millisecond
	maxStateSaveInterval       = 10 * time.Second
	minEvidenceRetain          = time.Hour
	defaultEvidenceMaxAlerts   = 1000
)

// Config is pgtripwire's configuration. A *Config returned by Load or Parse
// has passed every check in this package: callers need not re-validate it.
type Config struct {
	// Database (database) says how to reach PostgreSQL and how to resolve
	// names in the SQL it runs.
	Database Database `yaml:"database"`
	// Targets (targets) are the clusters watched, for a fleet: each with its
	// primary, standbys, databases and sensitive tables (see Target).
	// Excludes database.dsn, database.standbys and PGTRIPWIRE_DSN;
	// database.search_path and database.catalog_refresh apply to every
	// target. Default none: the one cluster of database.dsn. Watches is the
	// resolved view of both forms.
	Targets []Target `yaml:"targets"`
	// Sensitive (sensitive) lists the tables and columns whose bulk reads or
	// mass changes page the on-call engineer. Required: at least one table,
	// because a detector watching nothing is a misconfiguration; with
	// targets, required only for the databases that have no list of their
	// own nor their target's (empty when none needs it). A table appears at
	// most once.
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
	// often they are polled: one section per source of the registry
	// (sources.wal, sources.statements, …), each decoded into the Settings its
	// package declares, with that package's defaults and checks.
	Sources source.Set `yaml:"sources"`
	// Rules (rules) chooses the rules the engine evaluates.
	Rules Rules `yaml:"rules"`
	// Roles (roles) declares what the database's roles are for.
	Roles Roles `yaml:"roles"`
	// Replication (replication) declares who may open replication connections.
	Replication Replication `yaml:"replication"`
	// Evidence (evidence) is what is captured when an alert fires, and for how
	// long it is kept.
	Evidence Evidence `yaml:"evidence"`
	// Response (response) is how pgtripwire stops a read: the responder's
	// connection, and whether precise rules act on their own.
	Response Response `yaml:"response"`
	// HighAvailability (high_availability) lets several detectors share the
	// same targets, one watching each target at a time (docs/deployment.md,
	// high availability).
	HighAvailability HighAvailability `yaml:"high_availability"`
}

// HighAvailability is the high_availability section.
type HighAvailability struct {
	// Enabled (high_availability.enabled) makes the detector watch a target
	// only while it holds the target's lease: a session-level advisory lock
	// on the target's primary, on a connection of its own. Detectors given
	// the same targets take over each other's targets within seconds of one
	// dying, and the rule state (windows, baselines, first-seen sets, firing
	// alerts) and the WAL replay guard live in the pgtripwire schema of the
	// target's primary (or of state_dsn), which `pgtripwire setup` creates;
	// the state directory is then a cache and the delivery spool. Default
	// false: one detector, its state on its local disk.
	Enabled bool `yaml:"enabled"`
	// StateDSN (high_availability.state_dsn) is where the leases and the
	// state of every target are kept instead of each target's primary: a
	// database of its own that outlives the watched clusters' failovers.
	// PGTRIPWIRE_STATE_DSN, when set and non-empty, replaces it. Default
	// empty: each target's primary, through its DSN.
	StateDSN string `yaml:"state_dsn"`
	// SaveInterval (high_availability.save_interval) is how often the rule
	// state of a watched target is written to PostgreSQL when it changed;
	// every alert transition is written at once. Default 2s, from 500ms to
	// 10s: a successor resumes from what was written last.
	SaveInterval time.Duration `yaml:"save_interval"`
}

// Evidence is the evidence section.
type Evidence struct {
	// Enabled (evidence.enabled) captures evidence when an alert fires: the
	// sessions of its role and client, the statement and its counters, the
	// role's privileges on the table, its other recent alerts. Stored in
	// state_dir/evidence, linked from the alert's evidence_url annotation.
	// Default true.
	Enabled bool `yaml:"enabled"`
	// Retain (evidence.retain) is how long evidence is kept. Default 168h
	// (7 days), minimum 1h.
	Retain time.Duration `yaml:"retain"`
	// MaxAlerts (evidence.max_alerts) bounds how many alerts' evidence is
	// kept; beyond it the oldest goes first. Default 1000, minimum 1.
	MaxAlerts int64 `yaml:"max_alerts"`
}

// ResponseMode says whether precise rules with a response act on their own.
type ResponseMode string

// Response modes.
const (
	// ResponseOff: no automatic response; `pgtripwire respond` is the only way.
	ResponseOff ResponseMode = "off"
	// ResponseShadow: record what the automatic response would have done, do nothing.
	ResponseShadow ResponseMode = "shadow"
	// ResponseOn: precise rules with a response act on their own.
	ResponseOn ResponseMode = "on"
)

// Response is the response section.
type Response struct {
	// DSN (response.dsn) is the responder's connection string: its own role,
	// with only what the actions need (pg_signal_backend and
	// pg_read_all_stats to terminate, CREATEROLE to lock a role, the grant
	// option or ownership to revoke;
	// docs/response.md). PGTRIPWIRE_RESPONSE_DSN, when set and non-empty,
	// replaces it. Default empty: nothing can respond, and `pgtripwire
	// respond --apply` and response.automatic other than off are refused.
	DSN string `yaml:"dsn"`
	// Automatic (response.automatic) is whether the rules marked precise that
	// carry a response (the default pack's CanaryRowRead) terminate the
	// reading session on their own: off, shadow (write what would have been
	// done, do nothing) or on. Default off.
	Automatic ResponseMode `yaml:"automatic"`
}

// Roles is the roles section.
type Roles struct {
	// Application (roles.application) names the roles applications connect as.
	// An application runs the same few statements all day: catalog enumeration
	// (listing every table's columns, or the roles) by one of these roles is an
	// intruder's first step through the application, and pages. Names as
	// PostgreSQL stores them (unquoted names folded to lower case). Default none.
	Application []string `yaml:"application"`
}

// Replication is the replication section.
type Replication struct {
	// Allowed (replication.allowed) are the replication connections that are
	// expected: standbys, backup tools, logical subscribers. Any other (a
	// walsender by another role, from another client or application:
	// pg_basebackup copying the whole cluster, pg_receivewal, a logical slot
	// read by someone else) pages as critical. The detector's own WAL source is
	// always allowed. Default none.
	Allowed []AllowedReplication `yaml:"allowed"`
}

// AllowedReplication is one expected kind of replication connection: every key
// given must match; an absent key matches anything, but at least one is needed.
type AllowedReplication struct {
	// Role (replication.allowed[].role) is the connecting role.
	Role string `yaml:"role"`
	// ClientCIDR (replication.allowed[].client_cidr) is the network the client
	// connects from ("10.0.3.0/24", "192.0.2.7/32", "::1/128"); "local" is a
	// Unix-socket connection.
	ClientCIDR string `yaml:"client_cidr"`
	// Application (replication.allowed[].application) is the connection's
	// application_name (a standby's cluster_name, "pg_basebackup",
	// "pg_receivewal", a subscription's name). A client chooses it: pair it
	// with role or client_cidr.
	Application string `yaml:"application"`
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
	// Standbys (database.standbys) are hot standbys of the DSN's primary,
	// watched with it as one cluster: each a connection string, or a mapping
	// with a name (see Server). The database a standby's DSN names is
	// ignored: the detector watches the same database on every server of
	// the cluster. PGTRIPWIRE_DSN replaces only database.dsn. Default none.
	Standbys []Server `yaml:"standbys"`
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
	// ExternalURL (http.external_url) is the URL on-call engineers reach this
	// detector at (through a proxy or load balancer), the base of the
	// evidence_url annotation: http or https, absolute, no query. Default "":
	// http://HOSTNAME:PORT/ of http.listen, as Prometheus derives its own.
	ExternalURL string `yaml:"external_url"`
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
		StateDir:         defaultStateDir,
		Sources:          mustSources(registry.Sources),
		Rules:            Rules{DefaultPack: true},
		Evidence:         Evidence{Enabled: true, Retain: defaultEvidenceRetain, MaxAlerts: defaultEvidenceMaxAlerts},
		Response:         Response{Automatic: ResponseOff},
		HighAvailability: HighAvailability{SaveInterval: defaultStateSaveInterval},
	}
}

// mustSources returns the sources of a table with their defaults. The table is
// the program's own (registry.Sources, checked by its tests): a defect in it is
// a bug, not a configuration problem.
func mustSources(defs []source.Definition) source.Set {
	set, err := source.NewSet(defs)
	if err != nil {
		panic(err)
	}
	return set
}

// Option changes how Load and Parse read a file.
type Option func(*options)

type options struct {
	sources []source.Definition
}

// WithSources makes the sources: section follow defs instead of
// registry.Sources: for a program embedding the detector with sources of its
// own, and for tests of one.
func WithSources(defs []source.Definition) Option {
	return func(o *options) { o.sources = defs }
}

// Load reads the config file at path and parses it with Parse. getenv looks
// up environment variables (os.Getenv in production; nil means an empty
// environment). A file that cannot be read is reported as a wrapped
// *fs.PathError; a file that is not valid is reported as Errors.
func Load(path string, getenv func(string) string, opts ...Option) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data, getenv, opts...)
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
func Parse(filename string, data []byte, getenv func(string) string, opts ...Option) (*Config, error) {
	return parseFile(filename, data, getenv, checkFile, opts...)
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
func parseFile(filename string, data []byte, getenv func(string) string, checkFile func(path string, secret bool) error,
	opts ...Option) (*Config, error) {
	o := options{sources: registry.Sources}
	for _, opt := range opts {
		opt(&o)
	}
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
	var err error
	if cfg.Sources, err = source.NewSet(o.sources); err != nil {
		return nil, err
	}
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
