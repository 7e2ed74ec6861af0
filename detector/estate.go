package detector

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/health"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/model"
)

// A server is one server of a watched cluster, with the databases the detector
// watches on it. The estate is built from config.Watches: every source runs once per
// server or once per database (source.Scope), each with an Env of its own place.
type server struct {
	cluster, instance string
	standby           bool
	// conn connects to the server's own database: its DSN's.
	conn      *pgx.ConnConfig
	databases []config.WatchedDatabase
	// sensitive is the cluster's list, for the server's own database when the
	// detector does not watch it.
	sensitive []config.SensitiveTable
	// first is the first cluster's primary: the one server of the sources that read
	// one server's files (source.PrimaryServer).
	first bool
}

// shares reports whether the server's databases share its statistics reads and each
// database's sources one connection: when the detector watches more than one of them.
// With one, every source keeps the connection of its own, as in the minimal
// configuration (docs/sources.md: the connection budget).
func (s *server) shares() bool { return len(s.databases) > 1 }

// ownDatabase is the database the server's cluster-wide sources (source.EachServer)
// connect to: the one watched database, or the DSN's own when the detector watches
// several (it need not be one of them: the postgres database of a fleet).
func (s *server) ownDatabase() config.WatchedDatabase {
	if !s.shares() {
		return s.databases[0]
	}
	if i := slices.IndexFunc(s.databases, func(d config.WatchedDatabase) bool { return d.Name == s.conn.Database }); i >= 0 {
		return s.databases[i]
	}
	return config.WatchedDatabase{Name: s.conn.Database, Sensitive: s.sensitive}
}

// discoverTimeout bounds the discovery of a cluster's databases (databases: all) at
// start.
const discoverTimeout = 15 * time.Second

// estate returns the servers the configuration watches. A cluster whose databases are
// "all" has them listed from its primary now: the detector watches those that allow
// connections at start (templates excluded); a database created later is watched
// after a restart (docs/deployment.md).
func estate(ctx context.Context, cfg *config.Config, base *pgx.ConnConfig) ([]*server, error) {
	var out []*server
	for wi, w := range cfg.Watches() {
		dbs := w.Databases
		var primary *pgx.ConnConfig
		for si, ws := range append([]config.WatchedServer{w.Primary}, w.Standbys...) {
			conn, err := serverConn(cfg, ws, base)
			if err != nil {
				return nil, err
			}
			if si == 0 {
				primary = conn
			} else if conn.Database != primary.Database {
				// A standby's own database is its primary's: its DSN's is ignored
				// (docs/config.md), and need not exist.
				conn = conn.Copy()
				conn.Database = primary.Database
			}
			if w.AllDatabases && si == 0 {
				if dbs, err = discoverDatabases(ctx, conn, w.Sensitive); err != nil {
					return nil, fmt.Errorf("cluster %s: list the databases of %s (databases: all): %w", w.Cluster, ws.Instance, err)
				}
			}
			out = append(out, &server{cluster: w.Cluster, instance: ws.Instance, standby: si > 0, conn: conn,
				databases: dbs, sensitive: w.Sensitive, first: wi == 0 && si == 0})
		}
	}
	return out, nil
}

// serverConn parses a server's DSN with the detector's application_name and connect
// timeout. The minimal configuration's primary is base (database.dsn, parsed once).
func serverConn(cfg *config.Config, ws config.WatchedServer, base *pgx.ConnConfig) (*pgx.ConnConfig, error) {
	c := base
	if ws.DSN != cfg.Database.DSN || base == nil {
		var err error
		if c, err = pgx.ParseConfig(ws.DSN); err != nil {
			return nil, &ConfigError{Err: fmt.Errorf("the DSN of %s is not a valid connection string", ws.Instance)}
		}
	}
	if c.Database == "" {
		// As the server defaults it, and as labels and state directories need it named.
		c = c.Copy()
		c.Database = c.User
	}
	if c == base {
		return base, nil
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	c.RuntimeParams["application_name"] = "pgtripwire"
	return c, nil
}

func discoverDatabases(ctx context.Context, c *pgx.ConnConfig, sensitive []config.SensitiveTable) ([]config.WatchedDatabase, error) {
	ctx, cancel := context.WithTimeout(ctx, discoverTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, c)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// Those the detector's role may connect to: another would stay unready forever.
	rows, err := conn.Query(ctx, `SELECT datname::text FROM pg_database
WHERE datallowconn AND NOT datistemplate AND has_database_privilege(datname, 'CONNECT') ORDER BY datname`)
	if err != nil {
		return nil, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, errors.New("no database allows connections")
	}
	out := make([]config.WatchedDatabase, len(names))
	for i, n := range names {
		out[i] = config.WatchedDatabase{Name: n, Sensitive: sensitive}
	}
	return out, nil
}

// place is one server and database sources watch: what makes their Env.
type place struct {
	srv      *server
	database config.WatchedDatabase
	shared   *source.Server
	// serverDatabases: the place's sources judge for every watched database of the
	// server (the cluster-wide watches of a server watched with several).
	serverDatabases bool
}

func (p place) target() source.Target {
	return source.Target{Cluster: p.srv.cluster, Instance: p.srv.instance, Database: p.database.Name}
}

// env is base made for the sources watching p: its connection, sensitive tables,
// state directory, labels, health, and a sink that stamps the server on every event
// and shows them to p's observers only.
func (p place) env(base source.Env, reg prometheus.Registerer, metrics func(prometheus.Registerer, source.Target) *source.Metrics,
	sink *observing, stateDir string) source.Env {
	e := base
	e.Conn = p.srv.conn.Copy()
	e.Conn.Database = p.database.Name
	e.Server = p.shared
	if p.serverDatabases {
		for _, db := range p.srv.databases {
			e.ServerDatabases = append(e.ServerDatabases, db.Name)
		}
	}
	e.Sensitive = sensitiveMap(p.database.Sensitive)
	e.StateDir = stateDir
	e.Sink = sink
	e.Registerer = prometheus.WrapRegistererWith(prometheus.Labels{
		"cluster": p.srv.cluster, "server": p.srv.instance, "database": p.database.Name}, reg)
	e.Metrics = metrics(e.Registerer, p.target())
	e.Attribution = source.NewAttribution(0, base.Now)
	e.Readers = source.NewReaders(0)
	return e
}

// stateDir is where the sources of a place keep their state: state_dir itself for
// the minimal configuration's one database (as before targets existed), else a
// directory per cluster, server and database, since counters and replay guards are
// keyed by database oids, which repeat across servers.
func stateDir(root string, p place, minimal bool) string {
	if minimal {
		return root
	}
	return filepath.Join(root, "servers", safeName(p.srv.cluster), safeName(p.srv.instance), safeName(p.database.Name))
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

// safeName is a file name for a label value: its safe characters and a hash of the
// whole, so that two values never share a directory.
func safeName(s string) string {
	sum := sha256.Sum256([]byte(s))
	return unsafeName.ReplaceAllString(s, "_") + "-" + hex.EncodeToString(sum[:4])
}

// buildEstate builds every source of set for every server and database of servers,
// with base as the base of each one's Env.
//
// It returns the runners, the servers' shared statistics readers (to close when the
// runners have stopped), and the names of the sources skipped on servers watched with
// several databases (the WAL source), for a warning.
func buildEstate(set source.Set, base source.Env, servers []*server, reg prometheus.Registerer, h *health.Status,
	minimal bool) (runners []source.Runner, shared []*source.Server, skippedNames []string, err error) {
	skipped := map[string]bool{}
	var insisted []string
	// The sources' shared metrics, one per place: a server's own database may be one
	// of its watched databases too, whose sources then share them.
	sharedMetrics := map[source.Target]*source.Metrics{}
	for _, srv := range servers {
		var stats *source.Server
		if srv.shares() {
			names := make([]string, len(srv.databases))
			for i, d := range srv.databases {
				names[i] = d.Name
			}
			own := srv.conn.Copy()
			stats = source.NewServer(own, names)
			shared = append(shared, stats)
		}
		ownStreams := source.NewOwnStreams()
		build := func(p place, scopes []source.Scope, connection string) error {
			sink := &observing{next: stamping{next: base.Sink, cluster: srv.cluster, instance: srv.instance}}
			env := p.env(base, reg, func(r prometheus.Registerer, t source.Target) *source.Metrics {
				if sharedMetrics[t] == nil {
					sharedMetrics[t] = source.NewMetrics(r)
				}
				return sharedMetrics[t]
			}, sink, stateDir(base.StateDir, p, minimal && !srv.standby))
			env.OwnStreams = ownStreams
			scoped := h.At(health.Server{Cluster: srv.cluster, Server: srv.instance, Database: p.database.Name})
			rs, err := buildSources(set, env, scoped, scopes, connection, func(c source.Configured) bool {
				// A slot is per database: a server watched with many would need one per
				// database, which setup does not make yet (docs/deployment.md).
				_, replicator := c.Settings.(source.Replicator)
				if replicator && connection == "database" {
					if i, ok := c.Settings.(source.Insister); ok && i.Insisted() {
						insisted = append(insisted, c.Name)
					}
					skipped[c.Name] = true
					return true
				}
				return false
			})
			if err != nil {
				return fmt.Errorf("%s: %w", p.target().Describe(), err)
			}
			runners = append(runners, rs...)
			return nil
		}
		perServer := []source.Scope{source.EachServer}
		perDatabase := []source.Scope{source.EachDatabase}
		if !srv.standby {
			perDatabase = append(perDatabase, source.PrimaryDatabases)
		}
		if srv.first {
			perServer = append(perServer, source.PrimaryServer)
		}
		if !srv.shares() {
			// One database: every source in its Env, each on the connection it names.
			if err := build(place{srv: srv, database: srv.databases[0]}, append(perServer, perDatabase...), ""); err != nil {
				return nil, nil, nil, err
			}
			continue
		}
		if err := build(place{srv: srv, database: srv.ownDatabase(), serverDatabases: true}, perServer, "server"); err != nil {
			return nil, nil, nil, err
		}
		for _, db := range srv.databases {
			if err := build(place{srv: srv, database: db, shared: stats}, perDatabase, "database"); err != nil {
				return nil, nil, nil, err
			}
		}
	}
	if len(insisted) > 0 {
		return nil, nil, nil, &ConfigError{Err: fmt.Errorf("sources.%s.enabled is true, but a server watched with several "+
			"databases cannot run it (each database would need a slot of its own): set it to auto, or watch one database per target",
			insisted[0])}
	}
	if len(runners) == 0 {
		return nil, nil, nil, &ConfigError{Err: errors.New("sources: every source is disabled; the detector would watch nothing")}
	}
	return runners, shared, slices.Sorted(maps.Keys(skipped)), nil
}

// stamping names the server on every event of its sources.
type stamping struct {
	next              source.Sink
	cluster, instance string
}

func (s stamping) HandleEvents(ctx context.Context, events []model.Event) error {
	for i := range events {
		events[i].Cluster, events[i].Instance = s.cluster, s.instance
	}
	return s.next.HandleEvents(ctx, events)
}

func (s stamping) WaitWritten(ctx context.Context) error {
	if w, ok := s.next.(source.WrittenWaiter); ok {
		return w.WaitWritten(ctx)
	}
	return nil
}
