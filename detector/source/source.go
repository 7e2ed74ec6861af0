// Package source is the kit every evidence source of the detector is built on: the
// contract between a source and the pipeline (Sink, Health), the settings every source's
// configuration section has and how it is checked, what a source is built from (Env),
// the polling loop that owns a connection's lifecycle (Loop), the metrics every source
// shares (Metrics), and what the live samples share with the other sources: the
// client of each query id for the statement counters (Attribution), and the sessions
// holding each sensitive table for the table counters (Readers).
//
// A source is one package under detector/source/ that exports a Definition, listed once
// in package registry. Nothing else names it: the configuration file's sources.<name>
// section is decoded into its Settings, the detector builds it from its Settings and an
// Env, and runs what Build returns.
//
// It is not where a source's own SQL, decoding or classification lives, nor the rule
// engine: sources observe and hand events over; they raise no alert.
package source

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/model"
)

// Sink receives the events of one poll, sample or transaction. It returns once they have
// been evaluated; an error makes the source offer the same observations again (at the
// next poll, or after a reconnect), so a source commits its own progress only after
// HandleEvents returned nil.
type Sink interface {
	HandleEvents(ctx context.Context, events []model.Event) error
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(ctx context.Context, events []model.Event) error

// HandleEvents calls f.
func (f SinkFunc) HandleEvents(ctx context.Context, events []model.Event) error {
	return f(ctx, events)
}

// WrittenWaiter is a Sink that can say when the alerts of the events it accepted are
// durably written: WaitWritten returns then, or with ctx's error. A source whose
// position must not advance before those alerts are written (the WAL source confirming
// a slot position) waits for it after HandleEvents.
type WrittenWaiter interface {
	WaitWritten(ctx context.Context) error
}

// Health receives the outcome of every connection attempt and poll: nil is healthy.
type Health interface {
	Set(component string, err error)
}

// Runner is a long-running part: it runs until ctx is done and returns ctx's error, or
// another error if it cannot go on.
type Runner interface {
	Run(ctx context.Context) error
}

// Observer sees every batch of events after the pipeline accepted it, whichever source
// it came from: a source that learns from the others' observations (the table counters,
// whose reads classified statements explain) implements it. Observe must not block.
type Observer interface {
	Observe(events []model.Event)
}

// Definition is one source the detector can run. Its Name is the key of its section
// under sources: in the configuration file, its health component and its metrics'
// source label.
type Definition struct {
	Name string
	// Scope says where the source runs when the detector watches several databases
	// or servers; the zero Scope is EachDatabase.
	Scope Scope
	// Settings returns new settings holding the source's defaults, into which the
	// configuration file's sources.<Name> section is decoded: a pointer to a struct
	// whose fields carry yaml tags (strict: unknown keys are errors).
	Settings func() Settings
}

// Settings is one source's configuration section.
type Settings interface {
	// On reports whether the detector runs the source. A source that decides at run
	// time (the WAL source's "auto") reports true: Build and Run decide.
	On() bool
	// Check reports every problem of the decoded values through c.
	Check(c Checker)
	// Build returns what the detector runs for the source, from its settings and env.
	// It is called only when On, after the whole configuration was checked.
	Build(env Env) (Part, error)
}

// Part is what a source runs: exactly one of Runner (a source that owns its
// connections, like the WAL source) or Poller (run by a Loop the detector owns).
type Part struct {
	Runner Runner
	Poller Poller
	// Interval is the time between two polls of Poller.
	Interval time.Duration
	// Conn is the connection configuration Poller's loop connects with; nil means
	// Env.Conn. Pollers sharing Connection share one loop and must agree on it.
	Conn *pgx.ConnConfig
	// Connection, when not "", names a connection shared by every Poller naming it: one
	// connection, one loop, each Poller at its own Interval (the activity and COPY
	// samplers cost one connection together).
	Connection string
}

// Checker is how Settings.Check reports a problem: key is the key at fault, relative to
// the source's section ("interval", "slot"); the configuration loader adds the
// section's path and the key's position in the file.
type Checker interface {
	Errorf(key, format string, args ...any)
}

// MinInterval is the shortest polling interval a source accepts.
const MinInterval = 100 * time.Millisecond

// CheckInterval reports an interval below MinInterval.
func CheckInterval(c Checker, key string, d time.Duration) {
	if d < MinInterval {
		c.Errorf(key, "%s is below the minimum of %s", d, MinInterval)
	}
}

// Replicator is implemented by the Settings of a source that streams from a logical
// replication slot of the detector's own: the other sources must tell its slot and
// publication, and its walsender, from anyone else's.
type Replicator interface {
	// Replication returns the slot and publication, and whether the source may use them.
	Replication() (slot, publication string, ok bool)
}

// Insister is implemented by the Settings of a source the operator may insist on
// (the WAL source's enabled: true, against auto): a place where the detector cannot
// run it is then a configuration error rather than a warning.
type Insister interface {
	Insisted() bool
}

// Env is what every source is built from: the database, the shared services of the
// detector, and the pipeline its events go to.
type Env struct {
	// Name is the source's name (its Definition's).
	Name string
	// Conn is the parsed connection configuration, with the detector's
	// application_name and connect timeout set. Copy it before changing it.
	Conn *pgx.ConnConfig
	// ServerDatabases are the databases the detector watches on the server, for the
	// sources that run once per server (EachServer) and judge what belongs to which
	// database (logical slots, logical streams); nil means Conn's database alone.
	ServerDatabases []string
	// Server, when not nil, reads the cluster-wide statistics views once for every
	// database the detector watches on Conn's server: the sources that read them
	// take their database's rows from it (Shared) instead of reading them over Conn.
	// Nil when the detector watches one database of the server.
	Server *Server
	// SearchPath resolves unqualified relation names; "$user" is the statement's role.
	SearchPath []string
	// CatalogRefresh is how often a catalog snapshot is reloaded.
	CatalogRefresh time.Duration
	// Sensitive maps schema-qualified tables, in their canonical form (public."user"),
	// to their sensitive columns.
	Sensitive map[string][]string
	// StateDir is the detector's durable state directory.
	StateDir string
	// Replication is the detector's own slot and publication when a source streams
	// from them (the WAL source, on or auto); zero otherwise.
	Replication Replication
	// Declared is what the configuration says about the estate.
	Declared Declarations
	// OwnStreams records when the detector's own replication sessions held its slots.
	OwnStreams *OwnStreams
	// ReplayGuards, when set, keeps the WAL source's replay guard instead of the state
	// directory: in PostgreSQL, for a detector that takes the target over (high
	// availability).
	ReplayGuards ReplayGuards

	Sink        Sink
	Health      Health
	Logger      *zap.Logger
	Registerer  prometheus.Registerer
	Metrics     *Metrics
	Attribution *Attribution
	// Readers is filled by the activity sampler with the sessions holding a lock on a
	// sensitive table, and read by the table counters to name who was reading; nil
	// shares nothing.
	Readers *Readers
	// Now is the clock that stamps events.
	Now func() time.Time
}

// Declarations are what the operator declared about the estate, for the sources that
// judge what they see against it.
type Declarations struct {
	// ApplicationRoles are the roles applications connect as (roles.application).
	ApplicationRoles []string
	// Replication are the expected replication connections (replication.allowed).
	Replication []ReplicationClient
}

// ReplicationClient is one expected kind of replication connection: every field set
// must match; an empty one matches anything.
type ReplicationClient struct {
	Role string
	// Network is the client's network; Local matches Unix-socket connections.
	Network     netip.Prefix
	Local       bool
	Application string
}

// Matches reports whether a connection by role from addr ("" or "local" for a Unix
// socket) with application matches c.
func (c ReplicationClient) Matches(role, addr, application string) bool {
	if c.Role != "" && c.Role != role || c.Application != "" && c.Application != application {
		return false
	}
	switch {
	case c.Local:
		return addr == "" || addr == "local"
	case c.Network.IsValid():
		a, err := netip.ParseAddr(addr)
		return err == nil && c.Network.Contains(a.Unmap())
	}
	return true
}

// Replication names the detector's own logical replication slot and publication.
type Replication struct {
	Slot, Publication string
}

// Streaming reports whether a source of the detector streams from its own slot.
func (r Replication) Streaming() bool { return r.Slot != "" }

// Source returns the model.Source value of the source's events.
func (e Env) Source() model.Source { return model.Source(e.Name) }

// Validate reports a Part that is not exactly one of Runner and Poller.
func (p Part) Validate(name string) error {
	if (p.Runner == nil) == (p.Poller == nil) {
		return fmt.Errorf("source %s: Build must return a Runner or a Poller", name)
	}
	if p.Poller != nil && p.Interval <= 0 {
		return fmt.Errorf("source %s: a Poller needs a positive Interval", name)
	}
	return nil
}

// PollSettings is the section of a polling source whose only keys are enabled and
// interval (sources.statements, copy, tables, catalog, canary). Interval must be at
// least MinInterval.
type PollSettings struct {
	// Enabled (sources.<name>.enabled) turns the source on.
	Enabled bool `yaml:"enabled"`
	// Interval (sources.<name>.interval) is the time between two polls.
	Interval time.Duration `yaml:"interval"`

	// New builds the source's Poller, which is polled every interval.
	New func(env Env, interval time.Duration) (Poller, error) `yaml:"-"`
	// Connection, when not "", is shared with the other pollers naming it (Part).
	Connection string `yaml:"-"`
}

// On reports whether the source runs.
func (s *PollSettings) On() bool { return s.Enabled }

// Check reports an interval below MinInterval.
func (s *PollSettings) Check(c Checker) { CheckInterval(c, "interval", s.Interval) }

// Build returns the source's Poller.
func (s *PollSettings) Build(env Env) (Part, error) {
	p, err := s.New(env, s.Interval)
	if err != nil {
		return Part{}, err
	}
	return Part{Poller: p, Interval: s.Interval, Connection: s.Connection}, nil
}

// Configured is one source of a Set with its settings.
type Configured struct {
	Name     string
	Scope    Scope
	Settings Settings
}

// Set is the configuration's sources: section: every source of a table of Definitions
// with its Settings, in the table's order. The zero Set holds no source.
type Set struct {
	all []Configured
}

// NewSet returns the sources of defs with their default settings. A Definition whose
// Settings is not a pointer to a struct, or a name used twice, is a defect of the
// table, reported as an error.
func NewSet(defs []Definition) (Set, error) {
	var set Set
	for _, d := range defs {
		s := d.Settings()
		if t := reflect.TypeOf(s); t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
			return Set{}, fmt.Errorf("source %s: Settings must return a pointer to a struct, got %T", d.Name, s)
		}
		if _, dup := set.Lookup(d.Name); dup || d.Name == "" {
			return Set{}, fmt.Errorf("source %q: the name is empty or listed twice", d.Name)
		}
		set.all = append(set.All(), Configured{Name: d.Name, Scope: d.Scope, Settings: s})
	}
	return set, nil
}

// All returns the sources in order.
func (s Set) All() []Configured { return s.all }

// Lookup returns the settings of the source called name.
func (s Set) Lookup(name string) (Settings, bool) {
	for _, c := range s.all {
		if c.Name == name {
			return c.Settings, true
		}
	}
	return nil, false
}

// Lookup returns the settings of the source called name in set as a T, and false when
// set holds no such source or its settings are not a T.
func Lookup[T Settings](set Set, name string) (T, bool) {
	s, _ := set.Lookup(name)
	t, ok := s.(T)
	return t, ok
}

// ReplayGuard is the WAL source's replay guard: the position of the last transaction
// handed over, on which WAL history.
type ReplayGuard struct {
	// SystemID and Timeline are the WAL history Handled belongs to (IDENTIFY_SYSTEM).
	SystemID string
	Timeline int32
	// Handled is the position of the last transaction (its end) or non-transactional
	// message (its LSN + 1) handed over: anything received again at or before it is
	// skipped.
	Handled pglogrepl.LSN
	// HandledAt is the commit time of that transaction (the time of the message);
	// zero when unknown (a guard written before it was kept).
	HandledAt time.Time
}

// ReplayGuards keeps replay guards by slot. A store that keeps them elsewhere than
// the state directory (a table of a database that outlives the detector's host, for
// a successor to resume from) implements both methods; the source calls them from
// one goroutine at a time.
type ReplayGuards interface {
	// LoadGuard returns the slot's guard, or ok false when there is none. An error says
	// the guard is lost: the source says so (a state_lost event) and starts without it.
	LoadGuard(ctx context.Context, slot string) (g ReplayGuard, ok bool, err error)
	// SaveGuard replaces the slot's guard durably: once it returns nil, a LoadGuard
	// after a crash returns g (or a later guard). An error ends the replication
	// session; nothing is confirmed that was not saved.
	SaveGuard(ctx context.Context, slot string, g ReplayGuard) error
}
