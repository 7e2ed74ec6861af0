package config

import "github.com/pgtripwire/pgtripwire/internal/yamlfile"

// Watch is one cluster the detector watches: a targets: entry, or the minimal
// configuration (database.dsn, database.standbys, sensitive) as one cluster named "".
type Watch struct {
	Cluster  string // "" for the minimal configuration
	Primary  WatchedServer
	Standbys []WatchedServer
	// AllDatabases: watch every database of the primary that allows connections,
	// templates excluded (discovered by the detector); Databases then is empty.
	AllDatabases bool
	Databases    []WatchedDatabase // in file order; for the minimal config: the DSN's database
	// Sensitive is the target's list (or the top-level one): for databases without their own,
	// and every database found by AllDatabases.
	Sensitive []SensitiveTable
}

// WatchedServer is one server of a cluster.
type WatchedServer struct {
	Instance string // name, or host:port of the DSN
	DSN      string // never log it: RedactedDSN
}

// RedactedDSN returns the server's DSN with every password replaced by
// xxxxx, as Config.RedactedDSN does.
func (s WatchedServer) RedactedDSN() string { return yamlfile.RedactDSN(s.DSN) }

// WatchedDatabase is one database of a cluster with its sensitive tables.
type WatchedDatabase struct {
	Name      string
	Sensitive []SensitiveTable // the database's own, else the Watch's
}

// Watches returns the clusters the detector watches, in file order: the targets,
// or one Watch built from database: and sensitive:. Never empty for a loaded Config.
//
// It is computed from the Config's fields at each call, so it works as well
// on a Config built in code from Defaults. Instance names are the servers'
// names, else host:port of their DSN as pgx resolves it (the PG* variables
// and libpq's defaults fill in what the DSN leaves out; a Unix socket gives
// its directory: /var/run/postgresql:5432); a DSN pgx cannot parse, which
// Load refuses, gives "local". A database that no DSN names is the one the
// server defaults to: the user name. The Watches share their sensitive lists
// with the Config: do not modify them.
func (c *Config) Watches() []Watch {
	if len(c.Targets) == 0 {
		db := c.Database
		return []Watch{{
			Primary:   WatchedServer{Instance: instanceOf(db.DSN), DSN: db.DSN},
			Standbys:  watchedServers(db.Standbys),
			Databases: []WatchedDatabase{{Name: databaseOf(db.DSN), Sensitive: c.Sensitive}},
			Sensitive: c.Sensitive,
		}}
	}
	out := make([]Watch, len(c.Targets))
	for i, t := range c.Targets {
		sensitive := t.Sensitive
		if len(sensitive) == 0 {
			sensitive = c.Sensitive
		}
		w := Watch{
			Cluster:      t.Cluster,
			Primary:      watchedServer(t.Primary),
			Standbys:     watchedServers(t.Standbys),
			AllDatabases: t.Databases.All,
			Sensitive:    sensitive,
		}
		switch {
		case t.Databases.All:
		case len(t.Databases.List) == 0:
			w.Databases = []WatchedDatabase{{Name: databaseOf(t.Primary.DSN), Sensitive: sensitive}}
		default:
			w.Databases = make([]WatchedDatabase, len(t.Databases.List))
			for j, db := range t.Databases.List {
				w.Databases[j] = WatchedDatabase(db)
				if len(db.Sensitive) == 0 {
					w.Databases[j].Sensitive = sensitive
				}
			}
		}
		out[i] = w
	}
	return out
}

// Fleet reports whether the configuration uses targets: (so labels cluster is set).
func (c *Config) Fleet() bool { return len(c.Targets) > 0 }

// watchedServers returns the servers with their instance names.
func watchedServers(servers []Server) []WatchedServer {
	if len(servers) == 0 {
		return nil
	}
	out := make([]WatchedServer, len(servers))
	for i, s := range servers {
		out[i] = watchedServer(s)
	}
	return out
}

func watchedServer(s Server) WatchedServer {
	if s.Name != "" {
		return WatchedServer{Instance: s.Name, DSN: s.DSN}
	}
	return WatchedServer{Instance: instanceOf(s.DSN), DSN: s.DSN}
}

// ServerOf returns the cluster and instance name, as alerts carry them, of the watched
// server dsn connects to (the same host and port, as pgx resolves them), and false
// when it is none of them: response.dsn through a pooler's address, a server the
// configuration does not watch.
func (c *Config) ServerOf(dsn string) (cluster, instance string, ok bool) {
	if dsn == "" || instanceOf(dsn) == "local" {
		return "", "", false
	}
	addr := instanceOf(dsn)
	for _, w := range c.Watches() {
		for _, s := range append([]WatchedServer{w.Primary}, w.Standbys...) {
			if instanceOf(s.DSN) == addr {
				return w.Cluster, s.Instance, true
			}
		}
	}
	return "", "", false
}
